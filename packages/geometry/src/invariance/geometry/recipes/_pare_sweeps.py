"""PARE's proposer against RANSAC on the same correspondences (private; re-exported by
:mod:`invariance.geometry.recipes.pare_net`): recall and pose-solver seconds vs the number of
hypotheses, on a model's own correspondences (:func:`hypothesis_sweep`) and on correspondences
with a controlled share of true matches (:func:`controlled_sweep`)."""

from __future__ import annotations

import time
from typing import Any

import torch

from ..pare_net import PARENet, feature_hypotheses
from ..registration import ransac, registration_metrics

__all__ = [
    "SWEEP_PROPOSER",
    "SWEEP_RANSAC",
    "hypothesis_sweep",
    "sweep_table",
    "sweep_plot",
    "controlled_sweep",
]


#: hypotheses of the proposer and RANSAC iterations of the recall-vs-hypotheses sweep
SWEEP_PROPOSER = (1, 3, 10, 30, 100)
SWEEP_RANSAC = (10, 100, 1000, 10000)


@torch.no_grad()
def hypothesis_sweep(
    model: PARENet,
    cfg: Any,
    pairs: list,
    proposer: tuple[int, ...] = SWEEP_PROPOSER,
    ransac_iters: tuple[int, ...] = SWEEP_RANSAC,
) -> dict[str, dict[int, dict[str, float]]]:
    """Registration recall and pose-solver seconds per pair vs the number of hypotheses, on the
    *same* correspondences: PARE's proposer scoring its ``h`` most confident correspondences (one
    rotation each from the equivariant features) against RANSAC with ``n`` minimal samples (the
    network's forward is not counted). Returns ``{"proposer"|"ransac": {h: {rr, s}}}``."""
    rows: dict[str, dict[int, list]] = {"proposer": {}, "ransac": {}}
    for i, p in enumerate(pairs):
        out = model(p.src, p.tgt)
        c = model.correspondences(out, num=cfg.num_corr)
        a, b, key = out["src"], out["tgt"], model.hypothesis_key
        si, ti = c["src_idx"], c["tgt_idx"]
        src_c, tgt_c = p.src[si], p.tgt[ti]
        for h in proposer:
            t0 = time.perf_counter()
            res = feature_hypotheses(
                src_c, tgt_c, a[key][si], b[key][ti], p.src[c["voter_src"]],
                p.tgt[c["voter_tgt"]], radius=cfg.inlier_radius, max_hypotheses=h,
            )  # fmt: skip
            sec = time.perf_counter() - t0
            m = registration_metrics(p.src, res.R, res.t, p.R, p.t)
            rows["proposer"].setdefault(h, []).append((m["registered"], sec))
        for n in ransac_iters:
            t0 = time.perf_counter()
            rr = ransac(
                src_c, tgt_c, threshold=cfg.inlier_radius, iterations=n,
                generator=torch.Generator().manual_seed(i),
            )  # fmt: skip
            sec = time.perf_counter() - t0
            m = registration_metrics(p.src, rr.R, rr.t, p.R, p.t)
            rows["ransac"].setdefault(n, []).append((m["registered"], sec))
    return {
        kind: {
            h: {"rr": sum(r for r, _ in v) / len(v), "s": sum(t for _, t in v) / len(v)}
            for h, v in d.items()
        }
        for kind, d in rows.items()
    }


def sweep_table(sweeps: list[dict]) -> dict[str, str]:
    """``{"<kind> <hypotheses>": "recall mean ± sd over seeds, seconds"}``."""
    out = {}
    for kind in ("proposer", "ransac"):
        for h in sweeps[0][kind]:
            v = torch.tensor([s[kind][h]["rr"] for s in sweeps], dtype=torch.float64)
            sec = sum(s[kind][h]["s"] for s in sweeps) / len(sweeps)
            sd = float(v.std()) if v.numel() > 1 else 0.0
            out[f"{kind} {h}"] = f"recall {float(v.mean()):.3g} ± {sd:.2g}, {sec:.4f} s per pair"
    return out


