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
- The official example adds 1e-12 to :math:`\sigma`; we clamp :math:`\sigma \ge` ``eps`` instead, so
  the loss is exactly shift/scale invariant whenever :math:`\sigma >` ``eps``.
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

__all__ = [
    "z_loss",
    "ZLoss",
    "spherical_mse_loss",
    "taylor_softmax_loss",
    "spherical_loss_from_stats",
    "FactoredSphericalOutput",
]


# --------------------------------------------------------------------------------- validation


def _check_logits_target(logits: Tensor, target: Tensor) -> None:
    if not isinstance(logits, Tensor) or not isinstance(target, Tensor):
        raise TypeError("logits and target must be tensors")
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (N, D), got {tuple(logits.shape)}")
    if logits.shape[1] < 2:
        raise ValueError(f"need D >= 2 classes, got logits of shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be floating point, got {logits.dtype}")
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


def _check_ab(a: float, b: float) -> None:
    if not (isinstance(a, (int, float)) and math.isfinite(a) and a > 0):
        raise ValueError(f"a must be a finite value > 0, got {a}")
    if not (isinstance(b, (int, float)) and math.isfinite(b)):
        raise ValueError(f"b must be finite, got {b}")


def _reduce(x: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return x.mean()
    if reduction == "sum":
        return x.sum()
    if reduction == "none":
        return x
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


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
    mu = logits.mean(dim=1, keepdim=True)
    cen = logits - mu
    sigma = cen.square().mean(dim=1).sqrt().clamp_min(eps)
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


def spherical_mse_loss(logits: Tensor, target: Tensor, *, reduction: str = "mean") -> Tensor:
    """Squared error to the one-hot target, ``||o - e_c||^2`` (a spherical loss)."""
    _check_logits_target(logits, target)
    oc = logits.gather(1, target.long().unsqueeze(1)).squeeze(1)
    return _reduce(logits.square().sum(1) - 2 * oc + 1, reduction)


def taylor_softmax_loss(logits: Tensor, target: Tensor, *, reduction: str = "mean") -> Tensor:
    """Negative log of the 2nd-order Taylor softmax ``t(o_c) / sum_k t(o_k)``, ``t = 1+o+o²/2``."""
    _check_logits_target(logits, target)
    t = 1 + logits + 0.5 * logits.square()
    tc = t.gather(1, target.long().unsqueeze(1)).squeeze(1)
    return _reduce(t.sum(1).log() - tc.log(), reduction)


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

    ``name`` is ``"z"`` (Z-loss), ``"mse"`` or ``"taylor"``.
    """
    if name == "z":
        mu = s / D
        sigma = (q / D - mu.square()).clamp_min(0).sqrt().clamp_min(eps)
        z = (oc - mu) / sigma
        return F.softplus(a * (b - z)) / a
    if name == "mse":
        return q - 2 * oc + 1
    if name == "taylor":
        return (D + s + 0.5 * q).log() - (1 + oc + 0.5 * oc.square()).log()
    raise ValueError(f"unknown spherical loss {name!r}; choose 'z', 'mse' or 'taylor'")


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
        if int(in_features) < 1 or int(num_classes) < 2:
            raise ValueError(
                f"need in_features >= 1 and num_classes >= 2, got {in_features}, {num_classes}"
            )
        if loss not in ("z", "mse", "taylor"):
            raise ValueError(f"loss must be 'z', 'mse' or 'taylor', got {loss!r}")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        if int(refresh_every) < 1:
            raise ValueError(f"refresh_every must be >= 1, got {refresh_every}")
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
        if not isinstance(h, Tensor) or h.ndim != 2 or h.shape[1] != self.in_features:
            shape = tuple(h.shape) if isinstance(h, Tensor) else type(h).__name__
            raise ValueError(f"h must have shape (m, {self.in_features}), got {shape}")

    # ---------------------------------------------------------------------------- forward
    def stats(self, h: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(q, s, o_c)`` of ``o = W h`` per row of ``h``, each shape ``(m,)``, ``O(m d^2)``."""
        hs = h.to(self.U.dtype)
        q = ((hs @ self.Q) * hs).sum(-1)
        s = hs @ self.w_bar
        Wc = self.V.index_select(0, target).to(self.U.dtype) @ self.U + self.omega
        oc = (hs * Wc).sum(-1)
        return q, s, oc

    def forward(self, h: Tensor, target: Tensor) -> Tensor:
        self._check_h(h)
        if (
            not isinstance(target, Tensor)
            or target.shape != (h.shape[0],)
            or target.is_floating_point()
        ):
            raise ValueError(
                f"target must be an integer tensor of shape ({h.shape[0]},), got "
                f"{tuple(target.shape) if isinstance(target, Tensor) else type(target).__name__}"
            )
        if target.numel() and (int(target.min()) < 0 or int(target.max()) >= self.num_classes):
            raise ValueError(f"target values must lie in [0, {self.num_classes})")
        record = self.training and torch.is_grad_enabled()
        if record and self._pending is not None and self._pending.get("ready"):
            raise RuntimeError(
                "FactoredSphericalOutput: the previous backward's update was never applied; call "
                "layer.step(lr) after backward, or layer.attach(sgd_optimizer) once"
            )
        hs = h.to(self.U.dtype)
        if record and not hs.requires_grad:
            hs = hs.detach().requires_grad_(True)
        q, s, oc = self.stats(hs, target)
        per = spherical_loss_from_stats(
            self.loss_name, q, s, oc, self.num_classes, a=self.a, b=self.b
        )
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
        p = self._pending
        if p is None or not p.get("ready"):
            return
        self._pending = None
        lr = float(lr)
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
        if not 0 <= group < len(optimizer.param_groups):
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


# ------------------------------------------------------------------------------------ recipe

from dataclasses import dataclass  # noqa: E402

from invariance.core.recipe import CheckResult, Recipe, ReproduceResult, TrainConfig  # noqa: E402
from invariance.core.registry import register  # noqa: E402


@dataclass
class ZLossConfig(TrainConfig):
    """Procedural extreme classification (defaults: the tiny preset).

    Args:
        num_classes: ``D`` (default: ``200``).
        dim: input dimension (default: ``32``).
        hidden: hidden width of the MLP (default: ``64``).
        n_train: training samples (default: ``2000``).
        a: Z-loss sharpness (default: ``1.0``).
        b: Z-loss location (default: ``3.0``).
        topk: k of the top-k metric (default: ``5``).
    """

    steps: int = 30
    batch_size: int = 128
    lr: float = 3e-3
    num_classes: int = 200
    dim: int = 32
    hidden: int = 64
    n_train: int = 2000
    a: float = 1.0
    b: float = 3.0
    topk: int = 5


class _MLP(nn.Module):
    def __init__(
        self, dim: int, hidden: int, num_classes: int, a: float = 1.0, b: float = 0.0
    ) -> None:
        super().__init__()
        self.a, self.b = a, b
        self.body = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


def _loss_by_name(name: str, logits: Tensor, y: Tensor, cfg: ZLossConfig) -> Tensor:
    if name == "zloss":
        return z_loss(logits, y, cfg.a, cfg.b)
    if name == "softmax_ce":
        return F.cross_entropy(logits, y)
    if name == "mse":
        return spherical_mse_loss(logits, y)
    if name == "taylor":
        return taylor_softmax_loss(logits, y)
    raise ValueError(f"unknown loss {name!r}")


def _xc_data(cfg: ZLossConfig, split: str) -> torch.utils.data.TensorDataset:
    from invariance.optim.data import make_extreme_classification

    n = cfg.n_train if split == "train" else max(cfg.n_train // 4, 256)
    off = {"train": 0, "val": 1, "test": 2}[split]
    d = make_extreme_classification(
        n, num_classes=cfg.num_classes, dim=cfg.dim, seed=cfg.seed * 10 + off, teacher_seed=cfg.seed
    )
    return torch.utils.data.TensorDataset(d["x"], d["y"], d["bayes"])


def _topk(logits: Tensor, y: Tensor, k: int) -> tuple[float, float]:
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return float((top[:, 0] == y).float().mean()), float((top == y[:, None]).any(1).float().mean())


class _BigramLM(nn.Module):
    """Previous token -> embedding -> hidden ReLU layer -> ``vocab`` output scores."""

    def __init__(self, vocab: int, emb: int = 32, hidden: int = 64) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, emb)
        self.body = nn.Sequential(nn.Linear(emb, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, vocab)

    def forward(self, context: Tensor) -> Tensor:
        return self.head(self.body(self.emb(context)))


_LM_KS = (1, 5, 10, 20)
# (a, b) grids searched on the validation split (b is in units of the logits' std)
_LM_GRID = [(1.0, 0.0), (1.0, 3.0), (1.0, 6.0), (0.3, 6.0), (3.0, 6.0), (1.0, 10.0)]
_LM_GRID_QUICK = [(1.0, 0.0), (1.0, 6.0), (1.0, 10.0)]


def _train_bigram_lm(
    loss: str,
    data: tuple[Tensor, Tensor],
    evals: dict[str, tuple[Tensor, Tensor]],
    *,
    vocab: int,
    steps: int,
    lr: float,
    seed: int,
    a: float = 1.0,
    b: float = 0.0,
    hidden: int = 64,
    batch_size: int = 256,
) -> dict[str, dict[str, float]]:
    """Train :class:`_BigramLM` with ``loss`` (``"zloss"`` or ``"softmax_ce"``) by Adam; top-k
    accuracy (k in 1, 5, 10, 20) on each split of ``evals``."""
    ctx, y = data
    torch.manual_seed(seed)
    model = _BigramLM(vocab, hidden=hidden)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(y), (batch_size,), generator=g)
        out = model(ctx[idx])
        if loss == "zloss":
            value = z_loss(out, y[idx], a, b)
        elif loss == "softmax_ce":
            value = F.cross_entropy(out, y[idx])
        else:
            raise ValueError(f"unknown loss {loss!r}")
        opt.zero_grad()
        value.backward()
        opt.step()
    res = {}
    with torch.no_grad():
        for split, (c, t) in evals.items():
            o = model(c)
            rank = (o > o.gather(1, t[:, None])).sum(1)
            res[split] = {f"top{k}": float((rank < k).float().mean()) for k in _LM_KS}
    return res


def _zipf_lm_experiment(
    *,
    vocab: int,
    n_train: int,
    steps: int,
    lr: float,
    seeds: list[int],
    grid: list[tuple[float, float]],
    hidden: int = 64,
    temp: float = 3.0,
) -> dict[str, Any]:
    """Z-loss vs softmax-CE on the Zipf bigram language: (a, b) picked on a validation split by
    mean top-k (k = 1, 5, 10, 20), then both losses scored on a test split over ``seeds``."""
    from invariance.optim.data import make_zipf_language

    def split(n: int, s: int) -> tuple[Tensor, Tensor, Tensor]:
        d = make_zipf_language(n, vocab=vocab, temp=temp, seed=s, lang_seed=0)
        return d["context"], d["y"], d["bayes_rank"]

    ctr, ytr, _ = split(n_train, 0)
    cva, yva, _ = split(max(n_train // 4, 2000), 1)
    cte, yte, rte = split(max(n_train // 4, 2000), 2)
    kw = dict(vocab=vocab, steps=steps, lr=lr, hidden=hidden)
    # tune (a, b) on validation with the first seed, as the paper tunes them per task
    tuning = {}
    for a, b in grid:
        r = _train_bigram_lm(
            "zloss", (ctr, ytr), {"val": (cva, yva)}, seed=seeds[0], a=a, b=b, **kw
        )
        tuning[f"a={a:g},b={b:g}"] = r["val"]
    best = max(grid, key=lambda ab: sum(tuning[f"a={ab[0]:g},b={ab[1]:g}"].values()))
    test: dict[str, list[dict[str, float]]] = {"zloss": [], "softmax_ce": []}
    for s in seeds:
        ev = {"test": (cte, yte)}
        test["zloss"].append(
            _train_bigram_lm("zloss", (ctr, ytr), ev, seed=s, a=best[0], b=best[1], **kw)["test"]
        )
        test["softmax_ce"].append(
            _train_bigram_lm("softmax_ce", (ctr, ytr), ev, seed=s, **kw)["test"]
        )
    mean = {
        n: {f"top{k}": sum(r[f"top{k}"] for r in rs) / len(rs) for k in _LM_KS}
        for n, rs in test.items()
    }
    return {
        "vocab": vocab,
        "n_train": n_train,
        "steps": steps,
        "lr": lr,
        "hidden": hidden,
        "seeds": len(seeds),
        "bayes": {f"top{k}": float((rte < k).float().mean()) for k in _LM_KS},
        "tuning_val": tuning,
        "best_ab": list(best),
        "test_mean": mean,
        "test_per_seed": test,
    }


@register(
    "zloss",
    domain="optim",
    paper="The Z-loss: a shift and scale invariant classification loss belonging to the "
    "Spherical Family",
    authors="de Brébisson, Vincent",
    year=2016,
    arxiv="1604.08859",
    code_url="https://github.com/pascal20100/factored_output_layer",
    baseline="softmax_ce",
    symmetry="loss invariant to shift and positive scale of the logits",
    tags=("loss", "spherical"),
)
class ZLossRecipe(Recipe):
    """Z-loss MLP on procedural Zipf extreme classification.

    ``reproduce``: Z-loss vs softmax-CE vs the other spherical losses (MSE, Taylor softmax) on that
    task, then Z-loss (a, b tuned on a validation split) vs softmax-CE top-k (k = 1, 5, 10, 20) on
    a Zipf bigram language model with a hidden layer
    (:func:`~invariance.optim.data.make_zipf_language`).
    """

    Config = ZLossConfig
    presets = {
        "tiny": {},
        "full": {"num_classes": 2000, "n_train": 40000, "steps": 1000, "hidden": 128},
    }

    def make_data(self, cfg: ZLossConfig, split: str) -> torch.utils.data.Dataset:
        return _xc_data(cfg, split)

    def build(self, cfg: ZLossConfig) -> nn.Module:
        return _MLP(cfg.dim, cfg.hidden, cfg.num_classes, cfg.a, cfg.b)

    def step(self, model: nn.Module, batch: Any) -> dict[str, Tensor]:
        x, y, _ = batch
        logits = model(x)
        top1 = (logits.argmax(1) == y).float().mean()
        return {"loss": z_loss(logits, y, model.a, model.b), "top1": top1}

    def optimizer(self, cfg: ZLossConfig, model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adam(model.parameters(), lr=cfg.lr)

    def check(self, model: nn.Module, cfg: ZLossConfig) -> list[CheckResult]:
        from invariance.core.groups import PositiveAffine, Scaling
        from invariance.core.testing import check_invariant, check_not_invariant

        x, y, _ = self.make_data(cfg, "train")[:16]
        with torch.no_grad():
            logits = model(x).double()
        zl = lambda o: z_loss(o, y, cfg.a, cfg.b, reduction="none")
        ce = lambda o: F.cross_entropy(o, y, reduction="none")
        return [
            check_invariant(
                "z-loss invariant to logit shift+scale",
                zl,
                (logits,),
                PositiveAffine(0.1, 10.0, 3.0),
                ("affine",),
                tol=1e-10,
            ),
            check_not_invariant(
                "negative control: softmax-CE under logit scaling",
                ce,
                (logits,),
                Scaling(0.1, 10.0),
                ("scale",),
            ),
        ]

    def reproduce(self, cfg: Any, run: Any, *, quick: bool) -> ReproduceResult:
        """The paper-analog experiment (single-threaded: the models are tiny)."""
        from invariance.optim._utils import threads

        with threads(1):
            return self._reproduce(cfg, run, quick=quick)

    def _reproduce(self, cfg: ZLossConfig, run: Any, *, quick: bool) -> ReproduceResult:
        import time

        t0 = time.time()
        if quick:
            xc = {"num_classes": 1000, "n_train": 20000, "steps": 400, "hidden": 128}
            lm = dict(vocab=500, n_train=20000, steps=400, seeds=[0], grid=_LM_GRID_QUICK)
        else:
            xc = dict(self.presets["full"])
            lm = dict(vocab=1000, n_train=60000, steps=1200, seeds=[0, 1, 2], grid=_LM_GRID)
        cfg = type(cfg)(**{**cfg.__dict__, **xc})
        seeds = [0] if quick else [0, 1, 2]
        train, test = _xc_data(cfg, "train"), _xc_data(cfg, "test")
        xt, yt, bt = test.tensors
        names = ("zloss", "softmax_ce", "mse", "taylor")
        per_seed: dict[str, list[dict[str, float]]] = {n: [] for n in names}
        for seed in seeds:
            for name in names:
                torch.manual_seed(seed)
                model = self.build(cfg)
                opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
                g = torch.Generator().manual_seed(seed)
                X, Y, _ = train.tensors
                for _ in range(cfg.steps):
                    idx = torch.randint(0, len(Y), (cfg.batch_size,), generator=g)
                    loss = _loss_by_name(name, model(X[idx]), Y[idx], cfg)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                with torch.no_grad():
                    t1, tk = _topk(model(xt), yt, cfg.topk)
                per_seed[name].append({"top1": t1, f"top{cfg.topk}": tk})
        res = {n: {k: sum(r[k] for r in rs) / len(rs) for k in rs[0]} for n, rs in per_seed.items()}
        bayes_top1 = float((bt == yt).float().mean())
        lm_res = _zipf_lm_experiment(lr=cfg.lr, **lm)
        other = max(("mse", "taylor"), key=lambda n: res[n]["top1"])
        plots = []
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(5.5, 3.6))
            ks = list(_LM_KS)
            rows = (
                ("Bayes", lm_res["bayes"], ":"),
                ("softmax-CE", lm_res["test_mean"]["softmax_ce"], "--s"),
                (
                    "Z-loss a={:g} b={:g}".format(*lm_res["best_ab"]),
                    lm_res["test_mean"]["zloss"],
                    "-o",
                ),
            )
            for label, vals, st in rows:
                ax.plot(ks, [vals[f"top{k}"] for k in ks], st, label=label)
            ax.set(
                xscale="log",
                xlabel="k",
                ylabel="test top-k accuracy",
                title=f"Zipf bigram LM, V={lm['vocab']}, {len(lm['seeds'])} seed(s)",
            )
            ax.set_xticks(ks, [str(k) for k in ks])
            ax.legend()
            plots.append(run.savefig(fig, "zloss_lm_topk"))
        except ImportError:
            pass
        return ReproduceResult(
            task=(
                f"Zipf extreme classification D={cfg.num_classes}, {cfg.steps} Adam steps, "
                f"{len(seeds)} seed(s); plus a Zipf bigram LM, V={lm['vocab']}"
            ),
            metric="test top-1 (extreme classification)",
            method="zloss",
            baseline=f"best other spherical ({other})",
            method_value=res["zloss"]["top1"],
            baseline_value=res[other]["top1"],
            seconds=time.time() - t0,
            details={
                "losses": res,
                "per_seed": per_seed,
                "bayes_top1": bayes_top1,
                "a": cfg.a,
                "b": cfg.b,
                "zipf_lm": lm_res,
            },
            plots=plots,
        )
