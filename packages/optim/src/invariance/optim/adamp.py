r"""AdamP and SGDP: momentum optimizers that do not inflate scale-invariant weights.

Paper: Heo, Chun, Oh, Han, Yun, Uh, Ha, *AdamP: Slowing Down the Slowdown for Momentum Optimizers on
Scale-invariant Weights*, ICLR 2021, arXiv:2006.08217.
Official code: https://github.com/clovaai/AdamP (``adamp/adamp.py``, ``adamp/sgdp.py``), MIT
licence, Copyright (c) 2020-present NAVER Corp. The algorithm below follows that code; the
implementation (multi-tensor layout, branch-free projection) is our own.

Mechanism. A weight :math:`w` is scale-invariant when :math:`L(c w) = L(w)` for all :math:`c>0` (a
conv/linear weight feeding a BatchNorm/LayerNorm). Its gradient is then orthogonal to :math:`w`, yet
momentum adds a radial part to the *update*, so :math:`\|w\|` grows and the effective step
:math:`\eta/\|w\|^2` decays too early. AdamP/SGDP compute the usual Adam/SGD update ``perturb`` and,
for every parameter with ``ndim > 1``, test whether it looks scale-invariant with the cosine between
the **raw gradient** and the weight, first per output channel (view ``(out, -1)``), then for the
whole layer (view ``(1, -1)``):

.. math::
    \max_{\text{rows}} |\cos(g_r, w_r)| < \delta / \sqrt{\text{row length}}.

The first view that fires removes the radial component from the update,
:math:`u_r \leftarrow u_r - \hat w_r (\hat w_r^\top u_r)` with :math:`\hat w_r = w_r / (\|w_r\| +
\epsilon)`, and multiplies the decoupled weight decay by ``wd_ratio``. Decay is applied before the
step: :math:`w \leftarrow w (1 - \eta\lambda r)` (SGDP divides by :math:`1-\mu`), then
:math:`w \leftarrow w - \text{step} \cdot u`.

Implementation. ``foreach=True`` (the default) updates the moments and takes the final step with
``torch._foreach_*`` kernels grouped by (device, dtype). The projection makes one pass per tensor:
the row dot products and row norms of the channel view are computed once and the layer view is
derived from their sums. On CPU the view decision is a Python branch (host syncs are free); on
other devices it is branch-free (``torch.where``, no ``.item()``), so a step issues no host sync
per parameter. ``foreach=False`` is a per-parameter loop with the same arithmetic.

Tested properties (``packages/optim/tests/test_adamp.py``):
- parity with the official ``adamp`` 0.3.0 and with ``timm`` within 1e-5 after 15 steps, on problems
  that trigger the channel view, the layer view and no projection, Nesterov on and off, for the
  foreach/for-loop and branching/branch-free paths (``test_adamp_parity_golden``,
  ``test_adamp_parity_live``, ``test_adamp_parity_problem_triggers_every_view``); the official
  in-place buffer projection differs from timm's
  (``test_sgdp_project_buffer_matches_official_not_timm``);
- a projected update is tangent: ``||w+Δ||² − ||w||² = ||Δ||²`` (``test_adamp_tangent_update``);
- 1-D parameters step exactly like ``torch.optim.AdamW(foreach=True)``
  (``test_adamp_1d_matches_adamw_exactly``);
- the projection is invariant to rescaling the weight, with a negative control
  (``test_adamp_projection_scale_invariant``);
- state_dict round trip (``test_adamp_state_dict_round_trip``); the BN-fed weight is scale
  invariant, with a negative control (``test_bn_weight_scale_invariant_with_negative_control``);
- learning: the norm of a scale-invariant weight grows far less than with Adam/SGD
  (``test_adamp_limits_norm_growth``).

Deviations from the official code:
- SGDP projects the momentum buffer in place when ``nesterov=False``, as the official code does
  (its update *is* the buffer). ``project_buffer=False`` reproduces timm, which projects a clone.
- ``step`` is a Python int per parameter, as in the official code (not a tensor as in torch.optim).
- Sparse gradients and complex parameters raise a TypeError (the official code does not support them
  either).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

__all__ = ["AdamP", "SGDP", "project_radial"]


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
    if p.ndim < 2 or p.shape != g.shape or p.shape != u.shape:
        raise ValueError(
            f"project_radial needs p, g, u of one shape with ndim >= 2, got {tuple(p.shape)}, "
            f"{tuple(g.shape)}, {tuple(u.shape)}"
        )
    out = u.clone()
    fired = _project_(p, g, out, delta, eps, branch_free=False)
    return out, bool(fired)


def _check_common(
    lr: float, eps: float, weight_decay: float, delta: float, wd_ratio: float
) -> None:
    for name, v in (
        ("lr", lr),
        ("eps", eps),
        ("weight_decay", weight_decay),
        ("delta", delta),
        ("wd_ratio", wd_ratio),
    ):
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise TypeError(f"{name} must be a float, got {type(v).__name__}")
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a finite value >= 0, got {v}")


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

    def _use_foreach(self, group: dict[str, Any]) -> bool:
        f = group.get("foreach")
        return True if f is None else bool(f)

    @staticmethod
    def _buckets(params: list[Tensor]) -> dict[tuple[torch.device, torch.dtype], list[int]]:
        out: dict[tuple[torch.device, torch.dtype], list[int]] = defaultdict(list)
        for i, p in enumerate(params):
            out[(p.device, p.dtype)].append(i)
        return out


# ------------------------------------------------------------------------------------------- AdamP


class AdamP(_ProjectedBase):
    r"""AdamP: Adam whose update loses its radial part on scale-invariant weights.

    From `"AdamP: Slowing Down the Slowdown for Momentum Optimizers on Scale-invariant Weights"
    <https://arxiv.org/abs/2006.08217>`_ (ICLR 2021).

    Args:
        params (iterable): parameters or parameter groups.
        lr (float, optional): learning rate (default: ``1e-3``).
        betas (tuple[float, float], optional): moment coefficients (default: ``(0.9, 0.999)``).
        eps (float, optional): epsilon of the denominator, the cosine and the norm
            (default: ``1e-8``).
        weight_decay (float, optional): decoupled weight decay (default: ``0``).
        delta (float, optional): cosine threshold constant, divided by sqrt(view length)
            (default: ``0.1``).
        wd_ratio (float, optional): weight-decay multiplier on projected tensors (default: ``0.1``).
        nesterov (bool, optional): Nesterov momentum in the update (default: ``False``).
        foreach (bool, optional): multi-tensor implementation; ``None`` means ``True``
            (default: ``None``).

    **Invariance**: on a weight that passes the cosine test, the update is tangent to the sphere
    ``||w|| = const`` (up to ``eps``), so the step does not grow the norm; the test itself is
    invariant to positive rescaling of the weight and of the gradient.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        delta: float = 0.1,
        wd_ratio: float = 0.1,
        nesterov: bool = False,
        *,
        foreach: bool | None = None,
    ) -> None:
        _check_common(lr, eps, weight_decay, delta, wd_ratio)
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be two values in [0, 1), got {betas}")
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            delta=delta,
            wd_ratio=wd_ratio,
            nesterov=nesterov,
            foreach=foreach,
        )
        super().__init__(params, defaults)

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
                st = self.state[p]
                if len(st) == 0:
                    st["step"] = 0
                    st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["step"] += 1
            if self._use_foreach(group):
                for idx in self._buckets(params).values():
                    self._foreach_step(group, [params[i] for i in idx], [grads[i] for i in idx])
            else:
                for p, g in zip(params, grads):
                    self._single_step(group, p, g)
        return loss

    def _single_step(self, group: dict[str, Any], p: Tensor, g: Tensor) -> None:
        beta1, beta2 = group["betas"]
        st = self.state[p]
        m, v, t = st["exp_avg"], st["exp_avg_sq"], st["step"]
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        bc1, bc2 = 1 - beta1**t, 1 - beta2**t
        denom = (v.sqrt() / math.sqrt(bc2)).add_(group["eps"])
        step_size = group["lr"] / bc1
        if group["nesterov"]:
            u = (m * beta1).add_(g, alpha=1 - beta1).div_(denom)
        else:
            u = m / denom
        factor = 1.0
        if p.ndim > 1:
            bf = _branch_free(p.device, self._force_branch_free)
            fired = _project_(p, g, u, group["delta"], group["eps"], bf)
            if bf:
                factor = _select(fired, group["wd_ratio"], 1.0, p)
            elif fired:
                factor = group["wd_ratio"]
        if group["weight_decay"] > 0:
            p.mul_(1 - group["lr"] * group["weight_decay"] * factor)
        p.add_(u, alpha=-step_size)

    def _foreach_step(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]
    ) -> None:
        beta1, beta2 = group["betas"]
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        states = [self.state[p] for p in params]
        ms = [s["exp_avg"] for s in states]
        vs = [s["exp_avg_sq"] for s in states]
        steps = [s["step"] for s in states]
        torch._foreach_lerp_(ms, grads, 1 - beta1)
        torch._foreach_mul_(vs, beta2)
        torch._foreach_addcmul_(vs, grads, grads, 1 - beta2)
        neg_step = [-(lr / (1 - beta1**t)) for t in steps]
        denom = torch._foreach_sqrt(vs)
        torch._foreach_div_(denom, [math.sqrt(1 - beta2**t) for t in steps])
        torch._foreach_add_(denom, eps)

        proj = [i for i, p in enumerate(params) if p.ndim > 1]
        flat = [i for i, p in enumerate(params) if p.ndim <= 1]
        # 1-D (and 0-D) tensors: exactly the AdamW foreach arithmetic.
        if flat:
            fp = [params[i] for i in flat]
            if wd > 0:
                torch._foreach_mul_(fp, 1 - lr * wd)
            if group["nesterov"]:
                num = torch._foreach_mul([ms[i] for i in flat], beta1)
                torch._foreach_add_(num, [grads[i] for i in flat], alpha=1 - beta1)
            else:
                num = [ms[i] for i in flat]
            torch._foreach_addcdiv_(fp, num, [denom[i] for i in flat], [neg_step[i] for i in flat])
        if not proj:
            return
        pp = [params[i] for i in proj]
        u = [denom[i] for i in proj]  # reuse the denominator buffers for the update
        # fold the (negative) step size into the denominator: u = -step * m / denom
        torch._foreach_div_(u, [neg_step[i] for i in proj])
        torch._foreach_reciprocal_(u)
        if group["nesterov"]:
            num = torch._foreach_mul([ms[i] for i in proj], beta1)
            torch._foreach_add_(num, [grads[i] for i in proj], alpha=1 - beta1)
            torch._foreach_mul_(u, num)
        else:
            torch._foreach_mul_(u, [ms[i] for i in proj])
        bf = _branch_free(pp[0].device, self._force_branch_free)
        fired = [
            _project_(p, grads[i], ui, group["delta"], eps, bf) for p, i, ui in zip(pp, proj, u)
        ]
        if wd > 0:
            if bf:
                r = torch.stack(fired)
                f = _select(r, 1 - lr * wd * group["wd_ratio"], 1 - lr * wd, pp[0])
                torch._foreach_mul_(pp, list(f.unbind()))
            else:
                torch._foreach_mul_(
                    pp, [1 - lr * wd * (group["wd_ratio"] if fi else 1.0) for fi in fired]
                )
        torch._foreach_add_(pp, u)


