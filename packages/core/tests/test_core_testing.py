import pytest
import torch
from torch import nn

from invariance.core import groups as G
from invariance.core import testing as T


def dist(p):
    return torch.cdist(p, p)


def centroid(p):
    return p.mean(0)


def test_distance_matrix_is_rigid_invariant_and_raw_coords_are_not():
    pos = torch.randn(12, 3)
    rep = T.assert_invariant(dist, (pos,), G.E3(), ("points",))
    assert rep.max_error < 1e-12
    neg = T.assert_not_invariant(centroid, (pos,), G.SO3(), ("points",))
    assert neg.relative_error > 1e-2


def test_failure_message_names_output_and_group_element():
    pos = torch.randn(6, 3)
    with pytest.raises(AssertionError) as e:
        T.assert_invariant(lambda p: (dist(p), centroid(p)), (pos,), G.SO3(), ("points",))
    msg = str(e.value)
    assert "out[1]" in msg and "SO(3) matrix" in msg and "tol" in msg


def test_negative_control_fails_on_an_invariant_function():
    with pytest.raises(AssertionError, match="negative control failed"):
        T.assert_not_invariant(dist, (torch.randn(5, 3),), G.SO3(), ("points",))


def test_equivariance_with_structured_outputs_and_kwargs():
    x = torch.randn(7, 3)

    def f(*, pos):
        return {"centroid": pos.mean(0), "norms": pos.norm(dim=-1)}

    T.assert_equivariant(
        f, {"pos": x}, G.SO3(), {"pos": "points"}, {"centroid": "points", "norms": None}
    )
    with pytest.raises(ValueError, match="unknown keys"):
        T.equivariance_error(f, {"pos": x}, G.SO3(), {"posx": "points"})


def test_message_passing_permutation_equivariance_and_control():
    x = torch.randn(6, 4)
    ei = torch.tensor([[0, 1, 2, 3, 4], [1, 2, 3, 4, 5]])

    def mp(x, ei):
        out = torch.zeros_like(x)
        return out.index_add_(0, ei[1], x[ei[0]])

    T.assert_equivariant(mp, (x, ei), G.Permutation(), ("nodes", "edge_index"), "nodes")
    # forgetting to relabel edges breaks it
    T.assert_not_equivariant(mp, (x, ei), G.Permutation(), ("nodes", None), "nodes")


def test_module_cast_to_float64_and_native_dtype_tolerance():
    lin = nn.Linear(3, 1)
    x = torch.randn(4, 3)
    f = lambda v: lin(v.norm(dim=-1, keepdim=True).expand(-1, 3))
    with pytest.raises(TypeError, match="as_float64"):
        T.equivariance_error(f, (x,), G.SO3(), ("vector",))
    m = T.as_float64(lin)
    g = lambda v: m(v.norm(dim=-1, keepdim=True).expand(-1, 3))
    assert T.equivariance_error(g, (x,), G.SO3(), ("vector",)).max_error < 1e-12
    rep = T.assert_invariant(f, (x,), G.SO3(), ("vector",), dtype=None)  # float32, tol 1e-4
    assert rep.max_error < 1e-4
    assert T.default_tol(torch.float64) == 1e-9 and T.default_tol(torch.float32) == 1e-4
    # a module passed directly is deep-copied, the original keeps its dtype
    T.equivariance_error(lin, (x,), G.SO3(), ("vector",))
    assert lin.weight.dtype == torch.float32


def test_image_d4_and_sequence_delay():
    img = torch.randn(2, 3, 8, 8)
    T.assert_invariant(lambda z: z.amax((-1, -2)), img, G.D4(), "image")
    T.assert_not_invariant(lambda z: z[..., 0, :].mean(-1), img, G.C4(), "image")
    causal = lambda s: torch.cumsum(s, -1)
    T.assert_equivariant(causal, torch.randn(3, 16), G.Delay(), "seq", "seq")
    T.assert_not_equivariant(causal, torch.randn(3, 16), G.CyclicShift(), "seq", "seq")


def test_check_helpers_return_results():
    pos = torch.randn(5, 3)
    ok = T.check_invariant("dist", dist, (pos,), G.SO3(), ("points",))
    neg = T.check_not_invariant("centroid", centroid, (pos,), G.SO3(), ("points",))
    assert ok.passed and not ok.negative_control
    assert neg.passed and neg.negative_control
    bad = T.check_invariant("centroid", centroid, (pos,), G.SO3(), ("points",))
    assert not bad.passed


def test_non_finite_outputs_count_as_violations():
    f = lambda p: p / 0.0
    rep = T.equivariance_error(f, (torch.ones(3, 3),), G.SO3(), ("points",))
    assert rep.max_error == float("inf")


def test_bad_arguments():
    with pytest.raises(ValueError, match="trials"):
        T.equivariance_error(dist, (torch.randn(3, 3),), G.SO3(), ("points",), trials=0)
    with pytest.raises(TypeError, match="Group"):
        T.equivariance_error(dist, (torch.randn(3, 3),), "SO3", ("points",))
    with pytest.raises(ValueError, match="2 actions"):
        T.equivariance_error(dist, (torch.randn(3, 3),), G.SO3(), ("points", None))
