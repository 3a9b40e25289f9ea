"""PARD: permutation-invariant autoregressive diffusion for graph generation.

Paper: Lingxiao Zhao, Xueying Ding, Leman Akoglu, "Pard: Permutation-Invariant Autoregressive
Diffusion for Graph Generation", NeurIPS 2024, arXiv:2402.03687. Official code:
https://github.com/LingxiaoShawn/Pard (MIT licence, (c) 2024 Lingxiao Zhao), read at f0f8d98.

Mechanism. A graph is split into blocks by a unique partial order computed from the unlabelled
graph (peeling nodes of minimum packed walk-count key, reversed: block 0 is the dense core;
:mod:`invariance.graph.generation.blocks`). The model factorises ``p(G) = prod_k p(B_k | B_<k)``;
every factor is a shared discrete diffusion (USD3 kernel, marginal or uniform prior, cosine
schedule, VLB + CE; :mod:`invariance.graph.generation.diffusion`) whose denoiser is a
higher-order graph transformer (edge-biased attention + PPGN with a causal product;
:mod:`invariance.graph.nn`), conditioned on block id, block degree and step, with an
input-residual output decoder. All blocks
train in parallel on the doubled graph (real copy + virtual copy under the causal block mask).
A separate block-size model (same network type) predicts the next block's size (0 = stop) and
degree. Generation: sample the first block's size, predict its degree, denoise it from the prior in
``T`` steps, predict the next (size, degree), append, repeat. Because blocks are unordered sets
and the network is equivariant inside a block, the likelihood does not depend on node labels.

Tested properties (``tests/test_pard.py``, ``tests/test_generation.py``): block ids equivariant
under node permutation (exact, with a negative control); no leakage through the causal mask
(logits of blocks <= k unchanged when blocks > k change, exactly; dropping the mask leaks);
in-block permutation equivariance of the network (float64); the training loss identical for a
graph and a relabelling of it at a fixed step and (mapped) noise (float64, < 1e-9); diffusion
schedule / posteriors / loss, block decomposition, parallel layout, network forward and MMDs equal
to values recorded by running the official functions (also with the relative block-id edge
encoding); kernel rows sum to 1; a learning test.

Deviations: channel-last ``nn.Linear`` instead of 1x1 convolutions (same parameters); the step
embedding uses the step as a float (the official code casts the frequencies to the integer
step's dtype, which zeroes all but one frequency; golden parity is recorded with float steps);
blockwise time and the "batched sequential" variant are not implemented (the relative block-id
edge encoding is: ``relative_block_id=True``); the block-size model trains in the same optimiser
step as the diffusion model (separate networks, summed losses) instead of a separate run;
generation stops a graph at the model's ``max_nodes``; CPU only at small sizes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invariance.graph._checks import check_int, check_real
from invariance.graph.generation.blocks import (
    ParallelBatch,
    block_decomposition,
    causal_block_mask,
    gather_packed,
    graph_classes,
    pack_positions,
    parallel_blocks,
    scatter_packed,
    target_masks,
)
from invariance.graph.generation.diffusion import CategoricalDiffusion
from invariance.graph.nn.pard_layers import (
    BlockDegreeConditioning,
    BlockOutDecoder,
    NodeEdgeEncoder,
    TimestepConditioning,
    VirtualBlockOutDecoder,
    block_id_conditioning,
    condition_block_id,
    edge_conditioning,
)
from invariance.graph.nn.ppgn_transformer import PPGNTransformer


def edge_masks(block_id: Tensor, virtual: Tensor) -> tuple[Tensor, Tensor]:
    """``(edge_mask, causal)``: symmetric mask ``M | M^T`` and the causal block mask ``M``."""
    M = causal_block_mask(block_id, virtual)
    return M | M.transpose(-1, -2), M


class PARDNet(nn.Module):
    """The denoiser of one block: encoder, block-id / block-degree / step conditioning,
    :class:`PPGNTransformer`, :class:`VirtualBlockOutDecoder` (official
    ``AutoregressiveDiffusion`` network; module names match its state dict)."""

    def __init__(
        self,
        F_: int,
        C: int,
        hidden: int,
        edge_hidden: int,
        num_layers: int,
        heads: int,
        max_num_blocks: int,
        max_block_degree: int,
        norm: str = "ln",
        Tmax: int = 0,
        causal: bool = True,
        absolute_block_id: bool = True,
        relative_block_id: bool = False,
    ) -> None:
        super().__init__()
        self.input_encoder = NodeEdgeEncoder(F_, C, hidden, edge_hidden)
        self.input_conditioner = nn.ModuleList(
            [
                block_id_conditioning(hidden, max_num_blocks, absolute_block_id),
                BlockDegreeConditioning(hidden, max_block_degree),
                TimestepConditioning(hidden, hidden),
            ]
        )
        self.edge_conditioner = edge_conditioning(edge_hidden, relative_block_id)
        self.net = PPGNTransformer(hidden, edge_hidden, num_layers, heads, norm)
        self.out_decoder = VirtualBlockOutDecoder(hidden, edge_hidden, F_, C, norm, Tmax)
        self.causal = causal  # False = the leaking negative control (mask dropped)

    def forward(self, nodes, edges, block_id, virtual, block_degree, timestep):
        edge_mask, M = edge_masks(block_id, virtual)
        if not self.causal:
            valid = block_id >= 0
            M = valid.unsqueeze(-1) & valid.unsqueeze(-2)
            edge_mask = M
        node, edge = self.input_encoder(nodes, edges)
        node = condition_block_id(self.input_conditioner[0], node, block_id)
        node = self.input_conditioner[1](node, block_id, block_degree)
        node = self.input_conditioner[2](node, block_id, timestep)
        if self.edge_conditioner is not None:
            edge = self.edge_conditioner[0](edge, block_id, virtual)
        node, edge = self.net(node, edge, edge_mask, M)
        return self.out_decoder(node, edge, nodes, edges, block_id, virtual, timestep)


class BlockSizeModel(nn.Module):
    """Next block size / degree predictor (official ``PredictBlockProperties``)."""

    def __init__(
        self,
        F_: int,
        C: int,
        hidden: int,
        edge_hidden: int,
        num_layers: int,
        heads: int,
        max_num_blocks: int,
        max_block_size: int,
        max_block_degree: int,
        norm: str = "ln",
        absolute_block_id: bool = True,
        relative_block_id: bool = False,
    ):
        super().__init__()
        self.input_encoder = NodeEdgeEncoder(F_, C, hidden, edge_hidden)
        self.input_conditioner = nn.ModuleList(
            [block_id_conditioning(hidden, max_num_blocks, absolute_block_id)]
        )
        self.edge_conditioner = edge_conditioning(edge_hidden, relative_block_id)
        self.net = PPGNTransformer(hidden, edge_hidden, num_layers, heads, norm)
        self.out_decoder = BlockOutDecoder(
            hidden, edge_hidden, max_block_size, max_block_degree, norm
        )

    def representation(self, nodes, edges, block_id) -> Tensor:
        virtual = torch.zeros_like(block_id, dtype=torch.bool)
        edge_mask, M = edge_masks(block_id, virtual)
        node, edge = self.input_encoder(nodes, edges)
        node = condition_block_id(self.input_conditioner[0], node, block_id)
        if self.edge_conditioner is not None:
            edge = self.edge_conditioner[0](edge, block_id, virtual)
        node, edge = self.net(node, edge, edge_mask, M)
        return self.out_decoder.block_representation(node, edge, block_id, virtual)

    def loss(self, nodes, edges, block_id, block_size, block_degree) -> Tensor:
        """Sum of the three CEs (next size incl. stop, next degree, first degree) / #graphs."""
        rep = self.representation(nodes, edges, block_id)
        K = rep.size(1)
        bsize, bdeg = block_size[:, :K], block_degree[:, :K]
        mask = bsize > 0
        next_size = F.pad(bsize[:, 1:], (0, 1))
        next_deg = F.pad(bdeg[:, 1:], (0, 1))
        size_logit, deg_logit = self.out_decoder(rep, mask, next_size)
        first = self.out_decoder.first_degree(bsize[:, 0])
        loss = F.cross_entropy(size_logit[mask], next_size[mask], reduction="sum")
        loss = loss + F.cross_entropy(deg_logit[mask], next_deg[mask], reduction="sum")
        loss = loss + F.cross_entropy(first, bdeg[:, 0], reduction="sum")
        return loss / block_id.size(0)


