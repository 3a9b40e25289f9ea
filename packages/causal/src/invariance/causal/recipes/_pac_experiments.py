"""The experiments of the ``pac_invariance`` recipe's ``reproduce`` (private; re-exported by
:mod:`invariance.causal.recipes.pac_invariance`).

* :func:`subset_comparison`: on one random linear SEM, the eps-invariant feature subset against
  the best pooled-MSE subset of the same search (the fair baseline) and ERM on all features,
  fitted on ``m`` training interventions and scored on unseen ones;
* :func:`violation_curve`: the uniform certificate (worst violation rate over every accepted
  subset) on unseen interventions against the number ``m`` of training interventions, per ``d``.
"""

from __future__ import annotations

import math

import torch

from invariance.causal.data.sem import LinearSEM, empirical_covariance
from invariance.causal.pac_invariance import (
    Intervention,
    certify_invariance,
    fit_invariant_subset,
    invariance_residual,
    optimal_head,
    population_mse,
    worst_accepted_violation,
)
from invariance.core.testing import equivariance_error

__all__ = ["subset_comparison", "violation_curve"]


def violation_curve(
    *,
    dims: tuple[int, ...] = (8, 16, 32),
    ms: tuple[int, ...] = (1, 2, 3, 5, 10),
    n_sems: int = 5,
    n_sites: int = 2,
    eps: float = 0.05,
    n_samples: int | None = None,
    n_interventions: int = 200,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Mean worst-accepted violation rate on unseen interventions, per ``d`` and ``m``.

    Also returns the ERM (all features, pooled least squares) violation rate. With ``n_samples``
    the training covariances are empirical and ``eps`` is scaled by ``sqrt(1000 / n_samples)``.
    """
    out: dict[str, dict[str, float]] = {}
    for d in dims:
        max_size = 3 if d <= 16 else 2
        row: dict[str, float] = {}
        erm = []
        for m in ms:
            rates = []
            for k in range(n_sems):
                sem = LinearSEM(d=d, n_sites=n_sites, seed=seed + 1000 * k + d)
                g = torch.Generator().manual_seed(seed + 7 * k + m)
                theta = sem.sample_theta(m, generator=g)
                e = eps
                if n_samples is None:
                    cov = sem.covariance(theta)
                else:
                    xs, ys = sem.sample(theta, n_samples, generator=g)
                    cov = empirical_covariance(xs, ys)
                    e = eps * math.sqrt(1000.0 / n_samples)
                fit = fit_invariant_subset(cov, max_size=max_size, eps=e)
                rates.append(
                    worst_accepted_violation(
                        sem, fit, eps=e, n_interventions=n_interventions, seed=seed + 99 + k
                    )
                )
                if m == max(ms):
                    w_all = torch.linalg.lstsq(
                        cov[:, :d, :d].mean(0), cov[:, :d, d].mean(0)
                    ).solution
                    erm.append(
                        float(
                            certify_invariance(
                                sem,
                                list(range(d)),
                                w_all,
                                eps=e,
                                n_interventions=n_interventions,
                                seed=seed + 99 + k,
                            )["violation_rate"]
                        )
                    )
            row[f"m={m}"] = sum(rates) / len(rates)
        row["erm_all_features"] = sum(erm) / len(erm)
        out[f"d={d}"] = row
    return out


def subset_comparison(
    *,
    d: int,
    n_sites: int,
    m: int,
    eps: float,
    seed: int,
    n_test: int = 200,
    max_size: int | None = None,
) -> dict[str, float]:
    """One SEM (``seed``): the eps-invariant subset, the best pooled-MSE subset of the same search
    and ERM on all features, fitted on ``m`` training interventions (population covariances) and
    scored on ``n_test`` unseen ones: violation rate at ``2 eps``, worst-case and mean MSE; plus
    the uniform certificate of the search and the optimal-head invariance error of both subsets.
    """
    max_size = (3 if d <= 16 else 2) if max_size is None else max_size
    sem = LinearSEM(d=d, n_sites=n_sites, seed=seed)
    g = torch.Generator().manual_seed(10_007 * seed + m)
    cov = sem.covariance(sem.sample_theta(m, generator=g))
    cov_test = sem.covariance(sem.sample_theta(n_test, generator=g))
    inv = fit_invariant_subset(cov, max_size=max_size, eps=eps)
    pooled = fit_invariant_subset(cov, max_size=max_size, eps=None)
    w_all = torch.linalg.lstsq(cov[:, :d, :d].mean(0), cov[:, :d, d].mean(0)).solution
    preds = {
        "invariant": (list(inv.subset), inv.w),
        "pooled": (list(pooled.subset), pooled.w),
        "erm_all": (list(range(d)), w_all),
    }
    out: dict[str, float] = {"d": d, "m": m, "seed": seed}
    for name, (subset, w) in preds.items():
        gaps = invariance_residual(cov_test, subset, w).norm(dim=-1)
        mse = population_mse(cov_test, subset, w)
        out[f"{name}_violation"] = float((gaps > 2 * eps).double().mean())
        out[f"{name}_worst_mse"] = float(mse.max())
        out[f"{name}_mean_mse"] = float(mse.mean())
        out[f"{name}_size"] = len(subset)
    for name in ("invariant", "pooled"):
        subset = preds[name][0]
        if not subset:  # the empty predictor is trivially invariant
            out[f"{name}_head_invariance_error"] = 0.0
            continue
        theta = sem.sample_theta(1, seed=seed + 5)[0]
        rep = equivariance_error(
            optimal_head(sem, subset, with_risk=True),
            (theta,),
            Intervention(sem),
            ("theta",),
            seed=seed,
        )
        out[f"{name}_head_invariance_error"] = rep.relative_error
    out["uniform_certificate"] = worst_accepted_violation(
        sem, inv, eps=eps, n_interventions=n_test, seed=seed + 99
    )
    out["parents_in_invariant"] = float(set(sem.parents) >= set(inv.subset))
    return out