# -------------------------------------------------------------------------------------------- SGDP


class SGDP(_ProjectedBase):
    r"""SGDP: SGD with momentum whose update loses its radial part on scale-invariant weights.

    From `"AdamP: Slowing Down the Slowdown for Momentum Optimizers on Scale-invariant Weights"
    <https://arxiv.org/abs/2006.08217>`_ (ICLR 2021).

    Args:
        params (iterable): parameters or parameter groups.
        lr (float): learning rate (required, as in the official code).
        momentum (float, optional): momentum factor in ``[0, 1)`` (default: ``0``).
        dampening (float, optional): dampening of the gradient in the buffer (default: ``0``).
        weight_decay (float, optional): decoupled weight decay, divided by ``1 - momentum``
            (default: ``0``).
        nesterov (bool, optional): Nesterov momentum (default: ``False``).
        eps (float, optional): epsilon of the cosine and the norm (default: ``1e-8``).
        delta (float, optional): cosine threshold constant (default: ``0.1``).
        wd_ratio (float, optional): weight-decay multiplier on projected tensors (default: ``0.1``).
        project_buffer (bool, optional): without Nesterov, project the momentum buffer itself in
            place, as the official code does (its update aliases the buffer); ``False`` projects a
            copy, as timm does (default: ``True``).
        foreach (bool, optional): multi-tensor implementation; ``None`` means ``True``
            (default: ``None``).

    **Invariance**: as :class:`AdamP`, the projected update is tangent to ``||w|| = const``.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        eps: float = 1e-8,
        delta: float = 0.1,
        wd_ratio: float = 0.1,
        *,
        project_buffer: bool = True,
        foreach: bool | None = None,
    ) -> None:
        _check_common(lr, eps, weight_decay, delta, wd_ratio)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(
                f"momentum must be in [0, 1) (weight decay divides by 1-momentum), got {momentum}"
            )
        if not 0.0 <= dampening <= 1.0:
            raise ValueError(f"dampening must be in [0, 1], got {dampening}")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            eps=eps,
            delta=delta,
            wd_ratio=wd_ratio,
            project_buffer=project_buffer,
            foreach=foreach,
        )
        super().__init__(params, defaults)

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
                st = self.state[p]
                if len(st) == 0:
                    st["momentum"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if self._use_foreach(group):
                for idx in self._buckets(params).values():
                    self._foreach_step(group, [params[i] for i in idx], [grads[i] for i in idx])
            else:
                for p, g in zip(params, grads):
                    self._single_step(group, p, g)
        return loss

    def _direction(self, group: dict[str, Any], buf: Tensor, g: Tensor) -> Tensor:
        if group["nesterov"]:
            return g.add(buf, alpha=group["momentum"])
        return buf if group["project_buffer"] else buf.clone()

    def _single_step(self, group: dict[str, Any], p: Tensor, g: Tensor) -> None:
        mom = group["momentum"]
        buf = self.state[p]["momentum"]
        buf.mul_(mom).add_(g, alpha=1 - group["dampening"])
        d = self._direction(group, buf, g)
        factor = 1.0
        if p.ndim > 1:
            bf = _branch_free(p.device, self._force_branch_free)
            fired = _project_(p, g, d, group["delta"], group["eps"], bf)
            if bf:
                factor = _select(fired, group["wd_ratio"], 1.0, p)
            elif fired:
                factor = group["wd_ratio"]
        if group["weight_decay"] > 0:
            p.mul_(1 - group["lr"] * group["weight_decay"] * factor / (1 - mom))
        p.add_(d, alpha=-group["lr"])

    def _foreach_step(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]
    ) -> None:
        mom, lr, wd = group["momentum"], group["lr"], group["weight_decay"]
        bufs = [self.state[p]["momentum"] for p in params]
        torch._foreach_mul_(bufs, mom)
        torch._foreach_add_(bufs, grads, alpha=1 - group["dampening"])
        if group["nesterov"]:
            ds = torch._foreach_add(grads, bufs, alpha=mom)
        elif group["project_buffer"]:
            ds = bufs
        else:
            ds = [b.clone() for b in bufs]
        proj = [i for i, p in enumerate(params) if p.ndim > 1]
        bf = bool(proj) and _branch_free(params[proj[0]].device, self._force_branch_free)
        fired: dict[int, Any] = {
            i: _project_(params[i], grads[i], ds[i], group["delta"], group["eps"], bf) for i in proj
        }
        if wd > 0:
            base = lr * wd / (1 - mom)
            if bf and proj:
                r = torch.stack([fired[i] for i in proj])
                f = _select(r, 1 - base * group["wd_ratio"], 1 - base, params[proj[0]])
                torch._foreach_mul_([params[i] for i in proj], list(f.unbind()))
                flat = [params[i] for i in range(len(params)) if i not in fired]
                if flat:
                    torch._foreach_mul_(flat, 1 - base)
            else:
                torch._foreach_mul_(
                    params,
                    [
                        1 - base * (group["wd_ratio"] if fired.get(i, False) else 1.0)
                        for i in range(len(params))
                    ],
                )
        torch._foreach_add_(params, ds, alpha=-lr)


# ------------------------------------------------------------------------------------ recipes
# (kept below the optimizers so that the classes above import nothing from invariance.core)

from dataclasses import dataclass  # noqa: E402

from torch import nn  # noqa: E402

from invariance.core.recipe import CheckResult, Recipe, ReproduceResult, TrainConfig  # noqa: E402
from invariance.core.registry import register  # noqa: E402


@dataclass
class AdamPConfig(TrainConfig):
    """Digits BN-CNN config (defaults: the tiny preset).

    Args:
        width: channels of the conv layers (default: ``8``).
        seeds: seeds of the reproduce experiment (default: ``3``).
    """

    steps: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    width: int = 8
    seeds: int = 3


class DigitsBNCNN(nn.Module):
    """conv3x3 (no bias) -> BN -> ReLU, twice, global average pool, linear. Conv weights are
    scale-invariant (each feeds a BatchNorm)."""

    def __init__(self, width: int = 8, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
        )
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"expected images of shape (B, 1, H, W), got {tuple(x.shape)}")
        return self.head(self.features(x).mean((2, 3)))


def _digits_dataset(split: str, seed: int = 0) -> torch.utils.data.TensorDataset:
    from invariance.optim.data import digits_split

    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    xtr, ytr, xte, yte = digits_split(seed=seed, image=True)
    if split == "train":
        return torch.utils.data.TensorDataset(xtr, ytr)
    return torch.utils.data.TensorDataset(xte, yte)


def _broken_projection(w: Tensor, g: Tensor, u: Tensor) -> Tensor:
    """Negative control: the radial removal without normalising ``w`` (not scale invariant)."""
    W, U = w.reshape(w.shape[0], -1), u.reshape(u.shape[0], -1)
    return (U - W * (W * U).sum(1, keepdim=True)).reshape(u.shape)


def _train_digits(
    opt_name: str,
    cfg: AdamPConfig,
    seed: int,
    steps: int,
    lr: float,
    track: str = "features.3.weight",
) -> dict[str, Any]:
    from invariance.optim.factory import create_optimizer

    torch.manual_seed(seed)
    data = _digits_dataset("train", seed=0)
    test = _digits_dataset("test", seed=0)
    model = DigitsBNCNN(cfg.width)
    opt = create_optimizer(model, opt_name, lr=lr, weight_decay=cfg.weight_decay)
    w = dict(model.named_parameters())[track]
    g = torch.Generator().manual_seed(seed)
    norms, eff = [float(w.detach().norm())], []
    x_all, y_all = data.tensors
    for _ in range(steps):
        idx = torch.randint(0, len(y_all), (cfg.batch_size,), generator=g)
        loss = nn.functional.cross_entropy(model(x_all[idx]), y_all[idx])
        opt.zero_grad()
        loss.backward()
        before = w.detach().clone()
        opt.step()
        # effective step size on the sphere: ||Δ(w/||w||)||
        eff.append(float((w.detach() / w.detach().norm() - before / before.norm()).norm()))
        norms.append(float(w.detach().norm()))
    model.eval()
    with torch.no_grad():
        acc = float((model(test.tensors[0]).argmax(1) == test.tensors[1]).float().mean())
    return {"norms": norms, "eff_step": eff, "test_acc": acc}


class _ProjectedRecipe(Recipe):
    Config = AdamPConfig
    presets = {"tiny": {}, "full": {"steps": 1000, "width": 8, "seeds": 3}}
    opt_name = "adamp"
    base_name = "adam"
    lr_scale = 1.0

    def make_data(self, cfg: AdamPConfig, split: str) -> torch.utils.data.Dataset:
        return _digits_dataset(split, seed=0)

    def build(self, cfg: AdamPConfig) -> nn.Module:
        return DigitsBNCNN(cfg.width)

    def optimizer(self, cfg: AdamPConfig, model: nn.Module) -> torch.optim.Optimizer:
        from invariance.optim.factory import create_optimizer

        return create_optimizer(
            model, self.opt_name, lr=cfg.lr * self.lr_scale, weight_decay=cfg.weight_decay
        )

    def step(self, model: nn.Module, batch: Any) -> dict[str, Tensor]:
        x, y = batch
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        return {"loss": loss, "acc": (logits.argmax(1) == y).float().mean()}

    def check(self, model: nn.Module, cfg: AdamPConfig) -> list[CheckResult]:
        from torch.func import functional_call

        from invariance.core.groups import Scaling
        from invariance.core.testing import as_float64, check_invariant, check_not_invariant

        m64 = as_float64(model).train()
        x, y = (t[:32] for t in self.make_data(cfg, "train").tensors)
        x = x.double()
        name = "features.0.weight"
        w = dict(m64.named_parameters())[name].detach().clone()

        def loss_of(w: Tensor) -> Tensor:
            out = functional_call(m64, {name: w}, (x,))
            return nn.functional.cross_entropy(out, y)

        wg = w.clone().requires_grad_(True)
        loss_of(wg).backward()
        g = wg.grad.detach()
        u = torch.randn(w.shape, generator=torch.Generator().manual_seed(0), dtype=w.dtype)
        proj = lambda w, g, u: project_radial(w, g, u, eps=1e-12)[0]
        grp = Scaling(0.2, 5.0)
        return [
            check_invariant(
                "BN-fed conv weight: loss invariant to its scale",
                loss_of,
                (w,),
                grp,
                ("scale",),
                tol=1e-6,
            ),
            check_invariant(
                "projection invariant to the weight's scale",
                proj,
                (w, g, u),
                grp,
                ("scale", None, None),
                tol=1e-6,
            ),
            check_invariant(
                "projection invariant to the gradient's scale",
                proj,
                (w, g, u),
                grp,
                (None, "scale", None),
                tol=1e-6,
            ),
            check_not_invariant(
                "negative control: unnormalised projection",
                _broken_projection,
                (w, g, u),
                grp,
                ("scale", None, None),
            ),
        ]

    def reproduce(self, cfg: Any, run: Any, *, quick: bool) -> ReproduceResult:
        """The paper-analog experiment (single-threaded: the models are tiny)."""
        from invariance.optim._utils import threads

        with threads(1):
            return self._reproduce(cfg, run, quick=quick)

    def _reproduce(self, cfg: AdamPConfig, run: Any, *, quick: bool) -> ReproduceResult:
        import time

        t0 = time.time()
        steps = 150 if quick else max(cfg.steps, 1000)
        seeds = list(range(cfg.seeds))
        runs: dict[str, list[dict[str, Any]]] = {}
        # the method and its own baseline only (``reproduce adamp`` and ``reproduce sgdp`` together
        # give the four optimizers)
        lrs = {self.base_name: 1e-3 * self.lr_scale, self.opt_name: 1e-3 * self.lr_scale}
        for name, lr in lrs.items():
            runs[name] = [_train_digits(name, cfg, s, steps, lr) for s in seeds]

        def growth(name: str) -> float:
            v = [r["norms"][-1] / r["norms"][0] - 1 for r in runs[name]]
            return 100 * sum(v) / len(v)

        def mean(name: str, key: str) -> float:
            return sum(r[key] for r in runs[name]) / len(runs[name])

        def late_eff(name: str) -> float:
            v = [sum(r["eff_step"][-20:]) / len(r["eff_step"][-20:]) for r in runs[name]]
            return sum(v) / len(v)

        plots = []
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
            for name in lrs:
                n = torch.tensor([r["norms"] for r in runs[name]]).mean(0)
                e = torch.tensor([r["eff_step"] for r in runs[name]]).mean(0)
                ax[0].plot(n / n[0], label=name)
                ax[1].plot(torch.nn.functional.avg_pool1d(e[None, None], 10, 1)[0, 0], label=name)
            ax[0].set(title="||w_t|| / ||w_0|| (conv 2)", xlabel="step")
            ax[1].set(
                title="effective step ||Δ(w/||w||)|| (10-step mean)", xlabel="step", yscale="log"
            )
            ax[0].legend()
            plots.append(run.savefig(fig, f"{self.opt_name}_norms"))
        except ImportError:  # matplotlib is optional
            pass
        details = {
            "steps": steps,
            "seeds": len(seeds),
            "lrs": lrs,
            "norm_growth_pct": {k: growth(k) for k in lrs},
            "late_effective_step": {k: late_eff(k) for k in lrs},
            "test_acc": {k: mean(k, "test_acc") for k in lrs},
        }
        return ReproduceResult(
            task=f"digits BN-CNN, {steps} steps, {len(seeds)} seeds",
            metric="conv-2 weight-norm growth (%)",
            method=self.opt_name,
            baseline=self.base_name,
            method_value=growth(self.opt_name),
            baseline_value=growth(self.base_name),
            higher_is_better=False,
            seconds=time.time() - t0,
            details=details,
            plots=plots,
        )


_PAPER = "AdamP: Slowing Down the Slowdown for Momentum Optimizers on Scale-invariant Weights"
_AUTHORS = "Heo, Chun, Oh, Han, Yun, Uh, Ha"


@register(
    "adamp",
    domain="optim",
    paper=_PAPER,
    authors=_AUTHORS,
    year=2021,
    arxiv="2006.08217",
    code_url="https://github.com/clovaai/AdamP",
    baseline="adam",
    symmetry="update tangent to ||w|| on scale-invariant weights (BN-fed conv)",
    tags=("optimizer",),
)
class AdamPRecipe(_ProjectedRecipe):
    """AdamP on a digits BN-CNN; reproduce: Adam vs AdamP and SGD vs SGDP weight-norm growth."""


@register(
    "sgdp",
    domain="optim",
    paper=_PAPER,
    authors=_AUTHORS,
    year=2021,
    arxiv="2006.08217",
    code_url="https://github.com/clovaai/AdamP",
    baseline="sgd",
    symmetry="update tangent to ||w|| on scale-invariant weights (BN-fed conv)",
    tags=("optimizer",),
)
class SGDPRecipe(_ProjectedRecipe):
    """SGDP (Nesterov, momentum 0.9) on a digits BN-CNN."""

    opt_name, base_name, lr_scale = "sgdp", "sgd", 100.0
