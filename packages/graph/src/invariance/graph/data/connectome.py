r"""The Drosophila larva left-hemisphere connectome shipped inside the ``graspologic`` wheel.

A real graph with a *mixture* of neighbour patterns, the setting of HEI (arXiv 2408.09490):
209 neurons, 4 cell types (K, P, O, I), directed synapse counts. Data: Eichler et al., "The
complete connectome of a learning and memory centre in an insect brain", Nature 2017, as packaged
by graspologic (MIT licence) in
``graspologic/datasets/drosophila/left_{adjacency,cell_labels}.csv``.

The CSV files are read straight from the installed package directory *without importing*
graspologic (its import pulls gensim, POT, hyppo, ...); graspologic is an optional dependency and
nothing is downloaded. Edges: an undirected edge wherever a synapse exists in either direction
(self loops removed). There are no node features, so ``x`` is a spectral embedding: the ``dim``
leading eigenvectors (by magnitude of eigenvalue) of the symmetrically normalised adjacency
[ours]. The split is homophily-biased as in :func:`make_csbm_mixture` but per class (within each
cell type, train/val from the homophilic end, test = the rest), so every cell type is in train
and test; with a global ranking ERM got 0-3 % test accuracy [ours].
"""

from __future__ import annotations

import importlib.util
import os

import torch
from torch_geometric.data import Data

from invariance.graph.data.csbm import node_homophily

CELL_TYPES = ("K", "P", "O", "I")


def _graspologic_dir() -> str:
    spec = importlib.util.find_spec("graspologic")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "load_drosophila_left needs the graspologic wheel for its data files "
            "(pip install graspologic); nothing is downloaded"
        )
    return list(spec.submodule_search_locations)[0]


def load_drosophila_left(
    *,
    dim: int = 16,
    train_frac: float = 0.4,
    val_frac: float = 0.1,
    split_noise: float = 0.1,
    seed: int = 0,
) -> Data:
    r"""Load the left Drosophila connectome as an undirected node-classification graph.

    Args:
        dim (int): size of the spectral node embedding ``x``. (default: ``16``)
        train_frac (float), val_frac (float): per-class fractions of nodes in train/val, taken
            from the homophilic end of the (noisy) node-homophily ranking. (default: ``0.4, 0.1``)
        split_noise (float): std of the noise added to the ranking. (default: ``0.1``)
        seed (int): seed of the split. (default: ``0``)

    Returns:
        ``Data`` with ``x`` (209, dim), ``edge_index``, ``edge_weight`` (synapse counts, summed over
        both directions), ``y`` (209,) in 0..3 (K, P, O, I), ``train_mask``/``val_mask``/
        ``test_mask``, ``node_hom``.
    """
    folder = os.path.join(_graspologic_dir(), "datasets", "drosophila")
    with open(os.path.join(folder, "left_adjacency.csv")) as fh:
        a = torch.tensor([[float(v) for v in line.split()] for line in fh if line.strip()])
    with open(os.path.join(folder, "left_cell_labels.csv")) as fh:
        labels = [line.strip() for line in fh if line.strip()]
    n = a.size(0)
    if a.shape != (n, n) or len(labels) != n:
        raise ValueError(
            f"unexpected connectome files: adjacency {tuple(a.shape)}, {len(labels)} labels"
        )
    y = torch.tensor([CELL_TYPES.index(lab) for lab in labels])
    w = a + a.t()
    w.fill_diagonal_(0.0)
    ei = (w > 0).nonzero().t().contiguous()
    # spectral embedding of D^-1/2 A D^-1/2 (binary, undirected)
    b = (w > 0).double()
    d = b.sum(1).clamp(min=1).rsqrt()
    evals, evecs = torch.linalg.eigh(d[:, None] * b * d[None, :])
    idx = evals.abs().argsort(descending=True)[:dim]
    vec = evecs[:, idx]
    vec = vec * torch.sign(vec.sum(0) + 1e-12)  # fix each eigenvector's sign
    x = (vec * n**0.5).float()

    node_hom = node_homophily(ei, y, n).float()
    g = torch.Generator().manual_seed(int(seed))
    score = torch.nan_to_num(node_hom, nan=0.0) + split_noise * torch.randn(n, generator=g)
    masks = [torch.zeros(n, dtype=torch.bool) for _ in range(3)]
    for c in range(len(CELL_TYPES)):  # per class, so every class is in train and test
        idx = torch.nonzero(y == c).flatten()
        order = idx[torch.argsort(score[idx], descending=True)]
        n_tr, n_va = max(1, int(train_frac * len(idx))), max(1, int(val_frac * len(idx)))
        tr_va = order[: n_tr + n_va][torch.randperm(n_tr + n_va, generator=g)]
        masks[0][tr_va[:n_tr]] = True
        masks[1][tr_va[n_tr:]] = True
        masks[2][order[n_tr + n_va :]] = True
    return Data(
        x=x,
        edge_index=ei,
        edge_weight=w[ei[0], ei[1]],
        y=y,
        train_mask=masks[0],
        val_mask=masks[1],
        test_mask=masks[2],
        node_hom=node_hom,
    )
