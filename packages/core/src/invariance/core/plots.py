"""Default reproduce plot: every arm's per-seed values, with mean and ±1 sd.

A reproduce experiment that writes no plot of its own gets this one, so every report shows the
seeds behind its verdict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot_seeds"]


def plot_seeds(res: Any, path: str | Path) -> Path:
    """Strip plot of ``res`` (a :class:`~invariance.core.recipe.ReproduceResult`): one column per
    arm (baseline, method, then the further arms), a dot per seed, the mean as a bar with ±1 sd."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = [(f"{res.baseline}\n(baseline)", res.baseline_values)]
    arms.append((f"{res.method}\n(method)", res.method_values))
    arms += list(res.arms.items())
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(arms), 3.4))
    for i, (_name, vals) in enumerate(arms):
        n = len(vals)
        mean = sum(vals) / n
        sd = (sum((v - mean) ** 2 for v in vals) / (n - 1)) ** 0.5 if n > 1 else 0.0
        xs = [i + 0.08 * (j - (n - 1) / 2) for j in range(n)]
        ax.scatter(xs, vals, s=18, color="C1" if i == 1 else "C0", zorder=3)
        ax.errorbar([i], [mean], yerr=[sd], fmt="_", color="k", capsize=6, markersize=18)
    ax.set_xticks(range(len(arms)))
    ax.set_xticklabels([a for a, _ in arms], fontsize=7)
    arrow = "higher is better" if res.higher_is_better else "lower is better"
    ax.set_ylabel(f"{res.metric} ({arrow})", fontsize=8)
    ax.set_title(f"{res.task}: {res.verdict}", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
