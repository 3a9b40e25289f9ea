"""Plumbing of every geometry ``reproduce`` on a few steps: per-seed values for every arm, an
invariance error measured on the trained method model, and a plot in the run directory."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

import invariance.geometry  # noqa: F401  (registers the recipes)
from invariance.core.io import RunDir
from invariance.core.recipe import make_config
from invariance.core.registry import get_method

TINY = {
    "frame_averaging": {"n_classes": 3, "n_per_class": 4, "n_points": 32, "steps": 2},
    "tinvnn": {"n_classes": 3, "n_per_class": 4, "n_points": 32, "steps": 2},
    "fa_normals": {"n_classes": 3, "n_per_class": 4, "n_points": 32, "steps": 2},
    "risurconv": {
        "n_classes": 3, "n_per_class": 4, "n_points": 64, "steps": 2, "nsample": 8, "width": 4,
        "embed": 4, "batch_size": 8,
    },
    "eqmotion": {"n_train": 16, "n_test": 8, "steps": 2, "batch_size": 8},
    "roitr": {
        "n_points": 96, "n_train": 2, "n_test": 2, "steps": 2, "test_splits": "normal",
        "fpfh": False, "widths": (8, 8, 8), "coarse_dim": 8, "fine_dim": 8, "patch_k": 8,
        "ransac_iterations": 50,
    },
    "pare_net": {
        "n_points": 96, "n_train": 2, "n_test": 2, "steps": 2, "test_splits": "normal",
        "fpfh": False, "channels": (4, 4, 8), "out_channels": 8, "k": 6, "coarse_dim": 8,
        "fine_dim": 8, "patch_k": 8, "ransac_iterations": 50, "num_corr": 32,
    },
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(TINY))
def test_reproduce_reports_per_seed_values_invariance_error_and_a_plot(name, tmp_path):
    recipe = get_method(name).recipe()
    cfg = dataclasses.replace(make_config(recipe, "tiny"), n_seeds=2, **TINY[name])
    res = recipe.reproduce(cfg, RunDir(tmp_path), quick=False)
    assert len(res.method_values) == len(res.baseline_values) == 2
    assert res.seeds == [0, 1]
    assert res.arms and all(len(v) == 2 for v in res.arms.values())
    assert res.invariance_error is not None and math.isfinite(res.invariance_error)
    assert res.invariance_error < 1e-8
    assert res.plots and all(Path(p).is_file() for p in res.plots)
    assert res.verdict in ("wins", "loses", "within noise") or "(n=2)" in res.verdict