def graph_statistics(
    graphs, max_hops: int, num_node_types: int = 1, num_edge_types: int = 1
) -> dict:
    """Training-set statistics PARD needs: node / edge class marginals (real nodes, ordered pairs;
    virtual class 0), first-block size pmf, the largest block count, block size and degree."""
    if not isinstance(graphs, (list, tuple)) or not graphs:
        raise ValueError("graphs must be a non-empty list of PyG Data graphs")
    F_, C = num_node_types + 1, num_edge_types + 2
    nodes, edges = torch.zeros(F_), torch.zeros(C)
    first, blocks, size, deg, n_max = [], 0, 0, 0, 0
    for g in graphs:
        x, adj = graph_classes(g, num_node_types, num_edge_types)
        n = x.numel()
        nodes += torch.bincount(x, minlength=F_).float()
        off = ~torch.eye(n, dtype=torch.bool)
        edges += torch.bincount(adj[off], minlength=C).float()
        dec = block_decomposition(g.edge_index, n, max_hops)
        first.append(int(dec.block_size[0]))
        blocks, n_max = max(blocks, dec.num_blocks), max(n_max, n)
        size, deg = max(size, int(dec.block_size.max())), max(deg, int(dec.block_degree.max()))
    init = torch.bincount(torch.tensor(first), minlength=size + 1).float()
    return {
        "node_marginal": nodes / nodes.sum(),
        "edge_marginal": edges / edges.sum(),
        "init_size": init / init.sum(),
        "max_num_blocks": blocks,
        "max_block_size": size + 1,
        "max_block_degree": deg + 1,
        "max_nodes": n_max,
    }


