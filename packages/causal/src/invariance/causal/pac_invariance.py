r"""PAC generalisation via (approximately) invariant linear representations.

Paper: Advait Parulekar, Karthikeyan Shanmugam, Sanjay Shakkottai, *PAC Generalization via
Invariant Representations*, ICML 2023, arXiv:2205.15196. No official code was found; this module
is our own operationalisation of the paper's setting (see Deviations).

Mechanism. In a linear SEM over ``(X, Y)`` whose interventions act on a few sites through a
parameter :math:`\theta \sim P`, a linear representation :math:`\Phi \in \mathbb R^{r\times d}`
with head :math:`w \in \mathbb R^r` has the *invariance residual*

.. math::  r_\theta(\Phi, w) = \mathbb E_\theta[\Phi X (Y - w^\top \Phi X)]
           = \Phi\Sigma^{XY}_\theta - \Phi\Sigma^{XX}_\theta\Phi^\top w
           = -\tfrac12 \nabla_w \mathrm{MSE}_\theta(\Phi, w),

the IRM first-order condition. :math:`\Phi` is :math:`\varepsilon`-approximately invariant on a set
of environments ``E`` if some ``w`` gives :math:`\max_{e\in E} \|r_e(\Phi, w)\| \le \varepsilon`.
The paper shows that "not :math:`\varepsilon`-invariant at :math:`\theta`" is a polynomial
threshold event in :math:`\theta` whose complexity depends on the number of sites, their in-degree
and ``p``, *not on the ambient dimension d*; so invariance on ``m`` i.i.d. training interventions
certifies invariance on a ``1 - \delta`` fraction of unseen interventions once ``m`` is large
enough, uniformly over representations. We provide:

* :func:`invariance_residual` / :func:`sample_residual` (population and finite-sample residuals);
* :func:`fit_invariant_subset`: exhaustive search over feature subsets ``|S| <= max_size`` with a
  stacked least-squares head, accepting :math:`\max_e\|r_e\|\le\varepsilon`, returning the accepted
  subset with the lowest pooled MSE (and every accepted subset, for the uniform certificate);
* :class:`InvariantLinear` + :func:`fit_invariant_linear`: an IRM-style learner with unit-norm rows
  of :math:`\Phi` (the residual is bilinear, so the norm constraint prevents scale collapse),
  trained on pooled MSE :math:`+\lambda\sum_e\|\hat r_e\|^2`
  (or :math:`\lambda\max_e\|\hat r_e\|^2`);
* :func:`certify_invariance`: the violation rate :math:`P_\theta(\|r_\theta\| > 2\varepsilon)` on
  fresh interventions (population or ``n``-sample residuals), for one representation or the worst
  of a family of accepted ones.

Tested properties (``tests/test_pac_invariance.py``):
* true parents are exactly invariant: population residual < 1e-10 for 100 random interventions
  (``test_pac_true_parents_exactly_invariant``); their optimal head is invariant under random
  interventions, checked with ``invariance.core.testing``, and the all-features head is not
  (negative control) (``test_pac_parents_head_invariant_under_interventions``);
* all features violate on > 50 % of interventions (``test_pac_all_features_violate``);
* the sample residual equals ``-1/2`` the autograd gradient of the environment MSE
  (``test_pac_sample_residual_is_half_gradient``);
* reparametrisation identity :math:`r(A\Phi, A^{-\top}w) = A\,r(\Phi, w)`
  (``test_pac_reparametrisation_identity``);
* one training intervention certifies nothing, ten certify the worst accepted subset
  (``test_pac_certificate_needs_several_interventions``);
* the subset search beats ERM on worst-case held-out MSE (``test_pac_subset_search_beats_erm_ood``);
* the IRM learner lowers the training invariance residual below ERM's
  (``test_pac_irm_reduces_training_residual``). It is non-convex: on held-out interventions
  (d = 8, 5 training interventions x 500 samples, lam = 10, SEM seeds 0-4) it beat ERM's
  worst-case MSE on 4 of 5 seeds and lost on one, with either head (see the README);
* the closed-form head is the exact minimiser over ``w`` (zero gradient) and the moment form of
  the loss equals the sample loss (``test_pac_closed_form_irm_head_is_exact_minimiser``).

Setting vs the paper. Only the abstract was available to us (no official code; the full text
was not reachable offline), so the following is checked against the abstract and the research
notes, not against the paper's Section 2-3 text:

* *SEM*: linear, Gaussian noise, a DAG over ``(X, Y)``, ``Y``'s own mechanism never intervened on
  (as in the paper's invariant-representation setting). Ours: Erdos-Renyi DAG with expected
  in-degree 1.5, weights :math:`\pm U[0.5, 1.5]`, noise scales :math:`U[0.5, 1.5]`.
* *Intervention family*: the abstract's dimension-free bound needs the sites to be "a constant
  size subset of in-degree bounded nodes". Ours: ``k`` sites = the children of ``Y``, and
  :math:`\theta` replaces, per site, the ``Y -> site`` weight (:math:`U[-2, 2]`) and the site's
  noise scale (:math:`U[0.2, 2]`), so ``p = 2k`` parameters. This is a *sub-family* of replacing
  a site's whole row of incoming weights (``p = k * (in-degree + 1)``); we do not intervene on the
  other incoming weights. Why the bound is free of ``d`` (our derivation, consistent with the
  abstract): ``B`` is strictly lower-triangular, so :math:`(I - B_\theta)^{-1}` is a finite
  Neumann sum and every entry of :math:`\Sigma_\theta` is a polynomial in :math:`\theta` whose
  degree depends on ``k`` only (a path visits each site at most once); for any fixed
  :math:`(\Phi, w)` the violation event :math:`\|r_\theta\|^2 > \varepsilon'^2` is then a
  polynomial threshold in :math:`\theta` of bounded degree in ``p`` variables, and the class of
  such events, over *all* :math:`(\Phi, w)`, has VC dimension at most the number of monomials,
  which does not involve ``d``.
* *ε-approximate invariance*: ``max_e ||r_e(Phi, w)|| <= eps`` with the residual above
  (:math:`-\tfrac12` the gradient of the environment MSE in ``w``). The paper may normalise
  differently (e.g. the gradient itself, a factor 2, or a squared norm); that rescales ``eps``
  only. The held-out violation threshold ``2 eps`` is our choice.
* *What ``reproduce`` measures*: the worst-accepted (uniform over the searched family of feature
  subsets, ``|S| <= 3`` for ``d <= 16``, ``<= 2`` above) violation rate on 200 unseen
  interventions vs the number ``m`` of training interventions, for ``d`` up to 128 and
  ``k`` in {1, 2, 4}. The searched family is subsets, not all linear ``Phi``: a finite
  family that grows with ``d`` (8 257 subsets at ``d = 128``), so this is a lower bound on the
  uniform violation over all representations.

Deviations: the SEM generator, the intervention sub-family and the ``2 eps`` threshold above are
our operationalisation. The learner is IRMv1 for linear models with an explicit row-norm
constraint instead of a fixed dummy classifier; ``head="closed_form"`` eliminates the head
exactly (variable projection) instead of training it by Adam.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from invariance.causal.data.sem import LinearSEM, empirical_covariance
from invariance.core import groups as _G
from invariance.core.recipe import Recipe, ReproduceResult, TrainConfig
from invariance.core.registry import register
from invariance.core.testing import check_invariant, check_not_invariant

__all__ = [
    "Intervention",
    "InvariantLinear",
    "PACInvarianceConfig",
    "PACInvarianceRecipe",
    "SubsetFit",
    "certify_invariance",
    "fit_invariant_linear",
    "fit_invariant_subset",
    "invariance_residual",
    "irm_linear_loss",
    "optimal_irm_head",
    "population_mse",
    "sample_residual",
    "selection_matrix",
    "violation_curve",
    "worst_accepted_violation",
]


# --------------------------------------------------------------------------- helpers
def _check_cov(cov: Tensor, name: str = "cov") -> Tensor:
    """Validate a stack of joint covariances ``(E, d+1, d+1)`` (Y last); 2-D input gets E=1."""
    if not isinstance(cov, Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(cov).__name__}")
    if cov.dim() == 2:
        cov = cov.unsqueeze(0)
    if cov.dim() != 3 or cov.shape[-1] != cov.shape[-2] or cov.shape[-1] < 2:
        raise ValueError(
            f"{name} must have shape (E, d+1, d+1) with d >= 1, got {tuple(cov.shape)}"
        )
    return cov


def selection_matrix(subset: list[int] | tuple[int, ...], d: int, *, dtype=torch.float64) -> Tensor:
    """Rows of the identity for ``subset``: ``(|S|, d)``; the representation of a feature subset."""
    for j in subset:
        if not 0 <= int(j) < d:
            raise ValueError(f"selection_matrix: index {j} out of range for d={d}")
    phi = torch.zeros(len(subset), d, dtype=dtype)
    for row, j in enumerate(subset):
        phi[row, int(j)] = 1.0
    return phi


def _as_phi(phi: Tensor | list[int] | tuple[int, ...], d: int, dtype: torch.dtype) -> Tensor:
    """Accept a representation matrix ``(r, d)`` or a feature subset; return ``(r, d)``."""
    if isinstance(phi, Tensor):
        if phi.dim() != 2 or phi.shape[1] != d:
            raise ValueError(f"phi must have shape (r, {d}), got {tuple(phi.shape)}")
        return phi.to(dtype)
    return selection_matrix(list(phi), d, dtype=dtype)


def invariance_residual(cov: Tensor, phi: Tensor, w: Tensor) -> Tensor:
    r"""Population residual :math:`r_e = \Phi\Sigma_e^{XY} - \Phi\Sigma_e^{XX}\Phi^\top w`.

    Shapes: ``cov (E, d+1, d+1)`` (Y last), ``phi (r, d)``, ``w (r,)`` -> ``(E, r)``.
    """
    cov = _check_cov(cov)
    d = cov.shape[-1] - 1
    phi = _as_phi(phi, d, cov.dtype)
    if w.shape != (phi.shape[0],):
        raise ValueError(f"w must have shape ({phi.shape[0]},), got {tuple(w.shape)}")
    sxx, sxy = cov[:, :d, :d], cov[:, :d, d]
    return sxy @ phi.T - (phi @ sxx @ phi.T @ w.to(cov.dtype))


def sample_residual(x: Tensor, y: Tensor, phi: Tensor, w: Tensor) -> Tensor:
    r"""Finite-sample residual :math:`\hat r_e = \frac1n\sum_i \Phi x_i (y_i - w^\top\Phi x_i)`.

    Shapes: ``x (E, n, d)``, ``y (E, n)``, ``phi (r, d)``, ``w (r,)`` -> ``(E, r)``.
    """
    if x.dim() != 3 or y.dim() != 2 or x.shape[:2] != y.shape:
        raise ValueError(
            f"expected x (E, n, d) and y (E, n), got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    feats = x @ phi.T  # (E, n, r)
    resid = y - feats @ w  # (E, n)
    return (feats * resid.unsqueeze(-1)).mean(dim=1)


def population_mse(cov: Tensor, phi: Tensor, w: Tensor) -> Tensor:
    r"""Per-environment MSE, shape ``(E,)``:
    :math:`\Sigma_{yy} - 2 w^\top\Phi\Sigma_{xy} + w^\top\Phi\Sigma_{xx}\Phi^\top w`."""
    cov = _check_cov(cov)
    d = cov.shape[-1] - 1
    phi = _as_phi(phi, d, cov.dtype)
    w = w.to(cov.dtype)
    sxx, sxy, syy = cov[:, :d, :d], cov[:, :d, d], cov[:, d, d]
    return syy - 2 * (sxy @ phi.T) @ w + w @ (phi @ sxx @ phi.T) @ w


def _stacked_head(cov: Tensor, subsets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Heads, gaps and pooled MSEs for a batch of equal-size subsets ``(K, s)``.

    Returns ``w (K, s)``, ``gap (K,)`` = max_e ||r_e||, ``mse (K,)`` = mean_e MSE_e.
    """
    d = cov.shape[-1] - 1
    K, s = subsets.shape
    E = cov.shape[0]
    sxx = cov[:, :d, :d][:, subsets[:, :, None], subsets[:, None, :]]  # (E, K, s, s)
    sxy = cov[:, :d, d][:, subsets]  # (E, K, s)
    syy = cov[:, d, d]  # (E,)
    A = sxx.permute(1, 0, 2, 3).reshape(K, E * s, s)
    b = sxy.permute(1, 0, 2).reshape(K, E * s, 1)
    w = torch.linalg.lstsq(A, b, driver="gelsd" if A.device.type == "cpu" else None).solution[
        ..., 0
    ]
    r = sxy - torch.einsum("ekij,kj->eki", sxx, w)  # (E, K, s)
    gap = r.norm(dim=-1).amax(dim=0)
    mse = (syy[:, None] - 2 * (sxy * w).sum(-1) + torch.einsum("ki,ekij,kj->ek", w, sxx, w)).mean(0)
    return w, gap, mse


