import pytest
import torch
from torch_geometric.utils import homophily

from invariance.core.testing import with_package
from invariance.graph.data import (
    load_karate,
    make_csbm_mixture,
    make_mol_motif,
    make_spurious_motif,
    node_homophily,
)


def test_spurious_motif_ground_truth_and_shift():
    tr = make_spurious_motif(60, bias=0.9, split="train", seed=0)
    te = make_spurious_motif(30, bias=0.9, split="test", seed=0)
    again = make_spurious_motif(60, bias=0.9, split="train", seed=0)
    assert all(
        torch.equal(a.edge_index, b.edge_index) and torch.equal(a.x, b.x) for a, b in zip(tr, again)
    )
    n_edges = {0: 10, 1: 12, 2: 12}  # directed motif edges: cycle 5, house 6, crane 6
    for g in tr + te:
        assert int(g.node_mask.sum()) == 5
        assert int(g.edge_mask.sum()) == n_edges[int(g.y)]
        assert g.edge_mask.shape == (g.edge_index.size(1),)
    agree = sum(int(g.base) == int(g.y) for g in tr) / len(tr)
    assert agree > 0.75
    colour = sum(int(g.x[~g.node_mask, 1:].sum(0).argmax()) == int(g.y) for g in tr) / len(tr)
    assert colour > 0.75
    assert sum(g.num_nodes for g in te) / len(te) > sum(g.num_nodes for g in tr) / len(tr) + 3
    with pytest.raises(ValueError, match="split"):
        make_spurious_motif(3, split="dev")


def test_csbm_mixture_homophily_shift():
    d = make_csbm_mixture(300, seed=0)
    h = node_homophily(d.edge_index, d.y, d.num_nodes)
    assert torch.allclose(h.float(), d.node_hom, equal_nan=True)
    assert (
        abs(float(torch.nan_to_num(h).mean()) - homophily(d.edge_index, d.y, method="node")) < 1e-6
    )
    assert (
        float(d.node_hom[d.train_mask].nanmean()) > float(d.node_hom[d.test_mask].nanmean()) + 0.2
    )
    masks = d.train_mask.int() + d.val_mask.int() + d.test_mask.int()
    assert bool((masks == 1).all())
    assert torch.equal(make_csbm_mixture(300, seed=0).edge_index, d.edge_index)
    with pytest.raises(ValueError, match="h_hi"):
        make_csbm_mixture(100, h_hi=1.5)


def test_karate_offline():
    d = load_karate()
    assert d.num_nodes == 34 and int(d.train_mask.sum()) == 8


@with_package("rdkit")
def test_mol_motif_labels_and_rationale():
    from rdkit import Chem

    from invariance.graph.data.mol_motif import DEFAULT_SMARTS

    tr = make_mol_motif(split="train", seed=0, max_graphs=40)
    te = make_mol_motif(split="test", seed=0, max_graphs=20)
    pat = Chem.MolFromSmarts(DEFAULT_SMARTS)
    for g in tr + te:
        m = Chem.MolFromSmiles(g.smiles)
        assert bool(int(g.y)) == m.HasSubstructMatch(pat)
        atoms = {i for mt in m.GetSubstructMatches(pat) for i in mt}
        assert set(torch.nonzero(g.node_mask).flatten().tolist()) == atoms
        assert g.x.size(0) == m.GetNumAtoms()
    assert max(g.num_nodes for g in tr) <= 14 < min(g.num_nodes for g in te)
    full = make_mol_motif(split="train", seed=0, bias=0.8)
    ring = [bool(g.x[:, 9].any()) == bool(int(g.y)) for g in full]
    assert abs(sum(ring) / len(ring) - 0.8) < 0.03


