r"""Causal de Finetti: causal structure identification from exchangeable (grouped) data.

Paper: Siyuan Guo, Viktor Tóth, Bernhard Schölkopf, Ferenc Huszár, *Causal de Finetti: On the
Identification of Invariant Causal Structure in Exchangeable Data*, NeurIPS 2023
(arXiv:2203.15756). Official code: https://github.com/syguo96/Causal-de-Finetti (no licence
file found); algorithm re-implemented from reading ``src/models/causaldf.py``, no code copied.

Mechanism. Data come in groups (environments) that are i.i.d. given latent mechanism parameters.
Under independent causal mechanisms (ICM), with a cause ``X`` and effect ``Y`` the joint of a group
is :math:`\iint \prod_n p(y_n|x_n,\psi)\,p(x_n|\theta)\,d\mu(\theta)d\nu(\psi)` with
:math:`\theta\perp\psi`, which implies the cross-sample conditional independence
:math:`Y_2 \perp X_1 \mid X_2`. With two samples per group this orients every edge, which i.i.d.
data (one sample per group) cannot do beyond the Markov equivalence class.

* **Bivariate rule** (official): ``p_xy = CI(X1, Y2 | X2)``, ``p_yx = CI(Y1, X2 | Y2)``,
  ``p_ind = CI(X1, Y1)``; the Y->X test is run as ``KCI(X2, Y1 | Y2)``, the argument order the
  official pipeline gets from causal-learn's ``CIT`` (it sorts the column indices of its two
  arguments; conditional KCI is not symmetric in them). X->Y if ``p_xy >= a, p_yx <= a,
  p_ind <= a``; Y->X for the mirror; no edge if all three ``>= a``; otherwise the argmax of the
  three p-values.
* **Multivariate** (official): (i) *sink layering*: among the remaining variables ``R``, ``X_j``
  joins the current layer if for every other ``k`` in ``R``,
  :math:`X_j^{(1)} \perp X_k^{(2)} \mid \{X_m^{(1)}: m\in R\setminus\{j\}\}`; remove the layer,
  repeat (layer 1 = sinks). (ii) *edges*: for layers ``n`` and ``n - d``, test
  :math:`X_j^{(1)} \perp X_k^{(1)}` given all variables in layers above ``n`` (for ``d >= 2``
  also the other members of layer ``n`` (co-parents) and the already found parents of ``X_k``
  outside those layers); an edge ``j -> k`` is added when ``p <= a``.

CI tests: our own :func:`~invariance.causal.ci_tests.kci_test` (continuous, causal-learn-exact),
:func:`~invariance.causal.ci_tests.fisher_z_test`, :func:`~invariance.causal.ci_tests.g_test`
(discrete); ``test="auto"`` picks the G-test for integer data and KCI otherwise.

Tested properties (``tests/test_causal_de_finetti.py``):
* the three bivariate p-values equal the official pipeline's (causal-learn ``CIT`` on columns
  ``X1, X2, Y1, Y2``) on recorded golden cases (``test_cdf_bivariate_pvalues_match_official``);
* non-finite or constant columns are rejected (``test_cdf_rejects_degenerate_data``);
* p-values and the decision are invariant to permuting the groups, checked with
  ``invariance.core.testing`` (``test_cdf_invariant_to_group_permutation``); permuting the samples
  *within* only one variable breaks it (negative control, same test);
* swapping the sample roles 1<->2 keeps the decision on >= 90 % of datasets
  (``test_cdf_sample_swap_agreement``);
* Fisher-z on linear-Gaussian ICM data orients >= 90 % of 12 datasets with 500 groups
  (``test_cdf_fisher_z_linear_gaussian``); KCI beats chance and the i.i.d. baseline on the official
  generator (``test_cdf_kci_beats_iid_baseline``);
* multivariate binary forks recovered exactly with the G-test (``test_cdf_multivariate_binary``);
* the Gaussian ICM likelihood model orients linear-Gaussian data
  (``test_cdf_icm_gaussian_orients_linear_data``).

Deviations (bugs in the official code, fixed and documented here):
1. ``coparent = S_n.remove(X_j)`` returns ``None`` (and mutates the layer), so the co-parent set
   was always empty; we use the other members of layer ``n`` without mutating it.
2. In the continuous ``d >= 2`` branch with an empty conditioning set the official code reused a
   stale ``con_vars`` from a previous iteration; we run the unconditional test.
3. If no remaining variable passes the sink test, the official loop leaves variables unlayered;
   we put the variable with the largest minimum p-value into the layer so that every variable is
   ordered.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from invariance.causal._checks import check_float, check_float_tensor, check_int, check_number
from invariance.causal._moved import moved_to_recipe
from invariance.causal.ci_tests import fisher_z_test, g_test, kci_test

__all__ = [
    "CdFResult",
    "ICMGaussian",
    "fit_icm_gaussian",
    "bivariate_decision",
    "causal_de_finetti",
    "iid_baseline",
    "normalised_shd",
]


#: names that moved to :mod:`invariance.causal.recipes.causal_de_finetti` (importable here too)
_RECIPE_NAMES = {
    "CausalDeFinettiConfig",
    "CausalDeFinettiRecipe",
    "bivariate_benchmark",
    "multivariate_benchmark",
}


__getattr__ = moved_to_recipe(__name__, "causal_de_finetti", _RECIPE_NAMES)


CITest = Callable[..., tuple[float, float]]
_TESTS: dict[str, CITest] = {"kci": kci_test, "fisherz": fisher_z_test, "gtest": g_test}


@dataclass
class CdFResult:
    """Output of :func:`causal_de_finetti`: ``edges`` (set of ``(parent, child)``), the sink
    ``layers`` (layer 0 = sinks; bivariate: empty), and the ``pvalues`` of every test run."""

    edges: set[tuple[int, int]]
    layers: list[list[int]] = field(default_factory=list)
    pvalues: dict[str, float] = field(default_factory=dict)


def _resolve_test(test: str | CITest, data: Tensor) -> CITest:
    """Return the CI-test callable; ``"auto"`` picks G-test for integer data, KCI otherwise."""
    if callable(test):
        return test
    if test == "auto":
        return g_test if not data.is_floating_point() else kci_test
    if test not in _TESTS:
        raise ValueError(
            f"test must be one of {sorted(_TESTS)} or 'auto' or a callable, got {test!r}"
        )
    return _TESTS[test]


def _check_alpha(alpha: float) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise TypeError(f"alpha must be a number in (0, 1), got {alpha!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def bivariate_decision(p_xy: float, p_yx: float, p_ind: float, alpha: float = 0.05) -> set:
    """The official decision rule on the three p-values; returns the edge set."""
    for name, p in (("p_xy", p_xy), ("p_yx", p_yx), ("p_ind", p_ind)):
        check_float(name, p, 0.0, 1.0)
    _check_alpha(alpha)
    if p_xy >= alpha and p_yx <= alpha and p_ind <= alpha:
        return {(0, 1)}
    if p_xy <= alpha and p_yx >= alpha and p_ind <= alpha:
        return {(1, 0)}
    if p_xy >= alpha and p_yx >= alpha and p_ind >= alpha:
        return set()
    k = max(range(3), key=lambda i: (p_xy, p_yx, p_ind)[i])
    return [{(0, 1)}, {(1, 0)}, set()][k]


def _check_data(data: Tensor) -> Tensor:
    if not isinstance(data, Tensor):
        raise TypeError(f"data must be a Tensor (n_envs, 2, n_vars), got {type(data).__name__}")
    if data.dtype == torch.bool or data.is_complex():
        raise TypeError(f"data must hold real numbers or integer codes, got dtype {data.dtype}")
    if data.dim() != 3 or data.shape[1] < 2 or data.shape[2] < 2:
        raise ValueError(
            "data must have shape (n_envs, n_per_env >= 2, n_vars >= 2) (two exchangeable samples "
            f"per group are needed), got {tuple(data.shape)}"
        )
    if data.shape[0] < 5:
        raise ValueError(f"data needs at least 5 groups, got {data.shape[0]}")
    two = data[:, :2]
    if data.is_floating_point() and not torch.isfinite(two).all():
        raise ValueError("data must be finite (samples 0 and 1 hold NaN or inf)")
    const = (two == two[:1]).all(dim=0)  # (2, n_vars): constant across groups
    if bool(const.any()):
        s, v = const.nonzero()[0].tolist()
        raise ValueError(f"data[:, {s}, {v}] is constant across groups: nothing to test")
    return data


def _bivariate(data: Tensor, test: CITest, alpha: float) -> CdFResult:
    x1, x2 = data[:, 0, 0], data[:, 1, 0]
    y1, y2 = data[:, 0, 1], data[:, 1, 1]
    # the official pipeline calls causal-learn's CIT on columns (X1, X2, Y1, Y2) as
    # (0; 3 | 1), (2; 1 | 3), (0; 2); CIT sorts the two index lists, so the Y->X test runs as
    # KCI(X2, Y1 | Y2). Conditional KCI is not symmetric in its two arguments (X is augmented with
    # Z / 2), so we keep that order.
    p_xy = test(x1, y2, x2)[0]
    p_yx = test(x2, y1, y2)[0]
    p_ind = test(x1, y1)[0]
    edges = bivariate_decision(p_xy, p_yx, p_ind, alpha)
    return CdFResult(edges=edges, pvalues={"x->y": p_xy, "y->x": p_yx, "independent": p_ind})


def _sink_layers(data: Tensor, test: CITest, alpha: float, pv: dict) -> list[list[int]]:
    """Sink layering on samples 1 and 2; returns layers (index 0 = sinks)."""
    remaining = list(range(data.shape[2]))
    layers: list[list[int]] = []
    while remaining:
        layer, min_p = [], {}
        for j in remaining:
            others = [m for m in remaining if m != j]
            if not others:
                layer.append(j)
                min_p[j] = 1.0
                continue
            cond = data[:, 0, others]
            ps = []
            for k in others:
                p = test(data[:, 0, j], data[:, 1, k], cond)[0]
                pv[f"layer{len(layers)}:{j}_1 _|_ {k}_2 | R-{j}"] = p
                ps.append(p)
            min_p[j] = min(ps)
            if all(p >= alpha for p in ps):
                layer.append(j)
        if not layer:  # deviation 3: always make progress
            layer = [max(remaining, key=lambda j: min_p[j])]
        layers.append(sorted(layer))
        remaining = [m for m in remaining if m not in layer]
    return layers


def _edges(data: Tensor, layers: list[list[int]], test: CITest, alpha: float, pv: dict) -> set:
    """Edges between layers (official order: gap d = 1, 2, ...; deeper layer n = d .. L-1)."""
    L = len(layers)
    parents: dict[int, list[int]] = {v: [] for layer in layers for v in layer}
    s1 = data[:, 0, :]
    for d in range(1, L):
        for n in range(d, L):
            above = [v for layer in layers[n + 1 :] for v in layer]
            for j in layers[n]:
                for k in layers[n - d]:
                    if d == 1:
                        cond_vars = list(above)
                    else:
                        coparents = [v for v in layers[n] if v != j]  # deviation 1
                        im = [p for p in parents[k] if p not in above and p not in layers[n]]
                        cond_vars = sorted(set(above) | set(coparents) | set(im))
                    z = s1[:, cond_vars] if cond_vars else None  # deviation 2
                    p = test(s1[:, j], s1[:, k], z)[0]
                    pv[f"edge:{j}->{k} | {cond_vars}"] = p
                    if p <= alpha:
                        parents[k].append(j)
    return {(p, c) for c, ps in parents.items() for p in ps}


def causal_de_finetti(
    data: Tensor,
    *,
    test: str | CITest = "auto",
    alpha: float = 0.05,
    bivariate_rule: bool = True,
) -> CdFResult:
    r"""Identify the causal DAG from grouped exchangeable data with two samples per group.

    Args:
        data (Tensor): ``(n_envs, n_per_env, n_vars)``; only samples 0 and 1 of each group are
            used (as in the paper's algorithm).
        test (str | callable): ``"auto"`` (default), ``"kci"``, ``"fisherz"``, ``"gtest"``, or a
            callable ``(x, y, z=None) -> (p_value, stat)``.
        alpha (float): significance level (default: 0.05).
        bivariate_rule (bool): with two variables use the official bivariate rule (default: True);
            otherwise the multivariate layering algorithm.

    Returns:
        :class:`CdFResult` with the estimated edge set (``(parent, child)`` pairs).
    """
    data = _check_data(data)
    _check_alpha(alpha)
    t = _resolve_test(test, data)
    data = data[:, :2]
    if data.shape[2] == 2 and bivariate_rule:
        return _bivariate(data, t, alpha)
    pv: dict[str, float] = {}
    layers = _sink_layers(data, t, alpha, pv)
    return CdFResult(edges=_edges(data, layers, t, alpha, pv), layers=layers, pvalues=pv)


def iid_baseline(
    data: Tensor, *, test: str | CITest = "auto", alpha: float = 0.05
) -> set[tuple[int, int]]:
    """An i.i.d. method for two variables: PC on the pooled samples (group labels ignored).

    With two variables PC returns "independent" or an undirected edge ``{(0, 1), (1, 0)}``
    (i.i.d. data identify only the Markov equivalence class), scored like the official
    repository scores its PC baseline: an undirected edge never equals a directed truth.
    """
    data = _check_data(data)
    _check_alpha(alpha)
    if data.shape[2] != 2:
        raise ValueError(f"iid_baseline handles 2 variables in data, got {data.shape[2]}")
    t = _resolve_test(test, data)
    pooled = data[:, :2].reshape(-1, 2)
    p = t(pooled[:, 0], pooled[:, 1])[0]
    if p >= alpha:
        return set()
    return {(0, 1), (1, 0)}


def normalised_shd(estimated: set, true: set) -> float:
    """Normalised SHD ``(|E_hat - E| + |E - E_hat|) / (|E| + |E_hat|)`` (0 when both empty)."""
    denom = len(true) + len(estimated)
    if denom == 0:
        return 0.0
    return (len(estimated - true) + len(true - estimated)) / denom


# --------------------------------------------------------------------------- parametric ICM model
class ICMGaussian(nn.Module):
    r"""Gaussian de Finetti (ICM) mixture model of grouped bivariate data, one per hypothesis.

    For the hypothesis ``cause -> effect`` each group draws independent latent means
    :math:`\theta \sim \mathcal N(\mu_c, \tau_c^2)` and
    :math:`\psi \sim \mathcal N(\mu_e, \tau_e^2)`; samples are
    :math:`c_n = \theta + \sigma_c\epsilon`, :math:`e_n = b\,c_n + \psi + \sigma_e\epsilon'`.
    This is the causal de Finetti representation
    :math:`\iint\prod_n p(e_n|c_n,\psi)p(c_n|\theta)d\mu(\theta)d\nu(\psi)` with Gaussian mixing
    measures. Integrating the latents gives a Gaussian over the group's ``2 x n`` values whose
    covariance is structured; the three hypotheses (X->Y, Y->X, independent with ``b = 0``) are
    fitted jointly by maximum likelihood and compared by BIC. It is a parametric companion of the
    non-parametric CI algorithm (:func:`causal_de_finetti`), used as the recipe's trainable model.

    Shapes: ``data (E, n_per_env, 2)`` -> dict of per-hypothesis mean NLL ``(3,)`` and ``loss``.

    **Invariance**: the likelihood is invariant to permuting groups and to permuting samples
    inside every group (exchangeability).
    """

    HYPOTHESES = ("x->y", "y->x", "independent")

    def __init__(self) -> None:
        super().__init__()
        # per hypothesis: mu_c, mu_e, log tau_c, log sigma_c, log tau_e, log sigma_e, b
        self.params = nn.Parameter(torch.zeros(3, 7))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.params.zero_()
            self.params[:2, 6] = 1.0  # start the directed hypotheses at slope 1

    def forward(self, data: Tensor) -> dict[str, Tensor]:
        check_float_tensor("data", data)
        if data.dim() != 3 or data.shape[-1] != 2 or data.shape[1] < 2:
            raise ValueError(
                f"ICMGaussian: data must have shape (E, n_per_env >= 2, 2), got {tuple(data.shape)}"
            )
        p = self.params.to(data.dtype)
        n = data.shape[1]
        x, y = data[..., 0], data[..., 1]
        # hypotheses: (cause, effect) = (x, y), (y, x), (x, y) with b = 0
        c = torch.stack([x, y, x])  # (3, E, n)
        e = torch.stack([y, x, y])
        mu_c, mu_e = p[:, 0], p[:, 1]
        var = (p[:, 2:6] * 2).exp()  # tau_c^2, sigma_c^2, tau_e^2, sigma_e^2
        b = p[:, 6] * torch.tensor([1.0, 1.0, 0.0], dtype=p.dtype, device=p.device)
        eye = torch.eye(n, dtype=p.dtype, device=p.device)
        one = torch.ones(n, n, dtype=p.dtype, device=p.device)
        cc = var[:, 0, None, None] * one + var[:, 1, None, None] * eye  # (3, n, n)
        ce = b[:, None, None] * cc
        ee = b[:, None, None] ** 2 * cc + var[:, 2, None, None] * one + var[:, 3, None, None] * eye
        cov = torch.cat([torch.cat([cc, ce], 2), torch.cat([ce.transpose(1, 2), ee], 2)], 1)
        mean = torch.cat([mu_c[:, None].expand(3, n), (mu_e + b * mu_c)[:, None].expand(3, n)], 1)
        v = torch.cat([c, e], 2) - mean[:, None, :]  # (3, E, 2n)
        L = torch.linalg.cholesky(cov)
        sol = torch.linalg.solve_triangular(L, v.transpose(1, 2), upper=False)  # (3, 2n, E)
        logdet = 2 * torch.log(torch.diagonal(L, dim1=1, dim2=2)).sum(-1)
        nll = 0.5 * (sol.pow(2).sum(1).mean(1) + logdet + 2 * n * math.log(2 * math.pi))
        return {"nll": nll, "loss": nll.sum()}

    @torch.no_grad()
    def decide(self, data: Tensor) -> set[tuple[int, int]]:
        """BIC decision among the three hypotheses (the independent one has one parameter less)."""
        E = data.shape[0]
        nll = self.forward(data)["nll"] * E
        bic = 2 * nll + torch.tensor([7.0, 7.0, 6.0], dtype=nll.dtype) * math.log(E)
        return [{(0, 1)}, {(1, 0)}, set()][int(bic.argmin())]

    def extra_repr(self) -> str:
        return "hypotheses=(x->y, y->x, independent)"


def fit_icm_gaussian(data: Tensor, *, steps: int = 300, lr: float = 0.05) -> ICMGaussian:
    """Fit :class:`ICMGaussian` by full-batch Adam; ``data (E, n, 2)``."""
    check_int("steps", steps, 1)
    check_number("lr", lr, strict=True)
    model = ICMGaussian().to(torch.float64)
    data = data.to(torch.float64)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        model(data)["loss"].backward()
        opt.step()
    return model
