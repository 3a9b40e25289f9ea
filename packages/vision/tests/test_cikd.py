"""Controllable multi-task network with CIKD (``cikd``): slimmable-layer parity, the CIKD loss,
MAC counting and the width search, metric golden values, symmetry checks with negative
controls, a learning test, the reproduce wiring and the bad-input harness."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from invariance.core import make_config
from invariance.core.registry import get_method
from invariance.core.testing import fuzz_bad_inputs, fuzz_table, run_contract
from invariance.core.train import fit_recipe
from invariance.vision.cikd import (
    WIDTHS,
    SlimmableMTLNet,
    cikd_loss,
    controllability,
    count_macs,
    delta_mtl,
    hypervolume,
    kendall_tau,
    search_widths,
)
from invariance.vision.data.digits_mtl import make_digits_mtl
from invariance.vision.nn.slimmable import (
    SlimConv2d,
    SlimLinear,
    SwitchableBatchNorm2d,
    width_channels,
)
from invariance.vision.recipes.cikd import PREFERENCES, CIKDRecipe, _stage_error, cikd_checks


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def _net(**kw):
    return SlimmableMTLNet(channels=(4, 8, 8, 8), dec_channels=8, **kw)


# Golden values from the field's references, run on 2026-12-03 in a scratch venv (Python 3.11)
# by a script that imports them directly:
# * LibMTL 1.1.5 (PyPI `libmtl`, github.com/median-research-group/LibMTL, MIT)
#   `LibMTL/utils.py::count_improvement(base, new, weight)` with base = {cls: 0.81, seg: 0.62,
#   depth: 0.093}, new = {cls: 0.78, seg: 0.66, depth: 0.101}, weight = {cls: 1, seg: 1,
#   depth: 0} (1 = higher is better); utils.py loaded alone because LibMTL/__init__ imports
#   `torchvision.models.utils`, which modern torchvision lacks.
# * pymoo 0.6.1.5 `pymoo.indicators.hv.HV(ref_point=zeros(3))(-points)` (maximisation turned
#   into pymoo's minimisation by negating).
# * scipy 1.17.1 `scipy.stats.kendalltau(a, b).statistic` (tau-b, with ties).
LIBMTL_DELTA = -0.019514137793707705
HV_POINTS = [[0.5, 0.2, 0.9], [0.3, 0.7, 0.4], [0.8, 0.6, 0.1], [0.25, 0.25, 0.25], [0.6, 0.5, 0.5]]
HV_GOLDEN = 0.22900000000000004
HV_POINTS2 = [
    [0.637, 0.27, 0.041],
    [0.017, 0.813, 0.913],
    [0.607, 0.729, 0.544],
    [0.935, 0.816, 0.003],
    [0.857, 0.034, 0.73],
    [0.176, 0.863, 0.541],
    [0.3, 0.423, 0.028],
]
HV_GOLDEN2 = 0.26967994399999995
TAU_A = [0.0, 1 / 3, 1 / 3, 2 / 3, 1.0, 0.0, 2 / 3]
TAU_B = [0.10, 0.30, 0.25, 0.50, 0.70, 0.10, 0.50]
TAU_GOLDEN = 0.9733285267845753


def test_metric_golden_values():
    single = {"cls": 0.81, "seg": 0.62, "depth": 0.093}
    multi = {"cls": 0.78, "seg": 0.66, "depth": 0.101}
    assert abs(delta_mtl(multi, single, lower_is_better=("depth",)) - LIBMTL_DELTA) < 1e-12
    assert abs(hypervolume(HV_POINTS, [0, 0, 0]) - HV_GOLDEN) < 1e-12
    assert abs(hypervolume(HV_POINTS2, [0, 0, 0]) - HV_GOLDEN2) < 1e-12
    assert abs(kendall_tau(TAU_A, TAU_B) - TAU_GOLDEN) < 1e-12
    assert kendall_tau([1, 2, 3], [5, 5, 5]) == 0.0


@pytest.mark.parametrize("width", WIDTHS)
def test_slim_conv_equals_conv_with_sliced_weights(width):
    conv = SlimConv2d(8, 12, 3, padding=1)
    ref = nn.Conv2d(8, 12, 3, padding=1)
    ref.load_state_dict(conv.state_dict())
    c_in, c_out = width_channels(8, width), width_channels(12, width)
    x = torch.randn(2, c_in, 6, 6, generator=_g())
    y = conv(x, width)
    want = F.conv2d(x, conv.weight[:c_out, :c_in], conv.bias[:c_out], padding=1)
    assert y.shape[1] == c_out and (y - want).abs().max() < 1e-6
    if width == 1.0:
        assert (y - ref(x)).abs().max() < 1e-6
    lin = SlimLinear(8, 3)
    assert torch.allclose(
        lin(x.mean((2, 3))), F.linear(x.mean((2, 3)), lin.weight[:, :c_in], lin.bias)
    )


def test_switchable_bn_keeps_statistics_per_width():
    bn = SwitchableBatchNorm2d(8, WIDTHS)
    bn(torch.randn(4, 2, 3, 3, generator=_g()) + 5)
    assert float(bn.bns[0].running_mean.mean()) > 0.3
    assert float(bn.bns[-1].running_mean.abs().max()) == 0.0  # untouched


def test_cikd_loss_zero_at_full_config_nonnegative_and_teacher_detached():
    net = _net()
    x = torch.rand(3, 3, 16, 16, generator=_g())
    _, full = net(x)
    assert float(cikd_loss(full, full)) == 0.0
    _, slim = net(x, {"encoder": 0.5})
    loss = cikd_loss(slim, full)
    assert float(loss) > 0
    # the teacher gets no gradient: only the student path reaches the parameters
    teacher = [f.detach().requires_grad_(True) for f in full]
    cikd_loss(slim, teacher).backward()
    assert all(t.grad is None for t in teacher)


def test_macs_monotone_in_every_width_and_search_respects_budget():
    net = _net()
    full = count_macs(net, None, 16)
    for key in ("encoder", "cls", "seg", "depth"):
        vals = [count_macs(net, {key: w}, 16) for w in WIDTHS]
        assert vals == sorted(vals) and vals[0] < vals[-1], key
    assert count_macs(net, net.min_config(), 16) < full

    memo = {}

    def macs(c):
        k = tuple(sorted(c.items()))
        if k not in memo:
            memo[k] = count_macs(net, c, 16)
        return memo[k]

    for b in (0.2, 0.5, 0.8):
        for p in PREFERENCES:
            conf, ok = search_widths(macs, b * full, p)
            if ok:
                assert macs(conf) <= b * full
            # preference order respected by the decoder widths
            for s in p:
                for t in p:
                    if p[s] > p[t]:
                        assert conf[s] >= conf[t], (p, conf)
    # monotone in preferences: raising one task's preference never shrinks its decoder
    base = {"cls": 0.2, "seg": 0.4, "depth": 0.4}
    more = {"cls": 0.6, "seg": 0.2, "depth": 0.2}
    a, _ = search_widths(macs, 0.7 * full, base)
    b, _ = search_widths(macs, 0.7 * full, more)
    assert b["cls"] >= a["cls"]
    # nothing fits: the smallest configuration, flagged infeasible
    conf, ok = search_widths(macs, 1.0, base)
    assert not ok and conf["encoder"] == WIDTHS[0]
    # decoder-only control keeps the encoder at 1
    conf, _ = search_widths(macs, 0.9 * full, base, encoder_widths=(1.0,))
    assert conf["encoder"] == 1.0


def test_validated_search_is_best_feasible_and_covers_decoder_only():
    """With a validation score the search returns the best-scoring feasible configuration whose
    decoders respect the preference order; its candidates include decoder-only control's
    (so it can never score below it) and it can shrink decoders to afford the encoder."""

    def macs(c):  # the encoder dominates the cost
        return 10 * c["encoder"] + c["cls"] + c["seg"]

    def score(c):  # the encoder matters most, then the preferred decoder
        return 5 * c["encoder"] + 2 * c["cls"] + c["seg"]

    pref = {"cls": 0.8, "seg": 0.2}
    budget = 11.0
    conf, ok = search_widths(macs, budget, pref, score=score)
    assert ok and macs(conf) <= budget and conf["cls"] >= conf["seg"]
    grid = [
        {"encoder": e, "cls": a, "seg": b}
        for e in WIDTHS
        for a in WIDTHS
        for b in WIDTHS
        if a >= b and macs({"encoder": e, "cls": a, "seg": b}) <= budget
    ]
    assert score(conf) == max(score(c) for c in grid)
    dec_only, _ = search_widths(macs, budget, pref, score=score, encoder_widths=(1.0,))
    assert dec_only["encoder"] == 1.0 and score(conf) >= score(dec_only)
    greedy, _ = search_widths(macs, budget, pref)
    assert score(conf) >= score(greedy)
    assert conf["encoder"] == 1.0 and greedy["encoder"] < 1.0  # the greedy rule cannot trade
    # equal preferences get equal decoder widths
    eq, _ = search_widths(macs, budget, {"cls": 0.5, "seg": 0.5}, score=score)
    assert eq["cls"] == eq["seg"]


def test_controllability_and_hypervolume_basics():
    prefs = [{"a": 0.0, "b": 1.0}, {"a": 0.5, "b": 0.5}, {"a": 1.0, "b": 0.0}]
    perfs = [{"a": 0.1, "b": 0.9}, {"a": 0.5, "b": 0.5}, {"a": 0.9, "b": 0.2}]
    assert controllability(prefs, perfs) == 1.0
    assert controllability(prefs, perfs[::-1]) == -1.0
    assert hypervolume([[1, 1]], [0, 0]) == 1.0
    assert hypervolume([[1, 1], [0.5, 0.5]], [0, 0]) == 1.0  # dominated point adds nothing
    assert hypervolume([[1, 0.5], [0.5, 1]], [0, 0]) == 0.75


def test_cikd_checks_pass_with_negative_control():
    res = cikd_checks(_net().eval(), seed=2)
    assert any(r.negative_control for r in res)
    for r in res:
        assert r.passed, (r.name, r.error, r.detail)
        assert r.variation is not None and r.variation > 1e-3


def test_digits_mtl_targets():
    d = make_digits_mtl(6, seed=0, size=16)
    assert d["image"].shape == (6, 3, 16, 16) and d["mask"].shape == (6, 1, 16, 16)
    assert set(d["mask"].unique().tolist()) <= {0.0, 1.0} and float(d["mask"].mean()) > 0.02
    # the digit is nearer (smaller depth) than the background at the same distance
    assert float(d["depth"][d["mask"] > 0].mean()) < float(d["depth"][d["mask"] == 0].mean())


def test_cikd_lowers_slim_feature_error_vs_sandwich():
    """Learning test (seconds): with CIKD the smallest encoder's features match the full
    encoder's (relative error) better than after sandwich training alone."""
    r = CIKDRecipe()
    errs = {}
    x = make_digits_mtl(64, seed=5, split="test", size=16)["image"]
    for v in ("cikd", "sandwich"):
        cfg = make_config(r, variant=v, steps=40, n_train=128, beta=1.0)
        model, _ = fit_recipe(r, cfg, progress=False)
        errs[v] = _stage_error(model, x, model.min_config())
    assert errs["cikd"] < 0.85 * errs["sandwich"], errs


