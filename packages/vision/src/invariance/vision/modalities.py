"""Cross-modality layer: turn renders into pixel-aligned images of other sensing modalities.

The offline analog of a matching "data engine" (MINIMA, Ren et al. 2025): every function maps an
image (and the renderer's exact side channels) to another modality *without any geometric
operation*, so correspondences and labels of the source image carry over unchanged.

* :func:`infrared`: a thermal-like image from the per-primitive ``material`` channel (a
  temperature unrelated to the colour), blurred, with vignetting, sensor noise and an optional
  polarity flip;
* :func:`depth_map` / :func:`normal_map`: inverse-depth and normal images from the exact depth
  and normals;
* :func:`events`: an event-camera frame from two renders: the log-intensity change thresholded at
  ``C`` into positive (red) and negative (blue) polarities on black;
* :func:`sketch`: inverted, dilated Canny edges (kornia);
* :func:`paint`: a painted look: median filter, k-means colour quantisation, bilateral smoothing.

Tested properties: every output has the input's spatial size and is a pointwise or local-filter
function of it (no warp); identical frames and a global gain give no events; the infrared image
ignores the colour given the material; fixed generators give identical outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.filters import bilateral_blur, canny, gaussian_blur2d, median_blur
from kornia.morphology import dilation
from torch import Tensor

from invariance.vision._checks import check_int, check_number, check_tensor

__all__ = ["infrared", "depth_map", "normal_map", "events", "sketch", "paint"]


def _image(x: object, name: str, channels: int | None = 3) -> Tensor:
    x = check_tensor(x, name, dims=4, expected="(B, C, H, W)")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channels, got shape {tuple(x.shape)}")
    if x.shape[-1] < 3 or x.shape[-2] < 3:
        raise ValueError(f"{name} must be at least 3x3 pixels, got shape {tuple(x.shape)}")
    return x


def _gray(rgb: Tensor) -> Tensor:
    w = torch.tensor([0.299, 0.587, 0.114], dtype=rgb.dtype).view(1, 3, 1, 1)
    return (rgb * w).sum(1, keepdim=True)


def infrared(
    material: Tensor,
    mask: Tensor,
    *,
    ambient: float = 0.25,
    blur: float = 1.0,
    noise: float = 0.03,
    vignetting: float = 0.3,
    flip: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Thermal-like image ``(B, 3, H, W)`` (gray replicated) from the renderer's ``material``
    (``(B, 1, H, W)``, the temperature of each primitive) and ``mask``: background at
    ``ambient``, Gaussian blur of sigma ``blur`` pixels, radial vignetting, sensor noise of std
    ``noise``; ``flip`` inverts the polarity (white-hot / black-hot)."""
    material = _image(material, "material", 1)
    mask = _image(mask, "mask", 1)
    if mask.shape != material.shape:
        raise ValueError(f"mask must have shape {tuple(material.shape)}, got {tuple(mask.shape)}")
    check_number(ambient, "ambient", lo=0.0, hi=1.0)
    check_number(blur, "blur", lo=0.0)
    check_number(noise, "noise", lo=0.0)
    check_number(vignetting, "vignetting", lo=0.0, hi=1.0)
    t = mask * material + (1 - mask) * ambient
    if blur > 0:
        k = 2 * int(3 * blur) + 1
        t = gaussian_blur2d(t, (k, k), (blur, blur), border_type="replicate")
    h, w = t.shape[-2:]
    yy = torch.linspace(-1, 1, h, dtype=t.dtype).view(h, 1)
    xx = torch.linspace(-1, 1, w, dtype=t.dtype).view(1, w)
    t = t * (1 - vignetting * (xx**2 + yy**2) / 2)
    if noise > 0:
        t = t + noise * torch.randn(t.shape, generator=generator, dtype=t.dtype)
    t = t.clamp(0, 1)
    if flip:
        t = 1 - t
    return t.expand(-1, 3, -1, -1).contiguous()


