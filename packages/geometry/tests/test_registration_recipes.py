"""The RoITr / PARE-Net recipes: configs reject bad values, pair sets are cached on disk and reused,
both matchers learn (their loss falls on a pair they are trained on), the recipes' declared checks
pass with their negative controls."""

import pytest
import torch

from invariance.core.recipe import ConfigError, make_config
from invariance.core.registry import get_method
from invariance.geometry.recipes import _registration as reg
from invariance.geometry.recipes.pare_net import PARENetConfig, build_pare
from invariance.geometry.recipes.roitr import RoITrConfig, build_roitr
from invariance.geometry.registration import make_pair


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_configs_reject_bad_values():
    with pytest.raises((ConfigError, ValueError), match="test_splits"):
        RoITrConfig(test_splits="normal,bogus")
    with pytest.raises((ConfigError, ValueError), match="pos_radius"):
        RoITrConfig(pos_radius=-1.0)
    with pytest.raises((ConfigError, ValueError), match="channels"):
        PARENetConfig(channels=(4, 4, 4))
    with pytest.raises((ConfigError, ValueError), match="widths"):
        RoITrConfig(widths=(6, 8, 8))
    assert RoITrConfig().splits() == ["normal", "low"]


def test_pair_sets_are_cached_on_disk_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("INVARIANCE_CACHE_DIR", str(tmp_path))
    reg._MEMO.clear()
    a = reg.pair_set(2, 5, n_points=64, split="normal", rotation="so3")
    files = list((tmp_path / "geometry-pairs").glob("*.pt"))
    assert len(files) == 1
    reg._MEMO.clear()
    b = reg.pair_set(2, 5, n_points=64, split="normal", rotation="so3")
    for p, q in zip(a, b):
        assert torch.equal(p.src, q.src) and torch.equal(p.R, q.R) and p.overlap == q.overlap
    fresh = make_pair(5 * 1_000_003 + 1, n_points=64, split="normal", rotation="so3")
    assert torch.equal(b[1].tgt, fresh.tgt)  # the cache holds exactly what make_pair makes
    assert reg.pair_set(2, 5, n_points=64, split="normal", rotation="so3") is b  # memoised


@pytest.mark.parametrize("name", ["roitr", "pare_net"])
def test_matchers_learn_a_pair(name):
    """A learning test of a few seconds: 25 Adam steps on one 128-point pair lower the loss (by
    > 5%)."""
    torch.manual_seed(0)
    p = make_pair(3, n_points=128, split="full")
    if name == "roitr":
        net = build_roitr(RoITrConfig(widths=(8, 16, 16), coarse_dim=16, fine_dim=16))
        loss = lambda: net.loss(p.src, p.src_normals, p.tgt, p.tgt_normals, p.R, p.t,  # noqa: E731
                                radius=0.15)["loss"]  # fmt: skip
    else:
        net = build_pare(PARENetConfig(channels=(4, 8, 8), out_channels=8, k=8))
        loss = lambda: net.loss(p.src, p.tgt, p.R, p.t, radius=0.15)["loss"]  # noqa: E731
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    first = float(loss().detach())
    for _ in range(25):
        opt.zero_grad()
        loss().backward()
        opt.step()
    last = sum(float(loss().detach()) for _ in range(2)) / 2
    assert last < 0.95 * first, (first, last)


@pytest.mark.parametrize("name", ["roitr", "pare_net"])
def test_recipe_checks_pass_and_have_a_negative_control(name):
    recipe = get_method(name).recipe()
    cfg = make_config(recipe, "tiny")
    torch.manual_seed(0)
    results = recipe.check(recipe.build(cfg), cfg)
    assert results and all(r.passed for r in results), [(r.name, r.error) for r in results]
    assert any(r.negative_control for r in results)


def test_controlled_hypothesis_sweep_recovers_clean_pairs_and_fails_on_random_ones():
    from invariance.geometry.recipes.pare_net import controlled_sweep

    torch.manual_seed(0)
    net = build_pare(PARENetConfig(channels=(4, 8, 8), out_channels=8, k=8)).eval()
    pairs = [make_pair(s, n_points=160, split="full", rotation="so3") for s in (1, 2)]
    kw = dict(n_corr=32, proposer=(1, 32), ransac_iters=(50,))
    clean = controlled_sweep(net, pairs, inlier_ratio=1.0, **kw)
    junk = controlled_sweep(net, pairs, inlier_ratio=0.0, **kw)  # negative control
    assert {(r["solver"], r["hypotheses"]) for r in clean} == {
        ("PARE proposer", 1), ("PARE proposer", 32), ("RANSAC", 50)
    }  # fmt: skip
    rec = {(r["solver"], r["hypotheses"]): r["recall"] for r in clean}
    assert rec[("RANSAC", 50)] == 1.0 and rec[("PARE proposer", 32)] == 1.0
    assert all(r["recall"] == 0.0 for r in junk)
    assert all(r["s_per_pair"] >= 0 for r in clean + junk)


def test_quick_proposer_vs_ransac_reports_per_seed_recall(tmp_path):
    """The quick headline's plumbing on a tiny setting: per-seed recall of the proposer and of
    RANSAC at the same budget on the same correspondences, RANSAC with 10x the samples as an arm,
    an invariance error of the trained model, seconds per solver."""
    from invariance.core.io import RunDir
    from invariance.geometry.recipes import pare_net as rp

    cfg = PARENetConfig(
        n_points=96, n_train=2, n_test=2, steps=2, test_splits="full", fpfh=False, n_seeds=2,
        channels=(4, 4, 8), out_channels=8, k=6, coarse_dim=8, fine_dim=8, patch_k=8,
        hypothesis_features="encoder",
    )  # fmt: skip
    res = rp.proposer_vs_ransac(cfg, RunDir(tmp_path))
    assert res.seeds == [0, 1] and len(res.method_values) == len(res.baseline_values) == 2
    assert all(0.0 <= v <= 1.0 for v in res.method_values + res.baseline_values)
    assert list(res.arms) == ["RANSAC 1000 samples"]
    assert res.invariance_error is not None and res.invariance_error < 1e-8
    assert "encoder features" in res.method and set(
        res.details["pose-solver seconds (mean over seeds)"]
    ) == {"PARE proposer 100", "RANSAC 100", "RANSAC 1000"}
    with pytest.raises((ConfigError, ValueError), match="hypothesis_features"):
        PARENetConfig(hypothesis_features="both")
