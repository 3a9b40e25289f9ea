"""PARD recipe checks: relabelling invariance of the training loss, in-block equivariance of the
denoiser and the exact no-leakage check of the causal block mask (each with a negative control)."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch_geometric.data import Data

from invariance.core import CheckResult
from invariance.core.groups import Permutation, permute_nodes
from invariance.core.testing import check_equivariant, check_not_invariant
from invariance.graph.generation import block_decomposition, block_sort
from invariance.graph.pard import PARD


def relabel_invariance_error(model: PARD, graph: Data, seed: int = 0) -> float:
    """|loss(G) - loss(pi G)| in float64 for a random relabelling ``pi`` at the same step and the
    same noise (mapped through the two block-sorted layouts): PARD's likelihood is invariant."""
    m = _float64_copy(model)
    g = torch.Generator().manual_seed(seed)
    n = int(graph.num_nodes)
    p = torch.randperm(n, generator=g)
    other = Data(edge_index=p[graph.edge_index], num_nodes=n)
    if getattr(graph, "x", None) is not None:
        other.x = torch.empty_like(graph.x)
        other.x[p] = graph.x
    if getattr(graph, "edge_attr", None) is not None:
        other.edge_attr = graph.edge_attr
    b1, b2 = m.batch([graph]), m.batch([other])
    N = b1.nodes.size(1)
    xtn = torch.multinomial(m.node_noise.float(), N, True, generator=g).view(1, N)
    xte = torch.multinomial(m.edge_noise.float(), N * N, True, generator=g).view(1, N, N)
    xte = torch.tril(xte[0], -1)
    xte = (xte + xte.t()).unsqueeze(0)
    o1 = block_sort(block_decomposition(graph.edge_index, n, m.max_hops).block_id)[0]
    _, pos2 = block_sort(block_decomposition(other.edge_index, n, m.max_hops).block_id)
    sigma = pos2[p[o1]]
    sig = torch.cat([sigma, sigma + n])
    xtn2, xte2 = torch.empty_like(xtn), torch.empty_like(xte)
    xtn2[0, sig] = xtn[0]
    xte2[0, sig.unsqueeze(1), sig.unsqueeze(0)] = xte[0]
    t = torch.tensor([1 + int(torch.randint(m.num_steps, (1,), generator=g))])
    with torch.no_grad():
        l1 = m.loss(b1, t, (xtn, xte))["diffusion"]
        l2 = m.loss(b2, t, (xtn2, xte2))["diffusion"]
    return float((l1 - l2).abs())


def relabel_error(model: PARD, dataset) -> float:
    """:func:`relabel_invariance_error` on the first graph within the model's sizes."""
    for d in dataset:
        try:
            return relabel_invariance_error(model, d)
        except ValueError:  # more blocks / a larger block degree than the training graphs
            continue
    return float("nan")


def _float64_copy(model: PARD) -> PARD:
    m = copy.deepcopy(model).double().eval()
    return m


def _in_block_perm(key: Tensor):
    """Turn a random permutation into one that only permutes nodes with equal ``key``."""

    def act(g: Tensor) -> Tensor:
        return g[torch.sort(key[g], stable=True).indices]

    return act


class _Denoiser(nn.Module):
    def __init__(self, net: nn.Module, block_degree: Tensor, t: Tensor) -> None:
        super().__init__()
        self.net, self.block_degree, self.t = net, block_degree, t

    def forward(self, nodes, edges, block_id, virtual):
        return self.net(nodes, edges, block_id.long(), virtual.bool(), self.block_degree, self.t)


def network_checks(model: PARD, graphs: list, num_steps: int) -> list[CheckResult]:
    """In-block equivariance of the denoiser (negative control: cross-block permutations) and
    the leakage checks, on ``graphs``."""
    b = model.batch(graphs)
    B, N = b.nodes.shape[:2]
    gen = torch.Generator().manual_seed(1)
    nodes = b.nodes + 0.3 * torch.rand(b.nodes.shape, generator=gen)  # vary the inputs
    edges = b.edges + 0.3 * torch.rand(b.edges.shape, generator=gen)
    edges = (edges + edges.transpose(1, 2)) / 2
    t = torch.tensor([max(1, num_steps // 2)])
    fn = _Denoiser(model.net, b.block_degree, t).eval()
    key = b.block_id[0] * 2 + b.virtual[0].long()
    inb = _in_block_perm(key)

    def nodes_act(g, x):
        return permute_nodes(x, inb(g), 1)

    def edges_act(g, x):
        return permute_nodes(permute_nodes(x, inb(g), 1), inb(g), 2)

    def any_nodes(g, x):
        return permute_nodes(x, g, 1)

    def any_edges(g, x):
        return permute_nodes(permute_nodes(x, g, 1), g, 2)

    inputs = (nodes, edges, b.block_id.double(), b.virtual.double())
    group = Permutation(dim=1, n=N)
    res = [
        check_equivariant(
            "denoiser equivariant to node permutations inside a block",
            fn,
            inputs,
            group,
            (nodes_act, edges_act, nodes_act, nodes_act),
            (nodes_act, edges_act),
            trials=2,
        ),
        check_not_invariant(
            "NEGATIVE CONTROL: permutations across blocks (block ids kept) change the outputs",
            fn,
            inputs,
            group,
            (any_nodes, any_edges, None, None),
            (any_nodes, any_edges),
            trials=2,
        ),
    ]
    res += leakage_checks(model, graphs)
    return res


def leakage_checks(model: PARD, graphs: list) -> list[CheckResult]:
    """Outputs on blocks <= k do not move when the inputs of blocks > k change (exactly); the
    same perturbation with the causal mask dropped does move them (negative control)."""
    b = model.batch(graphs)
    k = max(0, int(b.block_id.max()) // 2)
    later = b.block_id > k
    early = (b.block_id >= 0) & ~later
    gen = torch.Generator().manual_seed(2)
    nodes2 = torch.where(later.unsqueeze(-1), torch.rand(b.nodes.shape, generator=gen), b.nodes)
    pair = later.unsqueeze(1) | later.unsqueeze(2)
    noise = torch.rand(b.edges.shape, generator=gen)
    noise = (noise + noise.transpose(1, 2)) / 2
    edges2 = torch.where(pair.unsqueeze(-1), noise, b.edges)
    t = torch.full((b.num_graphs,), 1)
    e_early = early.unsqueeze(1) & early.unsqueeze(2)
    out = []
    for causal in (True, False):
        net = _float64_copy(model).net
        net.causal = causal
        with torch.no_grad():
            a = net(b.nodes.double(), b.edges.double(), b.block_id, b.virtual, b.block_degree, t)
            c = net(nodes2.double(), edges2.double(), b.block_id, b.virtual, b.block_degree, t)
        err = max(
            float((a[0] - c[0])[early].abs().max()), float((a[1] - c[1])[e_early].abs().max())
        )
        moved = float((a[0] - c[0])[later].abs().max())
        name = (
            "no leakage: logits of blocks <= k unchanged when blocks > k change"
            if causal
            else "NEGATIVE CONTROL: without the causal mask later blocks leak into earlier ones"
        )
        passed = err == 0.0 if causal else err > 1e-4
        out.append(
            CheckResult(
                name,
                err,
                0.0 if causal else 1e-4,
                passed,
                not causal,
                f"k={k}, later-block logits moved by {moved:.3g}",
                moved,
            )
        )
    return out
