"""Discrete-time categorical diffusion with a marginal (or uniform) prior, as PARD uses it
(taken by the PARD authors from USD3, ``LingxiaoShawn/USD3``; official ``pard/diffusion.py``).

Forward kernel ``q(x_t | x_0) = abar_t * onehot(x_0) + (1 - abar_t) * m`` with the cosine schedule
``abar(t) = cos((t/T + a)/(1 + a) * pi/2) / cos(a/(1 + a) * pi/2)``, ``a = 0.008``, clipped to
``[1e-10, 1 - 1e-10]``. The reverse step ``p(x_s | x_t)`` plugs the network's ``x_0`` distribution
into USD3's closed form (coefficients ``mu``, ``mu * abar``, ``gamma``). Loss per element: the KL of
the true posterior to the model posterior for ``t >= 2``, the CE of ``x_0`` at ``t = 1``, plus the
prior term ``KL(q(x_T | x_0) || m) / T``; ``loss = sum vlb + ce_coeff * sum ce``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from invariance.graph._checks import check_int, check_real

EPS = 1e-30


def cosine_alphabar(
    t: Tensor, num_steps: int, a: float = 0.008, min_alphabar: float = 1e-10
) -> Tensor:
    """``abar(t)`` of the cosine schedule for integer steps ``t`` in ``[0, num_steps]``."""
    num_steps = check_int("num_steps", num_steps, lo=1)
    if not isinstance(t, Tensor):
        raise TypeError(f"t must be a tensor, got {type(t).__name__}")
    if t.numel() == 0:
        raise ValueError("t must not be empty")
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise ValueError("t contains NaN or inf")
    if float(t.min()) < 0 or float(t.max()) > num_steps:
        raise ValueError(f"t must lie in [0, num_steps={num_steps}]")
    dtype = t.dtype if t.is_floating_point() else torch.float32
    tt = t.to(dtype) / num_steps
    h = torch.cos((tt + a) / (1 + a) * math.pi * 0.5)
    h0 = torch.cos(torch.tensor(a / (1 + a) * math.pi * 0.5, dtype=dtype))
    return torch.clip(h / h0, min=min_alphabar, max=1 - min_alphabar)


class CategoricalDiffusion:
    """USD3 discrete-time diffusion over ``num_classes`` classes with prior ``m`` (1-D pmf)."""

    def __init__(self, num_steps: int, m: Tensor) -> None:
        self.num_steps = check_int("num_steps", num_steps, lo=1)
        if not isinstance(m, Tensor):
            raise TypeError(f"m must be a tensor, got {type(m).__name__}")
        if not m.is_floating_point():
            raise TypeError(f"m must be a floating tensor (a pmf), got {m.dtype}")
        if m.dim() != 1 or m.numel() < 2:
            raise ValueError("m must be a 1-D probability vector over >= 2 classes")
        if (
            not bool(torch.isfinite(m).all())
            or float(m.min()) < 0
            or abs(float(m.sum()) - 1) > 1e-5
        ):
            raise ValueError("m must be a probability vector (non-negative, sums to 1)")
        self.m = m
        self.num_classes = m.numel()

    # ------------------------------------------------------------------ coefficients
    def alphabar(self, t: Tensor, dtype=torch.float32) -> Tensor:
        return cosine_alphabar(t.to(dtype), self.num_steps)

    def _view(self, v: Tensor, x: Tensor) -> Tensor:
        return v.view([-1] + [1] * (x.dim() - 1))

    def _m(self, like: Tensor) -> Tensor:
        return self.m.to(like.device, like.dtype)

    def q_t0_prob(self, x0: Tensor, t: Tensor, dtype=torch.float32) -> Tensor:
        """``q(x_t | x_0)`` (shape ``x0.shape + (C,)``)."""
        ab = self.alphabar(t, dtype).view([-1] + [1] * x0.dim())
        m = self.m.to(x0.device, dtype)
        prob = (1 - ab) * m.expand(*x0.shape, -1)
        return prob + ab * F.one_hot(x0, self.num_classes).to(dtype)

    def q_t0_sample(
        self, x0: Tensor, t: Tensor, keep: Tensor | None = None, generator=None
    ) -> Tensor:
        """Sample ``x_t ~ q(x_t | x_0)``; entries where ``keep`` stay ``x_0``."""
        ab = self._view(self.alphabar(t), x0)
        m0 = torch.multinomial(self.m.float(), x0.numel(), replacement=True, generator=generator)
        u = torch.rand(x0.shape, generator=generator, device=x0.device)
        xt = torch.where(u.clamp(min=1e-30) < ab, x0, m0.view(x0.shape).to(x0.device))
        if keep is not None:
            xt = torch.where(keep, x0, xt)
        return xt

    def _coefs(self, t: Tensor, s: Tensor, x: Tensor, dtype):
        at, as_ = self._view(self.alphabar(t, dtype), x), self._view(self.alphabar(s, dtype), x)
        mul = as_ * at
        mu_ab = (at - mul) / (as_ - mul)
        mu = (1 - as_) / (1 - at)
        return at, as_, mu_ab, mu

    def q_s_t0_prob(
        self, xt: Tensor, x0: Tensor, t: Tensor, s: Tensor, dtype=torch.float32
    ) -> Tensor:
        """True posterior ``q(x_s | x_t, x_0)``."""
        at, as_, mu_ab, mu = self._coefs(t, s, xt, dtype)
        m = self.m.to(xt.device, dtype)
        mxt = m[xt]
        lam = (1 - as_) * (1 - at / as_) * mxt / (at + (1 - at) * mxt)
        oh_t = F.one_hot(xt, self.num_classes).to(dtype)
        oh_0 = F.one_hot(x0, self.num_classes).to(dtype)
        eq = lam[..., None] * m + (1 - lam)[..., None] * oh_t
        neq = (mu - mu_ab)[..., None] * m + mu_ab[..., None] * oh_t + (1 - mu)[..., None] * oh_0
        return torch.where((xt == x0).unsqueeze(-1), eq, neq.expand_as(eq))

    def _gamma(self, at, as_, mu_ab, xt, dtype):
        mxt = self.m.to(xt.device, dtype)[xt]
        return mu_ab * (as_ - at) / (at + (1 - at) * mxt)

    def p_s_t_prob(self, p0: Tensor, xt: Tensor, t: Tensor, s: Tensor) -> Tensor:
        """Model reverse step ``p(x_s | x_t)`` from the predicted ``x_0`` pmf ``p0``."""
        dtype = p0.dtype
        at, as_, mu_ab, mu = self._coefs(t, s, xt, dtype)
        m = self.m.to(xt.device, dtype)
        g = self._gamma(at, as_, mu_ab, xt, dtype) * p0.gather(-1, xt.unsqueeze(-1)).squeeze(-1)
        oh_t = F.one_hot(xt, self.num_classes).to(dtype)
        prob = (mu - mu_ab - g)[..., None] * m + (1 - mu)[..., None] * p0
        prob = prob + (g + mu_ab)[..., None] * oh_t
        return prob.clip(min=0)

    def p_s_t_logprob(self, logp0: Tensor, xt: Tensor, t: Tensor, s: Tensor) -> Tensor:
        """``log p(x_s | x_t)`` computed in log space (as the official ``ps_t_logprob``)."""
        dtype = logp0.dtype
        at, as_, mu_ab, mu = self._coefs(t, s, xt, dtype)
        m = self.m.to(xt.device, dtype)
        term1 = logp0 + (1 - mu).clip(min=EPS).log()[..., None]
        g = (
            self._gamma(at, as_, mu_ab, xt, dtype)
            * logp0.gather(-1, xt.unsqueeze(-1)).squeeze(-1).exp()
        )
        oh_t = F.one_hot(xt, self.num_classes).to(dtype)
        term2 = (mu - mu_ab - g)[..., None] * m + (g + mu_ab)[..., None] * oh_t
        return torch.logaddexp(term1, term2.clip(min=EPS).log())

    def prior_kl(self, x0: Tensor, dtype=torch.float32) -> Tensor:
        """``KL(q(x_T | x_0) || m)`` per element."""
        T = torch.full((x0.size(0),), self.num_steps, device=x0.device)
        q = self.q_t0_prob(x0, T, dtype)
        logm = self.m.to(x0.device, dtype).clip(min=EPS).log().expand_as(q)
        return F.kl_div(logm, q, reduction="none").sum(-1)

    def loss_terms(
        self, logits: Tensor, xt: Tensor, x0: Tensor, t: Tensor, keep: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Per-graph ``(vlb, ce)`` summed over the elements (``keep``: ignored entries).

        ``logits`` (B, M, C), ``xt``/``x0`` (B, M), ``t`` (B,) integer steps in ``[1, T]``."""
        if t.numel() and int(t.min()) < 1:
            raise ValueError("t must be >= 1")
        logp0 = F.log_softmax(logits, -1)
        ce = -logp0.gather(-1, x0.unsqueeze(-1)).squeeze(-1)
        logp = self.p_s_t_logprob(logp0, xt, t, t - 1)
        q = self.q_s_t0_prob(xt, x0, t, t - 1, logits.dtype)
        vlb = F.kl_div(logp, q, reduction="none").sum(-1)
        first = self._view((t == 1).to(logits.dtype), x0)
        vlb = first * ce + (1 - first) * vlb
        vlb = vlb + self.prior_kl(x0, logits.dtype) / self.num_steps
        if keep is not None:
            vlb, ce = vlb * ~keep, ce * ~keep
        B = x0.size(0)
        return vlb.reshape(B, -1).sum(-1), ce.reshape(B, -1).sum(-1)

    def sample_step(self, p0: Tensor, xt: Tensor, t: Tensor, s: Tensor, generator=None) -> Tensor:
        """One reverse step ``x_t -> x_s`` (at ``s = 0`` sample from ``p0`` directly)."""
        prob = self.p_s_t_prob(p0, xt, t, s)
        last = self._view(s == 0, xt).unsqueeze(-1)
        prob = torch.where(last, p0, prob)
        flat = prob.reshape(-1, self.num_classes).float()
        out = torch.multinomial(flat, 1, generator=generator).view(xt.shape)
        return out


def uniform_prior(num_classes: int) -> Tensor:
    """Uniform pmf over all classes (PARD's ``uniform_noise``, virtual class included)."""
    num_classes = check_int("num_classes", num_classes, lo=2)
    return torch.full((num_classes,), 1.0 / num_classes)


def check_ce_coeff(v) -> float:
    return check_real("ce_coeff", v, lo=0.0)
