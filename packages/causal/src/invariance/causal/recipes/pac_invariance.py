"""Recipe ``pac_invariance``: the IRM-style linear learner on a random linear SEM (``train``), and
the PAC certificate experiment (``reproduce``).

``reproduce`` compares, per SEM seed, three predictors fitted on ``m`` training interventions
(population covariances) and scored on 200 unseen interventions ``theta ~ P``:

* the method: the best pooled-MSE feature subset among those that pass the eps-invariance test
  (:func:`~invariance.causal.pac_invariance.fit_invariant_subset`);
* the baseline (the fair competitor of the same capacity): the best pooled-MSE subset of the
  *same* search without the invariance test (``eps=None``);
* a further arm: ERM on all features (it includes the intervened children and must fail).

The metric is the violation rate ``P(||r_theta|| > 2 eps)`` of the returned predictor. The
invariance error is the variation of the selected subset's population-optimal head across
unseen interventions (the declared symmetry), measured with
:func:`invariance.core.testing.equivariance_error`. The violation-vs-``m`` curve over ``d`` (the
uniform certificate over every accepted subset) is plotted and kept in ``details``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from invariance.causal._checks import (
    check_choice,
    check_env_xy,
    check_int,
    check_number,
    check_seed,
)
from invariance.causal._threads import single_thread
from invariance.causal.data.sem import LinearSEM, empirical_covariance
from invariance.causal.pac_invariance import (
    Intervention,
    InvariantLinear,
    _irm_head,
    invariance_residual,
    irm_linear_loss,
    optimal_head,
    optimal_irm_head,
    population_mse,
)
from invariance.causal.recipes._pac_experiments import subset_comparison, violation_curve
from invariance.core.io import plt as _plt
from invariance.core.plots import plot_seeds
from invariance.core.recipe import ConfigError, Recipe, ReproduceResult, TrainConfig
from invariance.core.registry import register
from invariance.core.testing import check_invariant, check_not_invariant

__all__ = [
    "PACInvarianceConfig",
    "PACInvarianceRecipe",
    "fit_invariant_linear",
    "subset_comparison",
    "violation_curve",
]


# --------------------------------------------------------------------------- IRM learner
def _moments(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-environment uncentred moments ``Sxx (E, d, d)``, ``Sxy (E, d)``, ``Syy (E,)``."""
    cov = empirical_covariance(x, y)
    d = x.shape[-1]
    return cov[:, :d, :d], cov[:, :d, d], cov[:, d, d]


def _moment_objective(sxx, sxy, syy, phi, w, lam: float, penalty: str) -> Tensor:
    """Pooled MSE + penalty computed from moments (equal to :func:`irm_linear_loss` on samples)."""
    C = phi @ sxx @ phi.T
    a = sxy @ phi.T
    mse = (syy - 2 * a @ w + ((C @ w) * w).sum(-1)).mean()
    r2 = (a - C @ w).pow(2).sum(-1)
    pen = r2.sum() if penalty == "sum" else r2.max()
    return mse + lam * pen


