r"""Exact two-view geometry of renders (:mod:`invariance.vision.render`), OpenCV convention.

The pinhole model of a render: camera ``x`` right, ``y`` down, ``z`` forward; pixel ``(col, row)``
has its centre at ``(col + 0.5, row + 0.5)`` (the frame LoFTR and MegaDepth use), and
``K = [[f, 0, S/2], [0, f, S/2], [0, 0, 1]]`` with ``f = S / (2 tan(fov/2))``
(:func:`intrinsics`). :func:`world_to_camera` gives ``[R | t]``, :func:`project` maps world points
to pixels, :func:`cast` shoots rays through arbitrary sub-pixel positions and returns the exact
surface points, and :func:`visible` tells whether a world point is the first surface on the ray
from a camera (an exact occlusion test, no depth-map lookup), so dense correspondences between
two views are exact. Also importable from :mod:`invariance.vision.render`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from invariance.vision._checks import check_int, check_number, check_tensor
from invariance.vision.render import Camera, Scene, _intersect, _scene_index

__all__ = ["cast", "intrinsics", "project", "visible", "world_to_camera"]


def intrinsics(camera: Camera, size: int) -> Tensor:
    """The ``(3, 3)`` pinhole matrix of ``size`` x ``size`` renders of ``camera`` (OpenCV
    convention, pixel centres at half-integers; see the module docstring)."""
    if not isinstance(camera, Camera):
        raise TypeError(f"camera must be a Camera, got {type(camera).__name__}")
    size = check_int(size, "size")
    check_number(camera.fov, "camera.fov", lo=0.0, hi=179.0, lo_open=True)
    f = size / (2 * math.tan(math.radians(camera.fov) / 2))
    dt = camera.position.dtype
    return torch.tensor([[f, 0.0, size / 2], [0.0, f, size / 2], [0.0, 0.0, 1.0]], dtype=dt)


# OpenGL camera axes (x right, y up, looking along -z) -> OpenCV (x right, y down, z forward)
def _gl_to_cv(dtype: torch.dtype) -> Tensor:
    return torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=dtype))


def _check_camera(camera: object) -> Camera:
    if not isinstance(camera, Camera):
        raise TypeError(f"camera must be a Camera, got {type(camera).__name__}")
    check_tensor(camera.position, "camera.position", dims=2)
    check_tensor(camera.rotation, "camera.rotation", dims=3)
    b = camera.position.shape[0]
    if tuple(camera.position.shape) != (b, 3) or tuple(camera.rotation.shape) != (b, 3, 3):
        raise ValueError(
            "camera must hold (B, 3) positions and (B, 3, 3) rotations, got "
            f"{tuple(camera.position.shape)} and {tuple(camera.rotation.shape)}"
        )
    eye = torch.eye(3, dtype=camera.rotation.dtype)
    rtr = camera.rotation.transpose(-1, -2) @ camera.rotation
    if bool(((rtr - eye).abs() > 1e-4).any()) or bool(
        (torch.linalg.det(camera.rotation) < 0).any()
    ):
        raise ValueError("camera.rotation must hold proper rotations (degenerate camera)")
    return camera


def world_to_camera(camera: Camera) -> Tensor:
    """``(B, 4, 4)`` world-to-camera transforms ``[R | t]`` in the OpenCV convention, so a world
    point ``X`` has camera coordinates ``R X + t`` with ``z`` its depth; the relative pose from
    view ``a`` to view ``b`` is ``T_b @ inv(T_a)``."""
    cam = _check_camera(camera)
    dt = cam.position.dtype
    r = _gl_to_cv(dt) @ cam.rotation.transpose(-1, -2)
    t = -(r @ cam.position[..., None])[..., 0]
    out = torch.zeros(len(cam), 4, 4, dtype=dt)
    out[:, :3, :3], out[:, :3, 3], out[:, 3, 3] = r, t, 1.0
    return out


def project(camera: Camera, points: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Project world ``points`` ``(B, N, 3)`` into ``size`` x ``size`` renders of the ``B``
    cameras: pixel coordinates ``(B, N, 2)`` (``x`` = column, ``y`` = row, OpenCV frame) and the
    z-depth ``(B, N)`` (non-positive behind the camera)."""
    cam = _check_camera(camera)
    points = check_tensor(points, "points", dims=3, expected="(B, N, 3)")
    if points.shape[0] != len(cam) or points.shape[-1] != 3:
        raise ValueError(f"points must have shape ({len(cam)}, N, 3), got {tuple(points.shape)}")
    k = intrinsics(cam, size).to(points.dtype)
    t = world_to_camera(cam).to(points.dtype)
    pc = points @ t[:, :3, :3].transpose(-1, -2) + t[:, None, :3, 3]
    z = pc[..., 2]
    zs = torch.where(z.abs() < 1e-12, torch.full_like(z, 1e-12), z)
    uv = torch.stack([k[0, 0] * pc[..., 0] / zs + k[0, 2], k[1, 1] * pc[..., 1] / zs + k[1, 2]], -1)
    return uv, z