def _subset_gaps(cov: Tensor, subsets: Tensor, w: Tensor) -> Tensor:
    """Residual norms ``(E, K)`` of equal-size subsets ``(K, s)`` with heads ``w (K, s)``."""
    d = cov.shape[-1] - 1
    sxx = cov[:, :d, :d][:, subsets[:, :, None], subsets[:, None, :]]  # (E, K, s, s)
    sxy = cov[:, :d, d][:, subsets]  # (E, K, s)
    return (sxy - torch.einsum("ekij,kj->eki", sxx, w)).norm(dim=-1)


@dataclass
class SubsetFit:
    """Result of :func:`fit_invariant_subset`.

    Attributes:
        subset: the selected feature indices; ``w`` its head; ``gap`` its max residual norm;
        ``mse`` its pooled MSE; ``accepted``: every accepted ``(subset, w, gap, mse)``.
    """

    subset: tuple[int, ...]
    w: Tensor
    gap: float
    mse: float
    accepted: list[tuple[tuple[int, ...], Tensor, float, float]] = field(default_factory=list)

    def phi(self, d: int) -> Tensor:
        """The selection representation ``(|S|, d)``."""
        return selection_matrix(self.subset, d, dtype=self.w.dtype)


def fit_invariant_subset(cov: Tensor, *, max_size: int = 3, eps: float = 0.05) -> SubsetFit:
    r"""Search feature subsets ``|S| <= max_size`` for the best :math:`\varepsilon`-invariant one.

    For each ``S`` the head solves the stacked least squares
    :math:`\min_w \sum_e \|\Sigma_{e,SS} w - \Sigma_{e,Sy}\|^2`; ``S`` is accepted when
    :math:`\max_e \|\Sigma_{e,SS} w_S - \Sigma_{e,Sy}\| \le \varepsilon`. The empty set is always
    accepted. Among accepted sets the lowest pooled MSE wins.

    Args:
        cov (Tensor): ``(E, d+1, d+1)`` population or empirical covariances, ``Y`` last.
        max_size (int): largest subset size (default: 3).
        eps (float): invariance tolerance (default: 0.05).
    """
    cov = _check_cov(cov)
    if not isinstance(max_size, int) or max_size < 0:
        raise ValueError(f"max_size must be a non-negative int, got {max_size!r}")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps!r}")
    d = cov.shape[-1] - 1
    empty_mse = float(cov[:, d, d].mean())
    accepted: list[tuple[tuple[int, ...], Tensor, float, float]] = [
        ((), cov.new_zeros(0), 0.0, empty_mse)
    ]
    for s in range(1, min(max_size, d) + 1):
        subsets = torch.tensor(list(itertools.combinations(range(d), s)), dtype=torch.long)
        for chunk in subsets.split(4096):
            w, gap, mse = _stacked_head(cov, chunk)
            ok = (gap <= eps).nonzero().flatten().tolist()
            for k in ok:
                accepted.append((tuple(chunk[k].tolist()), w[k], float(gap[k]), float(mse[k])))
    best = min(accepted, key=lambda a: a[3])
    return SubsetFit(subset=best[0], w=best[1], gap=best[2], mse=best[3], accepted=accepted)