def fit_invariant_linear(
    x: Tensor,
    y: Tensor,
    *,
    rank: int = 1,
    lam: float = 10.0,
    penalty: str = "sum",
    steps: int = 500,
    lr: float = 0.05,
    anneal_steps: int | None = None,
    restarts: int = 1,
    head: str = "adam",
    seed: int = 0,
) -> InvariantLinear:
    """Train :class:`InvariantLinear` on the full-batch objective of :func:`irm_linear_loss`.

    ``x (E, n, d)``, ``y (E, n)``; ``lam=0`` is ERM on the same model class. As in DomainBed's
    IRM, the first ``anneal_steps`` steps (default ``steps // 3``) use penalty weight 1, then the
    weight jumps to ``lam`` and Adam is reset. With ``restarts > 1`` the best of several random
    initialisations (by final training objective) is returned: the objective is non-convex on the
    sphere of unit-norm rows.

    ``head="adam"`` trains ``w`` jointly with ``Phi`` by Adam (IRMv1-style).
    ``head="closed_form"`` (``penalty="sum"`` only) eliminates ``w``: at every step ``w`` is the
    exact minimiser :func:`optimal_irm_head` for the current ``Phi`` and penalty weight, so Adam
    only moves ``Phi``; the loss is computed from per-environment moments, which equals the
    sample loss exactly (equal ``n`` per environment).
    """
    check_env_xy(x, y)
    check_int("rank", rank, 1, x.shape[-1])
    check_number("lam", lam)
    check_choice("penalty", penalty, ("sum", "max"))
    check_int("steps", steps, 1)
    check_number("lr", lr, strict=True)
    if anneal_steps is not None:
        check_int("anneal_steps", anneal_steps, 0)
    check_int("restarts", restarts, 1)
    check_choice("head", head, ("adam", "closed_form"))
    seed = check_seed(seed)
    if head == "closed_form" and penalty != "sum":
        raise ValueError(
            "head='closed_form' needs penalty='sum' (the max penalty has no closed form)"
        )
    anneal = steps // 3 if anneal_steps is None else int(anneal_steps)
    g = torch.Generator().manual_seed(seed)
    moments = _moments(x, y) if head == "closed_form" else None
    best, best_obj = None, float("inf")
    for _ in range(restarts):
        model = InvariantLinear(d=x.shape[-1], rank=rank).to(x.dtype)
        with torch.no_grad():
            model.raw_phi.copy_(torch.randn(model.raw_phi.shape, generator=g, dtype=x.dtype))
        params = [model.raw_phi] if head == "closed_form" else list(model.parameters())
        opt = torch.optim.Adam(params, lr=lr)
        for t in range(steps):
            if t == anneal and anneal > 0:
                opt = torch.optim.Adam(params, lr=lr)
            weight = min(lam, 1.0) if t < anneal else lam
            opt.zero_grad()
            if head == "closed_form":
                sxx, sxy, syy = moments
                phi = model.phi
                w = _irm_head(sxx, sxy, phi, weight)
                _moment_objective(sxx, sxy, syy, phi, w, weight, penalty).backward()
            else:
                irm_linear_loss(model, x, y, lam=weight, penalty=penalty)["loss"].backward()
            opt.step()
        with torch.no_grad():
            if head == "closed_form":
                model.w.copy_(optimal_irm_head(moments[0], moments[1], model.phi, lam))
            obj = float(irm_linear_loss(model, x, y, lam=lam, penalty=penalty)["loss"])
        if obj < best_obj:
            best, best_obj = model, obj
    return best


@dataclass
class PACInvarianceConfig(TrainConfig):
    """Linear SEM and IRM learner (defaults: the tiny preset).

    Args:
        d: number of features (default: ``8``).
        n_sites: intervention sites (Y's children) (default: ``2``).
        n_train_envs: training interventions ``m`` (default: ``5``).
        n_per_env: samples per training environment (``train``) (default: ``500``).
        n_test_envs: unseen interventions for evaluation (default: ``50``).
        rank: rows of the representation (default: ``1``).
        lam: invariance penalty weight (default: ``10.0``).
        penalty: ``"sum"`` or ``"max"`` over environments (default: ``"sum"``).
        eps: invariance tolerance of the subset search (default: ``0.05``).
        seeds: SEM seeds of the reproduce experiment (default: ``5``).
    """

    d: int = 8
    n_sites: int = 2
    n_train_envs: int = 5
    n_per_env: int = 500
    n_test_envs: int = 50
    rank: int = 1
    lam: float = 10.0
    penalty: str = "sum"
    eps: float = 0.05
    seeds: int = 5
    steps: int = 150
    batch_size: int = 5
    lr: float = 0.05

    ranges: ClassVar[dict] = {
        "d": (1, None),
        "n_sites": (1, None),
        "n_train_envs": (1, None),
        "n_per_env": (2, None),
        "n_test_envs": (1, None),
        "rank": (1, None),
        "lam": (0.0, None),
        "eps": (0.0, None),
        "seeds": (1, None),
        "steps": (1, None),
        "lr": (0.0, None),
    }
    choices: ClassVar[dict] = {"penalty": ("sum", "max")}

    def validate(self) -> None:
        super().validate()
        if self.rank > self.d:
            raise ConfigError(f"PACInvarianceConfig.rank must be <= d={self.d}, got {self.rank}")


