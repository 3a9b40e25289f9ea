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
* :class:`Intervention` and :func:`optimal_head` (written in :mod:`~invariance.causal.pac_symmetry`,
  exported here): the intervention action and the population-optimal head it must leave unchanged,
  for the symmetry checks. The IRM trainer :func:`fit_invariant_linear` and the ``reproduce``
  experiments live with the recipe (:mod:`invariance.causal.recipes.pac_invariance`).

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
  ``eps=None`` returns the best pooled-MSE subset
  (``test_pac_pooled_search_is_the_best_pooled_mse_subset``);
* a non-finite covariance is rejected (``test_fit_invariant_subset_rejects_nonfinite_cov``);
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
* *What ``reproduce`` measures* (:mod:`invariance.causal.recipes.pac_invariance`): per SEM
  seed, the violation rate on 200 unseen interventions of the eps-invariant subset against
  best-subset ERM over the same family (``eps=None``, the fair baseline) and ERM on all
  features; and the worst-accepted (uniform over the searched family of feature subsets,
  ``|S| <= 3`` for ``d <= 16``, ``<= 2`` above) violation rate vs ``m``. The family is subsets,
  not all linear ``Phi``, so this is a lower bound on the uniform violation over all
  representations.

Deviations: the SEM generator, the intervention sub-family and the ``2 eps`` threshold above are
our operationalisation. The learner is IRMv1 for linear models with an explicit row-norm
constraint instead of a fixed dummy classifier; ``head="closed_form"`` eliminates the head
exactly (variable projection) instead of training it by Adam.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from invariance.causal._checks import (
    check_choice,
    check_cov_stack,
    check_env_xy,
    check_float_tensor,
    check_int,
    check_number,
    check_seed,
)
from invariance.causal._moved import moved_to_recipe
from invariance.causal.data.sem import LinearSEM, empirical_covariance
from invariance.causal.pac_symmetry import Intervention, optimal_head

__all__ = [
    "Intervention",
    "InvariantLinear",
    "SubsetFit",
    "certify_invariance",
    "fit_invariant_subset",
    "invariance_residual",
    "irm_linear_loss",
    "optimal_head",
    "optimal_irm_head",
    "population_mse",
    "sample_residual",
    "selection_matrix",
    "worst_accepted_violation",
]


#: names that moved to :mod:`invariance.causal.recipes.pac_invariance` (still importable from here)
_RECIPE_NAMES = {
    "PACInvarianceConfig",
    "PACInvarianceRecipe",
    "violation_curve",
    "fit_invariant_linear",
    "_moment_objective",
}


__getattr__ = moved_to_recipe(__name__, "pac_invariance", _RECIPE_NAMES)


# --------------------------------------------------------------------------- helpers
def selection_matrix(subset: list[int] | tuple[int, ...], d: int, *, dtype=torch.float64) -> Tensor:
    """Rows of the identity for ``subset``: ``(|S|, d)``; the representation of a feature subset."""
    check_int("d", d, 1)
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
        check_float_tensor("phi", phi, dims=(2,))
        if phi.shape[1] != d:
            raise ValueError(f"phi must have shape (r, {d}), got {tuple(phi.shape)}")
        return phi.to(dtype)
    return selection_matrix(list(phi), d, dtype=dtype)


def _check_w(w: Tensor, r: int) -> Tensor:
    check_float_tensor("w", w, nonempty=False)
    if w.shape != (r,):
        raise ValueError(f"w must have shape ({r},), got {tuple(w.shape)}")
    return w


def invariance_residual(cov: Tensor, phi: Tensor, w: Tensor) -> Tensor:
    r"""Population residual :math:`r_e = \Phi\Sigma_e^{XY} - \Phi\Sigma_e^{XX}\Phi^\top w`.

    Shapes: ``cov (E, d+1, d+1)`` (Y last), ``phi (r, d)``, ``w (r,)`` -> ``(E, r)``.
    """
    cov = check_cov_stack(cov)
    d = cov.shape[-1] - 1
    phi = _as_phi(phi, d, cov.dtype)
    w = _check_w(w, phi.shape[0])
    sxx, sxy = cov[:, :d, :d], cov[:, :d, d]
    return sxy @ phi.T - (phi @ sxx @ phi.T @ w.to(cov.dtype))