def depth_map(depth: Tensor, mask: Tensor) -> Tensor:
    """Inverse-depth image ``(B, 3, H, W)``: ``1 / depth`` normalised per image to ``[0.2, 1]``
    on the object (near = bright), 0 on the background."""
    depth = _image(depth, "depth", 1)
    mask = _image(mask, "mask", 1)
    if bool((depth[mask > 0] <= 0).any()):
        raise ValueError("depth must be positive on the mask")
    inv = torch.where(mask > 0, 1 / depth.clamp_min(1e-12), torch.zeros_like(depth))
    big = torch.where(mask > 0, inv, torch.full_like(inv, float("inf")))
    lo = big.flatten(1).min(1).values.view(-1, 1, 1, 1)
    hi = inv.flatten(1).max(1).values.view(-1, 1, 1, 1)
    lo = torch.where(torch.isfinite(lo), lo, torch.zeros_like(lo))
    span = (hi - lo).clamp_min(1e-12)
    out = torch.where(mask > 0, 0.2 + 0.8 * (inv - lo) / span, torch.zeros_like(inv))
    return out.expand(-1, 3, -1, -1).contiguous()


def normal_map(normals: Tensor, mask: Tensor) -> Tensor:
    """Normal image ``(n + 1) / 2`` on the object, 0 on the background."""
    normals = _image(normals, "normals", 3)
    mask = _image(mask, "mask", 1)
    return torch.where(mask > 0, (normals + 1) / 2, torch.zeros_like(normals))


def events(frame0: Tensor, frame1: Tensor, *, threshold: float = 0.15, eps: float = 1e-3) -> Tensor:
    """Event frame between two renders: ``d = log(I1 + eps) - log(I0 + eps)`` of the gray
    intensities; red where ``d > threshold``, blue where ``d < -threshold``, black elsewhere."""
    frame0 = _image(frame0, "frame0")
    frame1 = _image(frame1, "frame1")
    if frame1.shape != frame0.shape:
        raise ValueError(f"frame1 must have shape {tuple(frame0.shape)}, got {tuple(frame1.shape)}")
    check_number(threshold, "threshold", lo=0.0, lo_open=True)
    check_number(eps, "eps", lo=0.0, lo_open=True)
    d = torch.log(_gray(frame1) + eps) - torch.log(_gray(frame0) + eps)
    pos, neg = (d > threshold).to(d.dtype), (d < -threshold).to(d.dtype)
    return torch.cat([pos, torch.zeros_like(pos), neg], 1)


def sketch(rgb: Tensor, *, low: float = 0.1, high: float = 0.2, width: int = 1) -> Tensor:
    """A pencil-sketch image: inverted Canny edges (kornia) dilated ``width`` pixels."""
    rgb = _image(rgb, "rgb")
    check_number(low, "low", lo=0.0, hi=1.0)
    check_number(high, "high", lo=0.0, hi=1.0)
    if low > high:
        raise ValueError(f"need low <= high, got low={low}, high={high}")
    width = check_int(width, "width", lo=0)
    _, edges = canny(rgb, low_threshold=low, high_threshold=high)
    if width > 0:
        k = torch.ones(2 * width + 1, 2 * width + 1, dtype=rgb.dtype)
        edges = dilation(edges, k)
    return (1 - edges.clamp(0, 1)).expand(-1, 3, -1, -1).contiguous()


def paint(
    rgb: Tensor,
    *,
    colors: int = 6,
    iters: int = 8,
    generator: torch.Generator | None = None,
) -> Tensor:
    """A painted look: 3x3 median filter, per-image k-means quantisation to ``colors``
    colours (``iters`` Lloyd steps from random pixels), then a bilateral filter."""
    rgb = _image(rgb, "rgb")
    colors = check_int(colors, "colors", lo=1)
    iters = check_int(iters, "iters", lo=1)
    x = median_blur(rgb, (3, 3))
    b, c, h, w = x.shape
    pts = x.flatten(2).transpose(1, 2)  # (B, HW, 3)
    idx = torch.stack(
        [torch.randperm(h * w, generator=generator)[:colors] for _ in range(b)]
    )  # (B, k)
    cent = pts.gather(1, idx[..., None].expand(-1, -1, c))
    for _ in range(iters):
        assign = torch.cdist(pts, cent).argmin(-1)  # (B, HW)
        oh = F.one_hot(assign, cent.shape[1]).to(pts.dtype)  # (B, HW, k)
        cnt = oh.sum(1)[..., None]
        new = torch.einsum("bnk,bnc->bkc", oh, pts) / cnt.clamp_min(1)
        cent = torch.where(cnt > 0, new, cent)
    q = cent.gather(1, torch.cdist(pts, cent).argmin(-1)[..., None].expand(-1, -1, c))
    q = q.transpose(1, 2).reshape(b, c, h, w)
    return bilateral_blur(q, (5, 5), 0.1, (1.5, 1.5)).clamp(0, 1)