def _views(scene: object, b: int, scene_index: Tensor | None) -> Scene:
    if not isinstance(scene, Scene):
        raise TypeError(f"scene must be a Scene, got {type(scene).__name__}")
    return scene[_scene_index(scene, b, scene_index)]


def cast(
    scene: Scene,
    camera: Camera,
    pixels: Tensor,
    *,
    size: int,
    scene_index: Tensor | None = None,
) -> dict[str, Tensor]:
    """Cast rays of ``size`` x ``size`` renders through sub-pixel positions ``pixels``
    ``(B, N, 2)`` (OpenCV frame: pixel ``(c, r)`` spans ``[c, c + 1] x [r, r + 1]``).

    Returns ``points`` ``(B, N, 3)`` (world hit points, 0 where the ray misses), ``depth``
    ``(B, N)`` (z-depth, 0 on a miss), ``hit`` ``(B, N)`` bool and ``prim`` ``(B, N)`` (the hit
    primitive slot, -1 on a miss). At pixel centres it reproduces :func:`render`'s depth."""
    cam = _check_camera(camera)
    b = len(cam)
    size = check_int(size, "size")
    pixels = check_tensor(pixels, "pixels", dims=3, expected="(B, N, 2)")
    if pixels.shape[0] != b or pixels.shape[-1] != 2:
        raise ValueError(f"pixels must have shape ({b}, N, 2), got {tuple(pixels.shape)}")
    sc = _views(scene, b, scene_index).to(dtype=cam.position.dtype)
    dt = cam.position.dtype
    k = intrinsics(cam, size)
    px = pixels.to(dt)
    x = (px[..., 0] - k[0, 2]) / k[0, 0]
    y = -(px[..., 1] - k[1, 2]) / k[1, 1]
    d_cam = torch.stack([x, y, -torch.ones_like(x)], -1)
    d_cam = d_cam / d_cam.norm(dim=-1, keepdim=True)
    d = torch.einsum("bij,bnj->bni", cam.rotation, d_cam)
    o = cam.position[:, None, :]
    t, _, _ = _intersect(sc, o, d, geometry=False)
    t_min, idx = t.min(-1)
    hit = torch.isfinite(t_min)
    tf = torch.where(hit, t_min, torch.zeros_like(t_min))
    pts = torch.where(hit[..., None], o + tf[..., None] * d, torch.zeros_like(d))
    depth = tf * (d * cam.forward[:, None, :]).sum(-1)
    return {
        "points": pts,
        "depth": depth,
        "hit": hit,
        "prim": torch.where(hit, idx, torch.full_like(idx, -1)),
    }


def visible(
    scene: Scene,
    camera: Camera,
    points: Tensor,
    *,
    scene_index: Tensor | None = None,
    tol: float = 1e-4,
) -> Tensor:
    """``(B, N)`` bool: world ``points`` ``(B, N, 3)`` (on surfaces of the scene) are the first
    surface hit by the ray from camera ``b``'s centre towards them and lie in front of the camera
    (an exact occlusion test; ``tol`` is the relative slack on the hit distance)."""
    cam = _check_camera(camera)
    b = len(cam)
    points = check_tensor(points, "points", dims=3, expected="(B, N, 3)")
    if points.shape[0] != b or points.shape[-1] != 3:
        raise ValueError(f"points must have shape ({b}, N, 3), got {tuple(points.shape)}")
    check_number(tol, "tol", lo=0.0)
    sc = _views(scene, b, scene_index).to(dtype=cam.position.dtype)
    o = cam.position[:, None, :]
    v = points.to(o.dtype) - o
    dist = v.norm(dim=-1)
    d = v / dist.clamp_min(1e-12)[..., None]
    t, _, _ = _intersect(sc, o, d, geometry=False)
    first = t.min(-1).values
    front = (v * cam.forward[:, None, :]).sum(-1) > 0
    return front & (first >= dist * (1 - tol)) & (dist > 0)
