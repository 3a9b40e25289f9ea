"""Benchmarks (``invariance-geometry bench <name>``): kNN against scipy's cKDTree, and Frame
Averaging's overhead over its backbone. Both time through :func:`invariance.core.bench.compare`
(``torch.utils.benchmark``, candidates interleaved, repeats, median and spread) and return flat
rows."""

from __future__ import annotations

import numpy as np
import torch

from invariance.core.bench import compare, machine, register_bench

from .frame_averaging import FrameAveraging
from .nn.baselines import PointNet
from .ops.frames import frame_signs, pca_frames
from .ops.neighbors import farthest_point_sample, knn

__all__ = ["bench_knn", "bench_fa_overhead"]


@register_bench("geometry", "knn")
def bench_knn(
    *,
    device: str = "cpu",
    quick: bool = False,
    n_points: int = 2048,
    k: int = 16,
    batch: int = 8,
    repeats: int = 0,
) -> dict:
    """kNN graph of ``batch`` clouds of ``n_points`` (all points as queries, float32): ours
    (``method="auto"``: cKDTree on CPU plus exact torch distances; ``"brute"``: exact differences
    + topk) against ``scipy.spatial.cKDTree`` (build + query per cloud, one worker); also FPS to
    n/4 points. One torch thread. ``speedup`` > 1 means faster than cKDTree."""
    from scipy.spatial import cKDTree

    if quick:
        n_points, batch = min(n_points, 1024), min(batch, 4)
    repeats = repeats or (3 if quick else 7)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, n_points, 3, generator=g).to(device)
    xn = x.double().cpu().numpy()

    def kdtree():
        return [cKDTree(c).query(c, k) for c in xn]

    fns = {
        "ckdtree": kdtree,
        "ours_auto": lambda: knn(x, k),
        "ours_brute": lambda: knn(x, k, method="brute"),
    }
    label = f"{batch} x {n_points} points, k={k}, {device}"
    rows = compare(
        fns,
        reference="ckdtree",
        repeats=repeats,
        min_run_time=0.1 if quick else 0.2,
        device=device,
        label=label,
    )
    ref = np.stack([i for _, i in kdtree()])
    for r in rows:
        r["points_per_s"] = round(batch * n_points / (r["median_ms"] * 1e-3))
        if r["name"].startswith("ours"):
            method = "auto" if r["name"] == "ours_auto" else "brute"
            r["indices_equal_ckdtree"] = bool(
                np.array_equal(knn(x, k, method=method)[0].cpu().numpy(), ref)
            )
    fps = compare(
        {"fps_to_quarter": lambda: farthest_point_sample(x, n_points // 4)},
        repeats=repeats,
        min_run_time=0.1 if quick else 0.2,
        device=device,
        label=label,
    )
    return {"rows": rows, "fps": fps, "machine": machine(device)}


@register_bench("geometry", "fa_overhead")
def bench_fa_overhead(
    *,
    device: str = "cpu",
    quick: bool = False,
    batch: int = 32,
    n_points: int = 1024,
    repeats: int = 0,
) -> dict:
    """Forward time of FrameAveraging(PointNet) over the bare PointNet (target: <= 9x for the 8
    O(3) frames), with a breakdown: frame construction (centroid, covariance, batched 3x3
    ``eigh``), framing (one rotation + 8 sign flips), 8 back-to-back backbone calls (the floor FA
    cannot beat without sharing work across frames), averaging. Variants: ``frames_per_pass=
    "auto"`` (default), all 8 frames in one batch, one frame per pass, the 4 SO(3) frames, and
    the peer ``frame-averaging-pytorch`` (lucidrains) around the same backbone when installed.
    Timed with core's ``compare`` (interleaved, one torch thread); ``over_backbone_x`` = median /
    the bare backbone's median."""
    if quick:
        batch, n_points = min(batch, 16), min(n_points, 512)
    repeats = repeats or (3 if quick else 7)
    torch.manual_seed(0)
    net = PointNet(num_classes=10).to(device).eval()
    fa = {
        "fa_o3_auto": FrameAveraging(net, group="O3", on_degenerate="ignore").eval(),
        "fa_o3_one_batch": FrameAveraging(
            net, group="O3", frames_per_pass=None, on_degenerate="ignore"
        ).eval(),
        "fa_o3_one_frame_per_pass": FrameAveraging(
            net, group="O3", frames_per_pass=1, on_degenerate="ignore"
        ).eval(),
        "fa_so3_auto": FrameAveraging(net, group="SO3", on_degenerate="ignore").eval(),
    }
    x = torch.randn(batch, n_points, 3, device=device) * torch.tensor(
        [3.0, 2.0, 1.0], device=device
    )
    S = frame_signs("O3", dtype=x.dtype, device=device)
    fr = pca_frames(x, on_degenerate="ignore")
    R0 = fr.frames[:, 0]
    y8 = torch.randn(8, batch, 10, device=device)

    def framing():
        base = (x - fr.center.unsqueeze(1)) @ R0
        return [base * S[f].view(1, 1, 3) for f in range(8)]

    def no_grad(f):
        def g():
            with torch.no_grad():
                return f()

        return g

    fns = {
        "backbone": no_grad(lambda: net(x)),
        "backbone_8_calls": no_grad(lambda: [net(x) for _ in range(8)]),
        "frame_construction": lambda: pca_frames(x, on_degenerate="ignore"),
        "framing_8": framing,
        "averaging": lambda: y8.sum(0) / 8,
        **{k: no_grad(lambda m=m: m(x)) for k, m in fa.items()},
    }
    peer = ""
    try:
        import warnings
        from importlib.metadata import version

        from frame_averaging_pytorch import FrameAverage  # type: ignore[import-not-found]

        with warnings.catch_warnings():  # its constructor trips a torch indexing deprecation
            warnings.simplefilter("ignore", UserWarning)
            peer_fa = FrameAverage(net, dim=3, invariant_output=True).to(device).eval()
        fns["peer_lucidrains_o3"] = no_grad(lambda: peer_fa(x))
        peer = f"frame-averaging-pytorch {version('frame-averaging-pytorch')}"
    except ImportError:
        pass
    rows = compare(
        fns,
        reference="backbone",
        repeats=repeats,
        min_run_time=0.1 if quick else 0.2,
        device=device,
        label=f"{batch} clouds x {n_points} points",
    )
    base = next(r["median_ms"] for r in rows if r["name"] == "backbone")
    for r in rows:
        r["over_backbone_x"] = round(r["median_ms"] / base, 3)
    cost = {r["name"]: r["median_ms"] for r in rows}
    floor = (
        cost["backbone_8_calls"] + cost["frame_construction"] + cost["framing_8"]
        + cost["averaging"]
    ) / base  # fmt: skip
    return {
        "rows": rows,
        "auto_frames_per_pass": fa["fa_o3_auto"]._step(8, batch * n_points),
        "floor_o3_x": round(floor, 3),
        "fa_o3_auto_over_backbone_x": next(
            r["over_backbone_x"] for r in rows if r["name"] == "fa_o3_auto"
        ),
        "target_o3_x": 9.0,
        "peer": peer or "frame-averaging-pytorch not installed",
        "machine": machine(device),
    }
