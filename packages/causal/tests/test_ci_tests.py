import json
from pathlib import Path

import pytest
import torch

from invariance.causal import fisher_z_test, g_test, kci_test
from invariance.core import groups as G
from invariance.core.testing import assert_invariant, assert_not_invariant, fuzz_bad_inputs

GOLDEN = json.loads((Path(__file__).parent / "kci_golden.json").read_text())


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=lambda c: c["name"])
def test_kci_matches_causallearn_golden(case):
    # golden p-values: causal-learn 0.1.4.8 CIT(data, "kci", approx=True), see the JSON provenance
    D = torch.tensor(case["data"], dtype=torch.float64)
    z = D[:, case["z"]] if case["z"] else None
    p, _ = kci_test(D[:, case["x"]], D[:, case["y"]], z)
    assert abs(p - case["p"]) < 1e-6


def test_kci_pvalue_invariant_to_sample_permutation():
    g = torch.Generator().manual_seed(0)
    D = torch.randn(80, 3, generator=g, dtype=torch.float64)
    D[:, 1] += 0.3 * D[:, 2]

    def p(d):  # three p-values that differ, so the check is not vacuous
        return torch.tensor(
            [
                kci_test(d[:, 0], d[:, 1], d[:, 2])[0],
                kci_test(d[:, 0], d[:, 2])[0],
                kci_test(d[:, 1], d[:, 2])[0],
            ],
            dtype=torch.float64,
        )

    assert_invariant(p, (D,), G.Permutation(dim=0), ("nodes",), tol=1e-9)

    def shuffle_x_only(perm, d):  # breaks the pairing: not a symmetry
        out = d.clone()
        out[:, 0] = d[perm, 0]
        return out

    D[:, 0] += D[:, 1]
    assert_not_invariant(p, (D,), G.Permutation(dim=0), (shuffle_x_only,))


def _ks_uniform(ps):
    ps = sorted(ps)
    n = len(ps)
    return max(max((i + 1) / n - p, p - i / n) for i, p in enumerate(ps))


def test_kci_calibrated_under_null():
    g = torch.Generator().manual_seed(1)
    pu, pc = [], []
    for _ in range(40):
        a, b, c = torch.randn(3, 100, generator=g, dtype=torch.float64)
        pu.append(kci_test(a, b)[0])
        pc.append(kci_test(a + c, b + c * 0.0, c)[0])
    # KS critical value at 1 % for n = 40 is about 0.252
    assert _ks_uniform(pu) < 0.252
    assert _ks_uniform(pc) < 0.252


def test_kci_power_under_alternative():
    g = torch.Generator().manual_seed(2)
    rej = 0
    for _ in range(20):
        a, e, c = torch.randn(3, 100, generator=g, dtype=torch.float64)
        b = torch.cos(2 * a) + 0.3 * e  # non-linear, zero correlation
        rej += kci_test(a, b, c)[0] < 0.05
    assert rej >= 18


def test_fisher_z_matches_closed_form():
    g = torch.Generator().manual_seed(3)
    x, y, z = torch.randn(3, 200, generator=g, dtype=torch.float64)
    y = y + 0.5 * z
    p, stat = fisher_z_test(x, y)
    r = torch.corrcoef(torch.stack([x, y]))[0, 1]
    import math

    expected = math.sqrt(197) * abs(math.atanh(float(r)))
    assert abs(stat - expected) < 1e-9
    assert abs(p - math.erfc(expected / math.sqrt(2))) < 1e-12


def test_g_test_matches_scipy():
    from scipy.stats import chi2_contingency

    g = torch.Generator().manual_seed(4)
    x = torch.randint(0, 3, (300,), generator=g)
    y = (x + torch.randint(0, 2, (300,), generator=g)) % 3
    table = torch.zeros(3, 3)
    table.index_put_((x, y), torch.ones(300), accumulate=True)
    G_ref, p_ref, dof, _ = chi2_contingency(
        table.numpy(), lambda_="log-likelihood", correction=False
    )
    p, G_ = g_test(x, y)
    assert abs(G_ - G_ref) < 1e-8 and abs(p - p_ref) < 1e-10


def test_ci_tests_bad_inputs():
    with pytest.raises(ValueError, match="at least 5"):
        kci_test(torch.randn(3), torch.randn(3))
    with pytest.raises(ValueError, match="samples but x has"):
        kci_test(torch.randn(10), torch.randn(9))
    with pytest.raises(ValueError, match="1-D"):
        kci_test(torch.randn(10, 2, 2), torch.randn(10))
    with pytest.raises(ValueError, match="n > "):
        fisher_z_test(torch.randn(4), torch.randn(4), torch.randn(4, 2))