# --------------------------------------------------------------------------- learner
class InvariantLinear(nn.Module):
    r"""Linear representation with unit-norm rows and a linear head: :math:`\hat y = w^\top\Phi x`.

    Args:
        d (int): number of features.
        rank (int): number of representation rows ``r`` (default: 1).

    Shapes: ``x (..., d)`` -> ``(...)``.

    **Invariance**: a representation is (approximately) invariant when its optimal head is the
    same under every intervention; :meth:`residual` measures the violation per environment.
    """

    def __init__(self, *, d: int, rank: int = 1) -> None:
        super().__init__()
        if not isinstance(d, int) or d < 1:
            raise ValueError(f"InvariantLinear: d must be a positive int, got {d!r}")
        if not isinstance(rank, int) or not 1 <= rank <= d:
            raise ValueError(f"InvariantLinear: rank must be in [1, {d}], got {rank!r}")
        self.d, self.rank = d, rank
        self.raw_phi = nn.Parameter(torch.empty(rank, d))
        self.w = nn.Parameter(torch.empty(rank))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.raw_phi.normal_()
            self.w.zero_()

    @property
    def phi(self) -> Tensor:
        """The representation ``(r, d)`` with rows of unit norm."""
        return self.raw_phi / self.raw_phi.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.d:
            raise ValueError(f"InvariantLinear: expected last dim {self.d}, got {tuple(x.shape)}")
        return (x @ self.phi.T) @ self.w

    def residual(self, x: Tensor, y: Tensor) -> Tensor:
        """Sample invariance residual per environment: ``x (E, n, d)``, ``y (E, n)`` ->
        ``(E, r)``."""
        return sample_residual(x, y, self.phi, self.w)

    def extra_repr(self) -> str:
        return f"d={self.d}, rank={self.rank}"


