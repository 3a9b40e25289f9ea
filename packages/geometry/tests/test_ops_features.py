import pytest
import torch

from invariance.core.groups import E3
from invariance.core.testing import assert_invariant, assert_not_invariant
from invariance.geometry.data import sample_shape
from invariance.geometry.ops import estimate_normals, point_pair_features


def _pairs(seed=0, n=64):
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(2, n, 3, generator=g, dtype=torch.float64)
    nrm = torch.nn.functional.normalize(
        torch.randn(2, n, 3, generator=g, dtype=torch.float64), dim=-1
    )
    return p[0], p[1], nrm[0], nrm[1]


def test_ppf_equals_pyg_point_pair_features():
    """Parity with torch_geometric's ``point_pair_features`` through recorded golden values (see
    the JSON's provenance; importing PyG live costs minutes on a loaded 2-core machine)."""
    import json
    from pathlib import Path

    gold = json.loads((Path(__file__).parent / "golden_ppf_pyg.json").read_text())
    t = {
        k: torch.tensor(gold[k], dtype=torch.float64)
        for k in ("pos_i", "pos_j", "normal_i", "normal_j", "ppf")
    }
    out = point_pair_features(t["pos_i"], t["pos_j"], t["normal_i"], t["normal_j"])
    torch.testing.assert_close(out, t["ppf"], atol=1e-12, rtol=0)
    pi, _, ni, _ = _pairs()
    # coincident points: angles are 0, not NaN
    out = point_pair_features(pi[:1], pi[:1], ni[:1], ni[:1])
    torch.testing.assert_close(out, torch.zeros(1, 4, dtype=torch.float64), atol=1e-12, rtol=0)


def test_ppf_is_e3_invariant_with_negative_control():
    inputs = _pairs()
    act = ("points", "points", "vector", "vector")
    assert_invariant(point_pair_features, inputs, E3(), act)
    raw = lambda pi, pj, ni, nj: torch.cat([pj - pi, ni], -1)  # noqa: E731
    assert_not_invariant(raw, inputs, E3(), act)
    with pytest.raises(ValueError, match="last dimension 3"):
        point_pair_features(
            torch.zeros(2, 2), torch.zeros(2, 2), torch.zeros(2, 2), torch.zeros(2, 2)
        )


def test_estimated_normals_match_exact_normals_and_are_equivariant():
    g = torch.Generator().manual_seed(0)
    p, n_exact = sample_shape("ellipsoid", 400, generator=g, noise=0.0)
    n_est = estimate_normals(p, 12)
    cos = (n_est * n_exact).sum(-1)
    assert cos.mean() > 0.98  # oriented outward (away from the centroid) and accurate
    from invariance.core.testing import assert_equivariant

    assert_equivariant(lambda x: estimate_normals(x, 12), (p,), E3(), ("points",), "vector")


def test_estimate_normals_degenerate_fallback_and_errors():
    line = torch.linspace(0, 1, 10, dtype=torch.float64).unsqueeze(-1) * torch.tensor(
        [1.0, 0.0, 0.0], dtype=torch.float64
    )
    n = estimate_normals(line, 4)
    assert torch.isfinite(n).all()
    assert torch.allclose(n.norm(dim=-1), torch.ones(10, dtype=torch.float64))
    assert (n[:, 0].abs() < 1e-9).all()  # orthogonal to the line
    dup = torch.zeros(8, 3)
    assert torch.isfinite(estimate_normals(dup, 4)).all()
    with pytest.raises(ValueError, match="at least 3 points"):
        estimate_normals(torch.rand(2, 3), 3)
    with pytest.raises(ValueError, match="k must be"):
        estimate_normals(torch.rand(10, 3), 2)
    with pytest.raises(ValueError, match="exceeds"):
        estimate_normals(torch.rand(5, 3), 8)
