"""MINIMA's data engine, offline: rendered two-view scenes in seven modalities with exact labels.

MINIMA (Ren et al., CVPR 2025) turns an RGB matching set with ground-truth geometry into a
multimodal one by translating every image into other modalities; the translations are
pixel-aligned, so all matching labels carry over. Here the RGB set itself is rendered
(:mod:`invariance.vision.render`), so its geometry is exact:

* **Scenes**: a 3 x 3 floor of coloured tiles carrying three Prim3D objects
  (:mod:`invariance.vision.data.prim3d`), shrunk, turned and placed at random. The train and
  test splits use disjoint object classes (``TRAIN_CLASSES`` / ``TEST_CLASSES``).
* **Views**: pairs of pinhole cameras looking at the scene, the second turned by 12-30 degrees
  of yaw, up to 8 of pitch and 8 of roll, at another distance; known intrinsics ``K`` and
  relative pose ``T_0to1`` (OpenCV convention, :func:`invariance.vision.render.world_to_camera`).
* **Correspondences**: for every point of the stride-``s`` grid of either image (pixel centres
  ``s * (x, y) + 0.5``), the ray's exact surface point, its projection into the other camera and
  a covisibility flag (hit, not occluded in the other view by an exact ray test, inside the other
  image) — :func:`grid_correspondences`.
* **Modalities** (:data:`MODALITIES`): ``rgb`` and its pixel-aligned translations by
  :mod:`invariance.vision.modalities`: ``infrared`` (per-primitive temperature), ``depth``,
  ``normal``, ``event`` (log-intensity change to a second render after a sub-pixel camera
  motion), ``sketch`` and ``paint``. Images are stored gray in ``[0, 1]`` (LoFTR's input).
  MINIMA's LoFTR is trained on ``TRAIN_MODALITIES`` (visible, infrared, depth, normal); event,
  sketch and paint are its zero-shot modalities (``ZERO_SHOT_MODALITIES``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from invariance.vision._checks import check_int
from invariance.vision.data.prim3d import make_prim3d
from invariance.vision.modalities import depth_map, events, infrared, normal_map, paint, sketch
from invariance.vision.render import (
    Camera,
    Scene,
    cast,
    look_at,
    project,
    render,
    rotation_matrix,
    visible,
    world_to_camera,
)

__all__ = [
    "MODALITIES",
    "TRAIN_MODALITIES",
    "ZERO_SHOT_MODALITIES",
    "TRAIN_CLASSES",
    "TEST_CLASSES",
    "make_matching_scenes",
    "grid_correspondences",
    "make_minima_pairs",
]

MODALITIES = ("rgb", "infrared", "depth", "normal", "event", "sketch", "paint")
TRAIN_MODALITIES = ("rgb", "infrared", "depth", "normal")
ZERO_SHOT_MODALITIES = ("event", "sketch", "paint")
TRAIN_CLASSES = (0, 1, 2, 3, 4, 5, 6)
TEST_CLASSES = (7, 8, 9)
FOV = 50.0


def make_matching_scenes(
    n: int, *, classes: tuple[int, ...] = TRAIN_CLASSES, seed: int = 0, dtype=torch.float64
) -> Scene:
    """``n`` scenes: a floor of 3 x 3 tiles (random colours, stripe textures, temperatures) and
    three Prim3D objects of ``classes`` at scale 0.5-0.65, random yaw, on the floor."""
    n = check_int(n, "n")
    g = torch.Generator().manual_seed(int(seed))
    objs, _ = make_prim3d(3 * n, seed=seed, classes=tuple(classes), dtype=dtype)
    perm = torch.randperm(len(objs), generator=g)[: 3 * n]
    p_obj = objs.kind.shape[1]
    p = 9 + 3 * p_obj
    kind = torch.full((n, p), -1, dtype=torch.long)
    center = torch.zeros(n, p, 3, dtype=dtype)
    scale = torch.ones(n, p, 3, dtype=dtype)
    rot = torch.eye(3, dtype=dtype).expand(n, p, 3, 3).clone()
    color = torch.full((n, p, 3), 0.5, dtype=dtype)
    texture = torch.zeros(n, p, dtype=dtype)
    material = torch.full((n, p), 0.5, dtype=dtype)
    tile = 0.55
    for i in range(n):
        for k in range(9):
            tx, tz = (k % 3 - 1) * 2 * tile, (k // 3 - 1) * 2 * tile
            kind[i, k] = 1
            center[i, k] = torch.tensor([tx, -0.6, tz], dtype=dtype)
            # local z (thin) is world up, the stripes (along local y) run across the top face
            scale[i, k] = torch.tensor([tile, tile, 0.05], dtype=dtype)
            roll = 90.0 * int(torch.randint(4, (), generator=g))
            rot[i, k] = rotation_matrix(torch.tensor([0.0, 90.0, roll], dtype=dtype))
            color[i, k] = 0.1 + 0.85 * torch.rand(3, generator=g, dtype=dtype)
            texture[i, k] = 0.6 * torch.rand((), generator=g, dtype=dtype)
            material[i, k] = 0.2 + 0.8 * torch.rand((), generator=g, dtype=dtype)
        slots = torch.randperm(9, generator=g)[:3]
        for j in range(3):
            o = objs[int(perm[3 * i + j])]
            s = 0.5 + 0.15 * float(torch.rand((), generator=g))
            yaw = 360 * float(torch.rand((), generator=g))
            ry = rotation_matrix(torch.tensor([yaw, 0.0, 0.0], dtype=dtype))
            sx, sz = int(slots[j]) % 3 - 1, int(slots[j]) // 3 - 1
            off = torch.tensor([sx * 0.75, -0.55 + 0.9 * s, sz * 0.75], dtype=dtype)
            sl = slice(9 + j * p_obj, 9 + (j + 1) * p_obj)
            kind[i, sl] = o.kind[0]
            center[i, sl] = s * o.center[0] @ ry.T + off
            scale[i, sl] = s * o.scale[0]
            rot[i, sl] = ry @ o.rotation[0]
            color[i, sl], texture[i, sl] = o.color[0], o.texture[0]
            material[i, sl] = o.material[0]
    return Scene(kind, center, scale, rot, color, texture, material)


def _camera_pairs(n: int, g: torch.Generator, dtype) -> tuple[Camera, Camera]:
    def u(lo: float, hi: float) -> Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=g, dtype=dtype)

    yaw0, pitch0, dist0 = u(0, 360), u(30, 50), u(2.5, 3.0)
    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0).to(dtype)
    yaw1 = yaw0 + sign * u(12, 30)
    pitch1 = (pitch0 + u(-8, 8)).clamp(20, 60)
    dist1 = dist0 * u(0.85, 1.15)
    c0 = look_at(yaw0, pitch0, u(-8, 8), dist0, torch.zeros(n, 2, dtype=dtype), fov=FOV)
    c1 = look_at(yaw1, pitch1, u(-8, 8), dist1, torch.zeros(n, 2, dtype=dtype), fov=FOV)
    return c0, c1


def _grid(size: int, stride: int, b: int, dtype) -> Tensor:
    h = size // stride
    r, c = torch.meshgrid(torch.arange(h), torch.arange(h), indexing="ij")
    pts = torch.stack([c, r], -1).reshape(1, -1, 2).to(dtype) * stride + 0.5
    return pts.expand(b, -1, -1)


def grid_correspondences(
    scene: Scene,
    cam_a: Camera,
    cam_b: Camera,
    *,
    size: int,
    stride: int,
    scene_index: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Exact correspondences of the stride-``stride`` grid of view ``a`` (pixel centres
    ``stride * (x, y) + 0.5``, row-major) in view ``b``: pixel coordinates ``(B, L, 2)`` in view
    ``b`` and a covisibility mask ``(B, L)`` (the ray of view ``a`` hits a surface, that point is
    visible from camera ``b`` and projects inside its image)."""
    size = check_int(size, "size")
    stride = check_int(stride, "stride")
    if size % stride:
        raise ValueError(f"size must be divisible by stride, got size={size}, stride={stride}")
    dt = cam_a.position.dtype
    pts = _grid(size, stride, len(cam_a), dt)
    hit = cast(scene, cam_a, pts, size=size, scene_index=scene_index)
    uv, z = project(cam_b, hit["points"], size)
    vis = visible(scene, cam_b, hit["points"], scene_index=scene_index)
    inside = (uv >= 0).all(-1) & (uv < size).all(-1) & (z > 0)
    return uv, hit["hit"] & vis & inside


