"""LightBox videos: a camera moving through a field of primitives under changing illumination.

Each clip is one geometry and one camera path (forward motion with a small yaw drift over a
ground plane scattered with spheres, boxes and cylinders), rendered under a lighting family:

* ``"bright"``: strong light (intensity 0.9-1.3), high ambient (0.3-0.5), no shadows;
* ``"dim"``: weak light (intensity 0.3-0.6), low ambient (0.05-0.15), hard shadows, a low sun.

Geometry and cameras are drawn from the seed alone, so the same seed under two families gives
the same depth maps (bit-identical) with different images: the test set for illumination
invariance. Depth is the exact z-depth, 0 on the sky.
"""

from __future__ import annotations

import math

import torch

from invariance.core.checks import check_seed
from invariance.vision._checks import check_int
from invariance.vision.render import Scene, look_at, render

__all__ = ["LIGHTING", "make_lightbox"]

LIGHTING = ("bright", "dim")


def _scene(g: torch.Generator, n_objects: int) -> list[dict]:
    u = lambda lo, hi: lo + (hi - lo) * float(torch.rand((), generator=g))  # noqa: E731
    prims = [
        dict(kind="box", center=(0, -1.05, -10), scale=(30, 0.05, 30), color=(0.55, 0.55, 0.5))
    ]
    for _ in range(n_objects):
        kind = ("sphere", "box", "cylinder")[int(torch.randint(0, 3, (), generator=g))]
        sx, sy = u(0.2, 0.6), u(0.2, 0.9)
        sz = sx if kind != "box" else u(0.2, 0.6)
        x, z = u(-3.0, 3.0), u(-12.0, -2.5)
        col = tuple(0.2 + 0.75 * float(c) for c in torch.rand(3, generator=g))
        prims.append(
            dict(
                kind=kind,
                center=(x, -1.0 + sy, z),
                scale=(sx, sy, sz),
                angles=(u(0, 90), 0.0, 0.0),
                color=col,
                texture=u(0.0, 0.5),
                material=u(0.2, 1.0),
            )
        )
    return prims


def _lighting(family: str, g: torch.Generator) -> dict:
    u = lambda lo, hi: lo + (hi - lo) * float(torch.rand((), generator=g))  # noqa: E731
    az = u(0, 2 * math.pi)
    if family == "bright":
        el, inten, amb, sh = u(0.9, 1.4), u(0.9, 1.3), u(0.3, 0.5), False
    else:
        el, inten, amb, sh = u(0.3, 0.6), u(0.3, 0.6), u(0.05, 0.15), True
    light = (math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az))
    return dict(light=light, intensity=inten, ambient=amb, shadows=sh)


def make_lightbox(
    n_clips: int,
    *,
    frames: int = 6,
    size: int = 32,
    lighting: str = "bright",
    seed: int = 0,
    n_objects: int = 8,
    step: float = 0.3,
) -> dict[str, torch.Tensor]:
    """``n_clips`` clips of ``frames`` frames at ``size`` px under the ``lighting`` family.
    Returns ``images`` ``(N, T, 3, S, S)``, ``depth`` ``(N, T, 1, S, S)`` and ``mask``."""
    n_clips, frames = check_int(n_clips, "n_clips"), check_int(frames, "frames")
    size, n_objects = check_int(size, "size", lo=8), check_int(n_objects, "n_objects", lo=0)
    seed = check_seed(seed)
    if lighting not in LIGHTING:
        raise ValueError(f"lighting must be one of {LIGHTING}, got {lighting!r}")
    if not (isinstance(step, (int, float)) and 0 <= step <= 2):
        raise ValueError(f"step must be a number in [0, 2], got {step!r}")
    imgs, depths, masks = [], [], []
    for i in range(n_clips):
        g = torch.Generator().manual_seed(seed * 100003 + i)
        scene = Scene.from_primitives([_scene(g, n_objects)])
        yaw0 = float(torch.rand((), generator=g)) * 10 - 5
        dyaw = float(torch.rand((), generator=g)) * 4 - 2
        yaw = torch.tensor([yaw0 + dyaw * t for t in range(frames)])
        pitch = torch.full((frames,), 8.0)
        th, ph = torch.deg2rad(yaw), torch.deg2rad(pitch)
        back = torch.stack(
            [torch.cos(ph) * torch.sin(th), torch.sin(ph), torch.cos(ph) * torch.cos(th)], -1
        )
        fwd_flat = torch.stack([-torch.sin(th), torch.zeros_like(th), -torch.cos(th)], -1)
        pos = torch.cumsum(step * fwd_flat, 0) - step * fwd_flat[:1]
        cam = look_at(yaw, pitch, None, 1.0, target=pos - back, fov=60.0)
        lg = torch.Generator().manual_seed(
            seed * 100003 + i + (0 if lighting == "bright" else 7919)
        )
        out = render(
            scene,
            cam,
            size=size,
            scene_index=torch.zeros(frames, dtype=torch.long),
            **_lighting(lighting, lg),
        )
        imgs.append(out["rgb"])
        depths.append(out["depth"])
        masks.append(out["mask"])
    return {"images": torch.stack(imgs), "depth": torch.stack(depths), "mask": torch.stack(masks)}
