import json
from pathlib import Path

import pytest
import torch

from invariance.causal import (
    ICMGaussian,
    causal_de_finetti,
    iid_baseline,
    make_bivariate_exchangeable,
    make_linear_gaussian_icm,
    make_multivariate_binary,
    normalised_shd,
)
from invariance.causal.causal_de_finetti import bivariate_decision, fit_icm_gaussian
from invariance.core import groups as G
from invariance.core.testing import assert_invariant, assert_not_invariant, fuzz_bad_inputs


def _pvals(data):
    r = causal_de_finetti(data, test="fisherz")
    return torch.tensor([r.pvalues[k] for k in ("x->y", "y->x", "independent")])


def test_cdf_invariant_to_group_permutation():
    data = make_linear_gaussian_icm(200, mode=0, seed=0)["data"]
    assert_invariant(_pvals, (data,), G.Permutation(dim=0), ("nodes",), tol=1e-10)

    def shuffle_y2(perm, x):  # permute Y of sample 2 only: destroys the grouping
        out = x.clone()
        out[:, 1, 1] = x[perm, 1, 1]
        return out

    assert_not_invariant(_pvals, (data,), G.Permutation(dim=0), (shuffle_y2,))


def test_cdf_sample_swap_agreement():
    agree = 0
    for i in range(20):
        data = make_linear_gaussian_icm(300, mode=i % 3, seed=100 + i)["data"]
        a = causal_de_finetti(data, test="fisherz").edges
        b = causal_de_finetti(data.flip(1), test="fisherz").edges
        agree += a == b
    assert agree >= 18


def test_cdf_fisher_z_linear_gaussian():
    correct = 0
    for i in range(12):
        d = make_linear_gaussian_icm(500, mode=i % 3, seed=i)
        correct += causal_de_finetti(d["data"], test="fisherz").edges == d["edges"]
    assert correct >= 11  # measured 12/12


def test_cdf_kci_beats_iid_baseline():
    # official-style non-linear generator, 12 datasets x 100 groups; chance is 1/3 and pooled PC
    # can only score on the "independent" class
    ours = iid = 0
    for i in range(12):
        d = make_bivariate_exchangeable(100, mode=i % 3, seed=i)
        ours += causal_de_finetti(d["data"], test="kci").edges == d["edges"]
        iid += iid_baseline(d["data"], test="kci") == d["edges"]
    assert iid <= 4
    assert ours >= iid + 3


def test_cdf_multivariate_binary():
    shd = [
        normalised_shd(causal_de_finetti(d["data"], test="gtest").edges, d["edges"])
        for d in (make_multivariate_binary(1000, 3, seed=s) for s in (1, 2, 8))
    ]
    assert max(shd) == 0.0  # these seeds draw forks, which are recovered exactly


def test_cdf_decision_rule():
    assert bivariate_decision(0.5, 0.01, 0.01) == {(0, 1)}
    assert bivariate_decision(0.01, 0.5, 0.01) == {(1, 0)}
    assert bivariate_decision(0.5, 0.5, 0.5) == set()
    assert bivariate_decision(0.01, 0.02, 0.03) == set()  # argmax fallback


def test_cdf_icm_gaussian_orients_linear_data():
    correct = 0
    for i in range(3):
        d = make_linear_gaussian_icm(300, mode=i, seed=i)
        correct += fit_icm_gaussian(d["data"], steps=150).decide(d["data"]) == d["edges"]
    assert correct == 3


def test_cdf_bad_inputs():
    with pytest.raises(ValueError, match="two exchangeable samples"):
        causal_de_finetti(torch.randn(50, 1, 2))
    with pytest.raises(TypeError):
        causal_de_finetti([[1.0]])
    with pytest.raises(ValueError, match="test must be"):
        causal_de_finetti(torch.randn(50, 2, 2), test="nope")
    with pytest.raises(ValueError, match="n_per_env"):
        make_bivariate_exchangeable(10, n_per_env=1)
    with pytest.raises(ValueError, match="ICMGaussian: data must have shape"):
        ICMGaussian()(torch.randn(10, 2, 3))


ORDER = json.loads((Path(__file__).parent / "golden" / "causallearn_order_golden.json").read_text())


