"""The ``fused=True`` path of AdamP and SGDP: one ``torch.compile``d step per parameter tensor.

Each function below is the whole per-tensor update (moments, cosine tests of both views,
projection, decoupled decay, step) written branch-free, so the compiler can fuse it into a few
loops over the tensor's memory. Step-dependent scalars (learning rate, bias corrections) are
0-d tensors, so a new step or a learning-rate schedule does not recompile; the graphs are compiled
with dynamic shapes (one per number of dimensions and per hyper-parameter set). The arithmetic is
the foreach path's, up to the reordering of floating-point operations the compiler may do.

When ``torch.compile`` is not available or fails (no C++ compiler, an unsupported platform), the
optimizers warn once and take the foreach path.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = ["adamp_tensor_step", "sgdp_tensor_step", "compiled", "CompileUnavailable"]


class CompileUnavailable(RuntimeError):
    """``torch.compile`` could not build the fused step on this machine."""


def _project(
    p: Tensor, g: Tensor, u: Tensor, delta: float, eps: float, wd_ratio: float
) -> tuple[Tensor, Tensor]:
    """Branch-free AdamP projection of ``u`` (out of place) and the decay factor."""
    rows = p.shape[0]
    P, G, U = p.reshape(rows, -1), g.reshape(rows, -1), u.reshape(rows, -1)
    dot, pn2, gn2 = (P * G).sum(1), (P * P).sum(1), (G * G).sum(1)
    pn, gn = pn2.sqrt(), gn2.sqrt()
    cos_c = dot.abs() / (pn.clamp_min(eps) * gn.clamp_min(eps))
    fire_c = cos_c.max() < delta / math.sqrt(P.shape[1])
    pn_l, gn_l = pn2.sum().sqrt(), gn2.sum().sqrt()
    cos_l = dot.sum().abs() / (pn_l.clamp_min(eps) * gn_l.clamp_min(eps))
    fire_l = (~fire_c) & (cos_l < delta / math.sqrt(p.numel()))
    pu = (P * U).sum(1)
    coef_c = pu / (pn + eps).square()
    coef_l = pu.sum() / (pn_l + eps).square()
    coef = torch.where(fire_c, coef_c, torch.where(fire_l, coef_l, 0.0).expand_as(coef_c))
    factor = torch.where(fire_c | fire_l, wd_ratio, 1.0)
    return (U - P * coef.unsqueeze(1)).reshape(p.shape), factor


def adamp_tensor_step(
    p: Tensor,
    g: Tensor,
    m: Tensor,
    v: Tensor,
    lr: Tensor,
    bc1: Tensor,
    bc2_sqrt: Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    delta: float,
    wd_ratio: float,
    nesterov: bool,
) -> None:
    """One AdamP step of one tensor, in place on ``p``, ``m``, ``v``."""
    m.lerp_(g, 1 - beta1)
    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    denom = v.sqrt() / bc2_sqrt + eps
    u = (m * beta1 + g * (1 - beta1)) / denom if nesterov else m / denom
    if p.ndim > 1:
        u, factor = _project(p, g, u, delta, eps, wd_ratio)
        if weight_decay > 0:
            p.mul_(1 - lr * weight_decay * factor)
    elif weight_decay > 0:
        p.mul_(1 - lr * weight_decay)
    p.sub_(u * (lr / bc1))


def sgdp_tensor_step(
    p: Tensor,
    g: Tensor,
    buf: Tensor,
    lr: Tensor,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    eps: float,
    delta: float,
    wd_ratio: float,
    project_buffer: bool,
) -> None:
    """One SGDP step of one tensor, in place on ``p`` and the momentum buffer ``buf``."""
    buf.mul_(momentum).add_(g, alpha=1 - dampening)
    d = g + momentum * buf if nesterov else buf
    if p.ndim > 1:
        d, factor = _project(p, g, d, delta, eps, wd_ratio)
        if project_buffer and not nesterov:
            buf.copy_(d)  # the official code projects the buffer itself
        if weight_decay > 0:
            p.mul_(1 - lr * weight_decay * factor / (1 - momentum))
    elif weight_decay > 0:
        p.mul_(1 - lr * weight_decay / (1 - momentum))
    p.sub_(d * lr)


_CACHE: dict[str, Any] = {}


def compiled(name: str) -> Callable[..., None]:
    """The ``torch.compile``d step ``name`` (``"adamp"`` or ``"sgdp"``), built once per process.

    Raises :class:`CompileUnavailable` when ``torch.compile`` cannot be used here."""
    if name in _CACHE:
        fn = _CACHE[name]
        if fn is None:
            raise CompileUnavailable("torch.compile failed earlier in this process")
        return fn
    fn = {"adamp": adamp_tensor_step, "sgdp": sgdp_tensor_step}[name]
    try:
        _CACHE[name] = torch.compile(fn, dynamic=True)
    except Exception as e:  # noqa: BLE001 - any failure means: no compiler here
        _CACHE[name] = None
        raise CompileUnavailable(str(e)) from e
    return _CACHE[name]


def mark_unavailable(name: str, err: BaseException) -> None:
    """Remember that the compiled step failed (e.g. at its first call) and warn once."""
    _CACHE[name] = None
    warnings.warn(
        f"fused=True: torch.compile is not usable here ({type(err).__name__}: "
        f"{str(err).splitlines()[0][:200] if str(err) else ''}); using the foreach path",
        RuntimeWarning,
        stacklevel=3,
    )
