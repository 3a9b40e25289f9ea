r"""CSBM-mixture: node classification with mixed neighbour patterns and a homophily shift.

A contextual stochastic block model [ours, spec §2.3] in which every node has its *own* target
homophily, so a graph mixes homophilic and heterophilic neighbourhoods (the setting of HEI,
arXiv 2408.09490). Features: ``x_v = mu_{y_v} + eps`` with class means ``mu_c`` random unit vectors
times ``sep`` and ``eps ~ N(0, I_d)``. Node ``v`` belongs to the homophilic group with probability
``p_hi`` (target homophily ``h_hi``) or to the heterophilic group (``h_lo``); it draws ``degree``
stubs, each to a random same-class node with probability ``h_v`` and otherwise to a random node of
another class. Edges are symmetrised and coalesced (no self loops).

Split (HGSS, heterophilic graph structure shift): nodes are ranked by realised node homophily plus a
little noise; train and validation nodes come from the homophilic end, test nodes are the rest, so
test nodes are mostly heterophilic. Ground truth: ``group`` (1 = homophilic target) and ``node_hom``
(realised node homophily, NaN for isolated nodes).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.utils import coalesce, remove_self_loops

from invariance.graph._checks import check_edge_index, check_index_tensor, check_int, check_real


def node_homophily(edge_index: Tensor, y: Tensor, num_nodes: int) -> Tensor:
    r"""Per-node homophily ``h_v = |{u in N(v): y_u = y_v}| / |N(v)|`` (NaN when ``N(v)`` is empty).

    Same formula as ``homophily.node_homophily_edge_idx`` of the official HEI code (neighbours =
    targets of edges whose source is ``v``, self loops removed); its mean over non-isolated nodes
    equals PyG's ``homophily(..., method="node")``.

    Shapes: ``edge_index`` (2, E), ``y`` (N,) -> (N,) float.
    """
    check_int("num_nodes", num_nodes, lo=1)
    check_edge_index(edge_index, num_nodes)
    check_index_tensor("y", y, ndim=1)
    if y.numel() != num_nodes:
        raise ValueError(f"y has {y.numel()} entries but num_nodes={num_nodes}")
    ei, _ = remove_self_loops(edge_index)
    deg = torch.zeros(num_nodes, dtype=torch.float64, device=y.device)
    deg.index_add_(0, ei[0], torch.ones(ei.size(1), dtype=torch.float64, device=y.device))
    same = (y[ei[0]] == y[ei[1]]).to(torch.float64)
    hs = torch.zeros(num_nodes, dtype=torch.float64, device=y.device).index_add_(0, ei[0], same)
    return hs / deg  # 0/0 -> NaN for isolated nodes, as in the official code


def make_csbm_mixture(
    n: int = 600,
    *,
    num_classes: int = 3,
    dim: int = 16,
    degree: int = 4,
    h_hi: float = 0.85,
    h_lo: float = 0.15,
    p_hi: float = 0.5,
    sep: float = 1.0,
    train_frac: float = 0.4,
    val_frac: float = 0.1,
    split_noise: float = 0.1,
    seed: int = 0,
) -> Data:
    r"""Generate one CSBM-mixture graph with a homophilic-train / heterophilic-test split.

    Args:
        n (int): number of nodes. (default: ``600``)
        num_classes (int): number of classes C >= 2. (default: ``3``)
        dim (int): feature dimension. (default: ``16``)
        degree (int): stubs drawn per node (mean degree about ``2 * degree``). (default: ``4``)
        h_hi (float), h_lo (float): target homophily of the two groups. (default: ``0.85, 0.15``)
        p_hi (float): fraction of homophilic nodes. (default: ``0.5``)
        sep (float): norm of the class means (feature signal). (default: ``1.0``)
        train_frac (float), val_frac (float): sizes of the biased train/val splits.
        split_noise (float): std of the noise added to the homophily ranking. (default: ``0.1``)
        seed (int): generator seed. (default: ``0``)

    Returns:
        ``Data`` with ``x`` (n, dim), ``edge_index``, ``y`` (n,), ``train_mask``/``val_mask``/
        ``test_mask`` (n,), ``group`` (n,), ``node_hom`` (n,).
    """
    check_int("num_classes", num_classes, lo=2)
    check_int("n", n, lo=3 * num_classes)
    check_int("dim", dim, lo=1)
    check_int("degree", degree, lo=1)
    check_int("seed", seed)
    for name, v in (
        ("h_hi", h_hi),
        ("h_lo", h_lo),
        ("p_hi", p_hi),
        ("train_frac", train_frac),
        ("val_frac", val_frac),
    ):
        check_real(name, v, lo=0.0, hi=1.0)
    check_real("sep", sep, lo=0.0)
    check_real("split_noise", split_noise, lo=0.0)
    if not (0 < train_frac and 0 <= val_frac and train_frac + val_frac < 1):
        raise ValueError(
            f"need 0 < train_frac, 0 <= val_frac, sum < 1; got {train_frac}, {val_frac}"
        )
    g = torch.Generator().manual_seed(int(seed))
    y = torch.arange(n) % num_classes
    y = y[torch.randperm(n, generator=g)]
    mu = torch.randn(num_classes, dim, generator=g)
    mu = sep * mu / mu.norm(dim=1, keepdim=True)
    x = mu[y] + torch.randn(n, dim, generator=g)
    group = (torch.rand(n, generator=g) < p_hi).long()
    h = torch.where(group == 1, torch.tensor(h_hi), torch.tensor(h_lo))

    by_class = [torch.nonzero(y == c).flatten() for c in range(num_classes)]
    not_class = [torch.nonzero(y != c).flatten() for c in range(num_classes)]
    src = torch.arange(n).repeat_interleave(degree)
    same = torch.rand(n * degree, generator=g) < h[src]
    u = torch.rand(n * degree, generator=g)
    dst = torch.empty_like(src)
    for c in range(num_classes):
        sel = y[src] == c
        pool_same, pool_diff = by_class[c], not_class[c]
        s_idx = sel & same
        d_idx = sel & ~same
        dst[s_idx] = pool_same[(u[s_idx] * len(pool_same)).long().clamp_max(len(pool_same) - 1)]
        dst[d_idx] = pool_diff[(u[d_idx] * len(pool_diff)).long().clamp_max(len(pool_diff) - 1)]
    ei = torch.stack([torch.cat([src, dst]), torch.cat([dst, src])])
    ei, _ = remove_self_loops(ei)
    ei = coalesce(ei, num_nodes=n)

    node_hom = node_homophily(ei, y, n).float()
    score = torch.nan_to_num(node_hom, nan=0.0) + split_noise * torch.randn(n, generator=g)
    order = torch.argsort(score, descending=True)
    n_tr, n_va = int(train_frac * n), int(val_frac * n)
    tr_va = order[: n_tr + n_va]
    tr_va = tr_va[torch.randperm(len(tr_va), generator=g)]
    masks = [torch.zeros(n, dtype=torch.bool) for _ in range(3)]
    masks[0][tr_va[:n_tr]] = True
    masks[1][tr_va[n_tr:]] = True
    masks[2][order[n_tr + n_va :]] = True
    return Data(
        x=x,
        edge_index=ei,
        y=y,
        train_mask=masks[0],
        val_mask=masks[1],
        test_mask=masks[2],
        group=group,
        node_hom=node_hom,
    )


def load_karate(*, seed: int = 0, train_per_class: int = 2) -> Data:
    r"""Zachary's karate club (PyG ``KarateClub``, embedded in the PyG wheel: no download).

    A small *real* graph with 4 community labels. Features are the one-hot node ids of PyG. A
    homophily-biased split as in :func:`make_csbm_mixture`: the ``train_per_class`` most homophilic
    nodes of each class train, the rest test. It is homophilic overall (edge homophily about 0.72),
    so it is a sanity/golden-value graph, not an HGSS benchmark.
    """
    from torch_geometric.datasets import KarateClub

    data = KarateClub()[0]
    n = data.num_nodes
    hom = node_homophily(data.edge_index, data.y, n).float()
    g = torch.Generator().manual_seed(int(seed))
    score = torch.nan_to_num(hom, nan=0.0) + 1e-3 * torch.rand(n, generator=g)
    train = torch.zeros(n, dtype=torch.bool)
    for c in range(int(data.y.max()) + 1):
        idx = torch.nonzero(data.y == c).flatten()
        top = idx[torch.argsort(score[idx], descending=True)[:train_per_class]]
        train[top] = True
    return Data(
        x=data.x,
        edge_index=data.edge_index,
        y=data.y,
        train_mask=train,
        val_mask=train.clone(),
        test_mask=~train,
        node_hom=hom,
    )
