"""Private helpers shared by the vision recipes."""

from __future__ import annotations

import dataclasses
from typing import Any


def reproduce_config(recipe: Any, cfg: Any, quick: bool) -> Any:
    """The config a reproduce run uses: the ``quick`` preset (if the recipe has one, else the
    tiny defaults) when ``quick``, otherwise the ``full`` preset, applied to every field the
    caller left at its tiny default (explicit overrides win)."""
    tiny = type(cfg)()
    preset = recipe.presets.get("quick" if quick else "full", {})
    over = {k: v for k, v in preset.items() if getattr(cfg, k) == getattr(tiny, k)}
    return dataclasses.replace(cfg, **over)


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    n = len(values)
    m = sum(values) / n
    return m, (sum((v - m) ** 2 for v in values) / max(1, n - 1)) ** 0.5


def train_arms_timed(recipe: Any, cfg: Any, arms: dict[str, dict[str, Any]], seeds: list[int],
                     run: Any = None, split: str = "test") -> dict[str, list[dict]]:
    """Like ``invariance.core.train.train_arms`` (seed-major loop, a fresh recipe per run), but
    each run's metrics also carry ``seconds`` (training + evaluation wall time) and every run is
    logged to ``run`` as soon as it finishes, so a killed reproduce keeps its finished runs."""
    import time

    from invariance.core.train import evaluate, fit_recipe

    res: dict[str, list[dict]] = {a: [] for a in arms}
    for s in seeds:
        for arm, over in arms.items():
            c = dataclasses.replace(cfg, seed=s, **over)
            r = type(recipe)()
            t0 = time.perf_counter()
            model, _ = fit_recipe(r, c, progress=False)
            mt = dict(evaluate(r, model, c, split))
            mt["seconds"] = round(time.perf_counter() - t0, 1)
            res[arm].append(mt)
            if run is not None:
                run.log_metrics({"arm": arm, "seed": s, **mt})
    return res
