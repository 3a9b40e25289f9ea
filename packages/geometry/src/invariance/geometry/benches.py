"""Benchmarks (``invariance-geometry bench <name>``): ops against scipy's cKDTree, and Frame
Averaging's overhead over its backbone."""

from __future__ import annotations

import torch

from invariance.core.bench import register_bench, time_fn

from .frame_averaging import FrameAveraging
from .nn.baselines import PointNet
from .ops.neighbors import farthest_point_sample, knn

__all__ = ["bench_knn", "bench_fa_overhead"]


@register_bench("geometry", "knn")
def bench_knn(
    *, device: str = "cpu", quick: bool = False, n_points: int = 2048, k: int = 16, batch: int = 8
) -> dict:
    """kNN graph of ``batch`` clouds of ``n_points`` (all points as queries): our cdist+sort vs
    ``scipy.spatial.cKDTree`` (build + query, one tree per cloud); also FPS to n/4 points.
    Reports query points per second and whether the indices agree."""
    import numpy as np
    from scipy.spatial import cKDTree

    if quick:
        n_points, batch = min(n_points, 1024), min(batch, 4)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, n_points, 3, generator=g, dtype=torch.float64)
    xd = x.to(device)
    xn = x.numpy()

    def ours():
        return knn(xd, k)

    def kdtree():
        return [cKDTree(c).query(c, k)[1] for c in xn]

    repeat = 3 if quick else 10
    t_ours = time_fn(ours, warmup=1, repeat=repeat, device=device)["median_s"]
    t_kd = time_fn(kdtree, warmup=1, repeat=repeat)["median_s"]
    t_fps = time_fn(
        lambda: farthest_point_sample(xd, n_points // 4), warmup=1, repeat=repeat, device=device
    )["median_s"]
    same = bool(np.array_equal(ours()[0].cpu().numpy(), np.stack(kdtree())))
    q = batch * n_points
    return {
        "clouds": batch,
        "points": n_points,
        "k": k,
        "device": device,
        "ours_points_per_s": q / t_ours,
        "ckdtree_points_per_s": q / t_kd,
        "ours_over_ckdtree_time": t_ours / t_kd,
        "indices_equal": same,
        "fps_to_quarter_s": t_fps,
    }


@register_bench("geometry", "fa_overhead")
def bench_fa_overhead(
    *, device: str = "cpu", quick: bool = False, batch: int = 32, n_points: int = 1024
) -> dict:
    """Forward time of FrameAveraging(PointNet) (8 and 4 frames, batched in one forward, and 8
    frames one per pass) over the bare PointNet (target: <= 9x for 8 frames)."""
    if quick:
        batch, n_points = min(batch, 16), min(n_points, 512)
    torch.manual_seed(0)
    net = PointNet(num_classes=10).to(device).eval()
    fa8 = FrameAveraging(net, group="O3").eval()
    fa4 = FrameAveraging(net, group="SO3").eval()
    fa8_seq = FrameAveraging(net, group="O3", frames_per_pass=1).eval()
    x = torch.randn(batch, n_points, 3, device=device) * torch.tensor(
        [3.0, 2.0, 1.0], device=device
    )
    repeat = 5 if quick else 20
    with torch.no_grad():
        t0 = time_fn(lambda: net(x), repeat=repeat, device=device)["median_s"]
        t8 = time_fn(lambda: fa8(x), repeat=repeat, device=device)["median_s"]
        t4 = time_fn(lambda: fa4(x), repeat=repeat, device=device)["median_s"]
        t8s = time_fn(lambda: fa8_seq(x), repeat=repeat, device=device)["median_s"]
    return {
        "batch": batch,
        "points": n_points,
        "device": device,
        "backbone_ms": 1e3 * t0,
        "fa_o3_ms": 1e3 * t8,
        "fa_so3_ms": 1e3 * t4,
        "overhead_o3_x": t8 / t0,
        "overhead_so3_x": t4 / t0,
        "fa_o3_one_frame_per_pass_ms": 1e3 * t8s,
        "overhead_o3_one_frame_per_pass_x": t8s / t0,
        "target_o3_x": 9.0,
    }
