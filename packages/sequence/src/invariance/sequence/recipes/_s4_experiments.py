"""The delayed-copy reproduce of S4 / S4D (``reproduce`` of the recipes in
:mod:`invariance.sequence.recipes.s4`): HTTYH's timescale rule against a Δ range one decade too
large, the full run's grid of bases (cached per cell), the delay-equivariance error of the trained
layers and the plot. Not auto-imported (leading underscore); the recipes import it when they
reproduce."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from invariance.core import ReproduceResult, evaluate, fit_recipe, make_config
from invariance.core.cache import ResultCache
from invariance.core.groups import Delay
from invariance.core.testing import equivariance_error
from invariance.sequence import hippo
from invariance.sequence.nn.s4_layers import S4Layer
from invariance.sequence.recipes.s4 import S4Config, S4DRecipe, S4Recipe, _S4RecipeBase
from invariance.sequence.s4 import ZeroReferenced

__all__ = ["QUICK", "FULL", "FULL_VARIANTS", "MISSET", "reproduce_delay"]


def _delay_invariance_error(model: nn.Module, cfg: S4Config) -> float:
    """Worst relative delay-equivariance error over the trained model's S4 layers (float64,
    zero-referenced; the declared symmetry is the causal layer's: the model's encoder bias makes
    the constant input fed at zero-filled steps nonzero, so the whole model is not checked)."""
    g = torch.Generator().manual_seed(cfg.seed + 99)
    errs = []
    for layer in (m for m in model.modules() if isinstance(m, S4Layer)):
        x = torch.randn(2, cfg.length, layer.d_model, generator=g)
        rep = equivariance_error(ZeroReferenced(layer), x, Delay(dim=1), "seq", "seq")
        errs.append(rep.relative_error)
    return float(max(errs))


#: quick preset of the delayed-copy reproduce (3 seeds x 2 arms of one basis, ~15 s idle)
QUICK = dict(length=64, delay=32, steps=60, d_model=16, d_state=32, n_train=256, n_test=64)
#: full preset (6 bases x 2 Δ ranges x 3 seeds)
FULL = dict(length=128, delay=64, steps=200, d_model=16, d_state=32, n_train=512, n_test=128)
FULL_VARIANTS = [
    ("s4d", "lin"),
    ("s4d", "inv"),
    ("s4d", "legs"),
    ("s4d", "random"),
    ("s4", "legs"),
    ("s4", "fout"),
]
MISSET = (0.1, 1.0)


def reproduce_delay(
    recipe: _S4RecipeBase, cfg: S4Config, run: Any, *, quick: bool
) -> ReproduceResult:
    """Delayed copy: HTTYH's timescale rule (Δ range [1/L, 1/10]) vs the same model with its Δ
    range one decade too large ([0.1, 1], HTTYH's ablation), 3 seeds. The full run also trains
    every other basis (S4D-Lin/Inv/LegS/Random, S4-LegS/FouT) as extra arms; cells are cached
    next to the run directory so ``reproduce s4`` and ``reproduce s4d`` share the grid."""
    t0 = time.time()
    seeds = [0, 1, 2]
    own = (recipe.kernel, cfg.init or recipe.default_init)
    base = QUICK if quick else FULL
    variants = [own] if quick else list(dict.fromkeys([own, *FULL_VARIANTS]))
    rule = hippo.timescale_range(base["length"])
    dts = {"httyh": rule, "misset": MISSET}
    cache = None
    if run is not None and getattr(run, "enabled", False):
        cache = ResultCache(
            Path(run.path).parent / ".cache" / "sequence-delay",
            sources=("invariance.sequence", "invariance.core"),
        )
    results: dict[str, list[float]] = {}
    method_model: nn.Module | None = None
    method_cfg = cfg
    for kernel, init in variants:
        rec = S4DRecipe() if kernel == "s4d" else S4Recipe()
        for dname, (lo, hi) in dts.items():
            key = f"{kernel}-{init}/{dname}"
            results[key] = []
            for s in seeds:
                c = make_config(
                    rec, "tiny", **base, init=init, dt_min=lo, dt_max=hi, seed=s, ssm_lr=cfg.ssm_lr
                )
                cell = {"cfg": dataclasses.asdict(c), "kernel": kernel, "v": 2}
                hit = cache.get(cell) if cache is not None else None
                need_model = (kernel, init) == own and dname == "httyh" and s == seeds[0]
                if hit is None or need_model:
                    model, _ = fit_recipe(rec, c, progress=False)
                    mse = float(evaluate(rec, model, c, split="test")["mse"])
                    if cache is not None:
                        cache.put(cell, mse)
                    if need_model:
                        method_model, method_cfg = model, c
                else:
                    mse = float(hit)
                results[key].append(mse)
                if run is not None:
                    run.log_metrics({"variant": key, "seed": s, "mse": mse})
    name = f"{own[0]}-{own[1]}"
    inv_err = _delay_invariance_error(method_model, method_cfg) if method_model else None
    arms = {k: v for k, v in results.items() if not k.startswith(name + "/")}
    plots = _plot_delay(results, variants, base, run)
    details: dict[str, Any] = {
        "setup": {**base, "dt_httyh": list(rule), "dt_misset": list(MISSET), "seeds": seeds}
    }
    not_showable = ""
    if own == ("s4", "legs"):
        not_showable = (
            "S4-LegS (DPLR) does not follow HTTYH's 1/Δ memory rule on this delayed copy: the Δ "
            "range one decade too large is not worse at either size (with ssm_lr=1e-2 and 150 "
            "steps it is clearly better, 3 seeds, measured offline); the timescale claim shows "
            "for S4D (reproduce s4d) and is tested there"
        )
    return ReproduceResult(
        task=f"delayed copy (white noise, L={base['length']}, delay={base['delay']})",
        metric="test MSE",
        method=f"{name} with HTTYH Δ range {tuple(round(r, 4) for r in rule)}",
        baseline=f"{name} with Δ range {MISSET} (one decade too large)",
        method_values=results[f"{name}/httyh"],
        baseline_values=results[f"{name}/misset"],
        higher_is_better=False,
        invariance_error=inv_err,
        seconds=time.time() - t0,
        seeds=seeds,
        arms=arms,
        details=details,
        plots=plots,
        not_showable=not_showable,
    )


def _plot_delay(results: dict[str, list[float]], variants: list, base: dict, run: Any) -> list[str]:
    if run is None or not getattr(run, "enabled", False):
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(variants) + 2), 3.5))
    names = [f"{k}-{i}" for k, i in variants]
    for off, dname, lab in ((-0.2, "httyh", "HTTYH Δ range"), (0.2, "misset", "Δ in [0.1, 1]")):
        for i, n in enumerate(names):
            v = results[f"{n}/{dname}"]
            ax.bar(
                i + off,
                sum(v) / len(v),
                0.4,
                color="C0" if dname == "httyh" else "C1",
                label=lab if i == 0 else None,
            )
            ax.plot([i + off] * len(v), v, "k.", ms=4)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("test MSE (bars: mean; dots: seeds)")
    ax.legend(fontsize=8)
    ax.set_title(f"delayed copy L={base['length']}, delay={base['delay']}")
    fig.tight_layout()
    return [str(run.savefig(fig, "delay_task.png"))]
