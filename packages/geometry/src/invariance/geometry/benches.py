"""Benchmarks (``invariance-geometry bench <name>``): kNN against scipy's cKDTree, Frame
Averaging's overhead over its backbone, and the registration ops (kNN, FPS, PPF, Sinkhorn,
RANSAC) against scipy / open3d / PyG / POT. All time through :func:`invariance.core.bench.compare`
(``torch.utils.benchmark``, candidates interleaved, repeats, median and spread) and return flat
rows."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from invariance.core.bench import compare, machine, register_bench

from .frame_averaging import FrameAveraging
from .nn.baselines import PointNet
from .ops.frames import frame_signs, pca_frames
from .ops.geometry_features import point_pair_features
from .ops.neighbors import farthest_point_sample, knn
from .registration.solvers import log_optimal_transport, ransac

__all__ = ["bench_knn", "bench_fa_overhead", "bench_registration"]


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


def _peer(label: str, fn):
    """``fn()`` or ``None`` when the peer is not installed (the row then says so)."""
    try:
        return fn()
    except ImportError:
        return None


@register_bench("geometry", "registration")
def bench_registration(
    *,
    device: str = "cpu",
    quick: bool = False,
    n_points: int = 2048,
    k: int = 16,
    n_corr: int = 1024,
    iterations: int = 1000,
    ot_batch: int = 16,
    ot_size: int = 64,
    repeats: int = 0,
) -> dict:
    """The registration toolkit's ops against the peers that run here, one cloud of
    ``n_points`` (float32 unless the peer needs float64), one torch thread, each op timed with
    core's ``compare`` (interleaved, repeats, median and spread); ``speedup`` > 1 = faster than
    the op's reference (the peer). Sections:

    * ``knn``: ours (brute / auto) vs ``scipy.spatial.cKDTree`` (build + query) and open3d's
      ``core.nns.NearestNeighborSearch`` (build + knn search); indices compared with cKDTree;
    * ``fps``: ours to n/4 vs open3d ``farthest_point_down_sample``;
    * ``ppf``: ours vs PyG's ``point_pair_features`` on the kNN pairs (max abs difference);
    * ``sinkhorn``: our log-domain OT with a dustbin vs POT's ``sinkhorn_log`` on the same
      augmented problem and marginals (torch backend; max abs difference of the log plans);
    * ``ransac``: ours (vectorised) vs open3d's ``registration_ransac_based_on_correspondence``,
      ``iterations`` hypotheses each (no early stop), ``n_corr`` correspondences with 50%%
      outliers; the rotation error of each against the ground truth.
    """
    from scipy.spatial import cKDTree

    from .registration.fpfh import import_open3d
    from .registration.metrics import rotation_error
    from .registration.pairs import make_pair

    if quick:
        n_points, n_corr, iterations = min(n_points, 1024), min(n_corr, 512), min(iterations, 500)
    repeats = repeats or (3 if quick else 5)
    mrt = 0.05 if quick else 0.2
    torch.manual_seed(0)
    p = make_pair(0, n_points=n_points, split="full", rotation="so3")
    x, nrm = p.src.contiguous(), p.src_normals.contiguous()
    xn = x.double().numpy()
    label = f"{n_points} points, k={k}"
    o3d = _peer("open3d", import_open3d)
    out: dict = {"machine": machine(device), "label": label}

    # -- kNN
    fns = {"ckdtree": lambda: cKDTree(xn).query(xn, k)}
    fns["ours_brute"] = lambda: knn(x, k, method="brute")
    fns["ours_auto"] = lambda: knn(x, k)
    if o3d is not None:
        xt = o3d.core.Tensor(xn)

        def o3d_knn():
            s = o3d.core.nns.NearestNeighborSearch(xt)
            s.knn_index()
            return s.knn_search(xt, k)

        fns["open3d_nns"] = o3d_knn
    rows = compare(fns, reference="ckdtree", repeats=repeats, min_run_time=mrt, label=label)
    ref = cKDTree(xn).query(xn, k)[1]
    for r in rows:
        if r["name"].startswith("ours"):
            m = "brute" if r["name"] == "ours_brute" else "auto"
            r["indices_equal_ckdtree"] = bool(np.array_equal(knn(x, k, method=m)[0].numpy(), ref))
    out["knn"] = rows

    # -- FPS
    fns = {"ours": lambda: farthest_point_sample(x, n_points // 4)}
    if o3d is not None:
        pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xn))
        fns = {"open3d": lambda: pcd.farthest_point_down_sample(n_points // 4), **fns}
    out["fps"] = compare(fns, repeats=repeats, min_run_time=mrt, label=label)

    # -- PPF on the kNN pairs
    idx = knn(x, k, method="brute")[0]
    pi, pj = x[:, None].expand(-1, k, -1), x[idx]
    ni, nj = nrm[:, None].expand(-1, k, -1), nrm[idx]
    a, b, c, d = (t.reshape(-1, 3) for t in (pi, pj, ni, nj))  # the same (E, 3) pairs for both
    fns = {"ours": lambda: point_pair_features(a, b, c, d)}
    try:
        from torch_geometric.nn.conv.ppf_conv import point_pair_features as pyg_ppf

        fns = {"pyg": lambda: pyg_ppf(a, b, c, d), **fns}
        diff = (pyg_ppf(a, b, c, d) - point_pair_features(a, b, c, d)).abs().max()
        out["ppf_max_abs_diff_vs_pyg"] = float(diff)
    except ImportError:
        out["ppf_max_abs_diff_vs_pyg"] = "torch_geometric not installed"
    out["ppf"] = compare(fns, repeats=repeats, min_run_time=mrt, label=f"{n_points * k} pairs")

    # -- Sinkhorn with a dustbin: ot_batch patches of ot_size x ot_size
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(ot_batch, ot_size, ot_size, generator=g, dtype=torch.float64)
    alpha, iters = 1.0, 20
    fns = {"ours": lambda: log_optimal_transport(scores, alpha, iters)}
    try:
        import ot

        m_, n_ = ot_size, ot_size
        aug = torch.cat(
            [
                torch.cat([scores, torch.full((ot_batch, m_, 1), alpha, dtype=scores.dtype)], 2),
                torch.full((ot_batch, 1, n_ + 1), alpha, dtype=scores.dtype),
            ],
            1,
        )
        norm = 1.0 / (m_ + n_)
        mu = torch.cat([torch.full((m_,), norm), torch.tensor([n_ * norm])]).double()
        nu = torch.cat([torch.full((n_,), norm), torch.tensor([m_ * norm])]).double()

        def pot():
            warnings.filterwarnings("ignore", "Sinkhorn did not converge")
            return [
                ot.bregman.sinkhorn_log(mu, nu, -aug[b], reg=1.0, numItermax=iters, stopThr=0.0)
                for b in range(aug.shape[0])
            ]

        fns = {"pot_sinkhorn_log": pot, **fns}
        ours_plan = log_optimal_transport(scores, alpha, iters)
        pot_plan = torch.stack(pot()).clamp_min(1e-300).log() - np.log(norm)
        out["sinkhorn_max_abs_diff_vs_pot"] = float((ours_plan - pot_plan).abs().max())
    except ImportError:
        out["sinkhorn_max_abs_diff_vs_pot"] = "POT not installed"
    out["sinkhorn"] = compare(
        fns, repeats=repeats, min_run_time=mrt, label=f"{ot_batch} x {ot_size} x {ot_size}, 20 it"
    )

    # -- RANSAC on correspondences with 50% outliers
    R = p.R
    src = x[:n_corr]
    tgt = src @ R.T + p.t + 0.005 * torch.randn(src.shape, generator=g).to(src)
    n_out = n_corr // 2
    tgt[:n_out] = tgt[torch.randperm(n_corr, generator=g)[:n_out]]
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    fns = {"ours": lambda: ransac(src, tgt, threshold=0.05, iterations=iterations, generator=gen())}
    errs = {"ours": float(rotation_error(fns["ours"]().R, R))}
    if o3d is not None:
        reg = o3d.pipelines.registration
        a = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(src.double().numpy()))
        b = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(tgt.double().numpy()))
        corr = o3d.utility.Vector2iVector(np.stack([np.arange(n_corr)] * 2, 1).astype(np.int32))

        def o3d_ransac():
            o3d.utility.random.seed(0)
            return reg.registration_ransac_based_on_correspondence(
                a,
                b,
                corr,
                0.05,
                reg.TransformationEstimationPointToPoint(False),
                3,
                [],
                reg.RANSACConvergenceCriteria(iterations, 1.0),
            )

        fns = {"open3d": o3d_ransac, **fns}
        T = torch.from_numpy(np.asarray(o3d_ransac().transformation).copy()).to(R)
        errs["open3d"] = float(rotation_error(T[:3, :3], R))
    out["ransac"] = compare(
        fns,
        repeats=repeats,
        min_run_time=mrt,
        label=f"{n_corr} correspondences, 50% outliers, {iterations} it",
    )
    for r in out["ransac"]:
        r["rre_deg"] = round(errs[r["name"]], 4)
    out["peers"] = "open3d " + (o3d.__version__ if o3d is not None else "not installed")
    ops = ("knn", "fps", "ppf", "sinkhorn", "ransac")
    out["rows"] = [{"op": op, **r} for op in ops for r in out.pop(op)]
    return out