class _EnvDataset(torch.utils.data.Dataset):
    """One item per environment: ``(x (n, d), y (n,))``."""

    def __init__(self, x: Tensor, y: Tensor, theta: Tensor) -> None:
        self.x, self.y, self.theta = x, y, theta

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]


@register(
    "pac_invariance",
    domain="causal",
    paper="PAC Generalization via Invariant Representations",
    authors="Parulekar, Shanmugam, Shakkottai",
    year=2023,
    arxiv="2205.15196",
    code_url="",
    symmetry="optimal head invariant under interventions (theta ~ P)",
    baseline="best pooled-MSE subset of the same search, without the invariance test",
    tags=("linear-sem", "irm", "certificate"),
)
class PACInvarianceRecipe(Recipe):
    """IRM-style linear learner on a random linear SEM; reproduce = the subset certificate."""

    Config = PACInvarianceConfig
    presets = {
        "tiny": {},
        "full": {"d": 16, "n_train_envs": 10, "n_per_env": 2000, "steps": 500, "seeds": 10},
    }

    def _sem(self, cfg) -> LinearSEM:
        return LinearSEM(d=cfg.d, n_sites=cfg.n_sites, seed=cfg.seed)

    def make_data(self, cfg, split):
        sem = self._sem(cfg)
        k = {"train": 0, "val": 1, "test": 2}[split]
        m = cfg.n_train_envs if split == "train" else cfg.n_test_envs
        g = torch.Generator().manual_seed(1000 * cfg.seed + k)
        theta = sem.sample_theta(m, generator=g)
        x, y = sem.sample(theta, cfg.n_per_env, generator=g)
        return _EnvDataset(x.float(), y.float(), theta)

    def build(self, cfg):
        self._loss_kw = {"lam": cfg.lam, "penalty": cfg.penalty}
        return InvariantLinear(d=cfg.d, rank=cfg.rank)

    def step(self, model, batch):
        x, y = batch
        return irm_linear_loss(model, x, y, **getattr(self, "_loss_kw", {}))

    def metrics(self, model, dataset):
        sem_cov = self._cov(dataset)
        phi, w = model.phi.detach().double(), model.w.detach().double()
        mse = population_mse(sem_cov, phi, w)
        r = invariance_residual(sem_cov, phi, w).norm(dim=-1)
        return {
            "ood_mse_mean": float(mse.mean()),
            "ood_mse_worst": float(mse.max()),
            "residual_mean": float(r.mean()),
            "residual_max": float(r.max()),
        }

    def _cov(self, dataset) -> Tensor:
        return empirical_covariance(dataset.x.double(), dataset.y.double())

    def check(self, model, cfg):
        sem = self._sem(cfg)
        theta = sem.sample_theta(1, seed=cfg.seed + 5)[0]
        group = Intervention(sem)
        return [
            check_invariant(
                "optimal head and its risk on Y's parents are intervention-invariant",
                optimal_head(sem, sem.parents, with_risk=True),
                (theta,),
                group,
                ("theta",),
            ),
            check_not_invariant(
                "optimal head and risk on all features (negative control)",
                optimal_head(sem, list(range(sem.d)), with_risk=True),
                (theta,),
                group,
                ("theta",),
            ),
        ]

    def reproduce(self, cfg, run, *, quick):
        with single_thread():
            return self._reproduce(cfg, run, quick=quick)

    def _reproduce(self, cfg, run, *, quick):
        t0 = time.perf_counter()
        n_seeds = max(3 if quick else 10, cfg.seeds)
        seeds = [cfg.seed + k for k in range(n_seeds)]
        d_main = cfg.d if quick else max(cfg.d, 32)
        m = cfg.n_train_envs
        rows = [
            subset_comparison(d=d_main, n_sites=cfg.n_sites, m=m, eps=cfg.eps, seed=s)
            for s in seeds
        ]
        if quick:
            curve = violation_curve(
                dims=(8, 32),
                ms=(1, 2, 3, 10),
                n_sems=2,
                n_sites=cfg.n_sites,
                eps=cfg.eps,
                seed=cfg.seed,
            )
            sites_curve: dict | None = None
            sample_curve: dict | None = None
        else:
            curve = violation_curve(
                dims=(8, 16, 32, 64, 128),
                ms=(1, 2, 3, 5, 10, 20),
                n_sems=10,
                n_sites=cfg.n_sites,
                eps=cfg.eps,
                seed=cfg.seed,
            )
            # the bound depends on the number of sites k (the intervention family), not on d
            sites_curve = {
                f"k={k}": violation_curve(
                    dims=(32,),
                    ms=(1, 2, 3, 5, 10, 20),
                    n_sems=10,
                    n_sites=k,
                    eps=cfg.eps,
                    seed=cfg.seed,
                )["d=32"]
                for k in (1, 2, 4)
            }
            sample_curve = {
                f"n={n}": violation_curve(
                    dims=(8, 32, 128),
                    ms=(1, 3, 10),
                    n_sems=5,
                    n_sites=cfg.n_sites,
                    eps=cfg.eps,
                    n_samples=n,
                    seed=cfg.seed,
                )
                for n in (200, 1000, 5000)
            }
        plots = [self._plot(run, curve, sites_curve)]
        col = {k: [r[k] for r in rows] for k in rows[0]}
        res = ReproduceResult(
            task=f"predictor fitted on m={m} interventions (population), d={d_main}, "
            f"{cfg.n_sites} sites; 200 unseen interventions",
            metric=f"violation rate P(||r_theta|| > 2 eps), eps={cfg.eps}",
            method="eps-invariant subset (best pooled MSE among invariant)",
            baseline="best pooled-MSE subset, same search, no invariance test",
            method_values=col["invariant_violation"],
            baseline_values=col["pooled_violation"],
            higher_is_better=False,
            invariance_error=max(col["invariant_head_invariance_error"]),
            seconds=time.perf_counter() - t0,
            seeds=seeds,
            arms={"ERM on all features": col["erm_all_violation"]},
            details={
                "per_seed": rows,
                "worst_mse_mean": {
                    k: sum(col[f"{k}_worst_mse"]) / len(rows)
                    for k in ("invariant", "pooled", "erm_all")
                },
                "pooled_head_invariance_error_max": max(col["pooled_head_invariance_error"]),
                "uniform_certificate_max": max(col["uniform_certificate"]),
                "population_curve": curve,
                **({"sites_d32": sites_curve} if sites_curve else {}),
                **({"finite_sample": sample_curve} if sample_curve else {}),
            },
            plots=plots,
        )
        if getattr(run, "enabled", True):
            res.plots.append(str(plot_seeds(res, run.path / "violation_per_seed.png")))
        return res

    @staticmethod
    def _plot(run, curve: dict, sites_curve: dict | None) -> str:
        plt = _plt()
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for dname, row in curve.items():
            ms = [int(k[2:]) for k in row if k.startswith("m=")]
            ax.plot(ms, [row[f"m={m}"] for m in ms], marker="o", label=dname)
        for kname, row in (sites_curve or {}).items():
            ms = [int(k[2:]) for k in row if k.startswith("m=")]
            ax.plot(ms, [row[f"m={m}"] for m in ms], ls="--", label=f"d=32, {kname}")
        ax.set_xlabel("training interventions m")
        ax.set_ylabel("worst accepted violation rate")
        ax.set_xscale("log")
        ax.legend(fontsize=7)
        return run.savefig(fig, "violation_vs_m")
