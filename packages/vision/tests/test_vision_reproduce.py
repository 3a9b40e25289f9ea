"""``reproduce`` runs the ``full`` preset on 3 seeds and reports mean +- sd; ``--quick`` runs the
``quick`` preset (or the tiny defaults) on one seed. The training itself is replaced by a stub
here; the real runs are in the README."""

import dataclasses

import pytest

import invariance.core.train as core_train
from invariance.core import make_config
from invariance.vision.bss import BSSRecipe
from invariance.vision.galaxy import GalaxyNetRecipe
from invariance.vision.sepc import SEPCRecipe

_FAKE = {"galaxy": {"rmse": 0.1, "loss": 0.01, "d4_std": 0.0},
         "bss": {"acc": 0.2, "acc_D": 0.2, "acc_E": 0.2, "acc_in_D": 0.3, "acc_in_E": 0.3,
                 "acc_source": 0.3},
         "sepc": {"ap": 0.01, "ap50": 0.05, "ap75": 0.0}}


@pytest.mark.parametrize("name,cls", [("galaxy", GalaxyNetRecipe), ("bss", BSSRecipe),
                                      ("sepc", SEPCRecipe)])
@pytest.mark.parametrize("quick", [True, False])
def test_vision_reproduce_seeds_and_full_preset(monkeypatch, name, cls, quick):
    calls = []

    def fake(recipe, cfg, arms, seeds, run=None, split="test"):
        calls.append((cfg, dict(arms), list(seeds)))
        key = {"galaxy": "rmse", "bss": "acc", "sepc": "ap"}[name]
        return {a: [{**_FAKE[name], key: 0.1 + 0.01 * i, "seconds": 1.0}
                    for i, _ in enumerate(seeds)] for a in arms}

    monkeypatch.setattr(core_train, "train_arms", fake)
    if name == "galaxy":  # the rmse of predicting the training mean needs the data: keep small
        monkeypatch.setitem(cls.presets, "full", {**cls.presets["full"], "n_train": 8,
                                                  "n_test": 8})
    r = cls()
    res = r.reproduce(make_config(r), None, quick=quick)
    (cfg, arms, seeds), = calls
    assert seeds == ([0] if quick else [0, 1, 2])
    preset = cls.presets.get("quick" if quick else "full")
    if preset is None:  # no quick preset: the tiny defaults
        assert cfg == make_config(r)
    else:
        for k, v in preset.items():
            assert getattr(cfg, k) == v, k
    assert res.details["seeds"] == seeds
    sd = [v for k, v in res.details.items() if k.endswith("_sd")][0]
    assert all(x > 0 for x in sd.values()) != quick  # sample sd over 3 seeds, 0 for one
    if name == "bss" and not quick:
        assert set(arms) == {"bss", "simclr", "bw_jitter", "bss_image_jitter", "fa_per_image"}


def test_vision_full_presets_fit_a_cpu_session():
    # the resized full presets (README "Measured results"): no more than 400 steps
    for cls in (GalaxyNetRecipe, BSSRecipe, SEPCRecipe):
        cfg = make_config(cls, "full")
        assert cfg.steps <= 400, cls
        assert dataclasses.asdict(cfg)  # a valid config