def test_cikd_reproduce_wiring(monkeypatch):
    import invariance.core.train as core_train

    calls = []

    def fake(recipe, cfg, arms, seeds, run=None, split="test"):
        calls.append((cfg, dict(arms), list(seeds)))
        row = {
            "hv": 0.1, "ctrl": 0.2, "feat_err": 0.3, "full_cls": 0.5, "full_seg": 0.5,
            "full_depth": 0.5, "decoder_only_floor": 0.6, "seconds": 1.0,
        }  # fmt: skip
        for b in cfg.budgets:
            row.update({f"hv_{b}": 0.1, f"ctrl_{b}": 0.2, f"feasible_{b}": 1.0})
        return {a: [{**row, "hv": 0.1 + 0.01 * s} for s in seeds] for a in arms}

    monkeypatch.setattr(core_train, "train_arms", fake)
    r = CIKDRecipe()
    for quick in (True, False):
        res = r.reproduce(make_config(r), None, quick=quick)
        assert res.seeds == [0, 1, 2] and len(res.method_values) == 3
        assert not res.not_showable and res.invariance_error is not None
        assert res.metric.startswith("controllability") and res.method_values == [0.2] * 3
        assert set(res.arms) == (set() if quick else {"sandwich"})
        hv = res.details["hypervolume (mean over the budgets both meet)"]
        assert ("static (best per budget)" in hv) != quick


