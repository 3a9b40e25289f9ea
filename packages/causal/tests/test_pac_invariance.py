import pytest
import torch

from invariance.causal import (
    InvariantLinear,
    LinearSEM,
    PACInvarianceRecipe,
    certify_invariance,
    fit_invariant_linear,
    fit_invariant_subset,
    invariance_residual,
    sample_residual,
)
from invariance.causal.data.sem import empirical_covariance
from invariance.causal.pac_invariance import (
    Intervention,
    _moment_objective,
    irm_linear_loss,
    optimal_head,
    optimal_irm_head,
    population_mse,
    selection_matrix,
    worst_accepted_violation,
)
from invariance.core.testing import assert_invariant, assert_not_invariant, fuzz_bad_inputs


def _parents_head(sem, cov):
    P = sem.parents
    return torch.linalg.solve(cov[0][P][:, P], cov[0][P, -1])


def test_pac_true_parents_exactly_invariant():
    for seed in range(3):
        sem = LinearSEM(d=8, seed=seed)
        cov = sem.covariance(sem.sample_theta(100, seed=seed + 1))
        w = _parents_head(sem, cov)
        assert invariance_residual(cov, sem.parents, w).abs().max() < 1e-10


def test_pac_all_features_violate():
    sem = LinearSEM(d=8, seed=0)
    cov = sem.covariance(sem.sample_theta(100, seed=1))
    w = torch.linalg.lstsq(cov[:, :8, :8].mean(0), cov[:, :8, 8].mean(0)).solution
    gaps = invariance_residual(cov, list(range(8)), w).norm(dim=-1)
    assert (gaps > 0.1).double().mean() > 0.5


def test_pac_parents_head_invariant_under_interventions():
    sem = LinearSEM(d=8, seed=2)
    theta = sem.sample_theta(1, seed=3)[0]
    group = Intervention(sem)
    # the head of the one parent plus its risk: outputs that vary, so the check is not vacuous
    head = optimal_head(sem, sem.parents, with_risk=True)
    assert_invariant(head, (theta,), group, ("theta",), trials=5)
    everything = optimal_head(sem, list(range(sem.d)), with_risk=True)
    assert_not_invariant(everything, (theta,), group, ("theta",))


