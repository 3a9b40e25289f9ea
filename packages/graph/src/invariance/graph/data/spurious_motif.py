r"""Spurious-Motif: procedural graph classification with a known rationale (after DIR).

Rebuilt from the description of the generator in Wu et al., "Discovering Invariant Rationales for
Graph Neural Networks" (DIR, ICLR 2022, arXiv 2201.12872, official generator
``Wuyxin/DIR-GNN/spmotif_gen``). Nothing is copied from that code; shapes follow its description.

Each graph is a *base* (tree, ladder or wheel) with one *motif* (cycle, house or crane) attached by
a single edge. The label is the motif. In the training split the base equals the label with
probability ``bias`` (else one of the other two bases, uniformly), so the base is a spurious
correlate; in the validation/test split the base is uniform, and the test bases are larger (a size
shift, as in DIR). With ``colour_shortcut=True`` every base node also carries a 3-colour one-hot
that equals the label with probability ``bias`` in training and is uniform at test time: a *feature*
shortcut that, unlike the structural one, actually fools an ERM GIN at small scale (spec §1.4).
Motif nodes always get uniformly random colours.

Ground truth: ``node_mask`` (motif nodes) and ``edge_mask`` (edges with both ends in the motif; the
joining edge is not part of the rationale), plus ``base`` (0 tree, 1 ladder, 2 wheel).
Node order is shuffled per graph, so no position carries the label.

Differences from DIR's generator (``spmotif_gen`` of ``Wuyxin/DIR-GNN`` at cae0b9f, run by us on
300 graphs per label and base; ``style="dir"`` adopts its shapes and sizes, ``tests/
test_graph_data.py::test_spurious_motif_dir_style_matches_dir_generator``):

* **crane**: DIR's crane is a 5-cycle with two chords from one node (a fan, 7 edges); ours
  (``style="cpu"``, the default) is a square with one node joined to two opposite corners
  (:math:`K_{2,3}`, 6 edges). ``style="dir"`` uses DIR's.
* **tree branching and sizes**: DIR draws the tree's branching from {2, 3} and heights 0-2 (train)
  / 3-5 (test); ladders have 8-11 / 30-49 rungs, wheels 15-19 / 60-79 nodes. Mean nodes per graph
  (motif included), DIR's generator vs ours, train: tree 9.9 / 16.1, ladder 24.0 / 14.1, wheel
  21.9 / 13.3; test: tree 105.1 / 27.5, ladder 83.4 / 25.1, wheel 74.7 / 23.0. Our default
  keeps the bases small (binary trees of height 2-3 / 3-4, ladders of 3-6 / 8-12 rungs, wheels of
  5-10 / 14-20 rim nodes) so that a CPU grid runs in minutes; with ``style="dir"`` the size
  ranges equal DIR's (test graphs about 4x larger than the default's).
* DIR's node features are constant (no colour shortcut) and its node order is not shuffled (the
  motif nodes come last); ours shuffles, and adds the colour shortcut unless
  ``colour_shortcut=False``. Labels, the base-label coupling with probability ``bias`` (else one
  of the other two bases uniformly), uniform test/validation bases and the single joining edge to
  a random base node are as in DIR.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.data import Data

from invariance.graph._checks import check_int, check_real

MOTIFS = ("cycle", "house", "crane")
BASES = ("tree", "ladder", "wheel")

# All three motifs have 5 nodes, so motif size is not a cue.
_MOTIF_EDGES = {
    "cycle": [(0, 1), (1, 2), (2, 3), (3, 4), (4, 0)],
    # square 1-2-3-4 plus apex 0 joined to the adjacent pair (1, 4)
    "house": [(1, 2), (2, 3), (3, 4), (4, 1), (0, 1), (0, 4)],
    # square 1-2-3-4 plus node 0 joined to the opposite pair (1, 3): K_{2,3}
    "crane": [(1, 2), (2, 3), (3, 4), (4, 1), (0, 1), (0, 3)],
}

# DIR's crane: a 5-cycle 0-1-2-3-4 with the two chords (0, 2), (0, 3) (a fan, 7 edges)
_DIR_CRANE = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 0), (0, 2), (0, 3)]

# (train sizes, test sizes), inclusive: tree = balanced tree height, ladder = rungs, wheel = rim
# nodes. "cpu": our small bases (default); "dir": the ranges of DIR's generator (a wheel of n
# nodes has n - 1 rim nodes), with tree branching 2 or 3.
_BASE_SIZES = {
    "cpu": {"tree": ((2, 3), (3, 4)), "ladder": ((3, 6), (8, 12)), "wheel": ((5, 10), (14, 20))},
    "dir": {"tree": ((0, 2), (3, 5)), "ladder": ((8, 11), (30, 49)), "wheel": ((14, 18), (59, 78))},
}
STYLES = tuple(_BASE_SIZES)


def _base_edges(kind: str, size: int, branching: int = 2) -> tuple[int, list[tuple[int, int]]]:
    """Return ``(num_nodes, edges)`` of a base graph."""
    if kind == "tree":  # balanced tree of height `size` with `branching` children per node
        n = sum(branching**h for h in range(size + 1))
        return n, [((i - 1) // branching, i) for i in range(1, n)]
    if kind == "ladder":  # 2 x size grid
        e = [(i, i + 1) for i in range(size - 1)]
        e += [(size + i, size + i + 1) for i in range(size - 1)]
        e += [(i, size + i) for i in range(size)]
        return 2 * size, e
    if kind == "wheel":  # hub 0 + rim 1..size
        e = [(0, i) for i in range(1, size + 1)]
        e += [(i, i % size + 1) for i in range(1, size + 1)]
        return size + 1, e
    raise ValueError(f"unknown base {kind!r}; expected one of {BASES}")


def _randint(lo: int, hi: int, g: torch.Generator) -> int:
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


def _pick_biased(label: int, bias: float, g: torch.Generator) -> int:
    """Return `label` w.p. `bias`, else one of the two other classes uniformly."""
    if float(torch.rand((), generator=g)) < bias:
        return label
    others = [c for c in range(3) if c != label]
    return others[_randint(0, 1, g)]


def spurious_motif_graph(
    label: int,
    base: int,
    *,
    large: bool,
    colour: int | None,
    colour_shortcut: bool,
    generator: torch.Generator,
    style: str = "cpu",
) -> Data:
    """Build one Spurious-Motif graph (motif ``label`` attached to base ``base``)."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    kind = BASES[base]
    lo, hi = _BASE_SIZES[style][kind][1 if large else 0]
    branching = _randint(2, 3, generator) if style == "dir" and kind == "tree" else 2
    nb, base_e = _base_edges(kind, _randint(lo, hi, generator), branching)
    shape = (
        _DIR_CRANE if style == "dir" and MOTIFS[label] == "crane" else _MOTIF_EDGES[MOTIFS[label]]
    )
    motif_e = [(nb + a, nb + b) for a, b in shape]
    n = nb + 5
    anchor = _randint(0, nb - 1, generator)
    edges = base_e + motif_e + [(anchor, nb)]
    in_motif = torch.zeros(n, dtype=torch.bool)
    in_motif[nb:] = True

    feat_dim = 4 if colour_shortcut else 1
    x = torch.zeros(n, feat_dim)
    x[:, 0] = 1.0
    if colour_shortcut:
        base_col = colour if colour is not None else _randint(0, 2, generator)
        x[torch.arange(nb), 1 + base_col] = 1.0
        motif_col = torch.randint(0, 3, (5,), generator=generator)
        x[torch.arange(nb, n), 1 + motif_col] = 1.0

    # shuffle node order: new node i = old node perm[i]
    perm = torch.randperm(n, generator=generator)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(n)
    e = torch.tensor(edges, dtype=torch.long).t()
    e = inv[e]
    edge_index = torch.cat([e, e.flip(0)], dim=1)
    node_mask = in_motif[perm]
    edge_mask = node_mask[edge_index[0]] & node_mask[edge_index[1]]
    return Data(
        x=x[perm],
        edge_index=edge_index,
        edge_attr=torch.ones(edge_index.size(1), 1),
        y=torch.tensor([label]),
        node_mask=node_mask,
        edge_mask=edge_mask,
        base=torch.tensor([base]),
    )