def irm_linear_loss(
    model: InvariantLinear, x: Tensor, y: Tensor, *, lam: float = 10.0, penalty: str = "sum"
) -> dict[str, Tensor]:
    r"""Pooled MSE + :math:`\lambda\cdot` invariance penalty; returns ``mse``, ``penalty``,
    ``loss``.

    ``penalty="sum"``: :math:`\sum_e\|\hat r_e\|^2` (IRMv1 for linear models);
    ``penalty="max"``: :math:`\max_e\|\hat r_e\|^2`. Shapes: ``x (E, n, d)``, ``y (E, n)``.
    """
    if x.dim() != 3 or y.dim() != 2 or x.shape[:2] != y.shape:
        raise ValueError(
            f"expected x (E, n, d) and y (E, n), got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    if penalty not in ("sum", "max"):
        raise ValueError(f"penalty must be 'sum' or 'max', got {penalty!r}")
    mse = ((model(x) - y) ** 2).mean()
    r2 = model.residual(x, y).pow(2).sum(-1)
    pen = r2.sum() if penalty == "sum" else r2.max()
    return {"mse": mse, "penalty": pen, "loss": mse + lam * pen}


def _moments(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-environment uncentred moments ``Sxx (E, d, d)``, ``Sxy (E, d)``, ``Syy (E,)``."""
    cov = empirical_covariance(x, y)
    d = x.shape[-1]
    return cov[:, :d, :d], cov[:, :d, d], cov[:, d, d]


def optimal_irm_head(sxx: Tensor, sxy: Tensor, phi: Tensor, lam: float) -> Tensor:
    r"""Exact minimiser over ``w`` of pooled MSE :math:`+\lambda\sum_e\|r_e(\Phi, w)\|^2`.

    With :math:`C_e = \Phi S^{xx}_e\Phi^\top` and :math:`a_e = \Phi S^{xy}_e` the objective is
    quadratic in ``w``; its normal equations are
    :math:`(\bar C + \lambda\sum_e C_e^2)\,w = \bar a + \lambda\sum_e C_e a_e`.
    Shapes: ``sxx (E, d, d)``, ``sxy (E, d)``, ``phi (r, d)`` -> ``(r,)``; differentiable in
    ``phi``.
    """
    C = phi @ sxx @ phi.T  # (E, r, r)
    a = sxy @ phi.T  # (E, r)
    lhs = C.mean(0) + lam * (C @ C).sum(0)
    rhs = a.mean(0) + lam * (C @ a.unsqueeze(-1)).squeeze(-1).sum(0)
    eye = torch.eye(lhs.shape[0], dtype=lhs.dtype, device=lhs.device)
    return torch.linalg.solve(lhs + 1e-10 * eye, rhs)


def _moment_objective(sxx, sxy, syy, phi, w, lam: float, penalty: str) -> Tensor:
    """Pooled MSE + penalty computed from moments (equal to :func:`irm_linear_loss` on samples)."""
    C = phi @ sxx @ phi.T
    a = sxy @ phi.T
    mse = (syy - 2 * a @ w + ((C @ w) * w).sum(-1)).mean()
    r2 = (a - C @ w).pow(2).sum(-1)
    pen = r2.sum() if penalty == "sum" else r2.max()
    return mse + lam * pen


def fit_invariant_linear(
    x: Tensor,
    y: Tensor,
    *,
    rank: int = 1,
    lam: float = 10.0,
    penalty: str = "sum",
    steps: int = 500,
    lr: float = 0.05,
    anneal_steps: int | None = None,
    restarts: int = 1,
    head: str = "adam",
    seed: int = 0,
) -> InvariantLinear:
    """Train :class:`InvariantLinear` on the full-batch objective of :func:`irm_linear_loss`.

    ``x (E, n, d)``, ``y (E, n)``; ``lam=0`` is ERM on the same model class. As in DomainBed's
    IRM, the first ``anneal_steps`` steps (default ``steps // 3``) use penalty weight 1, then the
    weight jumps to ``lam`` and Adam is reset. With ``restarts > 1`` the best of several random
    initialisations (by final training objective) is returned: the objective is non-convex on the
    sphere of unit-norm rows.

    ``head="adam"`` trains ``w`` jointly with ``Phi`` by Adam (IRMv1-style).
    ``head="closed_form"`` (``penalty="sum"`` only) eliminates ``w``: at every step ``w`` is the
    exact minimiser :func:`optimal_irm_head` for the current ``Phi`` and penalty weight, so Adam
    only moves ``Phi``; the loss is computed from per-environment moments, which equals the
    sample loss exactly (equal ``n`` per environment).
    """
    if x.dim() != 3:
        raise ValueError(f"x must have shape (E, n, d), got {tuple(x.shape)}")
    if steps < 1 or restarts < 1:
        raise ValueError(f"steps and restarts must be >= 1, got {steps}, {restarts}")
    if head not in ("adam", "closed_form"):
        raise ValueError(f"head must be 'adam' or 'closed_form', got {head!r}")
    if head == "closed_form" and penalty != "sum":
        raise ValueError(
            "head='closed_form' needs penalty='sum' (the max penalty has no closed form)"
        )
    anneal = steps // 3 if anneal_steps is None else int(anneal_steps)
    g = torch.Generator().manual_seed(seed)
    moments = _moments(x, y) if head == "closed_form" else None
    best, best_obj = None, float("inf")
    for _ in range(restarts):
        model = InvariantLinear(d=x.shape[-1], rank=rank).to(x.dtype)
        with torch.no_grad():
            model.raw_phi.copy_(torch.randn(model.raw_phi.shape, generator=g, dtype=x.dtype))
        params = [model.raw_phi] if head == "closed_form" else list(model.parameters())
        opt = torch.optim.Adam(params, lr=lr)
        for t in range(steps):
            if t == anneal and anneal > 0:
                opt = torch.optim.Adam(params, lr=lr)
            weight = min(lam, 1.0) if t < anneal else lam
            opt.zero_grad()
            if head == "closed_form":
                sxx, sxy, syy = moments
                phi = model.phi
                w = optimal_irm_head(sxx, sxy, phi, weight)
                _moment_objective(sxx, sxy, syy, phi, w, weight, penalty).backward()
            else:
                irm_linear_loss(model, x, y, lam=weight, penalty=penalty)["loss"].backward()
            opt.step()
        with torch.no_grad():
            if head == "closed_form":
                model.w.copy_(optimal_irm_head(moments[0], moments[1], model.phi, lam))
            obj = float(irm_linear_loss(model, x, y, lam=lam, penalty=penalty)["loss"])
        if obj < best_obj:
            best, best_obj = model, obj
    return best


# --------------------------------------------------------------------------- certificate
def certify_invariance(
    sem: LinearSEM,
    phi: Tensor | list[int] | tuple[int, ...] | list,
    w: Tensor | list | None = None,
    *,
    eps: float = 0.05,
    n_interventions: int = 200,
    n_samples: int | None = None,
    seed: int = 0,
) -> dict[str, float | Tensor]:
    r"""Violation rate of :math:`\|r_\theta(\Phi, w)\| > 2\varepsilon` on fresh
    :math:`\theta\sim P`.

    ``phi`` is a representation ``(r, d)`` or a feature subset, with head ``w``; or ``phi`` is a
    list of ``(subset_or_phi, w)`` pairs (then ``w`` must be None) and the *uniform* certificate is
    reported: the worst violation rate over the family, as in the paper's uniform bound.
    ``n_samples=None`` uses population covariances, otherwise ``n``-sample empirical ones.

    Returns ``violation_rate`` (float), ``gaps`` (``(M,)`` residual norms of the worst member) and
    ``per_member`` (violation rate of each member).
    """
    if n_interventions < 1:
        raise ValueError(f"n_interventions must be >= 1, got {n_interventions}")
    family = phi if w is None else [(phi, w)]
    if not isinstance(family, list) or not family:
        raise TypeError("certify_invariance: pass (phi, w), or a non-empty list of (phi, w) pairs")
    g = torch.Generator().manual_seed(seed)
    theta = sem.sample_theta(n_interventions, generator=g)
    if n_samples is None:
        cov = sem.covariance(theta)
    else:
        xs, ys = sem.sample(theta, n_samples, generator=g)
        cov = empirical_covariance(xs, ys)
    rates: list[float] = []
    all_gaps: list[Tensor] = []
    by_size: dict[int, list[tuple[list[int], Tensor]]] = {}
    order: list[tuple[str, int, int]] = []  # (kind, size, position) to restore family order
    for member_phi, member_w in family:
        member_w = torch.as_tensor(member_w, dtype=cov.dtype)
        if isinstance(member_phi, Tensor):
            gaps = (
                invariance_residual(cov, member_phi, member_w).norm(dim=-1)
                if member_w.numel()
                else torch.zeros(n_interventions, dtype=cov.dtype)
            )
            all_gaps.append(gaps)
            order.append(("phi", 0, len(all_gaps) - 1))
        else:
            size = len(member_phi)
            if member_w.shape != (size,):
                raise ValueError(f"head of subset {member_phi} must have shape ({size},)")
            by_size.setdefault(size, []).append((list(member_phi), member_w))
            order.append(("subset", size, len(by_size[size]) - 1))
    sized: dict[int, Tensor] = {}
    for size, members in by_size.items():
        if size == 0:
            sized[0] = torch.zeros(n_interventions, len(members), dtype=cov.dtype)
            continue
        idx = torch.tensor([m[0] for m in members], dtype=torch.long)
        ws = torch.stack([m[1] for m in members])
        sized[size] = _subset_gaps(cov, idx, ws)
    gap_list = [all_gaps[i] if kind == "phi" else sized[size][:, i] for kind, size, i in order]
    rates = [float((gp > 2 * eps).double().mean()) for gp in gap_list]
    k_worst = max(range(len(rates)), key=lambda i: rates[i])
    worst, worst_gaps = rates[k_worst], gap_list[k_worst]
    return {"violation_rate": worst, "gaps": worst_gaps, "per_member": torch.tensor(rates)}


def worst_accepted_violation(
    sem: LinearSEM,
    fit: SubsetFit,
    *,
    eps: float,
    n_interventions: int = 200,
    seed: int = 0,
    n_samples: int | None = None,
) -> float:
    """Uniform certificate of a subset search: worst violation rate over all accepted subsets."""
    family = [(list(s), w) for s, w, _, _ in fit.accepted]
    out = certify_invariance(
        sem, family, eps=eps, n_interventions=n_interventions, seed=seed, n_samples=n_samples
    )
    return float(out["violation_rate"])


def violation_curve(
    *,
    dims: tuple[int, ...] = (8, 16, 32),
    ms: tuple[int, ...] = (1, 2, 3, 5, 10),
    n_sems: int = 5,
    n_sites: int = 2,
    eps: float = 0.05,
    n_samples: int | None = None,
    n_interventions: int = 200,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Mean worst-accepted violation rate on unseen interventions, per ``d`` and ``m``.

    Also returns the ERM (all features, pooled least squares) violation rate. With ``n_samples``
    the training covariances are empirical and ``eps`` is scaled by ``sqrt(1000 / n_samples)``.
    """
    out: dict[str, dict[str, float]] = {}
    for d in dims:
        max_size = 3 if d <= 16 else 2
        row: dict[str, float] = {}
        erm = []
        for m in ms:
            rates = []
            for k in range(n_sems):
                sem = LinearSEM(d=d, n_sites=n_sites, seed=seed + 1000 * k + d)
                g = torch.Generator().manual_seed(seed + 7 * k + m)
                theta = sem.sample_theta(m, generator=g)
                e = eps
                if n_samples is None:
                    cov = sem.covariance(theta)
                else:
                    xs, ys = sem.sample(theta, n_samples, generator=g)
                    cov = empirical_covariance(xs, ys)
                    e = eps * math.sqrt(1000.0 / n_samples)
                fit = fit_invariant_subset(cov, max_size=max_size, eps=e)
                rates.append(
                    worst_accepted_violation(
                        sem, fit, eps=e, n_interventions=n_interventions, seed=seed + 99 + k
                    )
                )
                if m == max(ms):
                    w_all = torch.linalg.lstsq(
                        cov[:, :d, :d].mean(0), cov[:, :d, d].mean(0)
                    ).solution
                    erm.append(
                        float(
                            certify_invariance(
                                sem,
                                list(range(d)),
                                w_all,
                                eps=e,
                                n_interventions=n_interventions,
                                seed=seed + 99 + k,
                            )["violation_rate"]
                        )
                    )
            row[f"m={m}"] = sum(rates) / len(rates)
        row["erm_all_features"] = sum(erm) / len(erm)
        out[f"d={d}"] = row
    return out


# --------------------------------------------------------------------------- recipe


class Intervention(_G.Group):
    """Draws a fresh intervention ``theta ~ P`` of a :class:`LinearSEM`; acts by replacing
    ``theta`` (rep ``"theta"``). The group-like action used to check invariance of a predictor's
    optimal head across environments with :mod:`invariance.core.testing`."""

    name, reps = "interventions", ("theta",)

    def __init__(self, sem: LinearSEM) -> None:
        self.sem = sem

    def sample(self, generator, inputs=()):
        return self.sem.sample_theta(1, generator=generator)[0]

    def _act(self, rep, g, x):
        return g.to(x.dtype).reshape(x.shape)

    def describe(self, g):
        return f"intervention theta={[[round(float(v), 3) for v in row] for row in g]}"


def optimal_head(sem: LinearSEM, subset: list[int]):
    """``theta -> argmin_w MSE_theta(X_S w, Y)``: the population-optimal head on a subset."""
    idx = torch.tensor(subset, dtype=torch.long)

    def fn(theta: Tensor) -> Tensor:
        cov = sem.covariance(theta.to(sem.dtype))[0]
        d = sem.d
        return torch.linalg.solve(cov[:d, :d][idx][:, idx], cov[:d, d][idx])

    return fn


@dataclass
class PACInvarianceConfig(TrainConfig):
    """Tiny preset: d=8 SEM, 5 training interventions x 500 samples, rank-1 IRM learner."""

    d: int = 8
    n_sites: int = 2
    n_train_envs: int = 5
    n_per_env: int = 500
    n_test_envs: int = 50
    rank: int = 1
    lam: float = 10.0
    penalty: str = "sum"
    eps: float = 0.05
    steps: int = 150
    batch_size: int = 5
    lr: float = 0.05


class _EnvDataset(torch.utils.data.Dataset):
    """One item per environment: ``(x (n, d), y (n,))``."""

    def __init__(self, x: Tensor, y: Tensor, theta: Tensor) -> None:
        self.x, self.y, self.theta = x, y, theta

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]


@register(
    "pac_invariance",
    domain="causal",
    paper="PAC Generalization via Invariant Representations",
    authors="Parulekar, Shanmugam, Shakkottai",
    year=2023,
    arxiv="2205.15196",
    code_url="",
    symmetry="optimal head invariant under interventions (theta ~ P)",
    baseline="ERM on all features",
    tags=("linear-sem", "irm", "certificate"),
)
class PACInvarianceRecipe(Recipe):
    """IRM-style linear learner on a random linear SEM; reproduce = the uniform certificate."""

    Config = PACInvarianceConfig
    presets = {"tiny": {}, "full": {"d": 16, "n_train_envs": 10, "n_per_env": 2000, "steps": 500}}

    def _sem(self, cfg) -> LinearSEM:
        return LinearSEM(d=cfg.d, n_sites=cfg.n_sites, seed=cfg.seed)

    def make_data(self, cfg, split):
        sem = self._sem(cfg)
        k = {"train": 0, "val": 1, "test": 2}[split]
        m = cfg.n_train_envs if split == "train" else cfg.n_test_envs
        g = torch.Generator().manual_seed(1000 * cfg.seed + k)
        theta = sem.sample_theta(m, generator=g)
        x, y = sem.sample(theta, cfg.n_per_env, generator=g)
        return _EnvDataset(x.float(), y.float(), theta)

    def build(self, cfg):
        self._loss_kw = {"lam": cfg.lam, "penalty": cfg.penalty}
        return InvariantLinear(d=cfg.d, rank=cfg.rank)

    def step(self, model, batch):
        x, y = batch
        return irm_linear_loss(model, x, y, **getattr(self, "_loss_kw", {}))

    def metrics(self, model, dataset):
        sem_cov = self._cov(dataset)
        phi, w = model.phi.detach().double(), model.w.detach().double()
        mse = population_mse(sem_cov, phi, w)
        r = invariance_residual(sem_cov, phi, w).norm(dim=-1)
        return {
            "ood_mse_mean": float(mse.mean()),
            "ood_mse_worst": float(mse.max()),
            "residual_mean": float(r.mean()),
            "residual_max": float(r.max()),
        }

    def _cov(self, dataset) -> Tensor:
        return empirical_covariance(dataset.x.double(), dataset.y.double())

    def check(self, model, cfg):
        sem = self._sem(cfg)
        theta = sem.sample_theta(1, seed=cfg.seed + 5)[0]
        group = Intervention(sem)
        return [
            check_invariant(
                "optimal head on Y's parents is intervention-invariant",
                optimal_head(sem, sem.parents),
                (theta,),
                group,
                ("theta",),
            ),
            check_not_invariant(
                "optimal head on all features (negative control)",
                optimal_head(sem, list(range(sem.d))),
                (theta,),
                group,
                ("theta",),
            ),
        ]

    def reproduce(self, cfg, run, *, quick):
        import time as _time

        t0 = _time.perf_counter()
        sites_curve: dict | None = None
        if quick:
            curve = violation_curve(
                dims=(8, 16, 32),
                ms=(1, 2, 3, 5, 10),
                n_sems=4,
                n_sites=cfg.n_sites,
                eps=cfg.eps,
                seed=cfg.seed,
            )
            sample_curve = violation_curve(
                dims=(8, 16),
                ms=(1, 3, 10),
                n_sems=3,
                n_sites=cfg.n_sites,
                eps=cfg.eps,
                n_samples=1000,
                seed=cfg.seed,
            )
        else:
            curve = violation_curve(
                dims=(8, 16, 32, 64, 128),
                ms=(1, 2, 3, 5, 10, 20),
                n_sems=10,
                n_sites=cfg.n_sites,
                eps=cfg.eps,
                seed=cfg.seed,
            )
            # the bound depends on the number of sites k (the intervention family), not on d
            sites_curve = {
                f"k={k}": violation_curve(
                    dims=(32,),
                    ms=(1, 2, 3, 5, 10, 20),
                    n_sems=10,
                    n_sites=k,
                    eps=cfg.eps,
                    seed=cfg.seed,
                )["d=32"]
                for k in (1, 2, 4)
            }
            sample_curve = {
                f"n={n}": violation_curve(
                    dims=(8, 32, 128),
                    ms=(1, 3, 10),
                    n_sems=5,
                    n_sites=cfg.n_sites,
                    eps=cfg.eps,
                    n_samples=n,
                    seed=cfg.seed,
                )
                for n in (200, 1000, 5000)
            }
        big_m = "m=10"
        method = max(row[big_m] for row in curve.values())
        baseline = min(row["erm_all_features"] for row in curve.values())
        plots = []
        try:
            from invariance.core.io import plt as _plt

            plt = _plt()
            fig, ax = plt.subplots(figsize=(5, 3.5))
            for dname, row in curve.items():
                ms = [int(k[2:]) for k in row if k.startswith("m=")]
                ax.plot(ms, [row[f"m={m}"] for m in ms], marker="o", label=dname)
            for kname, row in (sites_curve or {}).items():
                ms = [int(k[2:]) for k in row if k.startswith("m=")]
                ax.plot(ms, [row[f"m={m}"] for m in ms], ls="--", label=f"d=32, {kname}")
            ax.set_xlabel("training interventions m")
            ax.set_ylabel("worst accepted violation rate")
            ax.set_xscale("log")
            ax.legend(fontsize=7)
            plots.append(run.savefig(fig, "violation_vs_m"))
        except Exception:  # pragma: no cover - plotting is optional
            pass
        return ReproduceResult(
            task="violation rate on unseen interventions (population, 2 sites), worst over d",
            metric="worst-accepted violation rate at m=10",
            method="eps-invariant subset search",
            baseline="ERM on all features",
            method_value=method,
            baseline_value=baseline,
            higher_is_better=False,
            seconds=_time.perf_counter() - t0,
            details={
                "population": curve,
                "finite_sample": sample_curve,
                **({"sites_d32": sites_curve} if sites_curve else {}),
            },
            plots=plots,
        )
