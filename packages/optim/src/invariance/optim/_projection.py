"""Shared machinery of AdamP and SGDP (private): the projection, argument checks, the base class.

The cosine tests and the radial projection follow the official AdamP code (Heo et al., ICLR 2021,
https://github.com/clovaai/AdamP, MIT); see :mod:`invariance.optim.adamp` for the mechanism.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.optimizer import required

from invariance.optim import _fused
from invariance.optim._checks import check_float, check_tensor

# ----------------------------------------------------------------------------- projection helpers


def _row_stats(p: Tensor, g: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Row dot products and squared norms of the channel view; each of shape ``(out,)``."""
    P = p.reshape(p.shape[0], -1)
    G = g.reshape(g.shape[0], -1)
    # fused reductions (``linalg.vecdot`` materialises the product, einsum/norm do not)
    return (
        _rowdot(P, G),
        torch.linalg.vector_norm(P, dim=1).square(),
        torch.linalg.vector_norm(G, dim=1).square(),
    )


def _rowdot(A: Tensor, B: Tensor) -> Tensor:
    """Row-wise dot products of two ``(rows, L)`` matrices."""
    return torch.einsum("ij,ij->i", A, B)


def _cos(dot: Tensor, pn2: Tensor, gn2: Tensor, eps: float) -> Tensor:
    """|cos| with torch's cosine_similarity semantics: dot / (max(|x|, eps) * max(|y|, eps))."""
    return dot.abs() / (pn2.sqrt().clamp_min(eps) * gn2.sqrt().clamp_min(eps))


def _project_(
    p: Tensor, g: Tensor, u: Tensor, delta: float, eps: float, branch_free: bool
) -> Tensor | bool:
    """Remove the radial part of ``u`` in place where ``p`` looks scale-invariant.

    Shapes: ``p``, ``g``, ``u`` share a shape with ``ndim >= 2``. Returns whether a view fired, as a
    Python bool (branching path) or a 0-d bool tensor (branch-free path).
    """
    if p.numel() == 0:  # nothing to project (an empty weight never moves)
        return torch.zeros((), dtype=torch.bool, device=p.device) if branch_free else False
    if not u.is_contiguous():  # e.g. channels-last: project a contiguous copy, write it back
        uc = u.contiguous()
        fired = _project_(p, g, uc, delta, eps, branch_free)
        u.copy_(uc)
        return fired
    dot, pn2, gn2 = _row_stats(p, g)
    rows, row_len = dot.shape[0], p.numel() // p.shape[0]
    thr_c = delta / math.sqrt(row_len)
    thr_l = delta / math.sqrt(p.numel())
    P = p.reshape(rows, -1)
    U = u.view(rows, -1)
    if not branch_free:
        if bool(_cos(dot, pn2, gn2, eps).max() < thr_c):
            coef = _rowdot(P, U) / (pn2.sqrt() + eps).square()
            U.addcmul_(P, coef.unsqueeze(1), value=-1.0)
            return True
        cos_l = _cos(dot.sum(), pn2.sum(), gn2.sum(), eps)
        if bool(cos_l < thr_l):
            coef = _rowdot(P, U).sum() / (pn2.sum().sqrt() + eps).square()
            U.sub_(P * coef)
            return True
        return False
    fire_c = _cos(dot, pn2, gn2, eps).max() < thr_c
    fire_l = (~fire_c) & (_cos(dot.sum(), pn2.sum(), gn2.sum(), eps) < thr_l)
    pu = _rowdot(P, U)
    coef_c = pu / (pn2.sqrt() + eps).square()
    coef_l = pu.sum() / (pn2.sum().sqrt() + eps).square()
    zero = torch.zeros((), dtype=coef_c.dtype, device=coef_c.device)
    coef = torch.where(fire_c, coef_c, torch.where(fire_l, coef_l, zero).expand_as(coef_c))
    U.addcmul_(P, coef.unsqueeze(1), value=-1.0)
    return fire_c | fire_l


def project_radial(
    p: Tensor, g: Tensor, u: Tensor, *, delta: float = 0.1, eps: float = 1e-8
) -> tuple[Tensor, bool]:
    """Functional AdamP projection (out of place): returns ``(u_projected, fired)``.

    Args:
        p: the weight, shape ``(out, ...)`` with ``ndim >= 2``.
        g: its raw gradient, same shape.
        u: the update to project, same shape.
        delta: threshold constant (default: ``0.1``).
        eps: numerical epsilon (default: ``1e-8``).
    """
    for name, t in (("p", p), ("g", g), ("u", u)):
        check_tensor(name, t)
    if p.ndim < 2 or p.shape != g.shape or p.shape != u.shape:
        raise ValueError(
            f"project_radial needs p, g, u of one shape with ndim >= 2, got {tuple(p.shape)}, "
            f"{tuple(g.shape)}, {tuple(u.shape)}"
        )
    out = u.clone()
    fired = _project_(p, g, out, delta, eps, branch_free=False)
    return out, bool(fired)


def _check_number(name: str, v: Any) -> None:
    check_float(name, v, 0.0)


def _check_lr(lr: Any) -> None:
    """``lr``: a float, a 0-d floating Tensor (read at every step, as torch's optimizers do) or
    ``required`` (each parameter group must then give its own)."""
    if lr is required:
        return
    if isinstance(lr, Tensor):
        if lr.ndim != 0 or not lr.is_floating_point():
            raise ValueError(
                f"lr as a Tensor must be 0-d and floating, got {lr.dtype} {tuple(lr.shape)}"
            )
        _check_number("lr", float(lr))
        return
    _check_number("lr", lr)