def test_pac_sample_residual_is_half_gradient():
    sem = LinearSEM(d=6, seed=4)
    x, y = sem.sample(sem.sample_theta(3, seed=5), 50, seed=6)
    phi = torch.randn(2, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    w = torch.randn(2, dtype=torch.float64, requires_grad=True)
    r = sample_residual(x, y, phi, w.detach())
    for e in range(3):
        mse = ((x[e] @ phi.T @ w - y[e]) ** 2).mean()
        (grad,) = torch.autograd.grad(mse, w)
        assert (r[e] + 0.5 * grad).abs().max() < 1e-8


def test_pac_reparametrisation_identity():
    sem = LinearSEM(d=6, seed=7)
    cov = sem.covariance(sem.sample_theta(4, seed=8))
    g = torch.Generator().manual_seed(1)
    phi = torch.randn(3, 6, generator=g, dtype=torch.float64)
    w = torch.randn(3, generator=g, dtype=torch.float64)
    A = torch.randn(3, 3, generator=g, dtype=torch.float64) + 3 * torch.eye(3, dtype=torch.float64)
    lhs = invariance_residual(cov, A @ phi, torch.linalg.inv(A).T @ w)
    rhs = invariance_residual(cov, phi, w) @ A.T
    assert (lhs - rhs).abs().max() < 1e-9 * max(1.0, float(rhs.abs().max()))


def test_pac_certificate_needs_several_interventions():
    sem = LinearSEM(d=8, seed=0)
    one = fit_invariant_subset(sem.covariance(sem.sample_theta(1, seed=1)), max_size=3)
    ten = fit_invariant_subset(sem.covariance(sem.sample_theta(10, seed=1)), max_size=3)
    assert worst_accepted_violation(sem, one, eps=0.05, n_interventions=100) > 0.9
    assert worst_accepted_violation(sem, ten, eps=0.05, n_interventions=100) == 0.0
    assert set(ten.subset) <= set(sem.non_descendants)


def test_pac_subset_search_beats_erm_ood():
    # margin picked from seeds 0-2 (worst-case OOD MSE ratio ERM / subset >= 1.5 on all three)
    sem = LinearSEM(d=8, seed=0)
    train = sem.covariance(sem.sample_theta(5, seed=1))
    test = sem.covariance(sem.sample_theta(200, seed=2))
    fit = fit_invariant_subset(train, max_size=3)
    w_erm = torch.linalg.lstsq(train[:, :8, :8].mean(0), train[:, :8, 8].mean(0)).solution
    ours = population_mse(test, list(fit.subset), fit.w).max()
    erm = population_mse(test, list(range(8)), w_erm).max()
    assert erm > 1.5 * ours
    viol = certify_invariance(sem, list(fit.subset), fit.w, n_interventions=100)["violation_rate"]
    assert viol == 0.0


def test_pac_irm_reduces_training_residual():
    # max training residual ratio IRM / ERM measured on three SEM seeds: 0.55, 0.35, 0.76
    sem = LinearSEM(d=8, seed=2)
    x, y = sem.sample(sem.sample_theta(5, seed=12), 500, seed=22)
    erm = fit_invariant_linear(x, y, lam=0.0, steps=150, seed=2)
    irm = fit_invariant_linear(x, y, lam=10.0, steps=150, seed=2, restarts=3)
    r_erm = erm.residual(x, y).detach().norm(dim=-1).max()
    r_irm = irm.residual(x, y).detach().norm(dim=-1).max()
    assert r_irm < 0.8 * r_erm


def test_pac_closed_form_irm_head_is_exact_minimiser():
    # the eliminated head is the argmin of pooled MSE + lam * sum_e ||r_e||^2 (zero gradient in w),
    # and the moment form of the objective equals the sample loss
    sem = LinearSEM(d=6, seed=3)
    x, y = sem.sample(sem.sample_theta(4, seed=13), 300, seed=23)
    cov = empirical_covariance(x, y)
    sxx, sxy = cov[:, :6, :6], cov[:, :6, 6]
    model = InvariantLinear(d=6, rank=2).double()
    for lam in (0.0, 1.0, 10.0):
        with torch.no_grad():
            model.w.copy_(optimal_irm_head(sxx, sxy, model.phi.detach(), lam))
        loss = irm_linear_loss(model, x, y, lam=lam)["loss"]
        (grad,) = torch.autograd.grad(loss, model.w)
        assert grad.abs().max() < 1e-8
        moment = _moment_objective(
            sxx, sxy, cov[:, 6, 6], model.phi.detach(), model.w.detach(), lam, "sum"
        )
        assert abs(float(moment) - float(loss.detach())) < 1e-10
    fit = fit_invariant_linear(x, y, lam=10.0, steps=30, head="closed_form", seed=0)
    assert torch.isfinite(fit.w).all() and fit.phi.shape == (1, 6)
    with pytest.raises(ValueError, match="closed_form"):
        fit_invariant_linear(x, y, penalty="max", head="closed_form", steps=1)


def test_pac_bad_inputs():
    with pytest.raises(ValueError, match="n_sites"):
        LinearSEM(d=4, n_sites=5)
    sem = LinearSEM(d=6, seed=0)
    with pytest.raises(ValueError, match="theta must have shape"):
        sem.covariance(torch.zeros(3, 5, 2))
    with pytest.raises(ValueError, match=r"\(E, d\+1, d\+1\)"):
        fit_invariant_subset(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="phi must have shape"):
        invariance_residual(sem.covariance(sem.sample_theta(1)), torch.zeros(2, 5), torch.zeros(2))
    with pytest.raises(ValueError, match="rank"):
        InvariantLinear(d=3, rank=4)


def test_fit_invariant_subset_rejects_nonfinite_cov():
    sem = LinearSEM(d=6, seed=0)
    cov = sem.covariance(sem.sample_theta(3, seed=1))
    for bad in (float("nan"), float("inf")):
        c = cov.clone()
        c[1, 2, 3] = bad
        with pytest.raises(ValueError, match="cov must be finite"):
            fit_invariant_subset(c)


def test_pac_pooled_search_is_the_best_pooled_mse_subset():
    # eps=None: the same search without the invariance test returns the lowest pooled MSE
    sem = LinearSEM(d=8, seed=3)
    cov = sem.covariance(sem.sample_theta(10, seed=4))
    pooled = fit_invariant_subset(cov, max_size=3, eps=None)
    inv = fit_invariant_subset(cov, max_size=3, eps=0.05)
    assert len(pooled.accepted) == 1 + 8 + 28 + 56
    assert pooled.mse == min(a[3] for a in pooled.accepted) <= inv.mse
    assert pooled.gap > 0.05 >= inv.gap  # on this SEM the pooled-best subset is not invariant


def test_pac_reproduce_baseline_is_the_fair_pooled_subset(tmp_path):
    from invariance.causal.recipes.pac_invariance import subset_comparison
    from invariance.core import make_config
    from invariance.core.io import RunDir

    row = subset_comparison(d=8, n_sites=2, m=10, eps=0.05, seed=0)
    assert row["invariant_violation"] == 0.0 and row["pooled_violation"] > 0.5
    recipe = PACInvarianceRecipe()
    cfg = make_config(recipe, seeds=3)
    res = recipe.reproduce(cfg, RunDir(tmp_path), quick=True)
    assert res.baseline.startswith("best pooled-MSE subset")
    assert "ERM on all features" in res.arms and len(res.method_values) == 3
    assert res.verdict == "wins" and res.invariance_error < 1e-8


# ----------------------------------------------------------------------------------- bad input

_G = torch.Generator().manual_seed(0)
_SEM = LinearSEM(d=5, seed=0)
_COV = _SEM.covariance(_SEM.sample_theta(3, seed=1))
_XS, _YS = _SEM.sample(_SEM.sample_theta(3, seed=2), 30, seed=3)
_PHI = torch.randn(2, 5, generator=_G, dtype=torch.float64)
_W = torch.randn(2, generator=_G, dtype=torch.float64)
_LIN = InvariantLinear(d=5, rank=2).double()
_THETA = _SEM.sample_theta(4, seed=5)
_FIT = fit_invariant_subset(_COV, max_size=2, eps=0.05)
_ONE_ENV_OK = ("cov:fewer_dims",)  # one (d+1, d+1) covariance is one environment
_MANY_THETA_OK = ("theta:fewer_dims",)  # one (n_sites, 2) theta is one intervention
_NEG_SEED = {"skip": ("seed:negative",)}  # negative seeds are valid torch seeds

#: bad-input cases (collected by the package summary in test_causal_bad_inputs.py)
ENTRY_POINTS = {
    "fit_invariant_subset": (
        fit_invariant_subset,
        {"cov": _COV, "max_size": 2, "eps": 0.05},
        {"accept": _ONE_ENV_OK},
    ),
    "SubsetFit.phi": (_FIT.phi, {"d": 5}, {}),
    "invariance_residual": (
        invariance_residual,
        {"cov": _COV, "phi": _PHI, "w": _W},
        {"accept": _ONE_ENV_OK},
    ),
    "population_mse": (
        population_mse,
        {"cov": _COV, "phi": _PHI, "w": _W},
        {"accept": _ONE_ENV_OK},
    ),
    "sample_residual": (sample_residual, {"x": _XS, "y": _YS, "phi": _PHI, "w": _W}, {}),
    "selection_matrix": (lambda d: selection_matrix([0, 2], d), {"d": 5}, {}),
    "optimal_irm_head": (
        optimal_irm_head,
        {"sxx": _COV[:, :5, :5], "sxy": _COV[:, :5, 5], "phi": _PHI, "lam": 10.0},
        {},
    ),
    "empirical_covariance": (empirical_covariance, {"x": _XS, "y": _YS}, {}),
    "InvariantLinear()": (InvariantLinear, {"d": 5, "rank": 2}, {}),
    "InvariantLinear.forward": (_LIN, {"x": _XS}, {"accept": ("x:extra_dim", "x:fewer_dims")}),
    "InvariantLinear.residual": (_LIN.residual, {"x": _XS, "y": _YS}, {}),
    "irm_linear_loss": (
        lambda x, y, lam, penalty: irm_linear_loss(_LIN, x, y, lam=lam, penalty=penalty),
        {"x": _XS, "y": _YS, "lam": 10.0, "penalty": "sum"},
        {},
    ),
    "fit_invariant_linear": (
        fit_invariant_linear,
        {
            "x": _XS,
            "y": _YS,
            "rank": 1,
            "lam": 10.0,
            "penalty": "sum",
            "steps": 3,
            "lr": 0.05,
            "anneal_steps": 1,
            "restarts": 1,
            "head": "adam",
            "seed": 0,
        },
        {"skip": ("seed:negative",)},
    ),
    "certify_invariance": (
        lambda phi, w, eps, n_interventions, n_samples, seed: certify_invariance(
            _SEM, phi, w, eps=eps, n_interventions=n_interventions, n_samples=n_samples, seed=seed
        ),
        {"phi": _PHI, "w": _W, "eps": 0.05, "n_interventions": 20, "n_samples": 50, "seed": 0},
        # an integer head is a valid head (cast to the covariances' dtype)
        {"accept": ("w:int_dtype",), "skip": ("seed:negative",)},
    ),
    "worst_accepted_violation": (
        lambda eps, n_interventions, seed: worst_accepted_violation(
            _SEM, _FIT, eps=eps, n_interventions=n_interventions, seed=seed
        ),
        {"eps": 0.05, "n_interventions": 20, "seed": 0},
        {"skip": ("seed:negative",)},
    ),
    "optimal_head": (
        lambda theta: optimal_head(_SEM, [0, 1], with_risk=True)(theta),
        {"theta": _THETA[0]},
        {"accept": ("theta:extra_dim",)},  # a (1, n_sites, 2) stack is one intervention
    ),
    "LinearSEM()": (
        LinearSEM,
        {"d": 5, "n_sites": 2, "expected_degree": 1.5, "seed": 0},
        _NEG_SEED,
    ),
    "LinearSEM.sample_theta": (
        _SEM.sample_theta,
        {"m": 3, "seed": 0},
        {"skip": ("seed:negative",)},
    ),
    "LinearSEM.mechanisms": (_SEM.mechanisms, {"theta": _THETA}, {"accept": _MANY_THETA_OK}),
    "LinearSEM.covariance": (_SEM.covariance, {"theta": _THETA}, {"accept": _MANY_THETA_OK}),
    "LinearSEM.sample": (
        _SEM.sample,
        {"theta": _THETA, "n": 10, "seed": 0},
        {"accept": _MANY_THETA_OK, "skip": ("seed:negative",)},
    ),
}


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_pac_entry_points_reject_bad_inputs(name):
    fn, kwargs, kw = ENTRY_POINTS[name]
    rep = fuzz_bad_inputs(fn, kwargs, name=name, **kw)
    assert rep.tried > 0 and rep.ok, "\n".join(rep.failures)
