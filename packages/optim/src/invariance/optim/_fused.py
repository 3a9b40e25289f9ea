"""The ``fused=True`` path of AdamP and SGDP off the CPU kernel: the step over flat, shape-bucketed
buffers (CUDA, half precision; on CPU float32/float64 :mod:`invariance.optim._kernel` runs).

Layout (:class:`FlatLayout`). At its first fused step a parameter group's tensors are moved into
one contiguous buffer per (device, dtype) and per role (parameters, gradients, each state tensor);
the parameters, their ``.grad`` and their state tensors become views into those buffers (as
torch's DDP ``gradient_as_bucket_view`` does for gradients). Tensors of one shape sit next to each
other, so each *bucket* of ``k`` tensors of shape ``(rows, ...)`` is a single ``(k, rows, L)``
view; the tensors with fewer than two dimensions (biases, norm scales; never projected) form one
``(1, n, 1)`` bucket whatever their lengths. A step then costs one call per bucket (ResNet-50:
22 buckets for 161 tensors) instead of one or more kernels per tensor:

* the moments and the final step are pointwise over the bucket;
* the AdamP cosine tests are segment reductions: the per-channel view is a reduction over ``L``
  (shape ``(k, rows)``), the whole-layer view a further reduction over ``rows`` (shape ``(k,)``);
* step-dependent scalars (step size, bias correction) are tensors stored per row,
  ``(k, rows, 1)``, written with one copy per step: tensors with different step counts share a
  bucket, a learning-rate schedule does not recompile, and the compiler gives the moment update
  and the row reductions the same loop shape, so it fuses them into one pass over the memory.

Every step checks (one pointer comparison per tensor) that the parameters, gradients and state
are still those views and copies whatever is not back in (a new ``.grad`` after
``zero_grad(set_to_none=True)``, a ``load_state_dict``, a ``p.data`` assignment): the layout is
a cache, never a second source of truth, so ``state_dict`` is the same as on the other paths.

The bucket step (:func:`adamp_bucket_step`, :func:`sgdp_bucket_step`) is ``torch.compile``d once
per process (dynamic shapes: a handful of graphs per hyper-parameter set, whatever the model).
On CPU the compiled AdamP step makes two passes over a bucket: one reads ``p, g, m, v``, writes
``m, v`` and the update ``u`` and accumulates the four row sums (``p.g``, ``p.p``, ``g.g``,
``p.u``); the other reads ``p, u`` and writes ``p`` (ten memory streams per value, AdamW's fused
kernel needs seven). Where ``torch.compile`` is not available or fails, the optimizers warn
once and take the foreach path (the bucket functions run eagerly are slower than it on CPU; the
tests run them eagerly to check the arithmetic without a compiler). The arithmetic is the
foreach path's, up to the
reordering of floating-point operations (``p * decay - step * (u - p * coef)`` instead of two
in-place updates).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from invariance.optim._utils import rows_dense

__all__ = [
    "FlatLayout",
    "adamp_bucket_step",
    "sgdp_bucket_step",
    "compiled",
    "CompileUnavailable",
    "bucket_args",
]


class CompileUnavailable(RuntimeError):
    """``torch.compile`` could not build the fused step on this machine."""


# ------------------------------------------------------------------------------ the bucket steps


def _project(
    p: Tensor, g: Tensor, u: Tensor, thr_c: Tensor, thr_l: Tensor, eps: float, wd_ratio: float
) -> tuple[Tensor, Tensor]:
    """Branch-free AdamP projection of a ``(k, rows, L)`` bucket; returns ``(u', factor)``.

    Row ``r`` of member ``j`` is the channel view's row; the layer view sums over the rows."""
    dot, pn2, gn2 = (p * g).sum(-1), (p * p).sum(-1), (g * g).sum(-1)  # (k, rows)
    pn, gn = pn2.sqrt(), gn2.sqrt()
    cos_c = dot.abs() / (pn.clamp_min(eps) * gn.clamp_min(eps))
    fire_c = cos_c.amax(-1) < thr_c  # (k,)
    pn_l, gn_l = pn2.sum(-1).sqrt(), gn2.sum(-1).sqrt()
    cos_l = dot.sum(-1).abs() / (pn_l.clamp_min(eps) * gn_l.clamp_min(eps))
    fire_l = (~fire_c) & (cos_l < thr_l)
    pu = (p * u).sum(-1)  # (k, rows)
    coef_c = pu / (pn + eps).square()
    coef_l = pu.sum(-1) / (pn_l + eps).square()
    zero, one = torch.zeros_like(coef_l), torch.ones_like(coef_l)
    coef_l = torch.where(fire_l, coef_l, zero).unsqueeze(-1)
    coef = _realize(torch.where(fire_c.unsqueeze(-1), coef_c, coef_l))
    factor = torch.where(fire_c | fire_l, one * wd_ratio, one)
    return u - p * coef.unsqueeze(-1), factor.view(-1, 1, 1)


def _realize(x: Tensor) -> Tensor:
    """``x`` itself, computed once into a buffer under ``torch.compile`` (the max of two copies
    is a reduction, which the compiler never inlines); without it the per-row coefficient would
    be recomputed for every vector of the row's elements."""
    return torch.stack((x, x), -1).amax(-1)


def adamp_bucket_step(
    p: Tensor,
    g: Tensor,
    m: Tensor,
    v: Tensor,
    step: Tensor,
    bc2_sqrt: Tensor,
    lr_wd: Tensor,
    thr_c: Tensor,
    thr_l: Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    wd_ratio: float,
    nesterov: bool,
    project: bool,
) -> None:
    """One AdamP step of a bucket, in place on ``p``, ``m``, ``v`` (all ``(k, rows, L)``).

    ``step`` (``lr / (1 - beta1^t)``) and ``bc2_sqrt`` (``sqrt(1 - beta2^t)``) are per row,
    ``(k, rows, 1)`` (per-row rather than per-tensor, so the compiler fuses the moments with the
    row reductions into one loop); ``lr_wd`` (``lr * weight_decay``) and the thresholds are 0-d."""
    m.lerp_(g, 1 - beta1)
    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    denom = v.sqrt() / bc2_sqrt + eps
    u = (m * beta1 + g * (1 - beta1)) / denom if nesterov else m / denom
    if project:
        u, factor = _project(p, g, u, thr_c, thr_l, eps, wd_ratio)
        p.mul_(_realize(1 - lr_wd * factor)).sub_(u * step)
    else:
        p.mul_(1 - lr_wd).sub_(u * step)


def sgdp_bucket_step(
    p: Tensor,
    g: Tensor,
    buf: Tensor,
    lr: Tensor,
    lr_wd: Tensor,
    thr_c: Tensor,
    thr_l: Tensor,
    momentum: float,
    dampening: float,
    eps: float,
    wd_ratio: float,
    nesterov: bool,
    project: bool,
    project_buffer: bool,
) -> None:
    """One SGDP step of a bucket, in place on ``p`` and the momentum buffer ``buf``.

    ``lr`` is per row, ``(k, rows, 1)``; ``lr_wd`` (``lr * weight_decay / (1 - momentum)``) and
    the thresholds are 0-d."""
    buf.mul_(momentum).add_(g, alpha=1 - dampening)
    d = g + buf * momentum if nesterov else buf
    if project:
        d, factor = _project(p, g, d, thr_c, thr_l, eps, wd_ratio)
        if project_buffer and not nesterov:
            buf.copy_(d)  # the official code projects the buffer itself
        p.mul_(_realize(1 - lr_wd * factor)).sub_(d * lr)
    else:
        p.mul_(1 - lr_wd).sub_(d * lr)


def bucket_args(kind: str, hp: dict[str, Any], b: _Bucket, lr_wd: Tensor) -> tuple[Any, ...]:
    """The arguments of the bucket step ``kind`` for bucket ``b`` and the group's ``hp``."""
    v = b.views
    if kind == "adamp":
        beta1, beta2 = hp["betas"]
        head = (v["param"], v["grad"], v["exp_avg"], v["exp_avg_sq"], b.scal[0], b.scal[1])
        hyper = (beta1, beta2, hp["eps"], hp["wd_ratio"], bool(hp["nesterov"]), b.project)
        return (*head, lr_wd, b.thr_c, b.thr_l, *hyper)
    head = (v["param"], v["grad"], v["momentum"], b.scal[0], lr_wd, b.thr_c, b.thr_l)
    hyper = (hp["momentum"], hp["dampening"], hp["eps"], hp["wd_ratio"], bool(hp["nesterov"]))
    return (*head, *hyper, b.project, bool(hp["project_buffer"]))


# ---------------------------------------------------------------------------------- the layout


class _Bucket:
    """Consecutive tensors viewed as one ``(k, rows, L)`` block of every role's buffer, with
    ``(k, rows, 1)`` views of the per-row scalars.

    A projected bucket holds ``k`` tensors of one shape ``(rows, ...)`` (``L`` values per
    channel). The tensors with fewer than two dimensions of a (device, dtype), whatever their
    lengths, form one bucket ``(1, n, 1)``: every value is a "row" with its own scalars."""

    __slots__ = ("members", "project", "views", "slots", "strides", "scal", "thr_c", "thr_l")

    def __init__(
        self,
        members: list[int],
        params: list[Tensor],
        project: bool,
        bufs: dict[str, Tensor],
        offset: int,
        scal: Tensor,
        row_offset: int,
        delta: float,
    ) -> None:
        sizes = [params[i].numel() for i in members]
        n = sum(sizes)
        if project:
            k, rows = len(members), params[members[0]].shape[0]
            shape = (k, rows, n // (k * rows))
        else:
            shape = (1, n, 1)
        self.members = members
        self.project = project
        self.strides = [params[i].stride() for i in members]
        self.views = {r: t[offset : offset + n].view(shape) for r, t in bufs.items()}
        self.slots: dict[str, list[Tensor]] = {r: [] for r in bufs}
        off = offset
        for i, size in zip(members, sizes):
            p = params[i]
            for r, t in bufs.items():
                self.slots[r].append(t.as_strided(p.shape, p.stride(), off))
            off += size
        self.scal = [
            c[row_offset : row_offset + shape[0] * shape[1]].view(*shape[:2], 1) for c in scal
        ]
        dev = scal.device
        # thresholds in float64, as the foreach path's Python floats (rounded to the compute
        # dtype by the comparison, as there)
        self.thr_c = torch.tensor(delta / math.sqrt(shape[2]), dtype=torch.float64, device=dev)
        self.thr_l = torch.tensor(
            delta / math.sqrt(shape[1] * shape[2]), dtype=torch.float64, device=dev
        )

    @property
    def n_rows(self) -> int:
        return self.scal[0].shape[0] * self.scal[0].shape[1] if self.scal else 0


def _flat_ok(p: Tensor) -> bool:
    """Dense, non-overlapping, with dim 0 outermost: each channel is one block of memory."""
    return p.numel() > 0 and rows_dense(p)


class FlatLayout:
    """Flat, shape-bucketed buffers of one parameter group's tensors (see the module docstring).

    Args:
        params: the group's parameters that take part in this step (non-empty tensors).
        keys: the names of the per-parameter state tensors (``exp_avg``, ...).
        n_scalars: how many per-tensor scalars the step takes (stored per row, see
            :meth:`set_scalars`).
        delta: AdamP's threshold constant (the thresholds are precomputed per bucket).
    """

    def __init__(
        self, params: list[Tensor], keys: tuple[str, ...], n_scalars: int, delta: float
    ) -> None:
        self.ids = tuple(id(p) for p in params)
        self.keys = keys
        self.delta = delta
        self.buckets: list[_Bucket] = []
        #: per (device, dtype): the buckets, the per-row scalar buffer and its row counts
        self.devices: list[tuple[torch.dtype, list[_Bucket], Tensor, Tensor, list[int]]] = []
        by_dd: dict[tuple[torch.device, torch.dtype], list[int]] = {}
        for i, p in enumerate(params):
            by_dd.setdefault((p.device, p.dtype), []).append(i)
        for (dev, dt), idx in by_dd.items():
            groups: list[tuple[list[int], bool]] = []
            by_shape: dict[tuple[torch.Size, tuple[int, ...]], list[int]] = {}
            for i in idx:
                if params[i].ndim >= 2:
                    by_shape.setdefault((params[i].shape, params[i].stride()), []).append(i)
            groups = [(members, True) for members in by_shape.values()]
            flat = [i for i in idx if params[i].ndim < 2]
            if flat:
                groups.append((flat, False))
            order = [i for members, _ in groups for i in members]
            # rows per tensor: channels of a projected tensor, values of a flat one
            rows = [params[i].shape[0] if params[i].ndim >= 2 else params[i].numel() for i in order]
            total = sum(params[i].numel() for i in idx)
            bufs = {r: torch.empty(total, dtype=dt, device=dev) for r in ("param", "grad", *keys)}
            cdt = torch.float32 if dt in (torch.float16, torch.bfloat16) else dt
            scal = torch.zeros(n_scalars, sum(rows), dtype=cdt, device=dev)
            off = roff = 0
            mine = []
            for members, project in groups:
                b = _Bucket(members, params, project, bufs, off, scal, roff, delta)
                off += sum(params[i].numel() for i in members)
                roff += b.n_rows
                mine.append(b)
            self.buckets += mine
            reps = torch.tensor(rows)
            self.devices.append((cdt, mine, scal, reps, order))
        # the slots' data pointers, in parameter order, for the fast check in ``sync``
        self.expect: dict[str, list[int]] = {r: [0] * len(params) for r in ("param", "grad", *keys)}
        for b in self.buckets:
            for r, sl in b.slots.items():
                for j, i in enumerate(b.members):
                    self.expect[r][i] = sl[j].data_ptr()

    @staticmethod
    def supports(params: list[Tensor]) -> bool:
        return all(_flat_ok(p) for p in params)

    def matches(self, params: list[Tensor], delta: float) -> bool:
        return self.ids == tuple(id(p) for p in params) and self.delta == delta

    def set_scalars(self, values: list[list[float]]) -> None:
        """Write the per-tensor scalars (``values[c][i]`` for scalar ``c`` of parameter ``i``)
        into the per-row buffers: one host-to-device copy per (device, dtype)."""
        for cdt, _b, scal, reps, order in self.devices:
            v = torch.tensor([[vc[i] for i in order] for vc in values], dtype=cdt)
            scal.copy_(torch.repeat_interleave(v, reps, dim=1), non_blocking=True)

    @torch.no_grad()
    def sync(self, params: list[Tensor], state: dict[Tensor, dict[str, Any]]) -> None:
        """Make every parameter, gradient and state tensor a view of its slot again.

        Costs one data-pointer comparison per tensor when nothing moved; copies what did."""
        sts = [state[p] for p in params]
        if (
            [p.data_ptr() for p in params] == self.expect["param"]
            and [p.grad.data_ptr() for p in params] == self.expect["grad"]
            and all([st[k].data_ptr() for st in sts] == self.expect[k] for k in self.keys)
        ):
            return
        for b in self.buckets:
            for j, i in enumerate(b.members):
                p = params[i]
                stride = b.strides[j]
                if p.data_ptr() != self.expect["param"][i] or p.stride() != stride:
                    s = b.slots["param"][j]
                    s.copy_(p)
                    p.data = s
                g = p.grad
                if g.data_ptr() != self.expect["grad"][i] or g.stride() != stride:
                    s = b.slots["grad"][j]
                    s.copy_(g)
                    p.grad = s
                st = sts[i]
                for key in self.keys:
                    t = st[key]
                    if t.data_ptr() != self.expect[key][i] or t.stride() != stride:
                        s = b.slots[key][j]
                        s.copy_(t)
                        st[key] = s


# ------------------------------------------------------------------------------------ compiling

_CACHE: dict[str, Any] = {}
_EAGER: dict[str, Callable[..., None]] = {"adamp": adamp_bucket_step, "sgdp": sgdp_bucket_step}


def compiled(name: str) -> Callable[..., None]:
    """The ``torch.compile``d bucket step ``name`` (``"adamp"`` or ``"sgdp"``), built once per
    process. Raises :class:`CompileUnavailable` when ``torch.compile`` cannot be used here."""
    if name in _CACHE:
        fn = _CACHE[name]
        if fn is None:
            raise CompileUnavailable("torch.compile failed earlier in this process")
        return fn
    try:
        _CACHE[name] = torch.compile(_EAGER[name], dynamic=True, fullgraph=True)
    except Exception as e:  # noqa: BLE001 - any failure means: no compiler here
        _CACHE[name] = None
        raise CompileUnavailable(str(e)) from e
    return _CACHE[name]


#: graphs one bucket step may compile in a process: one per (dtype, hyper-parameter constants,
#: Nesterov, projected or not, a single tensor or several); torch's default limit (8) is too low
#: for a few parameter groups and dtypes, and with ``fullgraph=True`` reaching it is an error.
RECOMPILE_LIMIT = 64


def recompile_limit() -> Any:
    """Context for our steps: dynamo's recompile limit raised to :data:`RECOMPILE_LIMIT`, and
    Python floats (the hyper-parameters) compiled in as constants instead of being wrapped into
    tensors at every call."""
    return torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT, specialize_float=True)


def eager(name: str) -> Callable[..., None]:
    """The uncompiled bucket step (same function, run op by op)."""
    return _EAGER[name]


def mark_unavailable(name: str, err: BaseException) -> None:
    """Remember that the compiled step failed (e.g. at its first call) and warn once."""
    _CACHE[name] = None
    warnings.warn(
        f"fused=True: torch.compile is not usable here ({type(err).__name__}: "
        f"{str(err).splitlines()[0][:200] if str(err) else ''}); using the foreach path",
        RuntimeWarning,
        stacklevel=3,
    )
