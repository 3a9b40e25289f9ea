"""PARD's block partial order and the parallel ("doubled graph") training layout.

* :func:`higher_order_degrees` packs ``K`` walk counts ``w(k) = (I + A) w(k-1)``, ``w(0) = 1`` into
  one int64 key per node by Horner's rule ``s <- s * N + w(k)`` (as the official
  ``compute_higher_order_degrees``; the digits may overlap when a count reaches ``N``, which is kept
  on purpose: "fixing" it changes block ids).
* :func:`block_decomposition` peels the nodes of minimum key off the remaining graph, records the
  block's degree (degree in the remaining graph of the first peeled node) and size, then reverses
  the order: block 0 is the densest core, the last block the periphery. Block ids are a function of
  the unlabelled graph, hence permutation-equivariant.
* :func:`causal_block_mask` ``M[i, j]`` (``i`` reads from ``j``) = same block and same copy, or
  ``block_i > block_j`` with ``j`` real.
* :func:`parallel_blocks` sorts each graph's nodes by block, doubles it (real copy ``0..n-1``,
  virtual copy ``n..2n-1`` with the same block ids) and pads a batch into dense one-hot tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from invariance.graph._checks import check_edge_index, check_int


def _check_simple(edge_index: Tensor, num_nodes: int, name: str = "edge_index") -> None:
    check_edge_index(edge_index, num_nodes, name)
    if edge_index.numel() and bool((edge_index[0] == edge_index[1]).any()):
        raise ValueError(f"{name} contains self-loops; PARD models simple graphs")
    if edge_index.numel():
        key = edge_index[0] * num_nodes + edge_index[1]
        rkey = edge_index[1] * num_nodes + edge_index[0]
        if not torch.equal(torch.sort(key).values, torch.sort(rkey).values):
            raise ValueError(f"{name} must be symmetric (both directions of every edge)")


def higher_order_degrees(edge_index: Tensor, num_nodes: int, max_hops: int = 3) -> Tensor:
    """Packed walk-count keys (int64, one per node) of the graph ``edge_index``.

    ``max_hops = 0`` gives every node key 1 (a single block: one-shot diffusion)."""
    num_nodes = check_int("num_nodes", num_nodes, lo=1)
    max_hops = check_int("max_hops", max_hops, lo=0)
    check_edge_index(edge_index, num_nodes)
    x = torch.ones(num_nodes, dtype=torch.long, device=edge_index.device)
    if max_hops == 0:
        return x
    keys = torch.zeros_like(x)
    for _ in range(max_hops):
        # x <- x + A x: the official scatter accumulates *into* x (out=x)
        x = x.index_add(0, edge_index[1], x[edge_index[0]])
        keys = keys * num_nodes + x
    return keys


@dataclass
class BlockDecomposition:
    """``block_id`` (per node, original order), ``block_size`` and ``block_degree`` (per block,
    block 0 first); ``block_degree[k]`` = degree of block-``k`` nodes inside ``G[blocks <= k]``."""

    block_id: Tensor
    block_size: Tensor
    block_degree: Tensor

    @property
    def num_blocks(self) -> int:
        return int(self.block_size.numel())


def block_decomposition(
    edge_index: Tensor, num_nodes: int, max_hops: int = 3
) -> BlockDecomposition:
    """PARD's peeling decomposition of one graph (official ``ToParallelBlocks`` block ids)."""
    num_nodes = check_int("num_nodes", num_nodes, lo=1)
    max_hops = check_int("max_hops", max_hops, lo=0)
    _check_simple(edge_index, num_nodes)
    edge_index = edge_index.long().cpu()
    nodes = torch.arange(num_nodes)
    peeled = torch.zeros(num_nodes, dtype=torch.long)  # 0 = not yet peeled, i = i-th peel
    degrees, sizes, i = [], [], 1
    ei = edge_index
    while int(peeled.min()) == 0:
        deg = torch.bincount(ei[0], minlength=num_nodes)
        keys = higher_order_degrees(ei, num_nodes, max_hops)
        keys[peeled != 0] = -1
        block = nodes[keys == keys[keys >= 0].min()]
        peeled[block] = i
        ei = ei[:, ~(peeled[ei] == i).any(0)]
        degrees.append(int(deg[block[0]]))
        sizes.append(int(block.numel()))
        i += 1
    block_id = peeled.max() - peeled
    return BlockDecomposition(
        block_id, torch.tensor(sizes[::-1], dtype=torch.long), torch.tensor(degrees[::-1])
    )


def block_sort(block_id: Tensor) -> tuple[Tensor, Tensor]:
    """``(order, new_label)``: nodes sorted by block id (stable), ``new_label[old] = new``."""
    order = torch.sort(block_id, stable=True).indices
    new_label = torch.empty_like(order)
    new_label[order] = torch.arange(order.numel())
    return order, new_label