def _gray(x: Tensor) -> Tensor:
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _modalities(
    scene: Scene,
    cam: Camera,
    idx: Tensor,
    size: int,
    wanted: tuple[str, ...],
    g: torch.Generator,
) -> dict[str, Tensor]:
    """Gray ``(B, 1, S, S)`` images of the wanted modalities of views ``cam`` (rendered in
    float32; the geometry of the labels stays float64)."""
    scene = scene.to(dtype=torch.float32)
    cam = Camera(cam.rotation.float(), cam.position.float(), cam.fov)
    out = render(scene, cam, size=size, scene_index=idx)
    rgb = out["rgb"]
    imgs: dict[str, Tensor] = {}
    for m in wanted:
        if m == "rgb":
            x = rgb
        elif m == "infrared":
            flip = bool(torch.rand((), generator=g) < 0.3)
            x = infrared(out["material"], out["mask"], flip=flip, generator=g)
        elif m == "depth":
            x = depth_map(out["depth"], out["mask"])
        elif m == "normal":
            x = normal_map(out["normals"], out["mask"])
        elif m == "event":
            b, dt = len(cam), cam.position.dtype
            # a small random camera motion (sub-pixel to ~2 px): a second exposure
            ang = 0.6 * (torch.rand(b, 3, generator=g, dtype=dt) - 0.5)
            moved = Camera(
                rotation_matrix(ang) @ cam.rotation,
                cam.position + 0.03 * (torch.rand(b, 3, generator=g, dtype=dt) - 0.5),
                cam.fov,
            )
            rgb1 = render(scene, moved, size=size, scene_index=idx)["rgb"]
            x = events(rgb, rgb1)
        elif m == "sketch":
            x = sketch(rgb)
        elif m == "paint":
            x = paint(rgb, generator=g)
        else:
            raise ValueError(f"modalities must be in {MODALITIES}, got {m!r}")
        imgs[m] = _gray(x).clamp(0, 1).float()
    return imgs


