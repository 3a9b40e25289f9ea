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
per parameter. ``foreach=False`` is a per-parameter loop with the same arithmetic. ``fused=True``
on CPU (float32/float64) runs a native kernel, one call per group and dtype: the cosine tests read
only ``p`` and the raw gradient, so the view that fires is known before the moments are touched,
and the moments, the channel projection and the step then take one pass over each channel
(:mod:`invariance.optim._kernel`, built once with the C++ compiler). Elsewhere (CUDA, half
precision) ``fused=True`` keeps a group's parameters, gradients and state as views into flat
buffers, one ``(k, rows, L)`` bucket per distinct shape, and runs one ``torch.compile``d,
branch-free step per bucket (:mod:`invariance.optim._fused`). Where neither can be built it warns
once and takes the foreach path. The shared machinery lives in
:mod:`invariance.optim._projection`.

Drop-in behaviour (as torch's optimizers): ``lr`` may be given by every parameter group instead
of the constructor (SGDP's ``lr`` is ``required``), a 0-d Tensor ``lr`` is read at every step, and
``lr=0`` leaves the parameters untouched (the moments still advance).

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
  (``test_adamp_limits_norm_growth``);
- drop-in: lr from parameter groups, Tensor lr equal to float lr, lr = 0 no update, ``p.grad``
  unchanged (``test_sgdp_lr_from_param_groups``, ``test_tensor_lr_matches_float``,
  ``test_zero_lr_no_update``, ``test_step_leaves_grad_unchanged``) and timm's own optimizer
  test-suite with our classes registered as timm's ``adamp``/``sgdp`` (``test_timm_suite.py``);
- the fused path (CPU kernel; compiled and eager bucket step): parity < 1e-6 with the golden
  values and the foreach path, state_dict interchangeable both ways, bit-exact resume, tensors
  of one shape with different step counts, several groups and dtypes, channels-last weights,
  Tensor lr / lr = 0 / ``p.grad`` unchanged; the kernel steps in place with one call per dtype,
  gives bit-equal results on 1 and 3 threads, and leaves tensors it cannot hold to foreach; the
  flat buffers take in fresh gradients, loaded state and replaced ``p.data``; fallback with a
  warning without a compiler (``test_adamp_fused.py``).

Deviations from the official code:
- SGDP projects the momentum buffer in place when ``nesterov=False``, as the official code does
  (its update *is* the buffer). ``project_buffer=False`` reproduces timm, which projects a clone.
- ``step`` is a Python int per parameter, as in the official code (not a tensor as in torch.optim).
- Sparse gradients and complex parameters raise a TypeError (the official code does not support them
  either).
- ``fused=True`` off the CPU moves the parameters into the optimizer's flat buffers (``p.data``
  becomes a view; the ``Parameter`` objects stay the same); on CPU the kernel steps the tensors
  where they are. Parameters that are neither contiguous nor channels-last (and, on CPU, whose
  gradient or state has another memory layout) take the foreach path.
- The CPU kernel sums each channel in its own order (vectorised), so it differs from the foreach
  path by rounding only (float64: ~1e-16; float32: ~1e-7 after 15 steps).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import required

from invariance.optim._checks import check_float
from invariance.optim._projection import (
    _branch_free,
    _check_common,
    _check_fused,
    _project_,
    _ProjectedBase,
    _select,
    project_radial,
)

__all__ = ["AdamP", "SGDP", "project_radial"]


# ------------------------------------------------------------------------------------------- AdamP


class AdamP(_ProjectedBase):
    r"""AdamP: Adam whose update loses its radial part on scale-invariant weights.

    From `"AdamP: Slowing Down the Slowdown for Momentum Optimizers on Scale-invariant Weights"
    <https://arxiv.org/abs/2006.08217>`_ (ICLR 2021).

    Args:
        params (iterable): parameters or parameter groups.
        lr (float or Tensor, optional): learning rate; a 0-d Tensor is read at every step, and
            ``lr=0`` leaves the parameters untouched (default: ``1e-3``).
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
        fused (bool, optional): same arithmetic, fewer passes over memory: on CPU (float32 and
            float64) a native kernel built once with the C++ compiler; elsewhere the step over
            flat, shape-bucketed buffers, ``torch.compile``d (the parameters, their ``.grad``
            and the state become views into the optimizer's buffers at the first step; a new
            ``.grad`` is copied in at each step). Where neither can be built it warns once and
            takes the foreach path. ``None`` means ``False`` (default: ``None``).

    **Invariance**: on a weight that passes the cosine test, the update is tangent to the sphere
    ``||w|| = const`` (up to ``eps``), so the step does not grow the norm; the test itself is
    invariant to positive rescaling of the weight and of the gradient.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        delta: float = 0.1,
        wd_ratio: float = 0.1,
        nesterov: bool = False,
        *,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        _check_common(lr, eps, weight_decay, delta, wd_ratio)
        _check_fused(foreach, fused)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair of floats, got {betas!r}")
        for b in betas:
            if check_float("betas", b, 0.0) >= 1.0:
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
            fused=fused,
        )
        super().__init__(params, defaults)

    _kind = "adamp"
    _state_keys = ("exp_avg", "exp_avg_sq")
    _n_scalars = 2

    def _init_state(self, st: dict[str, Any], p: Tensor) -> None:
        if len(st) == 0:
            st["step"] = 0
            st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        st["step"] += 1

    def _single_step(self, group: dict[str, Any], p: Tensor, g: Tensor) -> None:
        beta1, beta2 = group["betas"]
        st = self.state[p]
        m, v, t = st["exp_avg"], st["exp_avg_sq"], st["step"]
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        if group["lr"] == 0:  # moments advance, the parameter does not move
            return
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
        if lr == 0:  # moments advance, the parameters do not move
            return
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
        lr (float or Tensor): learning rate; required unless every parameter group gives one
            (torch's ``required`` convention); a 0-d Tensor is read at every step, and ``lr=0``
            leaves the parameters untouched.
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
        fused (bool, optional): as :class:`AdamP` (default: ``None``).

    **Invariance**: as :class:`AdamP`, the projected update is tangent to ``||w|| = const``.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float | Tensor = required,
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
        fused: bool | None = None,
    ) -> None:
        _check_common(lr, eps, weight_decay, delta, wd_ratio)
        _check_fused(foreach, fused)
        if check_float("momentum", momentum, 0.0) >= 1.0:
            raise ValueError(
                f"momentum must be in [0, 1) (weight decay divides by 1-momentum), got {momentum}"
            )
        check_float("dampening", dampening, 0.0, 1.0)
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
            fused=fused,
        )
        super().__init__(params, defaults)

    _kind = "sgdp"
    _state_keys = ("momentum",)
    _n_scalars = 1

    def _init_state(self, st: dict[str, Any], p: Tensor) -> None:
        if len(st) == 0:
            st["momentum"] = torch.zeros_like(p, memory_format=torch.preserve_format)

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
        if group["lr"] == 0:  # the buffer advances, the parameter does not move
            return
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
        if lr == 0:  # the buffers advance, the parameters do not move
            return
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
