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
    worst_accepted_violation,
)
from invariance.core.testing import assert_invariant, assert_not_invariant


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