def causal_block_mask(block_id: Tensor, virtual: Tensor | None = None) -> Tensor:
    """``M[..., i, j]``: node ``i`` may read node ``j`` (``block_id < 0`` marks padding)."""
    if virtual is None:
        virtual = torch.zeros_like(block_id, dtype=torch.bool)
    left, right = block_id.unsqueeze(-1), block_id.unsqueeze(-2)
    valid = (left >= 0) & (right >= 0)
    lv, rv = virtual.unsqueeze(-1), virtual.unsqueeze(-2)
    diag = (left == right) & (lv == rv) & valid
    off = (left > right) & ~rv & valid
    return diag | off


def target_masks(block_id: Tensor, virtual: Tensor) -> tuple[Tensor, Tensor]:
    """Training targets: (virtual nodes, strictly lower triangle of ``M`` on virtual rows)."""
    m = causal_block_mask(block_id, virtual)
    n = m.size(-1)
    low = torch.ones(n, n, dtype=torch.bool, device=m.device).tril(-1)
    return virtual & (block_id >= 0), m & low & virtual.unsqueeze(-1)


@dataclass
class ParallelBatch:
    """Dense doubled batch. ``nodes`` (B, N, F) / ``edges`` (B, N, N, C) one-hot inputs (virtual
    rows zero: the model overwrites targets with noisy samples), ``x0_nodes`` (B, N) /
    ``x0_edges`` (B, N, N) clean class ids (virtual copy = real copy), ``block_id`` (B, N; -1 =
    padding), ``virtual`` (B, N), ``block_size`` / ``block_degree`` (B, max_blocks; 0 = none)."""

    nodes: Tensor
    edges: Tensor
    x0_nodes: Tensor
    x0_edges: Tensor
    block_id: Tensor
    virtual: Tensor
    block_size: Tensor
    block_degree: Tensor

    @property
    def num_graphs(self) -> int:
        return int(self.nodes.size(0))


def graph_classes(data, num_node_types: int, num_edge_types: int) -> tuple[Tensor, Tensor]:
    """Node class ids (n,) and dense edge class ids (n, n) of a PyG ``Data`` (``x`` / ``edge_attr``
    optional integer types; edge class 0 = no edge, ``1 + type`` = edge)."""
    n = data.num_nodes
    if n is None or (isinstance(n, int) and n < 1):
        raise ValueError(f"num_nodes must be >= 1: graphs must not be empty (got {n})")
    n = check_int("num_nodes", n, lo=1)
    ei = data.edge_index
    _check_simple(ei, n, "edge_index")
    x = getattr(data, "x", None)
    if x is None:
        x = torch.zeros(n, dtype=torch.long)
    x = x.reshape(-1).long() if x.dim() <= 1 or x.size(-1) == 1 else x.argmax(-1)
    if x.numel() != n or (x.numel() and (int(x.min()) < 0 or int(x.max()) >= num_node_types)):
        raise ValueError(f"x must hold {n} node types in [0, {num_node_types}) (unknown type)")
    ea = getattr(data, "edge_attr", None)
    ea = torch.zeros(ei.size(1), dtype=torch.long) if ea is None else ea.reshape(-1).long()
    if ea.numel() != ei.size(1) or (
        ea.numel() and (int(ea.min()) < 0 or int(ea.max()) >= num_edge_types)
    ):
        raise ValueError(f"edge_attr must hold one type in [0, {num_edge_types}) per edge")
    adj = torch.zeros(n, n, dtype=torch.long)
    adj[ei[0], ei[1]] = ea + 1
    if not torch.equal(adj, adj.t()):
        raise ValueError("edge_attr must be symmetric (the same type in both directions)")
    return x, adj


def _sorted_item(g, max_hops: int, num_node_types: int, num_edge_types: int) -> tuple:
    """``(x, adj, block_id, decomposition)`` of one graph with its nodes sorted by block."""
    x, adj = graph_classes(g, num_node_types, num_edge_types)
    dec = block_decomposition(g.edge_index, x.numel(), max_hops)
    order, _ = block_sort(dec.block_id)
    return x[order], adj[order][:, order], dec.block_id[order], dec


