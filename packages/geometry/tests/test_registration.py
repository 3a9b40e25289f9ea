"""The registration toolkit: pair generator ground truth, Procrustes (parity with roma), RANSAC,
log-domain optimal transport with a dustbin, metrics, PPF parity with PyG, bad inputs."""

import math

import pytest
import torch

from invariance.core import groups as G
from invariance.core.testing import assert_equivariant, assert_rejects_bad_inputs, with_package
from invariance.geometry.ops import point_pair_features
from invariance.geometry.registration import (
    Thresholds,
    inlier_ratio,
    log_optimal_transport,
    make_pair,
    random_assembly,
    ransac,
    registration_metrics,
    rotation_error,
    summarize,
    weighted_procrustes,
)
from invariance.geometry.registration.pairs import Primitive


def _rot(seed):
    return G.SO3().sample(torch.Generator().manual_seed(seed)).double()


# --------------------------------------------------------------------------- pairs


@pytest.mark.parametrize(
    "kind, size",
    [
        ("ellipsoid", (0.5, 0.3, 0.2)),
        ("box", (0.4, 0.2, 0.3)),
        ("cylinder", (0.25, 0.4)),
        ("torus", (0.4, 0.1)),
    ],
)
def test_primitives_have_exact_surfaces_and_normals(kind, size):
    prim = Primitive(
        kind, size, torch.eye(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    )
    p, n = prim.sample(500, torch.Generator().manual_seed(0))
    assert torch.allclose(n.norm(dim=-1), torch.ones(500, dtype=torch.float64), atol=1e-12)
    if kind == "ellipsoid":
        a = torch.tensor(size, dtype=torch.float64)
        assert torch.allclose(((p / a) ** 2).sum(-1), torch.ones(500, dtype=torch.float64))
        grad = p / a**2
        assert torch.allclose(n, grad / grad.norm(dim=-1, keepdim=True), atol=1e-12)
    if kind == "torus":
        big, small = size
        ring = (p[:, :2].norm(dim=-1) - big) ** 2 + p[:, 2] ** 2
        assert torch.allclose(ring, torch.full_like(ring, small**2), atol=1e-12)
        # the normal points from the tube's centre circle to the point
        c = p.clone()
        c[:, 2] = 0
        c = big * c / c.norm(dim=-1, keepdim=True)
        assert torch.allclose(n, (p - c) / small, atol=1e-10)
    if kind == "box":
        half = torch.tensor(size, dtype=torch.float64)
        on_face = ((p.abs() - half).abs() < 1e-12) & (n.abs() == 1)
        assert on_face.any(-1).all()


def test_assembly_is_normalised_and_seeded():
    a1 = random_assembly(torch.Generator().manual_seed(3))
    a2 = random_assembly(torch.Generator().manual_seed(3))
    p1, _ = a1.sample(2000, torch.Generator().manual_seed(0))
    p2, _ = a2.sample(2000, torch.Generator().manual_seed(0))
    assert torch.equal(p1, p2) and 3 <= len(a1.parts) <= 5
    r = p1.norm(dim=-1).max()
    assert 0.9 < float(r) <= 1.05


@pytest.mark.parametrize(
    "split, lo, hi", [("full", 1.0, 1.0), ("normal", 0.3, 1.0), ("low", 0.1, 0.3)]
)
def test_pairs_have_consistent_ground_truth(split, lo, hi):
    p = make_pair(7, n_points=256, split=split, noise=0.0, dtype=torch.float64)
    assert lo <= p.overlap <= hi
    moved = p.src @ p.R.T + p.t
    # the overlap (exact region test) and the nearest-neighbour view agree up to sampling
    d = torch.cdist(moved, p.tgt).min(dim=1).values
    assert abs(float((d < 0.05).double().mean()) - p.meta["overlap_nn"]) < 1e-9
    # normals travel with the points: close points on the overlap have aligned normals
    near = d < 0.03
    if near.sum() > 5:
        j = torch.cdist(moved, p.tgt).argmin(dim=1)
        cos = ((p.src_normals @ p.R.T) * p.tgt_normals[j]).sum(-1)[near]
        assert float(cos.median()) > 0.9
    assert torch.allclose(p.R @ p.R.T, torch.eye(3, dtype=torch.float64), atol=1e-12)
    assert float(torch.linalg.det(p.R)) == pytest.approx(1.0)


def test_pairs_are_seeded_and_fragments_share_no_point():
    a, b = make_pair(1, n_points=128), make_pair(1, n_points=128)
    assert torch.equal(a.src, b.src) and torch.equal(a.R, b.R)
    assert not torch.equal(a.src, make_pair(2, n_points=128).src)
    moved = a.src.double() @ a.R.double().T + a.t.double()
    assert float(torch.cdist(moved, a.tgt.double()).min()) > 0


@with_package("pyvista")
def test_pairs_from_a_real_mesh():
    p = make_pair(0, n_points=256, split="normal", source="ant")
    assert p.src.shape == (256, 3) and 0.3 <= p.overlap <= 1.0


# --------------------------------------------------------------------------- solvers


def test_procrustes_recovers_the_motion_and_is_a_proper_rotation():
    g = torch.Generator().manual_seed(0)
    src = torch.randn(4, 50, 3, generator=g, dtype=torch.float64)
    R = torch.stack([_rot(i) for i in range(4)])
    t = torch.randn(4, 3, generator=g, dtype=torch.float64)
    tgt = src @ R.transpose(-1, -2) + t[:, None]
    Re, te = weighted_procrustes(src, tgt)
    assert torch.allclose(Re, R, atol=1e-12) and torch.allclose(te, t, atol=1e-12)
    # outliers with zero weight do not matter
    bad = tgt.clone()
    bad[:, :10] += 5
    w = torch.ones(4, 50, dtype=torch.float64)
    w[:, :10] = 0
    Rw, _ = weighted_procrustes(src, bad, w)
    assert torch.allclose(Rw, R, atol=1e-12)
    # a mirrored target: the best *rotation*, never a reflection
    Rm, _ = weighted_procrustes(
        src[0], src[0] * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
    )
    assert float(torch.linalg.det(Rm)) == pytest.approx(1.0)


@with_package("roma")
def test_procrustes_matches_roma():
    import roma

    g = torch.Generator().manual_seed(1)
    src = torch.randn(3, 40, 3, generator=g, dtype=torch.float64)
    tgt = src @ _rot(5).T + 0.3 + 0.05 * torch.randn(3, 40, 3, generator=g, dtype=torch.float64)
    w = torch.rand(3, 40, generator=g, dtype=torch.float64)
    R, t = weighted_procrustes(src, tgt, w)
    Rr, tr = roma.rigid_points_registration(src, tgt, weights=w)
    assert torch.allclose(R, Rr, atol=1e-10) and torch.allclose(t, tr, atol=1e-10)


def test_procrustes_rejects_degenerate_and_bad_input():
    line = torch.linspace(0, 1, 10, dtype=torch.float64)[:, None] * torch.tensor([[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="collinear"):
        weighted_procrustes(line, line + 1)
    src = torch.randn(20, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="weights"):
        weighted_procrustes(src, src, torch.zeros(20, dtype=torch.float64))
    assert_rejects_bad_inputs(
        weighted_procrustes,
        {"src": src, "tgt": src @ _rot(0).T, "weights": torch.rand(20, dtype=torch.float64)},
        name="weighted_procrustes",
        accept=("src:extra_dim",),  # a batch of one problem
        skip=("tgt:extra_dim", "weights:extra_dim"),  # one batched arg alone is a shape mismatch
        aliases={"src": ["tgt"], "tgt": ["src"]},
    )


def test_ransac_finds_the_pose_through_outliers_and_is_equivariant():
    g = torch.Generator().manual_seed(0)
    src = torch.randn(300, 3, generator=g, dtype=torch.float64)
    R, t = _rot(2), torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    tgt = src @ R.T + t + 0.005 * torch.randn(300, 3, generator=g, dtype=torch.float64)
    out = torch.rand(300, generator=g) < 0.7  # 70 % outliers
    tgt[out] = 3 * torch.randn(int(out.sum()), 3, generator=g, dtype=torch.float64)
    res = ransac(
        src, tgt, threshold=0.05, iterations=500, generator=torch.Generator().manual_seed(0)
    )
    assert float(rotation_error(res.R, R)) < 1.0 and float((res.t - t).norm()) < 0.02
    assert res.num_hypotheses == 500 and (res.inliers == ~out).float().mean() > 0.97
    # rotating the two clouds rotates the estimate (same samples, same decisions)
    R1, R2 = _rot(10), _rot(11)
    res2 = ransac(
        src @ R1.T, tgt @ R2.T, iterations=500, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(res2.inliers, res.inliers)
    assert torch.allclose(res2.R, R2 @ res.R @ R1.T, atol=1e-9)


def test_ransac_bad_input():
    src = torch.randn(40, 3)
    assert_rejects_bad_inputs(
        ransac,
        {"src": src, "tgt": src + 0.1, "threshold": 0.05, "iterations": 10},
        name="ransac",
        aliases={"src": ["tgt"], "tgt": ["src"]},
    )


def test_optimal_transport_marginals_dustbin_and_permutation_equivariance():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 5, 7, generator=g, dtype=torch.float64)
    Z = log_optimal_transport(s, torch.tensor(1.0, dtype=torch.float64), iters=200)
    P = Z.exp()
    assert Z.shape == (2, 6, 8)
    assert torch.allclose(P[:, :5].sum(-1), torch.ones(2, 5, dtype=torch.float64), atol=1e-8)
    assert torch.allclose(P[:, :, :7].sum(-2), torch.ones(2, 7, dtype=torch.float64), atol=1e-8)
    assert torch.allclose(P[:, 5].sum(-1), torch.full((2,), 7.0, dtype=torch.float64), atol=1e-6)
    # a strong diagonal is matched, a hopeless row goes to the dustbin
    sc = torch.full((4, 4), -5.0, dtype=torch.float64) + 15 * torch.eye(4, dtype=torch.float64)
    sc[3] = -20
    A = log_optimal_transport(sc, 1.0).exp()
    assert A[:3, :4].argmax(-1).tolist() == [0, 1, 2] and int(A[3].argmax()) == 4
    f = lambda x: log_optimal_transport(x, 1.0, iters=50)[:-1, :-1]
    assert_equivariant(f, (s[0],), G.Permutation(dim=0), ("nodes",), "nodes")
    with pytest.raises(ValueError, match="scores"):
        log_optimal_transport(torch.full((3, 3), float("nan")), 1.0)
    with pytest.raises(ValueError, match="iters"):
        log_optimal_transport(s, 1.0, iters=0)


@with_package("ot")
def test_optimal_transport_masks_leave_padded_slots_out():
    g = torch.Generator().manual_seed(3)
    s = torch.randn(2, 5, 6, generator=g, dtype=torch.float64)
    rm = torch.tensor([[True, True, False, True, False], [True] * 5])
    cm = torch.tensor([[True, False, True, True, True, False], [True] * 5 + [False]])
    Z = log_optimal_transport(s, 0.5, 30, row_mask=rm, col_mask=cm)
    for b in range(2):  # = the transport of the valid sub-matrix alone (dustbins kept)
        r = torch.cat([rm[b].nonzero().flatten(), torch.tensor([5])])
        c = torch.cat([cm[b].nonzero().flatten(), torch.tensor([6])])
        sub = log_optimal_transport(s[b][rm[b]][:, cm[b]], 0.5, 30)
        assert torch.allclose(Z[b][r][:, c], sub, atol=1e-10)
        assert (Z[b][:-1][~rm[b]] < -1e5).all() and (Z[b][:, :-1][:, ~cm[b]] < -1e5).all()
    # negative control: without masks the padded slots take mass
    assert not torch.allclose(log_optimal_transport(s, 0.5, 30)[0][:2, :1], Z[0][:2, :1])
    with pytest.raises(TypeError, match="row_mask"):
        log_optimal_transport(s, 0.5, 3, row_mask=rm.float())
    with pytest.raises(ValueError, match="col_mask"):
        log_optimal_transport(s, 0.5, 3, col_mask=cm[:, :3])


@with_package("ot")
def test_optimal_transport_matches_pot_sinkhorn_log():
    """Parity with POT's ``ot.bregman.sinkhorn_log`` (POT, the field's OT library, run live) on
    the dustbin-augmented problem: cost = -scores, reg = 1, marginals 1/(m+n) for real rows and
    columns, n/(m+n) and m/(m+n) for the dustbins; our plan is rescaled by (m+n)."""
    import warnings

    import ot

    g = torch.Generator().manual_seed(3)
    m, n, alpha, iters = 5, 7, 0.7, 30
    s = torch.randn(m, n, generator=g, dtype=torch.float64)
    aug = torch.full((m + 1, n + 1), alpha, dtype=torch.float64)
    aug[:m, :n] = s
    norm = 1.0 / (m + n)
    mu = torch.cat([torch.full((m,), norm), torch.tensor([n * norm])]).double()
    nu = torch.cat([torch.full((n,), norm), torch.tensor([m * norm])]).double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = ot.bregman.sinkhorn_log(mu, nu, -aug, reg=1.0, numItermax=iters, stopThr=0.0)
    ours = log_optimal_transport(s, alpha, iters)
    assert torch.allclose(ours, plan.log() - math.log(norm), atol=1e-10)


# --------------------------------------------------------------------------- metrics, PPF


def test_metrics_on_known_errors():
    axis = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    a = math.radians(30)
    Rz = torch.tensor(
        [[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]],
        dtype=torch.float64,
    )
    eye = torch.eye(3, dtype=torch.float64)
    assert float(rotation_error(Rz, eye)) == pytest.approx(30.0, abs=1e-9)
    assert float(rotation_error(eye, eye)) == 0.0
    src = torch.randn(100, 3, dtype=torch.float64)
    zero = torch.zeros(3, dtype=torch.float64)
    m = registration_metrics(src, eye, 0.01 * axis, eye, zero, src_corr=src, tgt_corr=src)
    assert (
        m["rmse"] == pytest.approx(0.01)
        and m["registered"] == 1.0
        and m["rte"] == pytest.approx(0.01)
    )
    assert m["ir"] == 1.0 and m["fmr"] == 1.0
    m2 = registration_metrics(src, Rz, zero, eye, zero)
    assert m2["registered"] == 0.0 and m2["rre_rte_ok"] == 0.0
    assert float(inlier_ratio(src, src + 1.0, eye, zero, Thresholds().tau1)) == 0.0
    s = summarize([m, m2])
    assert s["rr"] == 0.5 and s["pairs"] == 2.0


@with_package("torch_geometric")
def test_ppf_matches_pyg():
    from torch_geometric.nn.conv.ppf_conv import point_pair_features as pyg_ppf

    g = torch.Generator().manual_seed(0)
    pi, pj = torch.randn(2, 200, 3, generator=g, dtype=torch.float64)
    ni, nj = torch.nn.functional.normalize(
        torch.randn(2, 200, 3, generator=g, dtype=torch.float64), dim=-1
    )
    assert torch.allclose(point_pair_features(pi, pj, ni, nj), pyg_ppf(pi, pj, ni, nj), atol=1e-12)


def test_make_pair_bad_input():
    assert_rejects_bad_inputs(
        make_pair,
        {"seed": 0, "n_points": 64, "split": "low", "rotation": "so3", "noise": 0.01},
        name="make_pair",
    )


@with_package("open3d")
def test_fpfh_ransac_baseline_registers_a_full_overlap_pair():
    from invariance.geometry.registration.fpfh import fpfh_features, fpfh_ransac

    p = make_pair(100, n_points=1024, split="full")
    r = fpfh_ransac(p.src, p.tgt, iterations=20_000)
    m = registration_metrics(p.src, r.R, r.t, p.R, p.t)
    assert m["registered"] == 1.0, m
    assert fpfh_features(p.src).shape == (1024, 33)
    with pytest.raises(ValueError, match="src"):
        fpfh_ransac(torch.full((10, 3), float("nan")), p.tgt)
