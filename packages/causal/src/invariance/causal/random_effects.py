r"""The random-effects block of MEDL (:mod:`invariance.causal.medl`): cluster (batch) scale and
bias after batch norm with mean-field Gaussian posteriors, as the official ARMED/scMEDAL
``RandomEffects`` layers compute it (re-implemented in torch; nothing copied). Re-exported by
:mod:`invariance.causal.medl`."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invariance.causal._checks import check_int, check_number

__all__ = ["RandomEffectBlock"]


class RandomEffectBlock(nn.Module):
    r"""Cluster (batch) scale-and-bias random effects after batch norm.

    .. math:: \mathrm{RE}(h, Z) = \mathrm{BN}(h) \odot (1 + Z W_\gamma) + Z W_\beta

    with mean-field Gaussian posteriors on :math:`W_\gamma, W_\beta \in \mathbb R^{B\times F}`.

    Args:
        features (int): width ``F``.
        n_batches (int): number of batches ``B``.
        post_loc_init_scale (float): std of the posterior-mean init (default: 0.1).
        prior_scale (float): prior std (default: 0.25).
        kl_weight (float): multiplier of the KL term (default: 1e-5).

    Shapes: ``h (N, F)``, ``z (N, B)`` one-hot -> ``(N, F)``.

    **Invariance**: equivariant to relabelling batches (permuting ``z``'s columns with the rows of
    the weights); invariant to ``z`` when the posterior is zero.
    """

    #: the variational parameters whose rows are indexed by the batch
    RE_PARAMS = ("gamma_loc", "gamma_rho", "beta_loc", "beta_rho")

    def __init__(
        self,
        *,
        features: int,
        n_batches: int,
        post_loc_init_scale: float = 0.1,
        prior_scale: float = 0.25,
        kl_weight: float = 1e-5,
    ) -> None:
        super().__init__()
        check_int("features", features, 1)
        check_int("n_batches", n_batches, 1)
        check_number("post_loc_init_scale", post_loc_init_scale)
        check_number("prior_scale", prior_scale, strict=True)
        check_number("kl_weight", kl_weight)
        self.features, self.n_batches = features, n_batches
        self.post_loc_init_scale, self.prior_scale, self.kl_weight = (
            post_loc_init_scale,
            prior_scale,
            kl_weight,
        )
        self.bn = nn.BatchNorm1d(features, affine=False)
        self.gamma_loc = nn.Parameter(torch.empty(n_batches, features))
        self.gamma_rho = nn.Parameter(torch.empty(n_batches, features))
        self.beta_loc = nn.Parameter(torch.empty(n_batches, features))
        self.beta_rho = nn.Parameter(torch.empty(n_batches, features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        lo, hi = (math.log(math.expm1(s - 1e-5)) for s in (0.01, 0.015))
        with torch.no_grad():
            for loc, rho in ((self.gamma_loc, self.gamma_rho), (self.beta_loc, self.beta_rho)):
                loc.normal_(0.0, self.post_loc_init_scale)
                rho.uniform_(lo, hi)
        self.bn.reset_parameters()

    def scales(self) -> tuple[Tensor, Tensor]:
        """Posterior stds of ``W_gamma`` and ``W_beta``: ``1e-5 + softplus(rho)``."""
        return 1e-5 + F.softplus(self.gamma_rho), 1e-5 + F.softplus(self.beta_rho)

    def weights(self) -> tuple[Tensor, Tensor]:
        """One posterior sample in training mode, the posterior means in eval mode."""
        if not self.training:
            return self.gamma_loc, self.beta_loc
        sg, sb = self.scales()
        return (
            self.gamma_loc + sg * torch.randn_like(sg),
            self.beta_loc + sb * torch.randn_like(sb),
        )

    def kl(self) -> Tensor:
        """``kl_weight * KL(q || p)`` summed over both weight matrices (closed form)."""
        sg, sb = self.scales()
        total = 0.0
        for loc, s in ((self.gamma_loc, sg), (self.beta_loc, sb)):
            p = self.prior_scale
            total = total + (torch.log(p / s) + (s**2 + loc**2) / (2 * p**2) - 0.5).sum()
        return self.kl_weight * total

    def forward(self, h: Tensor, z: Tensor) -> Tensor:
        if not isinstance(h, Tensor) or not h.is_floating_point():
            raise TypeError(f"h must be a floating-point tensor, got {getattr(h, 'dtype', h)!r}")
        if h.dim() != 2 or h.shape[1] != self.features or h.shape[0] == 0:
            raise ValueError(f"h must have shape (N >= 1, {self.features}), got {tuple(h.shape)}")
        if not isinstance(z, Tensor) or not z.is_floating_point():
            raise TypeError(
                f"z must be a floating-point one-hot tensor, got {getattr(z, 'dtype', z)!r}"
            )
        if z.shape != (h.shape[0], self.n_batches):
            raise ValueError(
                f"z must have shape ({h.shape[0]}, {self.n_batches}), got {tuple(z.shape)}"
            )
        if not torch.isfinite(h).all():
            raise ValueError("h must be finite (it holds NaN or inf)")
        if not torch.isfinite(z).all():
            raise ValueError("z must be finite (it holds NaN or inf)")
        wg, wb = self.weights()
        return self.bn(h) * (1 + z @ wg) + z @ wb

    def extra_repr(self) -> str:
        return (
            f"features={self.features}, n_batches={self.n_batches}, prior_scale={self.prior_scale}"
        )
