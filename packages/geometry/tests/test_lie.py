"""Group algebra of invariance.geometry.lie (float64, 1e-12) and golden values of the official
rgenn.groups functions.

Golden provenance: ``golden_lie_official.json`` was written by running the official
``rgenn.groups`` (github.com/mirceamironenco/rgenn @ df54466, MIT) on CPU in float64; the recording
script is stored in the JSON's ``script`` field. Closed-form pairs were recorded by feeding fixed
coordinates through the official sampler's steps (``hat`` -> ``hat_expm`` -> ``sqrt`` ->
``left_polar_group`` / ``right_polar_group``) instead of its random draws.
"""

import json
import math
from pathlib import Path

import pytest
import torch

from invariance.core.testing import assert_rejects_bad_inputs
from invariance.geometry import lie

F64 = torch.float64
OK_BATCH = ("g:extra_dim", "g:fewer_dims")  # leading batch dims are valid
GOLDEN = json.loads((Path(__file__).parent / "golden_lie_official.json").read_text())


def _t(x):
    return torch.tensor(x, dtype=F64)


def _rand_glplus(n, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(4 * n, 2, 2, generator=g, dtype=F64)
    flip = torch.linalg.det(a) < 0
    a[flip, :, 0] *= -1
    a = a[torch.linalg.cond(a) < 10]  # well-conditioned, so 1e-12 is a fair float64 bound
    assert a.shape[0] >= n
    return a[:n]


@pytest.mark.parametrize("group", ["gl2", "sl2"])
@pytest.mark.parametrize("rotations", ["equidistant", "uniform"])
def test_sample_pairs_closed_form_inverse(group, rotations):
    g, gi = lie.sample_pairs(
        64,
        group,
        spd_var=0.5,
        rotations=rotations,
        generator=torch.Generator().manual_seed(0),
        dtype=F64,
    )
    eye = torch.eye(2, dtype=F64)
    assert (g @ gi - eye).abs().max() < 1e-12
    assert (gi @ g - eye).abs().max() < 1e-12
    det = torch.linalg.det(g)
    assert (det > 0).all()
    if group == "sl2":
        assert (det - 1).abs().max() < 1e-12
    else:
        assert det.std() > 0.05  # GL samples really change the volume


def test_equidistant_rotations_are_the_official_linspace():
    g, _ = lie.sample_pairs(5, "sl2", spd_var=0.0, dtype=F64)
    theta = torch.atan2(g[:, 1, 0], g[:, 0, 0])
    ref = torch.linspace(-math.pi, math.pi, 5, dtype=F64)
    # -pi and pi are the same rotation (atan2 returns either sign there)
    assert torch.allclose(torch.cos(theta), torch.cos(ref), atol=1e-12)
    assert torch.allclose(torch.sin(theta), torch.sin(ref), atol=1e-12)


def test_polar_reconstruction_and_factors():
    g = _rand_glplus(200, 1)
    p, r = lie.left_polar(g)
    eye = torch.eye(2, dtype=F64)
    assert (p @ r - g).abs().max() < 1e-12
    assert (r @ r.transpose(-1, -2) - eye).abs().max() < 1e-12
    assert (torch.linalg.det(r) - 1).abs().max() < 1e-12
    assert (p - p.transpose(-1, -2)).abs().max() < 1e-12
    assert (torch.linalg.eigvalsh(p) > 0).all()
    log_p, r2 = lie.polar_log(g)
    assert (lie.spd_expm(log_p) - p).abs().max() < 1e-12
    assert (r2 - r).abs().max() < 1e-12


@pytest.mark.parametrize("group", ["gl2", "sl2"])
def test_chart_round_trip(group):
    g = _rand_glplus(200, 2)
    if group == "sl2":
        g = g / torch.linalg.det(g).sqrt()[:, None, None]
    v = lie.chart(g, group)
    assert v.shape == (200, lie.group_dim(group))
    theta = v[:, 3] if group == "gl2" else v[:, 1]
    assert ((theta >= 0) & (theta < 2 * math.pi)).all()
    assert (lie.chart_inverse(v, group) - g).abs().max() < 1e-12
    # and the other way round, away from the cut theta = 0
    assert (lie.chart(lie.chart_inverse(v, group), group) - v).abs().max() < 1e-12


def test_chart_angle_quirk_of_the_official_hat():
    """The 4th gl2 coordinate is the true angle; the official basis' hat/expm of it would rotate
    by theta/sqrt2. Our chart_inverse is the exact inverse, so a pure rotation round-trips."""
    theta = torch.tensor([0.3, 1.0, 4.0], dtype=F64)
    r = lie.rotation_matrix(theta)
    v = lie.chart(r, "gl2")
    assert torch.allclose(v[:, 3], theta, atol=1e-12)
    assert v[:, :3].abs().max() < 1e-12
    official_like = torch.linalg.matrix_exp(
        (theta / math.sqrt(2))[:, None, None] * _t([[0.0, -1.0], [1.0, 0.0]])
    )
    assert (official_like - r).abs().max() > 0.05


def test_identity_with_rounding_error_is_angle_zero_not_two_pi():
    g, gi = lie.sample_pairs(16, "sl2", spd_var=0.3, dtype=torch.float32)
    rel = gi @ g  # identity up to float32 rounding
    v = lie.chart(rel.double(), "sl2")
    assert v[:, 1].abs().max() < 1e-5


def test_c4_pairs_exact():
    g, gi = lie.c4_pairs(F64)
    assert torch.equal(g @ gi, torch.eye(2, dtype=F64).expand(4, 2, 2))
    theta = lie.chart(g, "sl2")[:, 1]
    assert torch.allclose(theta, _t([0, math.pi / 2, math.pi, 3 * math.pi / 2]), atol=1e-15)


# ----------------------------------------------------------------------------- golden (official)


def test_golden_polar_matches_official():
    gl = _t(GOLDEN["gl"])
    p, r = lie.left_polar(gl)
    assert torch.allclose(p, _t(GOLDEN["P"]), atol=1e-12)
    assert torch.allclose(r, _t(GOLDEN["R"]), atol=1e-12)
    log_p, r2 = lie.polar_log(gl)
    assert torch.allclose(log_p, _t(GOLDEN["logP"]), atol=1e-12)
    assert torch.allclose(r2, _t(GOLDEN["R_cartan"]), atol=1e-12)


def test_golden_chart_matches_official():
    assert torch.allclose(lie.chart(_t(GOLDEN["gl"]), "gl2"), _t(GOLDEN["chart_gl2"]), atol=1e-12)
    assert torch.allclose(lie.chart(_t(GOLDEN["sl"]), "sl2"), _t(GOLDEN["chart_sl2"]), atol=1e-12)


@pytest.mark.parametrize("group", ["gl2", "sl2"])
def test_golden_closed_form_pairs_match_official(group):
    g, gi = lie.pair_from_coordinates(_t(GOLDEN[f"v_{group}"]), _t(GOLDEN["theta"]), group)
    ref_g, ref_gi = (_t(x) for x in GOLDEN[f"pair_{group}"])
    assert torch.allclose(g, ref_g, atol=1e-12)
    assert torch.allclose(gi, ref_gi, atol=1e-12)


# ----------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "bad",
    [
        torch.zeros(3, 2, 2, dtype=F64),  # singular
        _t([[[1.0, 2.0], [2.0, 4.0]]]),  # singular, rank 1
        _t([[[0.0, 1.0], [1.0, 0.0]]]),  # det -1: a reflection, not in GL+
    ],
)
def test_singular_or_reflecting_matrices_are_rejected(bad):
    with pytest.raises(ValueError, match="g must be in GL"):
        lie.left_polar(bad)
    with pytest.raises(ValueError, match="g must be in GL"):
        lie.chart(bad, "gl2")


def test_sl2_chart_rejects_non_unit_determinant():
    with pytest.raises(ValueError, match="unit determinant"):
        lie.chart(2.0 * torch.eye(2, dtype=F64)[None], "sl2")


def test_sample_pairs_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n must be >= 1"):
        lie.sample_pairs(0)
    with pytest.raises(ValueError, match="group"):
        lie.sample_pairs(3, "so3")
    with pytest.raises(ValueError, match="rotations"):
        lie.sample_pairs(3, rotations="haar")
    with pytest.raises(ValueError, match="spd_var"):
        lie.sample_pairs(3, spd_var=float("nan"))


def test_lie_entry_points_reject_bad_inputs_via_harness():
    g = _rand_glplus(4, 3)
    assert_rejects_bad_inputs(
        lambda g: lie.left_polar(g), {"g": g}, name="lie.left_polar", accept=OK_BATCH
    )
    assert_rejects_bad_inputs(
        lambda g, group: lie.chart(g, group),
        {"g": g, "group": "gl2"},
        name="lie.chart",
        accept=OK_BATCH,
    )