class PARD(nn.Module):
    """PARD generator: block diffusion model + block-size model.

    Build it with :meth:`from_graphs` (sizes and marginals from the training graphs, PyG ``Data``
    with optional integer ``x`` node types and ``edge_attr`` bond types). ``loss(graphs)`` is the
    parallel training loss (diffusion VLB + ``ce_coeff`` CE, plus the block-size model's CEs, per
    graph); ``generate(n)`` samples ``n`` graphs block by block (``(node types, edge class
    matrix)`` pairs). ``max_hops = 0`` is one-shot diffusion (a single block).
    ``absolute_block_id`` / ``relative_block_id`` select the block-id conditioning of both networks
    (official ``use_absolute_blockid`` / ``use_relative_blockid``: an absolute per-node embedding
    and / or the relative edge encoding ``1 / (|b_i - b_j| + 1)``)."""

    def __init__(
        self,
        stats: dict,
        num_node_types: int = 1,
        num_edge_types: int = 1,
        *,
        max_hops: int = 3,
        hidden: int = 32,
        edge_hidden: int = 16,
        num_layers: int = 2,
        heads: int = 4,
        norm: str = "ln",
        num_steps: int = 20,
        ce_coeff: float = 0.1,
        uniform_noise: bool = False,
        input_residual: bool = True,
        causal: bool = True,
        absolute_block_id: bool = True,
        relative_block_id: bool = False,
    ):
        super().__init__()
        self.num_node_types = check_int("num_node_types", num_node_types, lo=1)
        self.num_edge_types = check_int("num_edge_types", num_edge_types, lo=1)
        self.max_hops = check_int("max_hops", max_hops, lo=0)
        for k, lo in (
            ("hidden", 1),
            ("edge_hidden", 1),
            ("num_layers", 1),
            ("heads", 1),
            ("num_steps", 1),
        ):
            check_int(k, locals()[k], lo=lo)
        if hidden % heads:
            raise ValueError(f"heads={heads} must divide hidden={hidden}")
        if norm not in ("ln", "bn"):
            raise ValueError(f"norm must be 'ln' or 'bn', got {norm!r}")
        self.ce_coeff = check_real("ce_coeff", ce_coeff, lo=0.0)
        flags = (
            "uniform_noise",
            "input_residual",
            "causal",
            "absolute_block_id",
            "relative_block_id",
        )
        for k in flags:
            if not isinstance(locals()[k], bool):
                raise TypeError(f"{k} must be a bool, got {type(locals()[k]).__name__}")
        self.num_steps = num_steps
        F_, C = num_node_types + 1, num_edge_types + 2
        self.F, self.C = F_, C
        self.max_num_blocks = int(stats["max_num_blocks"])
        self.max_nodes = int(stats["max_nodes"])
        nb = self.max_num_blocks + 3  # the official tolerance for nn.Embedding
        self.net = PARDNet(
            F_,
            C,
            hidden,
            edge_hidden,
            num_layers,
            heads,
            nb,
            int(stats["max_block_degree"]),
            norm,
            num_steps if input_residual else 0,
            causal,
            bool(absolute_block_id),
            bool(relative_block_id),
        )
        self.block_model = BlockSizeModel(
            F_,
            C,
            hidden,
            edge_hidden,
            num_layers,
            heads,
            nb,
            int(stats["max_block_size"]),
            int(stats["max_block_degree"]),
            norm,
            bool(absolute_block_id),
            bool(relative_block_id),
        )
        node_m, edge_m = stats["node_marginal"].float(), stats["edge_marginal"].float()
        if uniform_noise:
            node_m, edge_m = torch.full((F_,), 1.0 / F_), torch.full((C,), 1.0 / C)
        self.register_buffer("node_noise", node_m)
        self.register_buffer("edge_noise", edge_m)
        self.register_buffer("init_size", stats["init_size"].float())

    @classmethod
    def from_graphs(
        cls, graphs, num_node_types: int = 1, num_edge_types: int = 1, *, max_hops: int = 3, **kw
    ) -> PARD:
        stats = graph_statistics(graphs, max_hops, num_node_types, num_edge_types)
        return cls(stats, num_node_types, num_edge_types, max_hops=max_hops, **kw)

    @property
    def node_diffusion(self) -> CategoricalDiffusion:
        return CategoricalDiffusion(self.num_steps, self.node_noise)

    @property
    def edge_diffusion(self) -> CategoricalDiffusion:
        return CategoricalDiffusion(self.num_steps, self.edge_noise)

    def batch(self, graphs, cache: dict | None = None) -> ParallelBatch:
        """The doubled, block-sorted dense batch of ``graphs`` (``cache``: see
        :func:`~invariance.graph.generation.blocks.parallel_blocks`)."""
        return parallel_blocks(
            graphs, self.max_hops, self.num_node_types, self.num_edge_types, self.max_nodes, cache
        )

    def _check_fits(self, b: ParallelBatch) -> None:
        """Graphs with more blocks, larger blocks or block degrees than the model was sized for
        (by :meth:`from_graphs`) cannot be scored: say so instead of an embedding index error."""
        dec = self.block_model.out_decoder
        deg_emb = self.net.input_conditioner[1].block_degree_embedding
        limits = (
            ("blocks", b.block_size.size(1), self.max_num_blocks + 3),
            ("block size", int(b.block_size.max()) + 1, dec.block_size_encoder.num_embeddings),
            ("block degree", int(b.block_degree.max()) + 1, deg_emb.num_embeddings),
        )
        for what, got, cap in limits:
            if got > cap:
                raise ValueError(f"graphs exceed the model's {what} limit ({got - 1} >= {cap})")

    def loss(
        self, graphs, t: Tensor | None = None, noise=None, generator=None, with_block: bool = True
    ) -> dict[str, Tensor]:
        """Parallel training loss of a list of graphs (or a :class:`ParallelBatch`).

        ``t`` (B,) fixes the steps; ``noise = (x_t nodes (B, N), x_t edges (B, N, N))`` fixes the
        noisy classes on the doubled layout (read at the target positions); ``with_block=False``
        leaves out the block-size model (its loss is then 0)."""
        b = graphs if isinstance(graphs, ParallelBatch) else self.batch(graphs)
        self._check_fits(b)
        dtype = self.node_noise.dtype
        B, T = b.num_graphs, self.num_steps
        tn, te = target_masks(b.block_id, b.virtual)
        pn, pe = pack_positions(tn), pack_positions(te)
        x0n, x0e = gather_packed(b.x0_nodes, pn, 1), gather_packed(b.x0_edges, pe, 2)
        if t is None:
            t = torch.randint(1, T + 1, (B,), generator=generator)
        elif not isinstance(t, Tensor) or t.shape != (B,) or int(t.min()) < 1 or int(t.max()) > T:
            raise ValueError(f"t must be a tensor of {B} steps in [1, {T}]")
        nd, ed = self.node_diffusion, self.edge_diffusion
        if noise is None:
            xtn = nd.q_t0_sample(x0n, t, keep=pn[3], generator=generator)
            xte = ed.q_t0_sample(x0e, t, keep=pe[3], generator=generator)
        else:
            xtn = torch.where(pn[3], x0n, gather_packed(noise[0], pn, 1))
            xte = torch.where(pe[3], x0e, gather_packed(noise[1], pe, 2))
        nodes = scatter_packed(b.nodes.to(dtype), pn, F.one_hot(xtn, self.F), 1)
        oh = F.one_hot(xte, self.C)
        edges = scatter_packed(b.edges.to(dtype), pe, oh, 2)
        edges = scatter_packed(edges.transpose(1, 2), pe, oh, 2).transpose(1, 2)
        ln, le = self.net(nodes, edges, b.block_id, b.virtual, b.block_degree, t)
        vn, cn = nd.loss_terms(gather_packed(ln, pn, 1), xtn, x0n, t, keep=pn[3])
        ve, ce = ed.loss_terms(gather_packed(le, pe, 2), xte, x0e, t, keep=pe[3])
        diff = ((vn + ve).sum() + self.ce_coeff * (cn + ce).sum()) / B
        half = b.nodes.size(1) // 2
        real_id = torch.where(b.virtual, torch.full_like(b.block_id, -1), b.block_id)[:, :half]
        block = diff.new_zeros(())
        if with_block:
            block = self.block_model.loss(
                b.nodes[:, :half].to(dtype),
                b.edges[:, :half, :half].to(dtype),
                real_id,
                b.block_size,
                b.block_degree,
            )
        return {
            "loss": diff + block,
            "diffusion": diff,
            "vlb": (vn + ve).mean(),
            "ce": (cn + ce).mean(),
            "block": block,
        }

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def _denoise_last_block(self, nodes, edges, block_id, virtual, block_degree, generator):
        tn, te = target_masks(block_id, virtual)
        pn, pe = pack_positions(tn), pack_positions(te)
        B, T = nodes.size(0), self.num_steps
        nd, ed = self.node_diffusion, self.edge_diffusion
        xtn = torch.multinomial(self.node_noise, B * pn[4], True, generator=generator).view(B, -1)
        xte = torch.multinomial(self.edge_noise, B * pe[4], True, generator=generator).view(B, -1)
        for step in range(T, 0, -1):
            t = torch.full((B,), step)
            nodes = scatter_packed(nodes, pn, F.one_hot(xtn, self.F), 1)
            oh = F.one_hot(xte, self.C)
            edges = scatter_packed(edges, pe, oh, 2)
            edges = scatter_packed(edges.transpose(1, 2), pe, oh, 2).transpose(1, 2)
            ln, le = self.net(nodes, edges, block_id, virtual, block_degree, t)
            ln, le = gather_packed(ln, pn, 1), gather_packed(le, pe, 2)
            if step == 1:  # the last step may not produce the virtual class
                ln, le = ln.clone(), le.clone()
                ln[..., -1], le[..., -1] = float("-inf"), float("-inf")
            xtn = nd.sample_step(ln.softmax(-1), xtn, t, t - 1, generator)
            xte = ed.sample_step(le.softmax(-1), xte, t, t - 1, generator)
        nodes = scatter_packed(nodes, pn, F.one_hot(xtn, self.F), 1)
        oh = F.one_hot(xte, self.C)
        edges = scatter_packed(edges, pe, oh, 2)
        return nodes, scatter_packed(edges.transpose(1, 2), pe, oh, 2).transpose(1, 2)

    @torch.no_grad()
    def generate(self, num_graphs: int, generator: torch.Generator | None = None) -> list:
        """Sample ``num_graphs`` graphs; each is ``(node types (n,), edge classes (n, n))`` with
        edge class 0 = no edge and ``1 + type`` = an edge of that type."""
        B = check_int("num_graphs", num_graphs, lo=1)
        was = self.training
        self.eval()
        dtype = self.node_noise.dtype
        size = torch.multinomial(self.init_size, B, True, generator=generator)
        first = self.block_model.out_decoder.first_degree(size)
        deg = torch.multinomial(first.softmax(-1).float(), 1, generator=generator).view(B)
        nodes = torch.zeros(B, 0, self.F, dtype=dtype)
        edges = torch.zeros(B, 0, 0, self.C, dtype=dtype)
        block_id = torch.zeros(B, 0, dtype=torch.long)
        sizes, degs = size.view(B, 1), deg.view(B, 1)
        done = size == 0
        for k in range(self.max_num_blocks):
            n_old = (block_id >= 0).sum(1)
            n_new = n_old + torch.where(done, 0, sizes[:, -1])
            N = int(n_new.max())
            pad = N - block_id.size(1)
            block_id = F.pad(block_id, (0, pad), value=-1)
            ar = torch.arange(N).unsqueeze(0)
            fresh = (ar >= n_old.unsqueeze(1)) & (ar < n_new.unsqueeze(1))
            block_id[fresh] = k
            nodes = F.pad(nodes, (0, 0, 0, pad))
            edges = F.pad(edges, (0, 0, 0, pad, 0, pad))
            if fresh.any():
                nodes, edges = self._denoise_last_block(
                    nodes, edges, block_id, fresh, degs, generator
                )
            if k == self.max_num_blocks - 1:
                break
            rep = self.block_model.representation(nodes, edges, block_id)
            last = (rep.size(1) - 1) * torch.ones(B, dtype=torch.long)
            mask = torch.ones(B, rep.size(1), dtype=torch.bool)
            ar_b = torch.arange(B)
            dec = self.block_model.out_decoder
            s_logit = dec.block_size_out(rep, mask)[ar_b, last]
            nxt = torch.multinomial(s_logit.softmax(-1).float(), 1, generator=generator).view(B)
            d_logit = dec.block_degree_out(rep[ar_b, last] + dec.block_size_encoder(nxt))
            nd_ = torch.multinomial(d_logit.softmax(-1).float(), 1, generator=generator).view(B)
            done = done | (nxt == 0) | (n_new + nxt > self.max_nodes)
            if bool(done.all()):
                break
            sizes = torch.cat([sizes, torch.where(done, 0, nxt).view(B, 1)], 1)
            degs = torch.cat([degs, torch.where(done, 0, nd_).view(B, 1)], 1)
        self.train(was)
        out = []
        for i in range(B):
            keep = block_id[i] >= 0
            x = nodes[i][keep].argmax(-1)
            adj = edges[i][keep][:, keep].argmax(-1)
            adj.fill_diagonal_(0)
            out.append((x, adj))
        return out


def official_state_to_ours(state: dict) -> dict:
    """Map an official PARD state dict (1x1 convolutions) onto ours (``nn.Linear``): names are
    kept, ``(out, in, 1[, 1])`` weights become ``(out, in)``."""
    return {
        k: (v.reshape(v.shape[0], v.shape[1]) if v.dim() in (3, 4) else v) for k, v in state.items()
    }
