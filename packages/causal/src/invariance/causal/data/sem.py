r"""Linear structural equation models with parameterised interventions (ground truth included).

The setting of Parulekar, Shanmugam & Shakkottai, *PAC Generalization via Invariant
Representations* (ICML 2023, arXiv:2205.15196): a linear SEM over :math:`Z = (X_1..X_d, Y)`,

.. math::  Z = B Z + N, \qquad N \sim \mathcal N(0, \operatorname{diag}(\sigma^2)),

with a DAG :math:`B`. A fixed set of ``k`` *intervention sites* (here: the children of ``Y``) have
their incoming ``Y -> site`` weight and their noise scale replaced by an intervention parameter
:math:`\theta \in \Theta \subset \mathbb R^{2k}` drawn from a distribution ``P``. ``Y``'s own
mechanism is never intervened on, so the regression of ``Y`` on its parents (and on any set of
non-descendants of ``Y``) is exactly invariant, while any set containing a site is not.

The population covariance of one environment is :math:`\Sigma_\theta =
(I - B_\theta)^{-1} \operatorname{diag}(\sigma_\theta^2) (I - B_\theta)^{-\top}`.
Covariances are returned with the features first and ``Y`` last (shape ``(d + 1, d + 1)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from invariance.causal._checks import check_env_xy, check_float_tensor, check_number, check_seed

__all__ = ["LinearSEM", "empirical_covariance"]


def _gen(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    """Return ``generator`` or a fresh CPU generator seeded with ``seed`` (0 if None)."""
    if generator is not None:
        return generator
    g = torch.Generator()
    g.manual_seed(check_seed(seed))
    return g


@dataclass
class LinearSEM:
    r"""A random linear SEM over ``d`` features and a target ``Y``, intervening on Y's children.

    Construction (seeded): nodes are ordered topologically, ``Y`` sits at position ``d // 2``;
    every earlier pair ``j -> i`` is an edge with probability ``expected_degree / d`` and weight
    :math:`\pm U[0.5, 1.5]`; ``Y`` gets at least one parent; exactly ``n_sites`` later nodes are
    children of ``Y`` (the intervention sites); noise scales are :math:`U[0.5, 1.5]`.

    An intervention :math:`\theta` of shape ``(n_sites, 2)`` sets, for site ``s``, the weight of
    ``Y -> s`` to ``theta[s, 0]`` and the noise scale of ``s`` to ``theta[s, 1]``. The
    intervention distribution ``P`` is :math:`U[-2, 2] \times U[0.2, 2]` per site.

    Args:
        d (int): number of features (default: 8).
        n_sites (int): number of intervention sites, ``1 <= n_sites <= d - d // 2`` (default: 2).
        expected_degree (float): expected number of parents per node (default: 1.5).
        seed (int): seed of the graph, weights and noise scales (default: 0).
        dtype (torch.dtype): dtype of every tensor (default: ``torch.float64``).

    Attributes:
        B (Tensor): ``(d + 1, d + 1)`` weights in node order; ``B[i, j]`` weighs ``j -> i``.
        sigma (Tensor): ``(d + 1,)`` noise scales in node order.
        y_node (int): node index of ``Y``; ``feature_nodes`` the node index of each feature.
        parents (list[int]): feature indices (``0..d-1``) of ``Y``'s parents.
        sites (list[int]): feature indices of the intervention sites (``Y``'s children).
        non_descendants (list[int]): feature indices that are not descendants of ``Y``.
    """

    d: int = 8
    n_sites: int = 2
    expected_degree: float = 1.5
    seed: int = 0
    dtype: torch.dtype = torch.float64

    def __post_init__(self) -> None:
        if not isinstance(self.d, int) or self.d < 2:
            raise ValueError(f"LinearSEM: d must be an int >= 2, got {self.d!r}")
        n_after = self.d - self.d // 2
        if not isinstance(self.n_sites, int) or not 1 <= self.n_sites <= n_after:
            raise ValueError(
                f"LinearSEM: n_sites must be in [1, {n_after}] for d={self.d}, got {self.n_sites!r}"
            )
        check_number("expected_degree", self.expected_degree, strict=True)
        g = _gen(self.seed, None)
        n = self.d + 1
        self.y_node = self.d // 2
        self.feature_nodes = [i for i in range(n) if i != self.y_node]
        p = min(1.0, self.expected_degree / max(1, self.d))
        mask = (torch.rand(n, n, generator=g) < p).tril(-1)
        mask[self.y_node + 1 :, self.y_node] = False  # Y's children are exactly the sites
        if not mask[self.y_node, : self.y_node].any():
            j = int(torch.randint(0, self.y_node, (1,), generator=g))
            mask[self.y_node, j] = True
        after = torch.arange(self.y_node + 1, n)
        site_nodes = after[torch.randperm(len(after), generator=g)[: self.n_sites]].sort().values
        mask[site_nodes, self.y_node] = True
        sign = torch.where(torch.rand(n, n, generator=g) < 0.5, -1.0, 1.0)
        w = (0.5 + torch.rand(n, n, generator=g)) * sign
        self.B = (w * mask).to(self.dtype)
        self.sigma = (0.5 + torch.rand(n, generator=g)).to(self.dtype)
        self._site_nodes = [int(s) for s in site_nodes]
        node_to_feat = {node: k for k, node in enumerate(self.feature_nodes)}
        self.parents = [node_to_feat[j] for j in range(n) if bool(mask[self.y_node, j])]
        self.sites = [node_to_feat[s] for s in self._site_nodes]
        desc = {self.y_node}
        for i in range(self.y_node + 1, n):
            if any(bool(mask[i, j]) for j in desc):
                desc.add(i)
        self.non_descendants = [node_to_feat[i] for i in self.feature_nodes if i not in desc]
        self.theta0 = torch.stack(
            [self.B[self._site_nodes, self.y_node], self.sigma[self._site_nodes]], dim=-1
        )

    # ------------------------------------------------------------------ interventions
    @property
    def n_params(self) -> int:
        """Dimension ``p = 2 k`` of the intervention family."""
        return 2 * self.n_sites

    def sample_theta(
        self, m: int, *, seed: int | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Draw ``m`` interventions from ``P``: ``(m, n_sites, 2)`` (weight, noise scale)."""
        if not isinstance(m, int) or m < 1:
            raise ValueError(f"sample_theta: m must be a positive int, got {m!r}")
        g = _gen(seed, generator)
        wgt = torch.rand(m, self.n_sites, generator=g) * 4.0 - 2.0
        scale = 0.2 + torch.rand(m, self.n_sites, generator=g) * 1.8
        return torch.stack([wgt, scale], dim=-1).to(self.dtype)

    def _check_theta(self, theta: Tensor) -> Tensor:
        """Validate ``theta`` and return it as ``(m, n_sites, 2)``."""
        check_float_tensor("theta", theta)
        if theta.dim() == 2:
            theta = theta.unsqueeze(0)
        if theta.dim() != 3 or theta.shape[1:] != (self.n_sites, 2):
            raise ValueError(
                f"theta must have shape (m, {self.n_sites}, 2) or ({self.n_sites}, 2), "
                f"got {tuple(theta.shape)}"
            )
        return theta.to(self.dtype)

    def mechanisms(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """``(B_theta, sigma_theta)`` of shapes ``(m, d+1, d+1)`` and ``(m, d+1)`` (node order)."""
        theta = self._check_theta(theta)
        m = theta.shape[0]
        B = self.B.expand(m, -1, -1).clone()
        sig = self.sigma.expand(m, -1).clone()
        B[:, self._site_nodes, self.y_node] = theta[..., 0]
        sig[:, self._site_nodes] = theta[..., 1]
        return B, sig

    def _order(self) -> list[int]:
        """Node indices in output order: features first, Y last."""
        return self.feature_nodes + [self.y_node]

    def covariance(self, theta: Tensor) -> Tensor:
        r"""Exact :math:`\Sigma_\theta`, shape ``(m, d+1, d+1)``, features first and ``Y`` last."""
        B, sig = self.mechanisms(theta)
        eye = torch.eye(self.d + 1, dtype=self.dtype)
        A = torch.linalg.solve_triangular(eye - B, eye.expand_as(B), upper=False)
        cov = A @ torch.diag_embed(sig**2) @ A.transpose(-1, -2)
        o = self._order()
        return cov[:, o][:, :, o]

    def sample(
        self,
        theta: Tensor,
        n: int,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Gaussian samples: ``x`` of shape ``(m, n, d)`` and ``y`` of shape ``(m, n)``."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"sample: n must be a positive int, got {n!r}")
        B, sig = self.mechanisms(theta)
        g = _gen(seed, generator)
        m = B.shape[0]
        noise = torch.randn(m, n, self.d + 1, generator=g, dtype=self.dtype) * sig[:, None, :]
        eye = torch.eye(self.d + 1, dtype=self.dtype)
        A = torch.linalg.solve_triangular(eye - B, eye.expand_as(B), upper=False)
        z = noise @ A.transpose(-1, -2)
        return z[..., self.feature_nodes], z[..., self.y_node]

    def extra_repr(self) -> str:  # pragma: no cover - cosmetic
        return f"d={self.d}, n_sites={self.n_sites}, parents={self.parents}, sites={self.sites}"


def empirical_covariance(x: Tensor, y: Tensor) -> Tensor:
    """Per-environment second moments of ``(x, y)``: ``x (E, n, d)``, ``y (E, n)`` ->
    ``(E, d+1, d+1)``.

    Uncentred (the SEM is zero-mean); ``Y`` is the last coordinate.
    """
    check_env_xy(x, y, who="empirical_covariance: ")
    z = torch.cat([x, y.unsqueeze(-1)], dim=-1)
    return z.transpose(-1, -2) @ z / z.shape[1]