def parallel_blocks(
    graphs,
    max_hops: int,
    num_node_types: int = 1,
    num_edge_types: int = 1,
    max_nodes: int | None = None,
    cache: dict | None = None,
) -> ParallelBatch:
    """Block-sort, double and pad a list of PyG graphs (the official ``ToParallelBlocks`` +
    ``ToDenseParallelBlocksBatch`` with ``add_virtual_blocks=True``). ``F = num_node_types + 1``
    and ``C = num_edge_types + 2`` (no-edge class 0, virtual class last).

    ``cache`` (optional, a dict the caller keeps): the per-graph block-sorted classes and
    decomposition are stored there, keyed by the graph object, and reused when the same object
    comes again (a training loop over a fixed list of graphs that it does not modify)."""
    if not isinstance(graphs, (list, tuple)) or len(graphs) == 0:
        raise ValueError("graphs must be a non-empty list of PyG Data graphs")
    max_hops = check_int("max_hops", max_hops, lo=0)
    if cache is not None and not isinstance(cache, dict):
        raise TypeError(f"cache must be a dict or None, got {type(cache).__name__}")
    F_, C = num_node_types + 1, num_edge_types + 2
    items = []
    for g in graphs:
        hit = None if cache is None else cache.get(id(g))
        key = (max_hops, num_node_types, num_edge_types)
        if hit is not None and hit[0] is g and hit[1] == key:
            item = hit[2]
        else:
            item = _sorted_item(g, max_hops, num_node_types, num_edge_types)
            if cache is not None:
                cache[id(g)] = (g, key, item)  # holding g keeps its id unique
        n = item[0].numel()
        if max_nodes is not None and n > max_nodes:
            raise ValueError(
                f"graphs has a graph of {n} nodes, above the model's max_nodes={max_nodes}"
            )
        items.append(item)
    B = len(items)
    N = max(2 * it[0].numel() for it in items)
    K = max(it[3].num_blocks for it in items)
    nodes = torch.zeros(B, N, F_)
    edges = torch.zeros(B, N, N, C)
    x0n = torch.zeros(B, N, dtype=torch.long)
    x0e = torch.zeros(B, N, N, dtype=torch.long)
    bid = torch.full((B, N), -1, dtype=torch.long)
    virt = torch.zeros(B, N, dtype=torch.bool)
    bsize = torch.zeros(B, K, dtype=torch.long)
    bdeg = torch.zeros(B, K, dtype=torch.long)
    for b, (x, adj, blk, dec) in enumerate(items):
        n = x.numel()
        nodes[b, :n] = torch.nn.functional.one_hot(x, F_).float()
        full = torch.zeros(2 * n, 2 * n, dtype=torch.long)
        full[:n, :n] = adj
        full[n:, n:] = adj
        full[n:, :n] = adj
        full[:n, n:] = adj
        x0e[b, : 2 * n, : 2 * n] = full
        edges[b, : 2 * n, : 2 * n] = torch.nn.functional.one_hot(full, C).float()
        edges[b, : 2 * n, : 2 * n][torch.eye(2 * n, dtype=torch.bool)] = 0  # no diagonal
        edges[b, n : 2 * n, :, :] = 0  # virtual rows/cols carry no clean input
        edges[b, :, n : 2 * n, :] = 0
        edges[b, n : 2 * n, : 2 * n, 0] = 1  # ... but a "no edge" class, as to_dense_adj gives
        edges[b, : 2 * n, n : 2 * n, 0] = 1
        edges[b, torch.arange(2 * n), torch.arange(2 * n)] = 0
        x0n[b, :n] = x
        x0n[b, n : 2 * n] = x
        bid[b, : 2 * n] = torch.cat([blk, blk])
        virt[b, n : 2 * n] = True
        bsize[b, : dec.num_blocks] = dec.block_size
        bdeg[b, : dec.num_blocks] = dec.block_degree
    return ParallelBatch(nodes, edges, x0n, x0e, bid, virt, bsize, bdeg)


def pack_positions(mask: Tensor):
    """Row-major positions of ``mask`` (B, ...) packed per graph: (b, flat, pos, pad, width)."""
    B = mask.size(0)
    flat = mask.reshape(B, -1)
    cnt = flat.sum(1)
    width = max(int(cnt.max()), 1)
    b, f = flat.nonzero(as_tuple=True)
    start = torch.cumsum(cnt, 0) - cnt
    pos = torch.arange(b.numel(), device=mask.device) - start[b]
    pad = torch.arange(width, device=mask.device).unsqueeze(0) >= cnt.unsqueeze(1)
    return b, f, pos, pad, width


def gather_packed(full: Tensor, packed, lead: int) -> Tensor:
    """(B, width, ...) values of ``full`` (B, *mask_shape, ...) at the packed positions."""
    b, f, pos, _, width = packed
    rest = full.shape[1 + lead :]
    out = full.new_zeros(full.size(0), width, *rest)
    out[b, pos] = full.reshape(full.size(0), -1, *rest)[b, f]
    return out


def scatter_packed(full: Tensor, packed, values: Tensor, lead: int) -> Tensor:
    """``full`` with the packed positions replaced by ``values`` (B, width, ...)."""
    b, f, pos, _, _ = packed
    rest = full.shape[1 + lead :]
    flat = full.reshape(full.size(0), -1, *rest).clone()
    flat[b, f] = values[b, pos].to(flat.dtype)
    return flat.view(full.shape)