@with_package("rdkit")
def test_mol_motif_tag_shortcut_biased_in_train_broken_in_test():
    """The tag shortcut agrees with the label at rate ``bias`` in train and ~chance on test; it
    sits on non-rationale atoms only, and leaves the molecules, features and masks unchanged."""
    tr = make_mol_motif(split="train", seed=0, bias=0.9, tag_shortcut=True)
    te = make_mol_motif(split="test", seed=0, bias=0.9, tag_shortcut=True)
    plain = make_mol_motif(split="train", seed=0, bias=0.9)
    assert len(tr) == len(plain) > 300 and len(te) > 300
    for g, p in zip(tr[:50], plain[:50]):
        assert g.smiles == p.smiles and torch.equal(g.node_mask, p.node_mask)
        assert g.x.shape == (p.num_nodes, 14) and torch.equal(g.x[:, :12], p.x)
        env = ~g.node_mask
        assert (g.x[env, 12 + int(g.tag)] == 1).all() and (g.x[env, 13 - int(g.tag)] == 0).all()
    agree_tr = sum(int(g.tag) == int(g.y) for g in tr) / len(tr)
    agree_te = sum(int(g.tag) == int(g.y) for g in te) / len(te)
    # 3 binomial standard deviations
    assert abs(agree_tr - 0.9) < 3 * (0.09 / len(tr)) ** 0.5, agree_tr
    assert abs(agree_te - 0.5) < 3 * (0.25 / len(te)) ** 0.5, agree_te


def test_drosophila_connectome_from_graspologic_wheel():
    """Real mixed-homophily graph read from the graspologic wheel's data files (optional
    dependency): counts and homophily as recorded in the spec (§0), homophily-biased split."""
    import importlib.util

    if importlib.util.find_spec("graspologic") is None:
        pytest.skip("graspologic (optional, ships the connectome CSVs) is not installed")
    from torch_geometric.utils import homophily

    from invariance.graph.data import load_drosophila_left

    d = load_drosophila_left(seed=0)
    assert d.num_nodes == 209 and d.edge_index.size(1) == 2 * 5559
    assert torch.bincount(d.y).tolist() == [101, 58, 29, 21]
    assert abs(homophily(d.edge_index, d.y) - 0.437) < 1e-3
    assert d.node_hom[d.train_mask].nanmean() > d.node_hom[d.test_mask].nanmean() + 0.1
    for m in (d.train_mask, d.test_mask):  # the per-class split keeps every cell type
        assert (torch.bincount(d.y[m], minlength=4) > 0).all()
    assert not (d.train_mask & d.test_mask).any() and d.x.shape == (209, 16)


def test_spurious_motif_dir_style_matches_dir_generator():
    """``style="dir"``: node-count ranges per base and split equal those of DIR's own generator
    (``Wuyxin/DIR-GNN`` ``spmotif_gen`` at cae0b9f, ``synthetic_structsim.build_graph`` with the
    notebook's size rules, run by us on 300 graphs per label and base: train tree 6-18, ladder
    21-27, wheel 20-24 nodes; test tree 20-369, ladder 65-103, wheel 65-84), and its crane has 7
    edges. The default ``style="cpu"`` keeps its smaller bases and 6-edge crane."""
    from invariance.graph.data import BASES

    dir_ranges = {
        ("train", "tree"): (6, 18),
        ("train", "ladder"): (21, 27),
        ("train", "wheel"): (20, 24),
        ("test", "tree"): (20, 369),
        ("test", "ladder"): (65, 103),
        ("test", "wheel"): (65, 84),
    }
    for split in ("train", "test"):
        gs = make_spurious_motif(150, bias=1 / 3, split=split, seed=0, style="dir")
        for b, name in enumerate(BASES):
            sizes = [g.num_nodes for g in gs if int(g.base) == b]
            lo, hi = dir_ranges[(split, name)]
            assert lo <= min(sizes) and max(sizes) <= hi, (split, name, min(sizes), max(sizes))
        if split == "train":  # the small trees (height 0-2, branching 2-3) do occur
            assert min(g.num_nodes for g in gs if int(g.base) == 0) <= 9
    crane = [g for g in make_spurious_motif(30, style="dir", seed=1) if int(g.y) == 2][0]
    assert int(crane.edge_mask.sum()) // 2 == 7
    crane_cpu = [g for g in make_spurious_motif(30, seed=1) if int(g.y) == 2][0]
    assert int(crane_cpu.edge_mask.sum()) // 2 == 6
    with pytest.raises(ValueError, match="style"):
        make_spurious_motif(3, style="large")
