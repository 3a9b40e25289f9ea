"""FPFH + RANSAC, the classical registration baseline, through open3d (optional extra).

``pip install invariance-geometry[open3d]`` brings ``open3d-cpu`` and ``libusb-package``: open3d's
wheel links ``libusb-1.0``, which a bare machine lacks; :func:`import_open3d` loads the copy that
``libusb-package`` ships (``ctypes.CDLL(..., RTLD_GLOBAL)``) before importing open3d, so no system
package is needed. Parameters follow the usual 3DMatch recipe scaled to objects of diameter 2
(estimated normals, FPFH radius 0.4, mutual feature matching, RANSAC distance 0.08).
"""

from __future__ import annotations

import ctypes
import importlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["import_open3d", "fpfh_features", "fpfh_ransac", "FPFHResult"]

_O3D: Any = None


def import_open3d() -> Any:
    """``open3d``, after making ``libusb-1.0`` loadable from the ``libusb-package`` wheel."""
    global _O3D
    if _O3D is not None:
        return _O3D
    try:
        import libusb_package

        path = libusb_package.get_library_path()
        if path is not None:
            ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
    except ImportError:
        pass
    try:
        _O3D = importlib.import_module("open3d")
    except ImportError as e:
        raise ImportError(
            f"FPFH + RANSAC needs open3d: pip install 'invariance-geometry[open3d]' ({e})"
        ) from e
    return _O3D


def _cloud(o3d: Any, pos: Tensor, name: str, normal_radius: float) -> Any:
    if not isinstance(pos, Tensor) or pos.dim() != 2 or pos.shape[-1] != 3 or pos.shape[0] < 4:
        raise ValueError(f"{name} must be an (N >= 4, 3) tensor")
    if not pos.is_floating_point() or not torch.isfinite(pos).all():
        raise ValueError(f"{name} must be a finite floating tensor")
    pcd = o3d.geometry.PointCloud()
    pcd.points = o3d.utility.Vector3dVector(pos.detach().double().cpu().numpy())
    pcd.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=normal_radius, max_nn=30))
    return pcd


def fpfh_features(pos: Tensor, *, radius: float = 0.4, normal_radius: float = 0.16) -> Tensor:
    """33-d FPFH descriptors ``(N, 33)`` of a cloud (normals estimated by open3d)."""
    o3d = import_open3d()
    pcd = _cloud(o3d, pos, "pos", normal_radius)
    f = o3d.pipelines.registration.compute_fpfh_feature(
        pcd, o3d.geometry.KDTreeSearchParamHybrid(radius=radius, max_nn=100)
    )
    return torch.from_numpy(np.asarray(f.data).T.copy())


@dataclass
class FPFHResult:
    R: Tensor
    t: Tensor
    fitness: float
    inlier_rmse: float


def fpfh_ransac(
    src: Tensor,
    tgt: Tensor,
    *,
    distance: float = 0.08,
    feature_radius: float = 0.4,
    normal_radius: float = 0.16,
    iterations: int = 100_000,
    confidence: float = 0.999,
    seed: int = 0,
) -> FPFHResult:
    """Pose ``tgt ≈ src @ R.T + t`` by open3d's RANSAC on mutual FPFH matches."""
    if not distance > 0 or not feature_radius > 0 or not normal_radius > 0:
        raise ValueError("distance, feature_radius and normal_radius must be > 0")
    if not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be an int >= 1, got {iterations!r}")
    o3d = import_open3d()
    reg = o3d.pipelines.registration
    o3d.utility.random.seed(seed)
    a, b = _cloud(o3d, src, "src", normal_radius), _cloud(o3d, tgt, "tgt", normal_radius)
    param = o3d.geometry.KDTreeSearchParamHybrid(radius=feature_radius, max_nn=100)
    fa, fb = reg.compute_fpfh_feature(a, param), reg.compute_fpfh_feature(b, param)
    # open3d warns on stdout when mutual filtering leaves few matches (it then falls back to all
    # matches, which is what we want): silence its logger for this call only
    with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
        res = reg.registration_ransac_based_on_feature_matching(
            a,
            b,
            fa,
            fb,
            True,
            distance,
            reg.TransformationEstimationPointToPoint(False),
            3,
            [
                reg.CorrespondenceCheckerBasedOnEdgeLength(0.9),
                reg.CorrespondenceCheckerBasedOnDistance(distance),
            ],
            reg.RANSACConvergenceCriteria(iterations, confidence),
        )
    T = torch.from_numpy(np.asarray(res.transformation).copy()).to(src.dtype)
    return FPFHResult(T[:3, :3].contiguous(), T[:3, 3].contiguous(), res.fitness, res.inlier_rmse)