def make_minima_pairs(
    n: int,
    *,
    size: int = 64,
    modalities: tuple[str, ...] = TRAIN_MODALITIES,
    classes: tuple[int, ...] = TRAIN_CLASSES,
    stride: int = 8,
    seed: int = 0,
    n_scenes: int | None = None,
) -> dict[str, Tensor]:
    """``n`` two-view pairs of rendered scenes (``n_scenes`` scenes, default ``ceil(n / 2)``, so
    a scene is seen by several pairs) in every modality of ``modalities`` (``rgb`` always
    included).

    Returns ``image0_<m>``, ``image1_<m>`` ``(n, 1, S, S)`` gray images per modality ``m``;
    ``K0``, ``K1`` ``(n, 3, 3)``; ``T_0to1``, ``T_1to0`` ``(n, 4, 4)`` (OpenCV convention);
    ``w_pt0`` ``(n, L, 2)`` and ``valid0`` ``(n, L)``: where the stride-``stride`` grid points of
    image 0 land in image 1 and whether they are covisible (and ``w_pt1`` / ``valid1`` the other
    way round), ``L = (S / stride)^2``."""
    n = check_int(n, "n")
    size = check_int(size, "size", lo=16)
    stride = check_int(stride, "stride")
    if size % stride:
        raise ValueError(f"size must be divisible by stride, got size={size}, stride={stride}")
    if not isinstance(modalities, (tuple, list)) or not modalities:
        raise ValueError(f"modalities must be a non-empty tuple of names in {MODALITIES}")
    bad = [m for m in modalities if m not in MODALITIES]
    if bad:
        raise ValueError(f"modalities must be in {MODALITIES}, got {bad}")
    wanted = tuple(dict.fromkeys(("rgb", *modalities)))
    n_scenes = math.ceil(n / 2) if n_scenes is None else check_int(n_scenes, "n_scenes")
    dt = torch.float64
    scenes = make_matching_scenes(n_scenes, classes=classes, seed=seed, dtype=dt)
    g = torch.Generator().manual_seed(int(seed) + 7919)
    idx = torch.arange(n) % n_scenes
    c0, c1 = _camera_pairs(n, g, dt)
    w0, v0 = grid_correspondences(scenes, c0, c1, size=size, stride=stride, scene_index=idx)
    w1, v1 = grid_correspondences(scenes, c1, c0, size=size, stride=stride, scene_index=idx)
    t0, t1 = world_to_camera(c0), world_to_camera(c1)
    t01 = t1 @ torch.linalg.inv(t0)
    k = torch.tensor(
        [[size / (2 * math.tan(math.radians(FOV) / 2)), 0, size / 2], [0, 0, size / 2], [0, 0, 1]],
        dtype=dt,
    )
    k[1, 1] = k[0, 0]
    data: dict[str, Tensor] = {
        "K0": k.expand(n, 3, 3).float().clone(),
        "K1": k.expand(n, 3, 3).float().clone(),
        "T_0to1": t01.float(),
        "T_1to0": torch.linalg.inv(t01).float(),
        "w_pt0": w0.float(),
        "valid0": v0,
        "w_pt1": w1.float(),
        "valid1": v1,
        "scene": idx,
    }
    for side, cam in ((0, c0), (1, c1)):
        for m, x in _modalities(scenes, cam, idx, size, wanted, g).items():
            data[f"image{side}_{m}"] = x
    return data
