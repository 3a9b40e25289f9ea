"""Input validation shared by the geometry ops (private)."""

from __future__ import annotations

import torch
from torch import Tensor


def check_points(
    x: Tensor, name: str = "pos", *, dim: int | None = 3, min_points: int = 1
) -> Tensor:
    """Validate a point tensor of shape (N, D) or (B, N, D); return it unchanged."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (2, 3):
        raise ValueError(f"{name} must have shape (N, D) or (B, N, D), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    if dim is not None and x.shape[-1] != dim:
        raise ValueError(f"{name} must have last dimension {dim}, got shape {tuple(x.shape)}")
    if x.shape[-2] < min_points:
        raise ValueError(
            f"{name} needs at least {min_points} points, got {x.shape[-2]} (shape {tuple(x.shape)})"
        )
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or Inf values")
    return x