ORDER = json.loads((Path(__file__).parent / "golden" / "causallearn_order_golden.json").read_text())


@pytest.mark.parametrize("case", ORDER["kci"], ids=lambda c: c["name"])
def test_kci_argument_order_matches_causallearn(case):
    # golden p-values recorded by running causal-learn (tests/golden/
    # record_causallearn_order_golden.py; provenance in the JSON). The x column index exceeds the
    # y index: causal-learn's CIT sorts the two index lists, so it tests (y, x | z), while
    # KCI_CInd called directly tests (x, y | z); conditional KCI is not symmetric.
    D = torch.tensor(case["data"], dtype=torch.float64)
    x, y, z = D[:, case["x"]], D[:, case["y"]], D[:, case["z"]]
    assert abs(kci_test(x, y, z)[0] - case["p_direct"]) < 1e-6
    assert abs(kci_test(y, x, z)[0] - case["p_cit"]) < 1e-6


def test_kci_conditional_is_not_symmetric():
    # the reason the argument order matters (largest gap among the golden cases: ~0.011)
    gaps = [abs(c["p_cit"] - c["p_direct"]) for c in ORDER["kci"]]
    assert max(gaps) > 1e-3


@pytest.mark.parametrize("fn", [kci_test, fisher_z_test], ids=["kci", "fisherz"])
def test_ci_tests_reject_nonfinite_and_constant_columns(fn):
    g = torch.Generator().manual_seed(5)
    x, y, z = torch.randn(3, 60, generator=g, dtype=torch.float64)
    for bad in (float("nan"), float("inf")):
        xb = x.clone()
        xb[3] = bad
        with pytest.raises(ValueError, match="x must be finite"):
            fn(xb, y, z)
        zb = z.clone()
        zb[7] = bad
        with pytest.raises(ValueError, match="z must be finite"):
            fn(x, y, zb)
    with pytest.raises(ValueError, match="y has constant"):
        fn(x, torch.ones(60, dtype=torch.float64), z)
    with pytest.raises(ValueError, match="z has constant"):
        fn(x, y, torch.stack([z, torch.zeros(60, dtype=torch.float64)], 1))


def test_g_test_rejects_float_and_constant_input():
    g = torch.Generator().manual_seed(6)
    x = torch.randint(0, 2, (200,), generator=g)
    y = torch.randint(0, 3, (200,), generator=g)
    with pytest.raises(TypeError, match="integer"):
        g_test(x.double() + 0.4, y)  # floats were cast to integers silently
    with pytest.raises(TypeError, match="z"):
        g_test(x, y, torch.full((200,), float("nan")))
    with pytest.raises(ValueError, match="y is constant"):
        g_test(x, torch.zeros(200, dtype=torch.long))
    with pytest.raises(ValueError, match="x must have shape"):
        g_test(x.reshape(1, -1), y.reshape(1, -1))


# ----------------------------------------------------------------------------------- bad input

_G = torch.Generator().manual_seed(0)
_A, _B, _C = torch.randn(3, 40, generator=_G, dtype=torch.float64)
_XI = torch.randint(0, 2, (120,), generator=_G)
_INT_OK = ("x:int_dtype", "y:int_dtype", "z:int_dtype")  # integer codes are valid numbers

#: bad-input cases (collected by the package summary in test_causal_bad_inputs.py)
ENTRY_POINTS = {
    "kci_test": (kci_test, {"x": _A, "y": _B + 0.3 * _A, "z": _C}, {"accept": _INT_OK}),
    "fisher_z_test": (fisher_z_test, {"x": _A, "y": _B + 0.3 * _A, "z": _C}, {"accept": _INT_OK}),
    "g_test": (
        g_test,
        {
            "x": _XI,
            "y": (_XI + torch.randint(0, 2, (120,), generator=_G)) % 2,
            "z": torch.randint(0, 2, (120,), generator=_G),
        },
        {},
    ),
}


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_ci_tests_entry_points_reject_bad_inputs(name):
    fn, kwargs, kw = ENTRY_POINTS[name]
    rep = fuzz_bad_inputs(fn, kwargs, name=name, **kw)
    assert rep.tried > 0 and rep.ok, "\n".join(rep.failures)
