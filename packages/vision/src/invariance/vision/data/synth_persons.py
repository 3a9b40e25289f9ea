"""Procedural person-search scenes (``SynthPersons``) with exact boxes and identities.

PRW and CUHK-SYSU need downloads, so the person-search experiment renders stylised "persons":
an identity is a head colour, a top colour, a bottom colour, a torso pattern (plain, horizontal
stripes, vertical stripes, dots), a body width and a bag (none, left, right). A person is drawn
as a 48 x 24 sprite, resampled to a height between ``min_height`` and ``max_height`` pixels
(strong scale variation: far persons lose their pattern), and pasted on a textured scene seen by
one of 6 "cameras" (a colour cast per camera). Identities are split: the first ``n_train_ids``
are for training (boxes only are used), the others for testing (query / gallery).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from invariance.vision._checks import check_int, check_number

__all__ = ["make_identities", "render_person", "make_synth_persons"]

_H, _W = 48, 24


def make_identities(n: int, *, seed: int = 0) -> dict[str, Tensor]:
    """``n`` random identities: colours (n, 3, 3) (head, top, bottom), ``pattern`` (n,) in 0..3,
    ``width`` (n,) in [0.55, 0.9] and ``bag`` (n,) in 0..2."""
    check_int(n, "n")
    check_int(seed, "seed", lo=0)
    g = torch.Generator().manual_seed(10_000 + seed)
    return {
        "colours": torch.rand(n, 3, 3, generator=g),
        "pattern": torch.randint(0, 4, (n,), generator=g),
        "width": 0.55 + 0.35 * torch.rand(n, generator=g),
        "bag": torch.randint(0, 3, (n,), generator=g),
    }


def render_person(ids: dict[str, Tensor], which: Tensor) -> tuple[Tensor, Tensor]:
    """Sprites (k, 3, 48, 24) and alpha masks (k, 1, 48, 24) of identities ``which``."""
    k = which.shape[0]
    yy, xx = torch.meshgrid(torch.linspace(0, 1, _H), torch.linspace(-1, 1, _W), indexing="ij")
    col = ids["colours"][which]  # (k, 3 parts, 3 rgb)
    wid = ids["width"][which][:, None, None]
    head = ((yy - 0.1) ** 2 / 0.1**2 + xx**2 / 0.3**2) <= 1
    torso = (yy > 0.2) & (yy <= 0.6) & (xx.abs() <= wid)
    legs = (yy > 0.6) & (yy <= 1.0) & (xx.abs() <= wid * 0.8) & (xx.abs() >= 0.08)
    pat = ids["pattern"][which][:, None, None]
    hs = torch.sin(yy * 40) > 0
    vs = torch.sin(xx * 12) > 0
    dots = (torch.sin(yy * 40) > 0.3) & (torch.sin(xx * 12) > 0.3)
    patt = torch.where(pat == 1, hs, torch.where(pat == 2, vs, torch.where(pat == 3, dots, False)))
    bag = ids["bag"][which][:, None, None]
    bag_m = (
        (yy > 0.35)
        & (yy <= 0.6)
        & (
            ((bag == 1) & (xx < -wid) & (xx > -wid - 0.25))
            | ((bag == 2) & (xx > wid) & (xx < wid + 0.25))
        )
    )
    img = torch.zeros(k, 3, _H, _W)
    alpha = torch.zeros(k, 1, _H, _W)
    top = col[:, 1, :, None, None] * torch.where(patt, 0.35, 1.0)[:, None]
    for m, c in (
        (head.expand(k, -1, -1), col[:, 0, :, None, None].expand(-1, -1, _H, _W)),
        (torso.expand(k, -1, -1), top),
        (legs.expand(k, -1, -1), col[:, 2, :, None, None].expand(-1, -1, _H, _W)),
        (bag_m, torch.full((k, 3, _H, _W), 0.15)),
    ):
        mm = m[:, None].float()
        img = img * (1 - mm) + c * mm
        alpha = torch.maximum(alpha, mm)
    return img, alpha


def make_synth_persons(
    n_scenes: int,
    *,
    seed: int,
    split: str = "train",
    size: int = 64,
    n_ids: int = 60,
    n_train_ids: int = 40,
    max_persons: int = 3,
    min_height: float = 12.0,
    max_height: float = 48.0,
) -> dict:
    """Render ``n_scenes`` scenes.

    Args:
        n_scenes: number of scenes. seed: private generator seed.
        split: ``"train"`` (identities ``0..n_train_ids-1``) or ``"test"`` (the others).
        size: scene side (default: 64). n_ids / n_train_ids: identities in all / for training.
        max_persons: persons per scene, 1..max (distinct identities; default: 3).
        min_height / max_height: person height range in pixels, log-uniform (default: 12, 48).

    Returns:
        dict with ``image`` (n, 3, S, S) in [0, 1], ``boxes`` (list of (k_i, 4) x1y1x2y2),
        ``pid`` (list of (k_i,) identity indices), ``camera`` (n,) and ``identities``.
    """
    check_int(n_scenes, "n_scenes")
    check_int(seed, "seed", lo=0)
    check_int(size, "size", lo=32)
    check_int(n_ids, "n_ids", lo=2)
    check_int(n_train_ids, "n_train_ids")
    check_int(max_persons, "max_persons")
    check_number(min_height, "min_height", lo=4.0)
    check_number(max_height, "max_height", lo=min_height)
    if n_train_ids >= n_ids:
        raise ValueError(f"n_train_ids must be < n_ids ({n_ids}), got {n_train_ids}")
    if max_height > size:
        raise ValueError(f"max_height must be <= size ({size}), got {max_height}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    ids = make_identities(n_ids, seed=0)
    lo, hi = (0, n_train_ids) if split == "train" else (n_train_ids, n_ids)
    if max_persons > hi - lo:
        raise ValueError(f"max_persons must be <= the split's identities ({hi - lo})")
    g = torch.Generator().manual_seed(int(seed) * 7 + (0 if split == "train" else 3))
    cams = torch.randint(0, 6, (n_scenes,), generator=g)
    cast = 0.75 + 0.5 * torch.rand(6, 3, generator=torch.Generator().manual_seed(77))
    ar = torch.arange(size, dtype=torch.float32)
    yy, xx = torch.meshgrid(ar, ar, indexing="ij")
    images, boxes, pids = [], [], []
    for s in range(n_scenes):
        ang = math.pi * float(torch.rand((), generator=g))
        fr = 0.2 + 0.4 * float(torch.rand((), generator=g))
        tex = 0.5 + 0.5 * torch.sin(fr * (math.cos(ang) * xx + math.sin(ang) * yy))
        img = (0.25 + 0.35 * tex) * torch.rand(3, 1, 1, generator=g) + 0.05
        k = int(torch.randint(1, max_persons + 1, (), generator=g))
        who = lo + torch.randperm(hi - lo, generator=g)[:k]
        sprite, alpha = render_person(ids, who)
        bx = []
        for j in range(k):
            h = math.exp(
                math.log(min_height)
                + (math.log(max_height) - math.log(min_height)) * float(torch.rand((), generator=g))
            )
            hh, ww = max(4, round(h)), max(2, round(h / 2))
            y0 = int(torch.randint(0, size - hh + 1, (), generator=g))
            x0 = int(torch.randint(0, size - ww + 1, (), generator=g))
            sp = F.interpolate(sprite[j : j + 1], size=(hh, ww), mode="area")[0]
            al = F.interpolate(alpha[j : j + 1], size=(hh, ww), mode="area")[0]
            region = img[:, y0 : y0 + hh, x0 : x0 + ww]
            img[:, y0 : y0 + hh, x0 : x0 + ww] = region * (1 - al) + sp * al
            bx.append([float(x0), float(y0), float(x0 + ww), float(y0 + hh)])
        img = img * cast[cams[s]][:, None, None] + 0.02 * torch.randn(3, size, size, generator=g)
        images.append(img.clamp(0, 1))
        boxes.append(torch.tensor(bx))
        pids.append(who.clone())
    return {
        "image": torch.stack(images),
        "boxes": boxes,
        "pid": pids,
        "camera": cams,
        "identities": ids,
    }