def test_cikd_contract_and_config():
    run_contract(get_method("cikd"))
    from invariance.core.recipe import ConfigError

    with pytest.raises(ConfigError, match="image_size"):
        make_config(CIKDRecipe, image_size=18)
    with pytest.raises(ConfigError, match="variant"):
        make_config(CIKDRecipe, variant="nope")
    assert dataclasses.asdict(make_config(CIKDRecipe, "full"))["steps"] <= 400


_NET = _net().eval()
ENTRY_POINTS = {
    "SlimmableMTLNet.forward": (
        lambda x, config: _NET(x, config),
        {"x": torch.rand(2, 3, 8, 8, generator=_g()), "config": {"encoder": 0.5}},
        {"skip": ("config",)},
    ),
    "SlimmableMTLNet()": (
        SlimmableMTLNet,
        {"channels": (4, 8, 8, 8), "dec_channels": 8, "num_classes": 10},
        {"skip": ("num_classes",)},
    ),
    "SlimConv2d.forward": (
        SlimConv2d(4, 4, 3, padding=1),
        {"x": torch.rand(2, 4, 5, 5, generator=_g()), "width": 0.5},
        {},
    ),
    "SwitchableBatchNorm2d.forward": (
        SwitchableBatchNorm2d(4, WIDTHS).eval(),
        {"x": torch.rand(2, 2, 3, 3, generator=_g())},
        {},
    ),
    "cikd_loss": (
        lambda s0, t0: cikd_loss([s0], [t0]),
        {
            "s0": torch.rand(2, 2, 3, 3, generator=_g(1)),
            "t0": torch.rand(2, 4, 3, 3, generator=_g(2)),
        },
        {"aliases": {"s0": ["student"], "t0": ["teacher"]}},
    ),
    "count_macs": (count_macs, {"model": _NET, "config": None, "size": 8}, {}),
    "search_widths": (
        search_widths,
        {
            "macs": lambda c: 10 * c["encoder"] + c["cls"],
            "budget": 8.0,
            "preferences": {"cls": 0.5, "seg": 0.5},
        },
        {},
    ),
    "make_digits_mtl": (
        make_digits_mtl,
        {"n": 2, "seed": 0, "split": "test", "size": 8},
        {"skip": ("seed:negative",)},
    ),
    "width_channels": (width_channels, {"channels": 8, "width": 0.5}, {"skip": ("channels",)}),
}


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_cikd_bad_inputs(name):
    fn, kwargs, kw = ENTRY_POINTS[name]
    rep = fuzz_bad_inputs(fn, kwargs, name=name, **kw)
    assert rep.tried > 0
    assert rep.ok, "\n".join(rep.failures)


def test_cikd_bad_input_summary():
    reports = [
        fuzz_bad_inputs(fn, kw, name=n, **extra)
        for n, (fn, kw, extra) in sorted(ENTRY_POINTS.items())
    ]
    print()
    print(fuzz_table(reports))
    with pytest.raises(ValueError, match="config"):
        _NET(torch.rand(1, 3, 8, 8), {"encoder": 0.3})
    with pytest.raises(ValueError, match="config"):
        _NET(torch.rand(1, 3, 8, 8), {"nope": 1.0})
