"""Bad-input contract of invariance-causal's public entry points (``fuzz_bad_inputs``).

Every entry point must raise ``ValueError``/``TypeError`` naming the argument for wrong shapes or
dtypes, NaN/inf, empty or degenerate input and out-of-range hyper-parameters. ``accept`` lists the
mutations that are valid input (then a finite output counts as handled).
"""

from __future__ import annotations

import pytest
import torch

from invariance.causal import (
    MEDL,
    ICMGaussian,
    InvariantLinear,
    LinearSEM,
    RandomEffectBlock,
    causal_de_finetti,
    empirical_covariance,
    fisher_z_test,
    fit_invariant_subset,
    g_test,
    iid_baseline,
    invariance_residual,
    kci_test,
    make_bivariate_exchangeable,
    make_linear_gaussian_icm,
    make_multivariate_binary,
    make_scrna_counts,
    medl_loss,
    sample_residual,
)
from invariance.causal.pac_invariance import irm_linear_loss, population_mse
from invariance.core.testing import fuzz_bad_inputs, fuzz_table


def _entries() -> list[tuple[str, object, dict, tuple, tuple]]:
    """``(name, fn, valid kwargs, accept, skip)`` for every public entry point."""
    g = torch.Generator().manual_seed(0)
    a, b, c = torch.randn(3, 40, generator=g, dtype=torch.float64)
    xi = torch.randint(0, 2, (120,), generator=g)
    yi = (xi + torch.randint(0, 2, (120,), generator=g)) % 2
    zi = torch.randint(0, 2, (120,), generator=g)
    data = make_linear_gaussian_icm(40, mode=0, seed=0)["data"]
    sem = LinearSEM(d=5, seed=0)
    cov = sem.covariance(sem.sample_theta(3, seed=1))
    xs, ys = sem.sample(sem.sample_theta(3, seed=2), 30, seed=3)
    phi = torch.randn(2, 5, generator=g, dtype=torch.float64)
    w = torch.randn(2, generator=g, dtype=torch.float64)
    lin = InvariantLinear(d=5, rank=2).double()
    medl = MEDL(n_genes=10, n_batches=3, hidden=(8,), latent=2)
    cells = torch.rand(12, 10, generator=g)
    batch = torch.randint(0, 3, (12,), generator=g)
    block = RandomEffectBlock(features=6, n_batches=3)
    h = torch.randn(12, 6, generator=g)
    onehot = torch.nn.functional.one_hot(batch, 3).float()
    icm = ICMGaussian().double()
    int_ok = ("x:int_dtype", "y:int_dtype", "z:int_dtype")  # integer codes are valid numbers
    return [
        ("kci_test", kci_test, {"x": a, "y": b + 0.3 * a, "z": c}, int_ok, ()),
        ("fisher_z_test", fisher_z_test, {"x": a, "y": b + 0.3 * a, "z": c}, int_ok, ()),
        ("g_test", g_test, {"x": xi, "y": yi, "z": zi}, (), ()),
        (
            "causal_de_finetti",
            causal_de_finetti,
            {"data": data, "test": "fisherz", "alpha": 0.05},
            ("data:int_dtype",),
            (),
        ),
        (
            "iid_baseline",
            iid_baseline,
            {"data": data, "test": "fisherz", "alpha": 0.05},
            ("data:int_dtype",),
            (),
        ),
        (
            "fit_invariant_subset",
            fit_invariant_subset,
            {"cov": cov, "max_size": 2, "eps": 0.05},
            ("cov:fewer_dims",),  # one (d+1, d+1) covariance is one environment
            (),
        ),
        (
            "invariance_residual",
            invariance_residual,
            {"cov": cov, "phi": phi, "w": w},
            ("cov:fewer_dims",),
            (),
        ),
        (
            "population_mse",
            population_mse,
            {"cov": cov, "phi": phi, "w": w},
            ("cov:fewer_dims",),
            (),
        ),
        ("sample_residual", sample_residual, {"x": xs, "y": ys, "phi": phi, "w": w}, (), ()),
        ("empirical_covariance", empirical_covariance, {"x": xs, "y": ys}, (), ()),
        ("InvariantLinear", InvariantLinear, {"d": 5, "rank": 2}, (), ()),
        ("InvariantLinear.forward", lin, {"x": xs}, ("x:extra_dim", "x:fewer_dims"), ()),
        (
            "irm_linear_loss",
            lambda x, y, lam, penalty: irm_linear_loss(lin, x, y, lam=lam, penalty=penalty),
            {"x": xs, "y": ys, "lam": 10.0, "penalty": "sum"},
            (),
            (),
        ),
        ("LinearSEM", LinearSEM, {"d": 5, "n_sites": 2, "seed": 0}, (), ("seed:negative",)),
        (
            "make_bivariate_exchangeable",
            make_bivariate_exchangeable,
            {"n_envs": 20, "mode": 0, "seed": 0},
            (),
            ("seed:negative",),
        ),
        (
            "make_linear_gaussian_icm",
            make_linear_gaussian_icm,
            {"n_envs": 20, "mode": 0, "seed": 0},
            (),
            ("seed:negative",),
        ),
        (
            "make_multivariate_binary",
            make_multivariate_binary,
            {"n_envs": 20, "n_vars": 3, "seed": 0},
            (),
            ("seed:negative",),
        ),
        (
            "make_scrna_counts",
            make_scrna_counts,
            {"n_cells": 30, "n_genes": 8, "n_batches": 2, "n_types": 2, "seed": 0},
            (),
            ("seed:negative",),
        ),
        (
            "MEDL",
            MEDL,
            {"n_genes": 10, "n_batches": 3, "latent": 2, "prior_scale": 0.25, "kl_weight": 1e-5},
            (),
            (),
        ),
        ("MEDL.forward", medl, {"x": cells, "batch": batch}, (), ()),
        (
            "medl_loss",
            lambda x, batch, lambda_rec, lambda_gen: medl_loss(
                medl, x, batch, lambda_rec=lambda_rec, lambda_gen=lambda_gen
            ),
            {"x": cells, "batch": batch, "lambda_rec": 1.0, "lambda_gen": 1.0},
            (),
            (),
        ),
        (
            "RandomEffectBlock",
            RandomEffectBlock,
            {"features": 6, "n_batches": 3, "prior_scale": 0.25, "kl_weight": 1e-5},
            (),
            (),
        ),
        ("RandomEffectBlock.forward", block, {"h": h, "z": onehot}, (), ()),
        ("ICMGaussian.forward", icm, {"data": data.double()}, (), ()),
    ]


ENTRIES = _entries()


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e[0])
def test_causal_entry_point_rejects_bad_inputs(entry):
    name, fn, kwargs, accept, skip = entry
    rep = fuzz_bad_inputs(fn, kwargs, name=name, accept=accept, skip=skip)
    assert rep.ok, "\n".join(rep.failures)


def test_bad_input_summary():
    reports = [
        fuzz_bad_inputs(fn, kw, name=name, accept=acc, skip=skip)
        for name, fn, kw, acc, skip in ENTRIES
    ]
    print()
    print(fuzz_table(reports))
    assert all(r.ok for r in reports)
