"""The spherical family's other members and the argument checks of the Z-loss module (private).

:func:`spherical_mse_loss` and :func:`taylor_softmax_loss` are the baselines the Z-loss paper
compares against (de Brébisson & Vincent, arXiv:1604.08859); like the Z-loss they depend on the
logits ``o`` only through ``(sum o², sum o, o_c)``. They are re-exported by
:mod:`invariance.optim.zloss`, which holds the mechanism (the Z-loss and the factored layer).
"""

from __future__ import annotations

import torch
from torch import Tensor

from invariance.optim._checks import check_float, check_tensor

__all__ = ["spherical_mse_loss", "taylor_softmax_loss"]


def check_logits_target(logits: Tensor, target: Tensor) -> None:
    """``logits`` ``(N, D)`` finite floating with ``D >= 2``, ``target`` ``(N,)`` class ids."""
    if not isinstance(logits, Tensor) or not isinstance(target, Tensor):
        raise TypeError("logits and target must be tensors")
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (N, D), got {tuple(logits.shape)}")
    if logits.shape[1] < 2:
        raise ValueError(f"need D >= 2 classes, got logits of shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be floating point, got {logits.dtype}")
    if logits.shape[0] == 0:
        raise ValueError(f"logits must not be empty, got shape {tuple(logits.shape)}")
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("logits contains NaN or inf")
    if target.shape != (logits.shape[0],):
        raise ValueError(
            f"target must have shape (N,) = ({logits.shape[0]},), got {tuple(target.shape)}"
        )
    if target.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"target must be an integer class index tensor, got {target.dtype}")
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= logits.shape[1]):
        raise ValueError(
            f"target values must lie in [0, {logits.shape[1]}), got range "
            f"[{int(target.min())}, {int(target.max())}]"
        )


def check_ab(a: float, b: float) -> None:
    """Z-loss sharpness ``a > 0`` and location ``b`` (any finite number)."""
    check_float("a", a, 0.0, lo_open=True)
    check_float("b", b)


def check_stats(q: Tensor, s: Tensor, oc: Tensor) -> None:
    """``q``, ``s``, ``o_c``: finite floating tensors of one shape ``(m,)``, ``m >= 1``."""
    for name, t in (("q", q), ("s", s), ("oc", oc)):
        check_tensor(name, t, ndim=1)
    if s.shape != q.shape or oc.shape != q.shape:
        raise ValueError(
            f"q, s and oc must have one shape (m,), got q {tuple(q.shape)}, s {tuple(s.shape)}, "
            f"oc {tuple(oc.shape)}"
        )


def reduce(x: Tensor, reduction: str) -> Tensor:
    """``x.mean()``, ``x.sum()`` or ``x`` for ``reduction`` ``"mean"``, ``"sum"``, ``"none"``."""
    if reduction == "mean":
        return x.mean()
    if reduction == "sum":
        return x.sum()
    if reduction == "none":
        return x
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def spherical_mse_loss(logits: Tensor, target: Tensor, *, reduction: str = "mean") -> Tensor:
    """Squared error to the one-hot target, ``||o - e_c||^2`` (a spherical loss)."""
    check_logits_target(logits, target)
    oc = logits.gather(1, target.long().unsqueeze(1)).squeeze(1)
    return reduce(logits.square().sum(1) - 2 * oc + 1, reduction)


def taylor_softmax_loss(logits: Tensor, target: Tensor, *, reduction: str = "mean") -> Tensor:
    """Negative log of the 2nd-order Taylor softmax ``t(o_c) / sum_k t(o_k)``, ``t = 1+o+o²/2``."""
    check_logits_target(logits, target)
    t = 1 + logits + 0.5 * logits.square()
    tc = t.gather(1, target.long().unsqueeze(1)).squeeze(1)
    return reduce(t.sum(1).log() - tc.log(), reduction)
