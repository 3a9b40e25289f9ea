"""Bad-input contract of the graph package's public entry points (CONTRIBUTING.md, "Bad input").

Each entry point gets one valid call; ``fuzz_bad_inputs`` derives NaN/inf/empty/extra-dim/
fewer-dims/int-dtype tensors, negative/NaN/inf/wrong-type numbers and unknown strings from it and
requires a ``ValueError``/``TypeError`` naming the argument (or, for mutations that are valid
input, listed in ``accept``, a finite output). The shared layers and data are declared here; each
method's test file declares its own ``ENTRY_POINTS`` (IGT, GREA, HEI, PARD, the generation
toolkit). ``test_bad_input_summary`` prints the tried/handled table shown in the README: these
entry points plus the ones the method test files declare.
"""

from pathlib import Path

import pytest
import torch
from torch_geometric.data import Batch

from invariance.core.testing import bad_input_summary, fuzz_bad_inputs
from invariance.graph.data import make_csbm_mixture, make_spurious_motif, node_homophily
from invariance.graph.grea import GREA
from invariance.graph.hei import HEI
from invariance.graph.igt import IGT
from invariance.graph.nn.gin import GINVirtualNode
from invariance.graph.nn.rationale import rationale_auc, size_regulariser, topk_mask

torch.manual_seed(0)
_B = Batch.from_data_list(make_spurious_motif(4, split="test", seed=1))
_G = make_csbm_mixture(60, seed=0, dim=8)


def _entry_points() -> dict:
    torch.manual_seed(0)
    m = torch.rand(_B.num_nodes, 1) * 0.8 + 0.1
    return {
        "GINVirtualNode.forward": (
            GINVirtualNode(4, 8, num_layers=2),
            {"x": _B.x, "edge_index": _B.edge_index, "batch": _B.batch},
            {},
        ),
        "GINVirtualNode()": (
            GINVirtualNode,
            {"in_channels": 4, "hidden_channels": 8, "num_layers": 2, "dropout": 0.1},
            {},
        ),
        "size_regulariser": (
            size_regulariser,
            {"mask": m, "batch": _B.batch, "gamma": 0.4},
            {},
        ),
        "topk_mask": (topk_mask, {"mask": m, "batch": _B.batch, "ratio": 0.4}, {}),
        "rationale_auc": (
            rationale_auc,
            {"scores": torch.rand(20), "truth": torch.arange(20) % 2 == 0},
            {},
        ),
        "make_spurious_motif": (
            make_spurious_motif,
            {"n": 3, "bias": 0.7, "split": "train", "seed": 0},
            {"skip": ("seed",)},
        ),
        "make_csbm_mixture": (
            make_csbm_mixture,
            {"n": 60, "num_classes": 3, "dim": 4, "degree": 3, "h_hi": 0.8, "h_lo": 0.2, "seed": 0},
            {"skip": ("seed",)},
        ),
        "node_homophily": (
            node_homophily,
            {"edge_index": _G.edge_index, "y": _G.y, "num_nodes": _G.num_nodes},
            {},
        ),
    }


ENTRY_POINTS = _entry_points()


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_graph_entry_point_rejects_bad_inputs(name):
    fn, kwargs, kw = ENTRY_POINTS[name]
    rep = fuzz_bad_inputs(fn, kwargs, name=name, **kw)
    assert rep.tried > 0
    assert rep.ok, "\n".join(rep.failures)


def test_hei_loss_needs_two_training_nodes():
    """Standardising z over one training node divides by a NaN std (before: a NaN loss)."""
    hei = HEI(_G.num_nodes, 8, 3, hidden=8)
    d = _G.clone()
    d.train_mask = torch.zeros_like(d.train_mask)
    d.train_mask[3] = True
    with pytest.raises(ValueError, match="train_mask"):
        hei.loss(d)
    d.train_mask[4] = True  # two nodes: fine
    assert torch.isfinite(hei.loss(d)["loss"])


def test_single_graph_batch_through_batchnorm():
    """A training batch of one graph reaches BatchNorm over graphs (the encoder's virtual-node
    MLP) and over nodes; before: torch's "Expected more than 1 value per channel". Now a
    ValueError names ``batch``; eval mode (running statistics) accepts one graph."""
    one = Batch.from_data_list(make_spurious_motif(1, split="test", seed=0))
    torch.manual_seed(0)
    for model in (IGT(4, 3, hidden=8, virtual_node=True), GREA(4, 3, hidden=8)):
        model.train()
        with pytest.raises(ValueError, match="batch"):
            model.loss(one)
        model.eval()
        assert torch.isfinite(model(one)).all()
    gin = GINVirtualNode(4, 8, virtual_node=True).train()
    with pytest.raises(ValueError, match="batch"):
        gin(one.x, one.edge_index, one.batch)


def test_bad_input_summary():
    here = Path(__file__)
    reps = bad_input_summary(here.parent, extra=ENTRY_POINTS, exclude=(here.name,), markdown=True)
    names = {r.name for r in reps}
    assert {"IGT.loss", "GREA.loss", "HEI.loss", "PARD.loss", "block_decomposition"} <= names
