"""LisGAN: golden values from the official code, exact properties of the gradient penalty, the
soul-sample losses, the cascade selection and the metrics, a learning test and bad inputs.

Golden values (``golden_lisgan.json``) were recorded by running ``pairwise_distances``,
``calc_gradient_penalty`` and the soul-loss lines of ``lisgan.py`` and the cascade ranking lines of
``classifier2.py`` from https://github.com/lijin118/LisGAN at commit
4484acb073ce886050af0292ba982acefc8d266e in a scratch venv (torch 2.14.1, scipy, CPU); the JSON's
``provenance`` says how.
"""

import inspect
import json
import math
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from invariance.core import groups as G
from invariance.core.testing import (
    assert_invariant,
    assert_not_invariant,
    fuzz_bad_inputs,
)
from invariance.core.train import fit_recipe
from invariance.vision.data.zsl_features import make_synth_zsl
from invariance.vision.lisgan import (
    FeatureCritic,
    FeatureGenerator,
    gradient_penalty,
    harmonic_mean,
    pairwise_sq_distances,
    per_class_accuracy,
    select_confident,
    soul_class_loss,
    soul_sample_loss,
    soul_samples,
)
from invariance.vision.recipes.lisgan import LisGANConfig, LisGANRecipe, cascade_predict

GOLD = json.loads((Path(__file__).parent / "golden_lisgan.json").read_text())
T = torch.tensor


def test_lisgan_pairwise_distances_match_official():
    d = GOLD["pairwise"]
    torch.testing.assert_close(pairwise_sq_distances(T(d["x"]), T(d["y"])), T(d["d"]))


