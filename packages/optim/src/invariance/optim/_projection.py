"""Shared machinery of AdamP and SGDP (private): the projection, argument checks, the base class.

The cosine tests and the radial projection follow the official AdamP code (Heo et al., ICLR 2021,
https://github.com/clovaai/AdamP, MIT); see :mod:`invariance.optim.adamp` for the mechanism.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.optimizer import required

from invariance.optim import _fused, _kernel
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
    _check_number("delta", delta)
    _check_number("eps", eps)
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


def _kernel_ready() -> bool:
    """Whether the CPU kernel is built and loaded (warns once where it cannot be)."""
    try:
        _kernel.load()
    except _kernel.KernelUnavailable as e:
        if not _kernel._LIB.get("warned"):
            _kernel._LIB["warned"] = True
            warnings.warn(
                f"fused=True: the CPU kernel is not usable here ({str(e)[:200]}); "
                "trying torch.compile, else the foreach path",
                RuntimeWarning,
                stacklevel=4,
            )
        return False
    return True


class _ProjectedBase(Optimizer):
    """Shared plumbing: foreach resolution and (device, dtype) grouping."""

    #: private switch for tests: None = auto (branch-free off CPU), True/False to force.
    _force_branch_free: bool | None = None
    #: private switch for tests and benches: ``False`` runs the fused bucket step uncompiled
    #: (users without a compiler get the foreach path, which is faster than that).
    _compile: bool = True
    #: private switch for tests and benches: ``False`` keeps CPU tensors off the native kernel
    #: (they take the flat-buffer ``torch.compile``d bucket step, as on other devices).
    _cpu_kernel: bool = True

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """As torch's, then check the group's ``lr`` (a group may carry its own, e.g. a Tensor)."""
        super().add_param_group(param_group)
        _check_lr(self.param_groups[-1]["lr"])

    def _use_foreach(self, group: dict[str, Any]) -> bool:
        f = group.get("foreach")
        return True if f is None else bool(f)

    #: ``"adamp"`` or ``"sgdp"``, the names of the per-parameter state tensors and how many
    #: per-tensor scalars the fused step takes (defined by AdamP and SGDP).
    _kind: str = ""
    _state_keys: tuple[str, ...] = ()
    _n_scalars: int = 1

    def _init_state(self, st: dict[str, Any], p: Tensor) -> None:
        """Create (or advance) the state of ``p`` before a step (defined by AdamP and SGDP)."""
        raise NotImplementedError(f"{type(self).__name__} does not define _init_state")

    def _single_step(self, group: dict[str, Any], p: Tensor, g: Tensor) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not define _single_step")

    def _foreach_step(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]
    ) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not define _foreach_step")

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Perform one optimization step."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [_grad_of(p) for p in params]
            for p in params:
                self._init_state(self.state[p], p)
            hp = _hyper(group)
            if group.get("fused"):
                params, grads = self._fused_steps(self._kind, hp, params, grads)
            if not params:
                continue
            if self._use_foreach(group):
                for idx in self._buckets(params).values():
                    self._foreach_step(hp, [params[i] for i in idx], [grads[i] for i in idx])
            else:
                for p, g in zip(params, grads):
                    self._single_step(hp, p, g)
        return loss

    def _member_scalars(self, hp: dict[str, Any], params: list[Tensor]) -> list[list[float]]:
        """The fused step's per-tensor scalars, ``[scalar][tensor]``: AdamP the step size
        ``lr / (1 - beta1^t)`` and ``sqrt(1 - beta2^t)``, SGDP ``lr``."""
        if self._kind == "sgdp":
            return [[hp["lr"]] * len(params)]
        beta1, beta2 = hp["betas"]
        steps = [self.state[p]["step"] for p in params]
        return [
            [hp["lr"] / (1 - beta1**t) for t in steps],
            [math.sqrt(1 - beta2**t) for t in steps],
        ]

    def _fused_steps(
        self, kind: str, hp: dict[str, Any], params: list[Tensor], grads: list[Tensor]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """The fused path over ``params``; returns the parameters (and gradients) it left to the
        foreach path: none, or those no fused implementation can hold (no compiler, a layout the
        kernel or the flat buffers cannot hold).

        CPU float32/float64 tensors take the native kernel (:mod:`invariance.optim._kernel`);
        the others the flat-buffer bucket step (:mod:`invariance.optim._fused`)."""
        if self._compile and self._cpu_kernel:
            params, grads = self._kernel_steps(kind, hp, params, grads)
            if not params:
                return [], []
        if self._compile:
            try:
                fn = _fused.compiled(kind)
            except _fused.CompileUnavailable:
                return params, grads
        else:
            fn = _fused.eager(kind)
        live = [p for p in params if p.numel() > 0]
        if not live:
            return [], []
        layouts = self.__dict__.setdefault("_flat_layouts", {})
        gid = id(hp["params"])
        lay = layouts.get(gid)
        if lay is None or not lay.matches(live, hp["delta"]):
            if not _fused.FlatLayout.supports(live):
                return params, grads
            lay = _fused.FlatLayout(live, self._state_keys, self._n_scalars, hp["delta"])
            layouts[gid] = lay
        lay.sync(live, self.state)
        lay.set_scalars(self._member_scalars(hp, live))
        decay = hp["lr"] * hp["weight_decay"] / (1 - hp.get("momentum", 0.0))
        with _fused.recompile_limit():
            self._run_buckets(kind, fn, hp, lay, decay)
        return [], []

    def _kernel_steps(
        self, kind: str, hp: dict[str, Any], params: list[Tensor], grads: list[Tensor]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Step the tensors the CPU kernel supports; returns the others."""
        if not any(p.device.type == "cpu" for p in params) or not _kernel_ready():
            return params, grads
        rest_p: list[Tensor] = []
        rest_g: list[Tensor] = []
        take: dict[torch.dtype, list[int]] = defaultdict(list)
        for i, (p, g) in enumerate(zip(params, grads)):
            states = [self.state[p][k] for k in self._state_keys]
            if p.numel() == 0:
                continue  # nothing moves (the state is empty too)
            if _kernel.supports(p, g, states):
                take[p.dtype].append(i)
            else:
                rest_p.append(p)
                rest_g.append(g)
        if take:
            delta = hp["delta"]
            hyper = _kernel.hyper(kind, hp)
            threads = torch.get_num_threads()
            for dt, idx in take.items():
                ps = [params[i] for i in idx]
                member = self._member_scalars(hp, ps)
                tensors, scal = [], []
                for j, i in enumerate(idx):
                    p = ps[j]
                    st = [self.state[p][k] for k in self._state_keys]
                    tensors.append((p, grads[i], st[0], st[1] if len(st) > 1 else None))
                    n = p.numel()
                    row = n // p.shape[0] if p.ndim > 1 else n
                    scal.append(
                        (
                            member[0][j],
                            member[1][j] if len(member) > 1 else 1.0,
                            delta / math.sqrt(row),
                            delta / math.sqrt(n),
                        )
                    )
                _kernel.run(kind, dt, tensors, scal, hyper, threads)
        return rest_p, rest_g

    def _run_buckets(
        self, kind: str, fn: Any, hp: dict[str, Any], lay: _fused.FlatLayout, decay: float
    ) -> None:
        for _cdt, buckets, scal, _reps, _order in lay.devices:
            lr_wd = torch.tensor(decay, dtype=torch.float64, device=scal.device)
            for b in buckets:
                args = _fused.bucket_args(kind, hp, b, lr_wd)
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