def _check_common(lr: Any, eps: float, weight_decay: float, delta: float, wd_ratio: float) -> None:
    _check_lr(lr)
    for name, v in (
        ("eps", eps),
        ("weight_decay", weight_decay),
        ("delta", delta),
        ("wd_ratio", wd_ratio),
    ):
        _check_number(name, v)


def _check_fused(foreach: Any, fused: Any) -> None:
    if fused and foreach:
        raise ValueError("fused and foreach cannot both be True")


def _hyper(group: dict[str, Any]) -> dict[str, Any]:
    """The group's hyper-parameters for one step, with ``lr`` read as a Python float."""
    lr = group["lr"]
    return {**group, "lr": float(lr) if isinstance(lr, Tensor) else lr}


def _grad_of(p: Tensor) -> Tensor:
    g = p.grad
    if g.is_sparse:
        raise TypeError("AdamP/SGDP do not support sparse gradients")
    if torch.is_complex(p):
        raise TypeError("AdamP/SGDP do not support complex parameters")
    return g


def _select(cond: Tensor, a: float, b: float, like: Tensor) -> Tensor:
    """``where(cond, a, b)`` in the dtype and device of ``like`` (no float32 round trip)."""
    return torch.where(
        cond,
        torch.tensor(a, dtype=like.dtype, device=like.device),
        torch.tensor(b, dtype=like.dtype, device=like.device),
    )


def _branch_free(device: torch.device, override: bool | None) -> bool:
    return (device.type != "cpu") if override is None else override


class _ProjectedBase(Optimizer):
    """Shared plumbing: foreach resolution and (device, dtype) grouping."""

    #: private switch for tests: None = auto (branch-free off CPU), True/False to force.
    _force_branch_free: bool | None = None
    #: private switch for tests and benches: ``False`` runs the fused bucket step uncompiled
    #: (users without a compiler get the foreach path, which is faster than that).
    _compile: bool = True

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """As torch's, then check the group's ``lr`` (a group may carry its own, e.g. a Tensor)."""
        super().add_param_group(param_group)
        _check_lr(self.param_groups[-1]["lr"])

    def _use_foreach(self, group: dict[str, Any]) -> bool:
        f = group.get("foreach")
        return True if f is None else bool(f)

    #: names of the per-parameter state tensors (defined by AdamP and SGDP).
    _state_keys: tuple[str, ...] = ()
    #: how many per-tensor scalars the fused bucket step takes (defined by AdamP and SGDP).
    _n_scalars: int = 1

    def _member_scalars(self, hp: dict[str, Any], params: list[Tensor]) -> list[list[float]]:
        """The fused step's per-tensor scalars, ``[scalar][tensor]`` (AdamP and SGDP)."""
        raise NotImplementedError(f"{type(self).__name__} does not define _member_scalars")

    def _bucket_args(self, hp: dict[str, Any], b: Any, lr_wd: Tensor) -> tuple[Any, ...]:
        """The arguments of the bucket step (defined by AdamP and SGDP)."""
        raise NotImplementedError(f"{type(self).__name__} does not define _bucket_args")

    def _fused_steps(
        self, kind: str, hp: dict[str, Any], params: list[Tensor], grads: list[Tensor]
    ) -> bool:
        """The fused path over ``params``; ``False`` (nothing done: the caller takes the foreach
        path) where no compiler works or the flat layout cannot hold them (a parameter neither
        contiguous nor channels-last)."""
        if self._compile:
            try:
                fn = _fused.compiled(kind)
            except _fused.CompileUnavailable:
                return False
        else:
            fn = _fused.eager(kind)
        live = [p for p in params if p.numel() > 0]
        if not live:
            return True
        layouts = self.__dict__.setdefault("_flat_layouts", {})
        gid = id(hp["params"])
        lay = layouts.get(gid)
        if lay is None or not lay.matches(live, hp["delta"]):
            if not _fused.FlatLayout.supports(live):
                return False
            lay = _fused.FlatLayout(live, self._state_keys, self._n_scalars, hp["delta"])
            layouts[gid] = lay
        lay.sync(live, self.state)
        lay.set_scalars(self._member_scalars(hp, live))
        decay = hp["lr"] * hp["weight_decay"] / (1 - hp.get("momentum", 0.0))
        with _fused.recompile_limit():
            self._run_buckets(kind, fn, hp, lay, decay)
        return True

    def _run_buckets(
        self, kind: str, fn: Any, hp: dict[str, Any], lay: _fused.FlatLayout, decay: float
    ) -> None:
        for _cdt, buckets, scal, _reps, _order in lay.devices:
            lr_wd = torch.tensor(decay, dtype=torch.float64, device=scal.device)
            for b in buckets:
                args = self._bucket_args(hp, b, lr_wd)
                try:
                    fn(*args)
                except Exception as e:  # noqa: BLE001 - the compiler failed before running
                    if fn is _fused.eager(kind):
                        raise
                    # finish this step uncompiled (same arithmetic); later steps take foreach
                    _fused.mark_unavailable(kind, e)
                    fn = _fused.eager(kind)
                    fn(*args)

    @staticmethod
    def _buckets(params: list[Tensor]) -> dict[tuple[torch.device, torch.dtype], list[int]]:
        out: dict[tuple[torch.device, torch.dtype], list[int]] = defaultdict(list)
        for i, p in enumerate(params):
            out[(p.device, p.dtype)].append(i)
        return out