def make_spurious_motif(
    n: int,
    *,
    bias: float = 0.7,
    split: str = "train",
    seed: int = 0,
    colour_shortcut: bool = True,
    style: str = "cpu",
) -> list[Data]:
    r"""Generate ``n`` Spurious-Motif graphs (balanced labels).

    Args:
        n (int): number of graphs.
        bias (float): probability that the base (and the base colour) equals the label in the
            training split; ``1/3`` is unbiased. (default: ``0.7``)
        split (str): ``"train"`` (biased, small bases), ``"val"`` (unbiased, small bases) or
            ``"test"`` (unbiased, larger bases). (default: ``"train"``)
        seed (int): seed of the generator; the output is a deterministic function of the arguments.
        colour_shortcut (bool): add the label-correlated base colour. (default: ``True``)
        style (str): ``"cpu"`` (small bases, our crane) or ``"dir"`` (DIR's crane, tree branching
            and base-size ranges; about 4x larger test graphs). (default: ``"cpu"``)

    Returns:
        list of PyG ``Data`` with ``x`` (N, 4) or (N, 1), ``edge_index``, ``edge_attr`` (E, 1),
        ``y`` (1,), ``node_mask`` (N,), ``edge_mask`` (E,), ``base`` (1,).
    """
    check_int("n", n, lo=1)
    check_real("bias", bias, lo=0.0, hi=1.0)
    check_int("seed", seed)
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    offset = {"train": 0, "val": 1, "test": 2}[split]
    g = torch.Generator().manual_seed(int(seed) * 7919 + offset)
    out = []
    for i in range(n):
        label = i % 3
        if split == "train":
            base = _pick_biased(label, bias, g)
            colour = _pick_biased(label, bias, g)
        else:
            base = _randint(0, 2, g)
            colour = _randint(0, 2, g)
        out.append(
            spurious_motif_graph(
                label,
                base,
                large=split == "test",
                colour=colour,
                colour_shortcut=colour_shortcut,
                generator=g,
                style=style,
            )
        )
    perm = torch.randperm(n, generator=g).tolist()
    return [out[i] for i in perm]


def motif_masks(data: Data) -> tuple[Tensor, Tensor]:
    """Return the ground-truth ``(node_mask, edge_mask)`` of a Spurious-Motif graph."""
    return data.node_mask, data.edge_mask