@pytest.mark.parametrize("case", ORDER["cdf_bivariate"], ids=lambda c: c["name"])
def test_cdf_bivariate_pvalues_match_official(case):
    # golden p-values of the official pipeline's calls, recorded by running causal-learn
    # (tests/golden/record_causallearn_order_golden.py; provenance in the JSON): columns
    # X1, X2, Y1, Y2 and CIT(...)([0], [3], [1]), ([2], [1], [3]), ([0], [2]). CIT sorts the
    # indices of the Y->X call, so it tests KCI(X2, Y1 | Y2).
    data = torch.tensor(case["data"], dtype=torch.float64)
    pv = causal_de_finetti(data, test="kci").pvalues
    assert abs(pv["x->y"] - case["p_xy"]) < 1e-6
    assert abs(pv["y->x"] - case["p_yx"]) < 1e-6
    assert abs(pv["independent"] - case["p_ind"]) < 1e-6


def test_cdf_rejects_degenerate_data():
    data = make_linear_gaussian_icm(50, mode=0, seed=1)["data"]
    for bad in (float("nan"), float("inf")):
        d = data.clone()
        d[4, 1, 0] = bad
        with pytest.raises(ValueError, match="finite"):
            causal_de_finetti(d, test="fisherz")
    d = data.clone()
    d[:, 0, 1] = 2.0
    with pytest.raises(ValueError, match="constant"):
        causal_de_finetti(d, test="kci")
    binary = make_multivariate_binary(200, 3, seed=0)["data"].clone()
    binary[:, 1, 2] = 1
    with pytest.raises(ValueError, match="constant"):
        causal_de_finetti(binary, test="gtest")
    with pytest.raises(TypeError, match="integer"):
        causal_de_finetti(data, test="gtest")  # float data were cast to integers silently


# ----------------------------------------------------------------------------------- bad input

_DATA = make_linear_gaussian_icm(40, mode=0, seed=0)["data"]

#: bad-input cases (collected by the package summary in test_causal_bad_inputs.py)
ENTRY_POINTS = {
    "causal_de_finetti": (
        causal_de_finetti,
        {"data": _DATA, "test": "fisherz", "alpha": 0.05},
        {"accept": ("data:int_dtype",)},
    ),
    "iid_baseline": (
        iid_baseline,
        {"data": _DATA, "test": "fisherz", "alpha": 0.05},
        {"accept": ("data:int_dtype",)},
    ),
    "bivariate_decision": (
        bivariate_decision,
        {"p_xy": 0.5, "p_yx": 0.01, "p_ind": 0.01, "alpha": 0.05},
        {},
    ),
    "ICMGaussian.forward": (ICMGaussian().double(), {"data": _DATA.double()}, {}),
    "ICMGaussian.decide": (ICMGaussian().double().decide, {"data": _DATA.double()}, {}),
    "fit_icm_gaussian": (
        fit_icm_gaussian,
        {"data": _DATA, "steps": 2, "lr": 0.05},
        {"accept": ("data:int_dtype",)},  # integer-coded data are numbers (cast to float64)
    ),
    "make_bivariate_exchangeable": (
        make_bivariate_exchangeable,
        {"n_envs": 20, "mode": 0, "seed": 0},
        {"skip": ("seed:negative",)},
    ),
    "make_linear_gaussian_icm": (
        make_linear_gaussian_icm,
        {
            "n_envs": 20,
            "mode": 0,
            "coef": 1.0,
            "cause_scale": 2.0,
            "effect_scale": 0.5,
            "seed": 0,
        },
        {"accept": ("coef:negative",), "skip": ("seed:negative",)},
    ),
    "make_multivariate_binary": (
        make_multivariate_binary,
        {"n_envs": 20, "n_vars": 3, "edge_prob": 0.5, "seed": 0},
        {"skip": ("seed:negative",)},
    ),
}


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_cdf_entry_points_reject_bad_inputs(name):
    fn, kwargs, kw = ENTRY_POINTS[name]
    rep = fuzz_bad_inputs(fn, kwargs, name=name, **kw)
    assert rep.tried > 0 and rep.ok, "\n".join(rep.failures)