def sample_residual(x: Tensor, y: Tensor, phi: Tensor, w: Tensor) -> Tensor:
    r"""Finite-sample residual :math:`\hat r_e = \frac1n\sum_i \Phi x_i (y_i - w^\top\Phi x_i)`.

    Shapes: ``x (E, n, d)``, ``y (E, n)``, ``phi (r, d)``, ``w (r,)`` -> ``(E, r)``.
    """
    check_env_xy(x, y)
    phi = _as_phi(phi, x.shape[-1], x.dtype)
    w = _check_w(w, phi.shape[0]).to(x.dtype)
    feats = x @ phi.T  # (E, n, r)
    resid = y - feats @ w  # (E, n)
    return (feats * resid.unsqueeze(-1)).mean(dim=1)


def population_mse(cov: Tensor, phi: Tensor, w: Tensor) -> Tensor:
    r"""Per-environment MSE, shape ``(E,)``:
    :math:`\Sigma_{yy} - 2 w^\top\Phi\Sigma_{xy} + w^\top\Phi\Sigma_{xx}\Phi^\top w`."""
    cov = check_cov_stack(cov)
    d = cov.shape[-1] - 1
    phi = _as_phi(phi, d, cov.dtype)
    w = _check_w(w, phi.shape[0]).to(cov.dtype)
    sxx, sxy, syy = cov[:, :d, :d], cov[:, :d, d], cov[:, d, d]
    return syy - 2 * (sxy @ phi.T) @ w + w @ (phi @ sxx @ phi.T) @ w


