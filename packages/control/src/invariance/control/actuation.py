r"""The bottom actuation of the Rayleigh–Bénard environments (the official ``Tfunc``), in torch.

The official setup's segment-wise bottom temperature. Actions ``a ∈ [-1, 1]^{n_seg}`` become
``T_i = 1 + (A a_i - mean_j A a_j) / K2`` with ``K2 = max(1, max_i |A a_i - mean| / A)``
(``A = 0.75``), so the mean stays 1 and the deviation at most ``A``; neighbouring segments are
blended by a cubic step of half-width ``half_width``, which preserves the mean exactly on the grid.

Tested (``tests/test_control_golden.py``, ``tests/test_control_solver.py``):
:func:`bottom_profile` equals the official ``Tfunc.apply_T`` (run, shenfun import stubbed) to
< 1e-12 after the change of units; it preserves the mean and stays within ``1 ± A``; rolling the
actions rolls the profile exactly.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["blending_matrix", "bottom_profile", "segment_temperatures"]

_F64 = torch.float64


def _number(v, name: str, *, positive: bool = True) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(v).__name__}")
    if not math.isfinite(v) or (positive and v <= 0):
        raise ValueError(
            f"{name} must be a {'positive ' if positive else ''}finite number, got {v}"
        )
    return float(v)


def _count(v, name: str, lo: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if v < lo:
        raise ValueError(f"{name} must be >= {lo}, got {v}")
    return v


def _finite(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(x).__name__}")
    if not (x.is_floating_point() or x.is_complex()):
        raise TypeError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")


def segment_temperatures(actions: Tensor, *, amplitude: float = 0.75, mean: float = 1.0) -> Tensor:
    """Segment temperatures ``T_i = mean + (A a_i - mean_j A a_j) / K2`` (official ``Tfunc``).

    Args:
        actions: ``(B, n_seg)`` actions, clipped to ``[-1, 1]``.
        amplitude: ``A``, the largest deviation from ``mean`` (default: ``0.75``).
        mean: the mean bottom temperature (default: ``1.0``).

    Returns ``(B, n_seg)``: mean exactly ``mean``, every deviation at most ``amplitude``.
    """
    _finite(actions, "actions")
    if actions.dim() != 2:
        raise ValueError(f"actions must be (B, n_seg), got shape {tuple(actions.shape)}")
    _number(amplitude, "amplitude")
    _number(mean, "mean", positive=False)
    a = amplitude * actions.clamp(-1.0, 1.0)
    dev = a - a.mean(dim=1, keepdim=True)
    k2 = (dev.abs().amax(dim=1, keepdim=True) / amplitude).clamp_min(1.0)
    return mean + dev / k2


def blending_matrix(
    n_seg: int, nx: int, *, half_width: float = 0.015, lx: float = math.pi, dtype=_F64
) -> Tensor:
    """``(n_seg, nx)`` smoothed segment indicators (a partition of unity on the grid).

    Segment ``i`` covers ``[i lx/n_seg, (i+1) lx/n_seg)``; its indicator rises and falls with the
    cubic step ``s(z) = 1/2 + 3z/4 - z³/4`` over ``|x - edge| < half_width``. With ``nx`` divisible
    by ``n_seg`` the grid is symmetric about each edge, so every row sums to ``nx / n_seg`` and
    rolling the segments by one rolls the profile by ``nx / n_seg`` columns exactly.
    """
    _count(n_seg, "n_seg")
    _count(nx, "nx")
    _number(lx, "lx")
    _number(half_width, "half_width")
    if nx % n_seg:
        raise ValueError(f"n_seg={n_seg} must divide nx={nx}")
    seg = lx / n_seg
    if not (0 < half_width < seg / 2):
        raise ValueError(f"half_width must be in (0, {seg / 2:g}), got {half_width}")
    x = torch.arange(nx, dtype=dtype) * (lx / nx)
    edges = torch.arange(n_seg, dtype=dtype) * seg
    w = half_width

    def step(z: Tensor) -> Tensor:
        z = z.clamp(-1.0, 1.0)
        return 0.5 + 0.75 * z - 0.25 * z**3

    d = torch.remainder(x[None, :] - edges[:, None] + w, lx) - w  # in [-w, lx - w)
    return step(d / w) - step((d - seg) / w)


def bottom_profile(
    actions: Tensor,
    nx: int,
    *,
    amplitude: float = 0.75,
    half_width: float = 0.015,
    lx: float = math.pi,
) -> Tensor:
    """Bottom temperature ``(B, nx)`` for ``(B, n_seg)`` actions (mean 1, within ``1 ± amplitude``).

    See :func:`segment_temperatures` and :func:`blending_matrix`.
    """
    t_seg = segment_temperatures(actions, amplitude=amplitude)
    phi = blending_matrix(actions.shape[1], nx, half_width=half_width, lx=lx, dtype=t_seg.dtype)
    return t_seg @ phi.to(t_seg.device)