def test_lisgan_gradient_penalty_matches_official():
    d = GOLD["gp"]

    class Critic(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1, self.l2 = nn.Linear(7, 5), nn.Linear(5, 1)

        def forward(self, x, a):
            return self.l2(nn.functional.leaky_relu(self.l1(torch.cat([x, a], 1)), 0.2))

    c = Critic()
    c.load_state_dict({k: T(v) for k, v in d["state"].items()})
    gp = gradient_penalty(c, T(d["real"]), T(d["fake"]), T(d["att"]), lam=10.0, alpha=T(d["alpha"]))
    assert abs(float(gp) - d["value"]) < 1e-5


def test_lisgan_soul_losses_match_official():
    d = GOLD["soul"]
    souls, k = T(d["souls"]), d["K"]
    l2 = soul_sample_loss(T(d["fake"]), T(d["label"]), souls, k)
    means = T(d["seen_fake"]).reshape(souls.shape[0] // k, d["L"], -1).mean(1)
    l1 = soul_class_loss(means, souls, k)
    assert abs(float(l2) - d["loss2_soul_sample"]) < 1e-6
    assert abs(float(l1) - d["loss1_soul_class"]) < 1e-6


def test_lisgan_official_cascade_ranking_and_ours():
    d = GOLD["cascade"]
    lp = T(d["log_probs"])
    easy, hard = select_confident(lp, 0.5, confidence="official")
    assert torch.cat([easy, hard]).tolist() == d["official_order"]
    ours, _ = select_confident(lp, 0.5)
    ent = -(lp.exp() * lp).sum(1)
    assert set(ours.tolist()) == set(ent.argsort()[:6].tolist())  # the most confident half
    # the official ranking does not pick the most confident samples
    assert float(lp.exp().max(1).values[easy].mean()) < float(lp.exp().max(1).values[ours].mean())


def test_lisgan_gradient_penalty_of_a_linear_critic_is_analytic():
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(6, 1)
    critic = lambda x, a: lin(torch.cat([x, a], 1))  # noqa: E731
    w = lin.weight[0, :4]
    for s in range(3):
        real, fake = torch.rand(2, 8, 4, generator=g)
        gp = gradient_penalty(
            critic,
            real,
            fake,
            torch.rand(8, 2, generator=g),
            lam=10.0,
            generator=torch.Generator().manual_seed(s),
        )
        assert abs(float(gp) - 10 * (float(w.norm()) - 1) ** 2) < 1e-5


def test_lisgan_soul_losses_zero_on_souls_nonnegative_and_symmetric():
    g = torch.Generator().manual_seed(0)
    n_c, k, dim = 3, 3, 5
    souls = torch.rand(n_c * k, dim, generator=g, dtype=torch.float64)
    lab = torch.tensor([0, 2, 1, 1])
    on = souls[lab * k + torch.tensor([2, 0, 1, 2])]
    assert float(soul_sample_loss(on, lab, souls, k)) < 1e-12
    assert float(soul_class_loss(souls[::k], souls, k)) < 1e-12
    fake = torch.rand(4, dim, generator=g, dtype=torch.float64)
    assert float(soul_sample_loss(fake, lab, souls, k)) > 0
    scales = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)

    def loss(fake, lab):
        return torch.stack([soul_sample_loss(fake * s, lab, souls, k) for s in scales])

    def first_only(fake, lab):  # negative control
        return torch.stack([((fake[0] * s - souls[lab[0] * k]) ** 2).sum() for s in scales])

    assert_invariant(loss, (fake, lab), G.Permutation(dim=0, n=4), ("nodes", "nodes"))
    assert_not_invariant(first_only, (fake, lab), G.Permutation(dim=0, n=4), ("nodes", "nodes"))
    perm = torch.tensor([2, 0, 1])
    shuffled = souls.reshape(n_c, k, dim)[:, perm].reshape(-1, dim)
    torch.testing.assert_close(
        soul_sample_loss(fake, lab, shuffled, k), soul_sample_loss(fake, lab, souls, k)
    )


def test_lisgan_soul_samples_are_class_major_kmeans_centres():
    d = make_synth_zsl(seed=0, n_classes=8, n_unseen=3, n_attributes=8, feat_dim=16, n_per_class=30)
    s = soul_samples(d["train_x"], d["train_y"], d["seen"], n_clusters=3)
    assert s.shape == (len(d["seen"]) * 3, 16)
    for i, c in enumerate(d["seen"].tolist()):  # centres lie in the class's feature hull box
        f = d["train_x"][d["train_y"] == c]
        blk = s[3 * i : 3 * i + 3]
        assert bool((blk >= f.min(0).values - 1e-5).all() and (blk <= f.max(0).values + 1e-5).all())


def test_lisgan_cascade_selection_and_metrics():
    g = torch.Generator().manual_seed(0)
    lp = torch.log_softmax(torch.randn(20, 5, generator=g), 1)
    easy, hard = select_confident(lp, 0.0)
    assert easy.numel() == 0 and sorted(hard.tolist()) == list(range(20))
    easy, hard = select_confident(lp, 0.25)
    ent = -(lp.exp() * lp).sum(1)
    assert len(easy) == 5 and float(ent[easy].max()) <= float(ent[hard].min())
    pred = torch.tensor([0, 1, 1, 2, 2, 2])
    true = torch.tensor([0, 1, 0, 2, 1, 2])
    acc = per_class_accuracy(pred, true, torch.arange(3))
    perm = torch.randperm(6, generator=g)
    assert per_class_accuracy(pred[perm], true[perm], torch.arange(3)) == acc
    dup = true == 2  # duplicating all samples of a class changes nothing
    assert (
        per_class_accuracy(
            torch.cat([pred, pred[dup]]), torch.cat([true, true[dup]]), torch.arange(3)
        )
        == acc
    )
    assert abs(acc - (0.5 + 0.5 + 1) / 3) < 1e-12
    assert harmonic_mean(0.5, 0.5) == 0.5 and harmonic_mean(0.0, 0.0) == 0.0


def test_synth_zsl_split_and_range():
    d = make_synth_zsl(
        seed=1, n_classes=10, n_unseen=3, n_attributes=12, feat_dim=16, n_per_class=20
    )
    assert set(d["train_y"].tolist()) == set(d["seen"].tolist())
    assert set(d["test_unseen_y"].tolist()) == set(d["unseen"].tolist())
    assert float(d["train_x"].min()) >= 0 and float(d["train_x"].max()) <= 1 + 1e-6
    a = d["attributes"]
    ham = torch.cdist(a, a, p=1) + 100 * torch.eye(10)
    assert float(ham.min()) >= 3


def test_lisgan_recipe_trains_and_declares_checks():
    r = LisGANRecipe()
    cfg = LisGANConfig(steps=30)
    model, res = fit_recipe(r, cfg, progress=False)
    assert all(math.isfinite(e["loss"]) for e in res.history)
    assert float(model.souls.abs().sum()) > 0
    assert not any(p.requires_grad for p in model.seen_classifier.parameters())
    checks = r.check(model, cfg)
    assert all(c.passed for c in checks) and any(c.negative_control for c in checks)
    m = r.metrics(model, r.make_data(cfg, "test"))
    for k in ("zsl", "zsl_cascade", "zsl_cascade_official", "gzsl_h", "eszsl_zsl"):
        assert 0.0 <= m[k] <= 1.0


def test_lisgan_config_rejects_bad_values():
    from invariance.core.recipe import ConfigError

    with pytest.raises(ConfigError, match="confidence"):
        LisGANConfig(confidence="margin")
    with pytest.raises(ConfigError, match="ratio"):
        LisGANConfig(ratio=1.5)


_G = torch.Generator().manual_seed(0)
_SOULS = torch.rand(6, 6, generator=_G)

#: bad-input cases (collected by the package summary in test_vision_bad_inputs.py)
ENTRY_POINTS = {
    "FeatureGenerator.forward": (
        FeatureGenerator(4, 6, hidden=8),
        {"z": torch.randn(3, 4, generator=_G), "a": torch.rand(3, 4, generator=_G)},
        {},
    ),
    "FeatureCritic.forward": (
        FeatureCritic(6, 4, hidden=8),
        {"x": torch.rand(3, 6, generator=_G), "a": torch.rand(3, 4, generator=_G)},
        {},
    ),
    "soul_sample_loss": (
        soul_sample_loss,
        {
            "fake": torch.rand(4, 6, generator=_G),
            "label_idx": torch.tensor([0, 1, 1, 0]),
            "souls": _SOULS,
            "n_clusters": 3,
        },
        {},
    ),
    "soul_class_loss": (
        soul_class_loss,
        {"class_means": torch.rand(2, 6, generator=_G), "souls": _SOULS, "n_clusters": 3},
        {},
    ),
    "select_confident": (
        select_confident,
        {"log_probs": torch.log_softmax(torch.randn(5, 3, generator=_G), 1), "ratio": 0.4},
        {},
    ),
    "pairwise_sq_distances": (
        pairwise_sq_distances,
        {"x": torch.rand(3, 4, generator=_G), "y": torch.rand(2, 4, generator=_G)},
        {},
    ),
    "cascade_predict": (
        cascade_predict,
        {
            "lin": nn.Linear(4, 3),
            "syn": torch.rand(9, 4, generator=_G),
            "syn_idx": torch.tensor([0, 1, 2] * 3),
            "test_x": torch.rand(5, 4, generator=_G),
            "ratio": 0.4,
            "epochs": 1,
            "batch": 4,
            "seed": 0,
        },
        {},
    ),
    "make_synth_zsl": (
        make_synth_zsl,
        {
            "seed": 0,
            "n_classes": 8,
            "n_unseen": 3,
            "n_attributes": 8,
            "feat_dim": 8,
            "n_per_class": 10,
        },
        {},
    ),
}


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_lisgan_bad_inputs(name):
    fn, kwargs, kw = ENTRY_POINTS[name]
    rep = fuzz_bad_inputs(fn, kwargs, name=name, **kw)
    assert rep.tried > 0 and rep.ok, "\n".join(rep.failures)


def test_lisgan_soul_loss_names_a_label_outside_the_souls():
    with pytest.raises(ValueError, match="label_idx"):
        soul_sample_loss(torch.rand(2, 6), torch.tensor([0, 5]), _SOULS, 3)


@pytest.mark.parametrize("quick", [True, False])
def test_lisgan_reproduce_seeds_presets_and_verdict(monkeypatch, quick):
    import invariance.core.train as core_train
    from invariance.core import make_config

    calls = []
    keys = (
        "zsl",
        "zsl_cascade",
        "zsl_cascade_official",
        "gzsl_seen",
        "gzsl_unseen",
        "gzsl_h",
        "eszsl_zsl",
        "eszsl_h",
        "easy_precision",
        "easy_precision_official",
    )

    def fake(recipe, cfg, arms, seeds, run=None, split="test"):
        calls.append(cfg)
        return {
            a: [{**{k: 0.5 + 0.01 * s for k in keys}, "soul_perm_error": 1e-7} for s in seeds]
            for a in arms
        }

    monkeypatch.setattr(core_train, "train_arms", fake)
    r = LisGANRecipe()
    res = r.reproduce(make_config(r), None, quick=quick)
    assert res.seeds == [0, 1, 2] and len(res.baseline_values) == 3
    preset = LisGANRecipe.presets["quick" if quick else "full"]
    assert all(getattr(calls[0], k) == v for k, v in preset.items())
    assert res.verdict == "within noise" and res.invariance_error == 1e-7


def test_lisgan_cascade_predict_keeps_stage_one_when_all_samples_are_easy():
    from invariance.vision.recipes.lisgan import _train_softmax, cascade_predict

    g = torch.Generator().manual_seed(0)
    syn_y = torch.arange(3).repeat_interleave(20)
    syn = torch.randn(60, 5, generator=g) + 2 * torch.nn.functional.one_hot(syn_y, 5)
    test = torch.randn(30, 5, generator=g)
    lin = _train_softmax(syn, syn_y, 3, epochs=3, batch=20, seed=0)
    stage1 = lin(test).argmax(1)
    pred, easy = cascade_predict(lin, syn, syn_y, test, ratio=1.0, epochs=2, batch=20, seed=1)
    assert torch.equal(pred, stage1) and sorted(easy.tolist()) == list(range(30))
    pred0, easy0 = cascade_predict(lin, syn, syn_y, test, ratio=0.0, epochs=2, batch=20, seed=1)
    assert len(easy0) == 0 and pred0.shape == (30,)


def test_lisgan_benches_run_with_their_fallback_reference(monkeypatch):
    from invariance.vision.lisgan_bench import bench_lisgan_cascade, bench_lisgan_step

    monkeypatch.delenv("LISGAN_OFFICIAL_REPO", raising=False)
    out = bench_lisgan_step(
        quick=True, feat_dim=8, n_attributes=6, hidden=16, n_classes=6, n_unseen=2, batch_size=8
    )
    names = [r["name"] for r in out["rows"]]
    assert names == ["f-CLSWGAN step (ours)", "LisGAN step (ours)"]
    assert all(r["vs"] == "f-CLSWGAN step (ours)" and r["median_ms"] > 0 for r in out["rows"])
    out = bench_lisgan_cascade(quick=True, feat_dim=8, n_unseen=3, syn_num=10, n_test=30, epochs=2)
    assert [r["name"] for r in out["rows"]] == ["stage 1 only (ours)", "two-stage cascade (ours)"]


@pytest.mark.skipif(
    not os.environ.get("LISGAN_OFFICIAL_REPO"),
    reason="needs LISGAN_OFFICIAL_REPO (a checkout of lijin118/LisGAN)",
)
def test_lisgan_official_step_runs_from_the_checkout():
    from invariance.vision.lisgan_bench import _lisgan_repo, _official_lisgan_step

    repo = _lisgan_repo()
    assert repo is not None, "LISGAN_OFFICIAL_REPO does not name a LisGAN checkout"
    cfg = LisGANConfig(feat_dim=8, n_attributes=6, hidden=16, n_classes=6, n_unseen=2)
    r = LisGANRecipe()
    r.make_data(cfg, "train")
    model = r.build(cfg)
    step = _official_lisgan_step(repo, r.data, model.souls, cfg, "cpu")
    ns = inspect.getclosurevars(step).nonlocals["ns"]
    w0 = ns["netG"].fc1.weight.detach().clone()
    step()
    step()
    for k in ("errG", "D_cost", "loss1", "loss2"):  # the official soul losses and both costs
        assert math.isfinite(float(ns[k].detach()))
    assert not torch.equal(ns["netG"].fc1.weight, w0)