def sweep_plot(run: Any, sweeps: list[dict], name: str = "pare_hypotheses") -> list[str]:
    """Recall (mean over seeds) and seconds vs hypotheses, log x (``[]`` without a run dir)."""
    if run is None or not getattr(run, "enabled", False):
        return []
    from invariance.core.io import plt

    fig, axes = plt().subplots(1, 2, figsize=(8, 3.2))
    for kind, label in (("proposer", "PARE proposer"), ("ransac", "RANSAC")):
        hs = list(sweeps[0][kind])
        rr = [sum(s[kind][h]["rr"] for s in sweeps) / len(sweeps) for h in hs]
        sec = [sum(s[kind][h]["s"] for s in sweeps) / len(sweeps) for h in hs]
        axes[0].plot(hs, rr, "o-", label=label)
        axes[1].plot(hs, sec, "o-", label=label)
    for ax, yl in zip(axes, ("registration recall", "pose-solver s per pair")):
        ax.set_xscale("log")
        ax.set_xlabel("hypotheses")
        ax.set_ylabel(yl)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.suptitle("PARE-lite: recall vs hypotheses on the same correspondences", fontsize=9)
    return [run.savefig(fig, name)]


@torch.no_grad()
def controlled_sweep(
    model: PARENet,
    pairs: list,
    *,
    inlier_ratio: float,
    n_corr: int = 128,
    radius: float = 0.1,
    proposer: tuple[int, ...] = SWEEP_PROPOSER,
    ransac_iters: tuple[int, ...] = SWEEP_RANSAC,
    seed: int = 0,
) -> list[dict[str, float]]:
    """The solvers alone: ``n_corr`` correspondences per pair with a set fraction of true matches
    (source points whose nearest target point lies within 0.05 after the ground-truth motion)
    and random pairs otherwise, in random order (so the proposer's first ``h`` are a random
    subset, not the most confident); PARE's proposer with ``h`` hypotheses from the model's
    equivariant features vs RANSAC with ``n`` samples on the same correspondences."""
    g = torch.Generator().manual_seed(seed)
    key = model.hypothesis_key
    rows: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for i, p in enumerate(pairs):
        a, b = model.encode(p.src), model.encode(p.tgt)
        d, j = torch.cdist(p.src @ p.R.T + p.t, p.tgt).min(1)
        good = (d < 0.05).nonzero().flatten()
        ng = min(int(round(inlier_ratio * n_corr)), len(good))
        gi = good[torch.randperm(len(good), generator=g)[:ng]]
        n_src, n_tgt = p.src.shape[0], p.tgt.shape[0]
        si = torch.cat([gi, torch.randint(n_src, (n_corr - ng,), generator=g)])
        ti = torch.cat([j[gi], torch.randint(n_tgt, (n_corr - ng,), generator=g)])
        perm = torch.randperm(n_corr, generator=g)
        si, ti = si[perm], ti[perm]
        s, t = p.src[si], p.tgt[ti]
        for h in proposer:
            t0 = time.perf_counter()
            r = feature_hypotheses(s, t, a[key][si], b[key][ti], s, t, radius=radius,
                                   max_hypotheses=h)  # fmt: skip
            sec = time.perf_counter() - t0
            ok = registration_metrics(p.src, r.R, r.t, p.R, p.t)["registered"]
            rows.setdefault(("PARE proposer", h), []).append((ok, sec))
        for n in ransac_iters:
            t0 = time.perf_counter()
            r = ransac(s, t, threshold=radius, iterations=n,
                       generator=torch.Generator().manual_seed(i))  # fmt: skip
            sec = time.perf_counter() - t0
            ok = registration_metrics(p.src, r.R, r.t, p.R, p.t)["registered"]
            rows.setdefault(("RANSAC", n), []).append((ok, sec))
    return [
        {
            "inlier_ratio": inlier_ratio,
            "solver": k[0],
            "hypotheses": k[1],
            "recall": round(sum(x for x, _ in v) / len(v), 4),
            "s_per_pair": round(sum(x for _, x in v) / len(v), 4),
        }
        for k, v in rows.items()
    ]
