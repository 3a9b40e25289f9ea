import json
import math
import pathlib

import pytest
import torch
from torch_geometric.data import Batch

from invariance.core.testing import fuzz_bad_inputs
from invariance.graph.data import make_spurious_motif
from invariance.graph.grea import GREA, grea_loss
from invariance.graph.igt import IGT
from invariance.graph.recipes.igt import alternate_phase, train_graph_model

GOLDEN = json.loads((pathlib.Path(__file__).parent / "grea_golden.json").read_text())


def test_grea_loss_matches_official_golden():
    """GREA's pooling, B^2 pairing, size regulariser and per-phase loss equal the values recorded
    by running the official liugangcode/GREA model (provenance in grea_golden.json)."""
    g = GOLDEN
    t = lambda k: torch.tensor(g[k], dtype=torch.float64)  # noqa: E731
    h, gate, y = t("h_node"), t("gate"), t("y")
    batch = torch.tensor(g["batch"])
    lin = torch.nn.Linear(h.size(1), 1).double()
    with torch.no_grad():
        lin.weight.copy_(t("predictor_weight"))
        lin.bias.copy_(t("predictor_bias"))
    out = grea_loss(
        h, h, gate, gate, batch, y, lin, g["gamma"], criterion=torch.nn.BCEWithLogitsLoss()
    )
    for ours, theirs in (
        ("h_r", "h_r"),
        ("h_e", "h_env"),
        ("pred_rem", "pred_rem"),
        ("pred_rep", "pred_rep"),
    ):
        torch.testing.assert_close(out[ours], t(theirs), atol=1e-5, rtol=1e-5)
    assert abs(float(out["reg"]) - g["loss_reg"]) < 1e-5
    pred_step = float(out["rationale"] + out["intervention"])
    assert abs(pred_step - g["loss_predictor_step"]) < 1e-5
    assert abs(pred_step + float(out["reg"]) - g["loss_separator_step"]) < 1e-5


def test_grea_alternate_phase_matches_official():
    assert [alternate_phase(e, (1, 4)) for e in range(8)] == GOLDEN["phase_path_1_4"]
    assert [alternate_phase(e, (2, 4)) for e in range(8)] == GOLDEN["phase_path_2_4"]


def _snapshot(params):
    return [p.detach().clone() for p in params]


def _changed(before, params):
    return [not torch.equal(b, p.detach()) for b, p in zip(before, params)]


def test_grea_alternate_schedule_freezes_the_other_player():
    """Epoch 0 updates only the separator (augmenter + gate), epoch 1 only encoder + predictor,
    as the official two-optimiser schedule does; joint training updates both."""
    graphs = make_spurious_motif(8, bias=0.9, seed=0)
    torch.manual_seed(0)
    model = GREA(4, 3, hidden=8, num_layers=2, virtual_node=False)
    groups = model.param_groups()
    sep0, pred0 = _snapshot(groups["separator"]), _snapshot(groups["predictor"])
    train_graph_model(model, graphs, epochs=1, batch_size=4, schedule="alternate")
    assert any(_changed(sep0, groups["separator"]))
    assert not any(_changed(pred0, groups["predictor"]))
    # a 2-epoch run: epoch 0 = separator, epoch 1 = predictor, so now the predictor moves too
    model2 = GREA(4, 3, hidden=8, num_layers=2, virtual_node=False)
    model2.load_state_dict(model.state_dict())
    g2 = model2.param_groups()
    p2 = _snapshot(g2["predictor"])
    train_graph_model(model2, graphs, epochs=2, batch_size=4, schedule="alternate")
    assert any(_changed(p2, g2["predictor"]))
    assert all(p.requires_grad for p in model2.parameters())  # restored after training
    # negative control: the joint schedule moves both players in one epoch
    model3 = GREA(4, 3, hidden=8, num_layers=2, virtual_node=False)
    model3.load_state_dict(model.state_dict())
    g3 = model3.param_groups()
    s3, p3 = _snapshot(g3["separator"]), _snapshot(g3["predictor"])
    train_graph_model(model3, graphs, epochs=1, batch_size=4, schedule="joint")
    assert any(_changed(s3, g3["separator"])) and any(_changed(p3, g3["predictor"]))


def test_igt_alternate_schedule_adversary_steps_slower():
    """IGT under the alternating schedule: the intervener has its own optimiser, stepped every
    ``adv_every``-th batch; with adv_every larger than the number of steps it never moves."""
    graphs = make_spurious_motif(8, bias=0.9, seed=0)
    torch.manual_seed(0)
    model = IGT(4, 3, hidden=8, num_layers=2, virtual_node=False)
    inter = model.param_groups()["intervener"]
    before = _snapshot(inter)
    train_graph_model(model, graphs, epochs=1, batch_size=4, schedule="alternate", adv_every=3)
    assert not any(_changed(before, inter))  # 2 steps < 3
    train_graph_model(model, graphs, epochs=2, batch_size=4, schedule="alternate", adv_every=2)
    assert any(_changed(before, inter))
    assert math.isfinite(float(model.loss(Batch.from_data_list(graphs))["loss"]))


# ---------------------------------------------------------------- bad inputs
# ``ENTRY_POINTS``: name -> (callable, one valid call's kwargs, fuzz options). Each is fuzzed here
# and collected by ``tests/test_graph_bad_inputs.py``'s package-wide summary.


def _entry_points() -> dict:
    torch.manual_seed(0)
    b = Batch.from_data_list(make_spurious_motif(4, split="test", seed=1))
    grea = GREA(4, 3, hidden=8, num_layers=2)

    def loss(x, edge_index, batch, y):
        return grea.loss(Batch(x=x, edge_index=edge_index, batch=batch, y=y))["loss"]

    kwargs = {"in_channels": 4, "num_classes": 3, "hidden": 8, "gamma": 0.4, "beta": 1.0}
    return {
        "GREA.loss": (
            loss,
            {"x": b.x, "edge_index": b.edge_index, "batch": b.batch, "y": b.y},
            {},
        ),
        "GREA()": (GREA, {**kwargs, "mask": "soft"}, {}),
    }


ENTRY_POINTS = _entry_points()


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_grea_bad_inputs(name):
    fn, kwargs, kw = ENTRY_POINTS[name]
    rep = fuzz_bad_inputs(fn, kwargs, name=name, **kw)
    assert rep.tried > 0
    assert rep.ok, "\n".join(rep.failures)
