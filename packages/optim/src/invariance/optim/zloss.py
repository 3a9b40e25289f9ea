r"""The Z-loss, the spherical loss family and the exact factored output layer.

Papers:
- de Brébisson & Vincent, *The Z-loss: a shift and scale invariant classification loss belonging to
  the Spherical Family*, arXiv:1604.08859 (2016).
- Vincent, de Brébisson & Bouthillier, *Efficient Exact Gradient Update for training Deep Networks
  with Very Large Sparse Targets*, NIPS 2015, arXiv:1412.7091 (the factored update the Z-loss paper
  uses for its 40x speed-up).
Official code: https://github.com/pascal20100/factored_output_layer (Theano + C++/CUDA; no licence
file visible). Nothing was ported from it: the code below is written from the papers' equations.

**Not the PaLM / ST-MoE "z-loss"** (the auxiliary penalty :math:`\log^2 Z` on the softmax
normaliser). This is a *classification loss* that replaces the log-softmax.

Mechanism. With output pre-activations :math:`o\in\mathbb R^D` and target :math:`c`, the Z-loss
z-normalises the target score and applies a scaled softplus:

.. math::
    \mu = \tfrac1D\textstyle\sum_k o_k,\quad \sigma^2 = \tfrac1D\sum_k o_k^2 - \mu^2,\quad
    z_c = (o_c-\mu)/\sigma,\quad L = \tfrac1a\,\mathrm{softplus}\big(a(b - z_c)\big).

:math:`L` depends on :math:`o` only through :math:`(q=\sum o_k^2,\ s=\sum o_k,\ o_c)`: it is a
*spherical* loss, like the squared error and the Taylor softmax. It is invariant to
:math:`o\mapsto\alpha o+\beta\mathbf 1` (:math:`\alpha>0`), its gradient sums to zero and is
orthogonal to :math:`o`. For :math:`o = Wh` (:math:`W\in\mathbb R^{D\times d}`) a plain SGD step on
a spherical loss is
:math:`W \leftarrow W(I - 2\eta\sum_i \ell_{q,i} h_i h_i^\top) - \eta\mathbf 1 a^\top -\eta Y`
(dense rank-:math:`m` multiplicative part, all-ones part, :math:`m` sparse target rows).
:class:`FactoredSphericalOutput` keeps :math:`W = VU + \mathbf 1\omega^\top` with
:math:`Q=W^\top W`, :math:`\bar w=W^\top\mathbf 1` and :math:`U^{-1}`, and applies that step by
low-rank updates (Woodbury for :math:`U^{-1}`, or a direct d x d solve when the batch m >= d) in
:math:`O(md^2 + m^2d)`, independent of :math:`D`.

The paper's baselines :func:`spherical_mse_loss` and :func:`taylor_softmax_loss` are written in
``_spherical.py`` (with this module's argument checks) and exported from here.

Tested properties (``packages/optim/tests/test_zloss.py``):
- shift and scale invariance of ``z_loss`` under random positive affine maps of the logits, with
  cross-entropy as the negative control (``test_zloss_shift_scale_invariant``);
- gradient sums to zero and is orthogonal to the logits
  (``test_zloss_gradient_sum_and_orthogonal``);
  ``gradcheck`` (``test_zloss_gradcheck``);
- the factored layer's q, s from (Q, w̄) equal the dense values, and its trajectory equals dense SGD
  on W over 20 steps in float64 to 1e-8 relative, for batches m < d (Woodbury update of
  :math:`U^{-1}`) and m >= d (direct d x d solve) (``test_factored_matches_dense_sgd``);
- the layer refuses anything but plain SGD (``test_factored_rejects_non_sgd``);
- learning: an MLP on digits trained with the Z-loss reaches >= 0.90 test accuracy
  (``test_zloss_learns_digits``), and on Zipf extreme classification (D=200) the Z-loss beats the
  Taylor softmax by > 0.15 top-1 (``test_zloss_beats_other_spherical_losses``).

Deviations:
- The official example adds 1e-12 to :math:`\sigma`; we clamp :math:`\sigma^2 \ge` ``eps²`` instead,
  so the loss is exactly shift/scale invariant whenever :math:`\sigma >` ``eps``, and constant
  logits (a zero-initialised head) give finite gradients, of size about ``1/eps`` (the loss is
  scale invariant, so its gradient grows like :math:`1/\sigma`): harmless for Adam-type
  optimizers, too large for plain SGD from a zero head.
- The official layer appends a constant 0.001 feature to :math:`h` as an output bias; append it to
  your features yourself if you want one. :math:`U^{-1}` is refreshed by inversion every
  ``refresh_every`` updates (the official code does the same every 100 updates).
- The dense path uses a two-pass variance; the factored path keeps its d×d state in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invariance.optim._checks import check_choice, check_float, check_int, check_tensor
from invariance.optim._spherical import check_ab as _check_ab
from invariance.optim._spherical import check_logits_target as _check_logits_target
from invariance.optim._spherical import check_stats as _check_stats
from invariance.optim._spherical import reduce as _reduce
from invariance.optim._spherical import spherical_mse_loss, taylor_softmax_loss

__all__ = [
    "z_loss",
    "ZLoss",
    "spherical_mse_loss",
    "taylor_softmax_loss",
    "spherical_loss_from_stats",
    "FactoredSphericalOutput",
]

_LOSSES = ("z", "mse", "taylor")


# ------------------------------------------------------------------------------ dense losses


def z_loss(
    logits: Tensor,
    target: Tensor,
    a: float = 1.0,
    b: float = 0.0,
    *,
    reduction: str = "mean",
    eps: float = 1e-12,
) -> Tensor:
    r"""Z-loss :math:`\frac1a\mathrm{softplus}(a(b - z_c))` of z-normalised target logits.

    Args:
        logits: pre-activations, shape ``(N, D)``.
        target: class indices, shape ``(N,)``.
        a: sharpness > 0; large ``a`` tends to the hinge ``max(0, b - z_c)`` (default: ``1.0``).
        b: location/margin; useful values lie below ``sqrt(D - 1)`` (default: ``0.0``).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (default: ``"mean"``).
        eps: lower clamp of the standard deviation (default: ``1e-12``).

    **Invariance**: ``z_loss(alpha * logits + beta, target) == z_loss(logits, target)`` for every
    ``alpha > 0`` and real ``beta`` (per row).
    """
    _check_logits_target(logits, target)
    _check_ab(a, b)
    check_float("eps", eps, 0.0, lo_open=True)
    mu = logits.mean(dim=1, keepdim=True)
    cen = logits - mu
    # clamp the variance before the square root: sqrt'(0) = inf would turn the zero gradient of
    # the clamp into NaN for constant logits (e.g. a zero-initialised head)
    floor = max(eps * eps, torch.finfo(logits.dtype).tiny)
    sigma = cen.square().mean(dim=1).clamp_min(floor).sqrt()
    z = cen.gather(1, target.long().unsqueeze(1)).squeeze(1) / sigma
    return _reduce(F.softplus(a * (b - z)) / a, reduction)


class ZLoss(nn.Module):
    r"""Module form of :func:`z_loss` (the spherical-family Z-loss, not PaLM's z-loss penalty).

    Args:
        a: sharpness > 0 (default: ``1.0``).
        b: location/margin (default: ``0.0``).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (default: ``"mean"``).

    Shapes: ``logits (N, D)``, ``target (N,)`` -> scalar (or ``(N,)`` with ``reduction="none"``).

    **Invariance**: shift and positive scale of the logits (per row).
    """

    def __init__(self, a: float = 1.0, b: float = 0.0, *, reduction: str = "mean") -> None:
        super().__init__()
        _check_ab(a, b)
        _reduce(torch.zeros(1), reduction)
        self.a, self.b, self.reduction = float(a), float(b), reduction

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return z_loss(logits, target, self.a, self.b, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"a={self.a}, b={self.b}, reduction={self.reduction!r}"


# ------------------------------------------------------------------- losses from (q, s, o_c)


def spherical_loss_from_stats(
    name: str,
    q: Tensor,
    s: Tensor,
    oc: Tensor,
    D: int,
    *,
    a: float = 1.0,
    b: float = 0.0,
    eps: float = 1e-12,
) -> Tensor:
    """Per-example spherical loss from ``q = sum o²``, ``s = sum o``, ``o_c`` (all shape ``(m,)``).

    ``name`` is ``"z"`` (Z-loss), ``"mse"`` or ``"taylor"``; ``D`` the number of classes.
    """
    check_choice("name", name, _LOSSES)
    _check_stats(q, s, oc)
    check_int("D", D, 2)
    _check_ab(a, b)
    check_float("eps", eps, 0.0, lo_open=True)
    return _loss_from_stats(name, q, s, oc, D, a=a, b=b, eps=eps)


def _loss_from_stats(
    name: str, q: Tensor, s: Tensor, oc: Tensor, D: int, *, a: float, b: float, eps: float = 1e-12
) -> Tensor:
    """:func:`spherical_loss_from_stats` without the argument checks (the layer's hot path)."""
    if name == "z":
        mu = s / D
        floor = max(eps * eps, torch.finfo(q.dtype).tiny)
        sigma = (q / D - mu.square()).clamp_min(floor).sqrt()
        z = (oc - mu) / sigma
        return F.softplus(a * (b - z)) / a
    if name == "mse":
        return q - 2 * oc + 1
    return (D + s + 0.5 * q).log() - (1 + oc + 0.5 * oc.square()).log()


# ----------------------------------------------------------------------- factored output layer


class FactoredSphericalOutput(nn.Module):
    r"""Exact-gradient output layer for very large output spaces (Vincent et al., 2015).

    Holds the ``D x d`` output weight as :math:`W = VU + \mathbf 1\omega^\top` plus
    :math:`Q = W^\top W`, :math:`\bar w = W^\top \mathbf 1` and :math:`U^{-1}`. ``forward(h,
    target)`` returns a spherical loss (Z-loss by default) in :math:`O(md^2)` and back-propagates
    the exact gradient into ``h``; the following :meth:`step` (or the hook installed by
    :meth:`attach` on a ``torch.optim.SGD``) applies the exact plain-SGD update of :math:`W` in
    :math:`O(md^2 + m^2 d)` time, independent of ``D``.

    Only plain SGD on :math:`W` keeps the factorisation exact (momentum, Adam or weight decay on
    :math:`W` would need the dense :math:`D\times d` gradient); :meth:`attach` raises otherwise.
    The factored state is made of buffers, so ``W`` is invisible to other optimizers.

    Args:
        in_features: ``d`` (default: required).
        num_classes: ``D`` (default: required).
        loss: ``"z"``, ``"mse"`` or ``"taylor"`` (default: ``"z"``).
        a: Z-loss sharpness (default: ``1.0``).
        b: Z-loss location (default: ``0.0``).
        reduction: ``"mean"`` or ``"sum"`` over the batch (default: ``"mean"``).
        refresh_every: recompute :math:`U^{-1}` by inversion every N updates (default: ``100``).
        init_std: std of the initial :math:`W` entries; ``None`` means ``1/sqrt(d)``.
        dtype: dtype of the large factor ``V`` (default: ``torch.float32``).
        state_dtype: dtype of the ``d x d`` state (default: ``torch.float64``).
        generator: RNG for the initial weights (default: ``None``).

    Shapes: ``h (m, d)``, ``target (m,)`` -> scalar loss; :meth:`logits` gives ``(m, D)``.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        loss: str = "z",
        a: float = 1.0,
        b: float = 0.0,
        reduction: str = "mean",
        refresh_every: int = 100,
        init_std: float | None = None,
        dtype: torch.dtype = torch.float32,
        state_dtype: torch.dtype = torch.float64,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        check_int("in_features", in_features, 1)
        check_int("num_classes", num_classes, 2)
        check_choice("loss", loss, _LOSSES)
        check_choice("reduction", reduction, ("mean", "sum"))
        check_int("refresh_every", refresh_every, 1)
        if init_std is not None:
            check_float("init_std", init_std, 0.0, lo_open=True)
        _check_ab(a, b)
        self.in_features, self.num_classes = int(in_features), int(num_classes)
        self.loss_name, self.a, self.b, self.reduction = loss, float(a), float(b), reduction
        self.refresh_every = int(refresh_every)
        self.init_std = init_std
        self._gen = generator
        d, D = self.in_features, self.num_classes
        self.register_buffer("V", torch.empty(D, d, dtype=dtype, device=device))
        for name, shape in (
            ("U", (d, d)),
            ("U_inv", (d, d)),
            ("Q", (d, d)),
            ("omega", (d,)),
            ("w_bar", (d,)),
        ):
            self.register_buffer(name, torch.empty(shape, dtype=state_dtype, device=device))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long, device=device))
        self._pending: dict[str, Any] | None = None
        self.reset_parameters()

    # ----------------------------------------------------------------------------- state
    @torch.no_grad()
    def reset_parameters(self) -> None:
        std = self.init_std if self.init_std is not None else 1.0 / math.sqrt(self.in_features)
        w = torch.randn(self.V.shape, generator=self._gen, dtype=torch.float32)
        self.set_weight(w.to(self.V.device) * std)

    @torch.no_grad()
    def set_weight(self, weight: Tensor) -> None:
        """Reset the factors to ``W = weight`` (shape ``(D, d)``); costs ``O(D d^2)``."""
        check_tensor("weight", weight, ndim=2)
        if weight.shape != self.V.shape:
            raise ValueError(
                f"weight must have shape {tuple(self.V.shape)}, got {tuple(weight.shape)}"
            )
        self.V.copy_(weight)
        eye = torch.eye(self.in_features, dtype=self.U.dtype, device=self.U.device)
        self.U.copy_(eye)
        self.U_inv.copy_(eye)
        self.omega.zero_()
        self._recompute_gram()
        self.num_updates.zero_()
        self._pending = None

    @torch.no_grad()
    def _recompute_gram(self, chunk: int = 65536) -> None:
        """Q and w̄ from the dense factors, in chunks (``O(D d^2)``)."""
        sd = self.U.dtype
        G = torch.zeros_like(self.Q)
        vsum = torch.zeros_like(self.w_bar)
        for i in range(0, self.num_classes, chunk):
            v = self.V[i : i + chunk].to(sd)
            G += v.T @ v
            vsum += v.sum(0)
        # W = V U + 1 ω^T
        Ut = self.U
        self.Q.copy_(
            Ut.T @ G @ Ut
            + torch.outer(Ut.T @ vsum, self.omega)
            + torch.outer(self.omega, Ut.T @ vsum)
            + self.num_classes * torch.outer(self.omega, self.omega)
        )
        self.w_bar.copy_(Ut.T @ vsum + self.num_classes * self.omega)

    @torch.no_grad()
    def dense_weight(self) -> Tensor:
        """Materialise ``W = V U + 1 ω^T`` (shape ``(D, d)``, ``state_dtype``; ``O(D d^2)``)."""
        return self.V.to(self.U.dtype) @ self.U + self.omega

    def logits(self, h: Tensor) -> Tensor:
        """Full outputs ``h W^T`` (shape ``(m, D)``, ``O(m D d)``; for evaluation)."""
        self._check_h(h)
        hs = h.to(self.U.dtype)
        return ((hs @ self.U.T).to(self.V.dtype) @ self.V.T) + (hs @ self.omega).to(
            self.V.dtype
        ).unsqueeze(1)

    def _check_h(self, h: Tensor) -> None:
        check_tensor("h", h, ndim=2)
        if h.shape[1] != self.in_features:
            shape = tuple(h.shape) if isinstance(h, Tensor) else type(h).__name__
            raise ValueError(f"h must have shape (m, {self.in_features}), got {shape}")

    # ---------------------------------------------------------------------------- forward
    def stats(self, h: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(q, s, o_c)`` of ``o = W h`` per row of ``h``, each shape ``(m,)``, ``O(m d^2)``."""
        self._check_h(h)
        self._check_target(target, h.shape[0])
        return self._stats(h, target)

    def _stats(self, h: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        hs = h.to(self.U.dtype)
        q = ((hs @ self.Q) * hs).sum(-1)
        s = hs @ self.w_bar
        Wc = self.V.index_select(0, target).to(self.U.dtype) @ self.U + self.omega
        oc = (hs * Wc).sum(-1)
        return q, s, oc

    def _check_target(self, target: Tensor, m: int) -> None:
        if not isinstance(target, Tensor) or target.shape != (m,) or target.is_floating_point():
            raise ValueError(
                f"target must be an integer tensor of shape ({m},), got "
                f"{tuple(target.shape) if isinstance(target, Tensor) else type(target).__name__}"
            )
        if target.numel() and (int(target.min()) < 0 or int(target.max()) >= self.num_classes):
            raise ValueError(f"target values must lie in [0, {self.num_classes})")

    def forward(self, h: Tensor, target: Tensor) -> Tensor:
        self._check_h(h)
        self._check_target(target, h.shape[0])
        record = self.training and torch.is_grad_enabled()
        if record and self._pending is not None and self._pending.get("ready"):
            raise RuntimeError(
                "FactoredSphericalOutput: the previous backward's update was never applied; call "
                "layer.step(lr) after backward, or layer.attach(sgd_optimizer) once"
            )
        hs = h.to(self.U.dtype)
        if record and not hs.requires_grad:
            hs = hs.detach().requires_grad_(True)
        q, s, oc = self._stats(hs, target)
        per = _loss_from_stats(self.loss_name, q, s, oc, self.num_classes, a=self.a, b=self.b)
        loss = per.mean() if self.reduction == "mean" else per.sum()
        if record:
            m = h.shape[0]
            zeros = torch.zeros(m, dtype=hs.dtype, device=hs.device)
            pend: dict[str, Any] = {
                "h": hs.detach(),
                "target": target.detach(),
                "gq": zeros,
                "gs": zeros,
                "gc": zeros,
                "ready": False,
            }

            def hook(key: str) -> Callable[[Tensor], None]:
                def fn(g: Tensor) -> None:
                    pend[key] = g.detach()
                    pend["ready"] = True

                return fn

            for key, t in (("gq", q), ("gs", s), ("gc", oc)):
                if t.requires_grad:
                    t.register_hook(hook(key))
            self._pending = pend
        return loss.to(h.dtype) if h.is_floating_point() else loss

    # ------------------------------------------------------------------------------ update
    @torch.no_grad()
    def step(self, lr: float) -> None:
        """Apply the exact SGD update ``W <- W - lr * dL/dW`` of the last backward."""
        lr = check_float("lr", lr.item() if isinstance(lr, Tensor) and lr.numel() == 1 else lr, 0.0)
        p = self._pending
        if p is None or not p.get("ready"):
            return
        self._pending = None
        H, tgt = p["h"], p["target"]
        gq, gs, gc = p["gq"], p["gs"], p["gc"]
        D = self.num_classes
        U, Ui, Q, om, wb = self.U, self.U_inv, self.Q, self.omega, self.w_bar
        C = 2.0 * lr * gq  # M = I - H^T diag(C) H
        CH = C.unsqueeze(1) * H  # (m, d)
        a_vec = H.T @ gs  # all-ones part of the gradient
        uniq, inv = torch.unique(tgt, return_inverse=True)
        Yr = torch.zeros(uniq.shape[0], H.shape[1], dtype=H.dtype, device=H.device)
        Yr.index_add_(0, inv, gc.unsqueeze(1) * H)  # target rows of the gradient
        ys = Yr.sum(0)
        # rows of W M for the targeted classes (old factors)
        Wc = self.V.index_select(0, uniq).to(U.dtype) @ U + om
        Wc_M = Wc - (Wc @ H.T) @ CH
        # U <- U M ; U^-1 <- M^-1 U^-1 (Woodbury) ; Q <- M Q M ; w̄ <- M w̄ ; ω <- M ω - lr a
        U_new = U - (U @ H.T) @ CH
        m_rows, d = H.shape
        if m_rows >= d:  # invert the d x d factor M directly: O(d^3) < O(m^3)
            M = torch.eye(d, dtype=H.dtype, device=H.device) - H.T @ CH
            Ui_new = torch.linalg.solve(M, Ui)
        else:  # Woodbury through the m x m capacitance matrix
            K = torch.eye(m_rows, dtype=H.dtype, device=H.device) - CH @ H.T
            Ui_new = Ui + H.T @ torch.linalg.solve(K, CH @ Ui)
        QM = Q - (Q @ H.T) @ CH
        Q_M = QM - CH.T @ (H @ QM)
        wb_M = wb - CH.T @ (H @ wb)
        om_new = om - CH.T @ (H @ om) - lr * a_vec
        # add E = -lr (1 a^T + Y)
        Q_new = (
            Q_M
            - lr * (torch.outer(wb_M, a_vec) + torch.outer(a_vec, wb_M))
            - lr * (Wc_M.T @ Yr + Yr.T @ Wc_M)
            + lr
            * lr
            * (
                D * torch.outer(a_vec, a_vec)
                + torch.outer(a_vec, ys)
                + torch.outer(ys, a_vec)
                + Yr.T @ Yr
            )
        )
        wb_new = wb_M - lr * (D * a_vec + ys)
        U.copy_(U_new)
        Ui.copy_(Ui_new)
        n = int(self.num_updates) + 1
        if n % self.refresh_every == 0:
            Ui.copy_(torch.linalg.inv(U))
        # V_c <- V_c - lr * Y_c U_new^-1 (the multiplicative part is already in U)
        dV = -lr * (Yr @ Ui)
        self.V.index_add_(0, uniq, dV.to(self.V.dtype))
        Q.copy_(0.5 * (Q_new + Q_new.T))
        wb.copy_(wb_new)
        om.copy_(om_new)
        self.num_updates.fill_(n)

    def attach(self, optimizer: torch.optim.Optimizer, *, group: int = 0) -> Any:
        """Apply :meth:`step` after every ``optimizer.step()`` with that group's current lr.

        Raises:
            TypeError: ``optimizer`` is not ``torch.optim.SGD``.
            ValueError: the SGD group uses momentum, dampening, Nesterov or weight decay.
        """
        if type(optimizer) is not torch.optim.SGD:
            raise TypeError(
                f"FactoredSphericalOutput's update is exact only for plain SGD on W; got "
                f"{type(optimizer).__name__}. Momentum/Adam-type optimizers need the dense D x d "
                f"gradient and break the factorisation."
            )
        check_int("group", group, 0)
        if group >= len(optimizer.param_groups):
            raise ValueError(f"group {group} out of range ({len(optimizer.param_groups)} groups)")
        for g in optimizer.param_groups:
            for key in ("momentum", "dampening", "weight_decay"):
                if g.get(key, 0) not in (0, 0.0):
                    raise ValueError(
                        f"FactoredSphericalOutput needs plain SGD: {key}={g[key]} is not supported"
                    )
            if g.get("nesterov"):
                raise ValueError("FactoredSphericalOutput needs plain SGD: nesterov=True")

        def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            self.step(opt.param_groups[group]["lr"])

        return optimizer.register_step_post_hook(hook)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, num_classes={self.num_classes}, "
            f"loss={self.loss_name!r}, a={self.a}, b={self.b}, refresh_every={self.refresh_every}"
        )