def _stacked_head(
    cov: Tensor, subsets: Tensor, *, pooled_ls: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """Heads, gaps and pooled MSEs for a batch of equal-size subsets ``(K, s)``.

    The head solves the stacked residual least squares (``pooled_ls=False``) or the pooled
    least squares ``(mean_e S_xx) w = mean_e S_xy`` (``pooled_ls=True``: the ERM head).
    Returns ``w (K, s)``, ``gap (K,)`` = max_e ||r_e||, ``mse (K,)`` = mean_e MSE_e.
    """
    d = cov.shape[-1] - 1
    K, s = subsets.shape
    E = cov.shape[0]
    sxx = cov[:, :d, :d][:, subsets[:, :, None], subsets[:, None, :]]  # (E, K, s, s)
    sxy = cov[:, :d, d][:, subsets]  # (E, K, s)
    syy = cov[:, d, d]  # (E,)
    if pooled_ls:
        A, b = sxx.mean(0), sxy.mean(0).unsqueeze(-1)  # (K, s, s), (K, s, 1)
    else:
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


def fit_invariant_subset(cov: Tensor, *, max_size: int = 3, eps: float | None = 0.05) -> SubsetFit:
    r"""Search feature subsets ``|S| <= max_size`` for the best :math:`\varepsilon`-invariant one.

    For each ``S`` the head solves the stacked least squares
    :math:`\min_w \sum_e \|\Sigma_{e,SS} w - \Sigma_{e,Sy}\|^2`; ``S`` is accepted when
    :math:`\max_e \|\Sigma_{e,SS} w_S - \Sigma_{e,Sy}\| \le \varepsilon`. The empty set is always
    accepted. Among accepted sets the lowest pooled MSE wins.

    Args:
        cov (Tensor): ``(E, d+1, d+1)`` population or empirical covariances, ``Y`` last.
        max_size (int): largest subset size (default: 3).
        eps (float | None): invariance tolerance (default: 0.05). ``None`` drops the invariance
            test: every subset is accepted with its pooled least-squares (ERM) head and the
            lowest pooled MSE wins, i.e. best-subset ERM over the same family (the fair baseline
            of ``reproduce``).
    """
    cov = check_cov_stack(cov)
    check_int("max_size", max_size, 0)
    if eps is not None:
        check_number("eps", eps)
    d = cov.shape[-1] - 1
    empty_mse = float(cov[:, d, d].mean())
    accepted: list[tuple[tuple[int, ...], Tensor, float, float]] = [
        ((), cov.new_zeros(0), 0.0, empty_mse)
    ]
    for s in range(1, min(max_size, d) + 1):
        subsets = torch.tensor(list(itertools.combinations(range(d), s)), dtype=torch.long)
        for chunk in subsets.split(4096):
            w, gap, mse = _stacked_head(cov, chunk, pooled_ls=eps is None)
            keep = torch.ones_like(gap, dtype=torch.bool) if eps is None else gap <= eps
            ok = keep.nonzero().flatten().tolist()
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
        check_int("d", d, 1)
        check_int("rank", rank, 1, d)
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
        check_float_tensor("x", x)
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
    check_env_xy(x, y)
    check_number("lam", lam)
    check_choice("penalty", penalty, ("sum", "max"))
    mse = ((model(x) - y) ** 2).mean()
    r2 = model.residual(x, y).pow(2).sum(-1)
    pen = r2.sum() if penalty == "sum" else r2.max()
    return {"mse": mse, "penalty": pen, "loss": mse + lam * pen}


def optimal_irm_head(sxx: Tensor, sxy: Tensor, phi: Tensor, lam: float) -> Tensor:
    r"""Exact minimiser over ``w`` of pooled MSE :math:`+\lambda\sum_e\|r_e(\Phi, w)\|^2`.

    With :math:`C_e = \Phi S^{xx}_e\Phi^\top` and :math:`a_e = \Phi S^{xy}_e` the objective is
    quadratic in ``w``; its normal equations are
    :math:`(\bar C + \lambda\sum_e C_e^2)\,w = \bar a + \lambda\sum_e C_e a_e`.
    Shapes: ``sxx (E, d, d)``, ``sxy (E, d)``, ``phi (r, d)`` -> ``(r,)``; differentiable in
    ``phi``.
    """
    check_float_tensor("sxx", sxx, dims=(3,))
    E, d = sxx.shape[0], sxx.shape[-1]
    if sxx.shape[1] != d:
        raise ValueError(f"sxx must have shape (E, d, d), got {tuple(sxx.shape)}")
    check_float_tensor("sxy", sxy, dims=(2,))
    if sxy.shape != (E, d):
        raise ValueError(f"sxy must have shape (E, d) = ({E}, {d}), got {tuple(sxy.shape)}")
    check_float_tensor("phi", phi, dims=(2,))
    if phi.shape[1] != d:
        raise ValueError(f"phi must have shape (r, {d}), got {tuple(phi.shape)}")
    check_number("lam", lam)
    return _irm_head(sxx.to(phi.dtype), sxy.to(phi.dtype), phi, lam)


def _irm_head(sxx: Tensor, sxy: Tensor, phi: Tensor, lam: float) -> Tensor:
    """:func:`optimal_irm_head` without the argument checks (the trainer's inner loop)."""
    C = phi @ sxx @ phi.T  # (E, r, r)
    a = sxy @ phi.T  # (E, r)
    lhs = C.mean(0) + lam * (C @ C).sum(0)
    rhs = a.mean(0) + lam * (C @ a.unsqueeze(-1)).squeeze(-1).sum(0)
    eye = torch.eye(lhs.shape[0], dtype=lhs.dtype, device=lhs.device)
    return torch.linalg.solve(lhs + 1e-10 * eye, rhs)


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
    check_number("eps", eps)
    check_int("n_interventions", n_interventions, 1)
    if n_samples is not None:
        check_int("n_samples", n_samples, 1)
    seed = check_seed(seed)
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
                if member_w.numel() or member_phi.numel()
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
