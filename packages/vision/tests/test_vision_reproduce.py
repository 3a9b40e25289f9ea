"""``reproduce`` runs the ``quick`` preset (or the tiny defaults) with ``--quick`` and the ``full``
preset otherwise, always on 3 seeds, and reports per-seed values through ``ReproduceResult``
(verdict by the core's noise rule; quick rows that cannot show the claim say why). The training
itself is replaced by a stub here; the real runs are in the README."""

import dataclasses

import pytest

import invariance.core.train as core_train
from invariance.core import make_config
from invariance.core.io import RunDir
from invariance.vision.recipes.bss import BSSRecipe
from invariance.vision.recipes.galaxy import GalaxyMeanRecipe, GalaxyNetRecipe
from invariance.vision.recipes.sepc import SEPCRecipe

_FAKE = {
    "galaxy": {"rmse": 0.1, "loss": 0.01, "d4_std": 0.0},
    "bss": {
        "acc": 0.2,
        "acc_D": 0.2,
        "acc_E": 0.2,
        "acc_in_D": 0.3,
        "acc_in_E": 0.3,
        "acc_source": 0.3,
        "style_sensitivity": 0.01,
    },
    "sepc": {"ap": 0.01, "ap50": 0.05, "ap75": 0.0, "level_shift_error": 1e-12},
}
_KEY = {"galaxy": "rmse", "bss": "acc", "sepc": "ap"}


def _stub(monkeypatch, name):
    calls = []

    def fake(recipe, cfg, arms, seeds, run=None, split="test"):
        calls.append((cfg, dict(arms), list(seeds)))
        return {
            a: [{**_FAKE[name], _KEY[name]: 0.1 + 0.01 * s, "seconds": 1.0} for s in seeds]
            for a in arms
        }

    monkeypatch.setattr(core_train, "train_arms", fake)
    return calls


@pytest.mark.parametrize(
    "name,cls", [("galaxy", GalaxyNetRecipe), ("bss", BSSRecipe), ("sepc", SEPCRecipe)]
)
@pytest.mark.parametrize("quick", [True, False])
def test_vision_reproduce_seeds_and_presets(monkeypatch, name, cls, quick):
    calls = _stub(monkeypatch, name)
    if name == "galaxy":  # the rmse of predicting the training mean needs the data: keep small
        for size in ("full", "quick"):
            if size in cls.presets:
                monkeypatch.setitem(
                    cls.presets, size, {**cls.presets[size], "n_train": 8, "n_test": 8}
                )
    r = cls()
    res = r.reproduce(make_config(r), None, quick=quick)
    seeds = sorted({s for _, _, ss in calls for s in ss})
    assert seeds == [0, 1, 2] and res.seeds == [0, 1, 2]
    assert len(res.method_values) == len(res.baseline_values) == 3
    preset = cls.presets.get("quick" if quick else "full", {})
    for cfg, _, _ in calls:
        for k, v in preset.items():
            assert getattr(cfg, k) == v, k
    assert res.invariance_error is not None
    # galaxy and SEPC quick rows cannot show the claim: they say so and why
    assert bool(res.not_showable) == (quick and name != "bss")
    if res.not_showable:
        assert res.verdict == "not shown at this size"
    arms = {a for _, arm, _ in calls for a in arm}
    if name == "bss" and not quick:
        assert arms == {"bss", "simclr", "bw_jitter", "bss_image_jitter", "fa_per_image"}


def test_vision_galaxy_recipes_share_cached_cells(monkeypatch, tmp_path):
    calls = _stub(monkeypatch, "galaxy")
    for cls in (GalaxyNetRecipe, GalaxyMeanRecipe):
        monkeypatch.setitem(cls.presets, "full", {**cls.presets["full"], "n_train": 8, "n_test": 8})
    a = GalaxyNetRecipe().reproduce(
        make_config(GalaxyNetRecipe), RunDir(tmp_path / "galaxy"), quick=True
    )
    n_first = len(calls)
    b = GalaxyMeanRecipe().reproduce(
        make_config(GalaxyMeanRecipe), RunDir(tmp_path / "galaxy_mean"), quick=True
    )
    # galaxy: concat+aug and plain+aug; galaxy_mean adds only its own arm (baseline cached)
    assert n_first == 6 and len(calls) == 9
    assert a.baseline_values == b.baseline_values and "16 views, mean" in b.method


def test_vision_full_presets_fit_a_cpu_session():
    # the resized full presets (README): no more than 400 steps
    for cls in (GalaxyNetRecipe, BSSRecipe, SEPCRecipe):
        cfg = make_config(cls, "full")
        assert cfg.steps <= 400, cls
        assert dataclasses.asdict(cfg)  # a valid config
