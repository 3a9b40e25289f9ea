"""RoITr-lite: SE(3)-invariant descriptors (float64), unchanged correspondences and an equivariant
pose when the clouds move, every parameter trained by the loss; the same network on raw
coordinates is the negative control; golden values of the official pure-torch pieces.

Golden provenance: ``golden_roitr_official.json`` was recorded by running the official RoITr
functions (github.com/haoyu94/RoITr @ 393539d, MIT) on CPU in float64 (scratch venv, torch
2.14.1): ``lib/utils.py`` ``calc_ppf_gpu`` and ``point_to_node_partition``,
``model/transformer/positional_encoding.py`` ``GeometricStructureEmbedding``,
``model/modules.py`` ``LearnableLogOptimalTransport`` and ``lib/loss.py`` ``weighted_circle_loss``
(with the ``CoarseMatchingLoss`` masks), with the CUDA ``pointops`` extension and open3d stubbed
(none of these functions uses them) and ``Tensor.cuda`` patched to the identity; the script is
the JSON's ``script`` field. The official embedding frequencies and the transport marginals are
computed in float32 (``.float()``), hence the 1e-7 tolerance there; PPF, circle loss and the
partition agree to float64 precision."""

import json
from pathlib import Path

import torch

from invariance.core import groups as G
from invariance.core.testing import (
    as_float64,
    assert_invariant,
    assert_not_invariant,
    assert_rejects_bad_inputs,
)
from invariance.geometry.registration import make_pair
from invariance.geometry.registration.matching import circle_loss, point_to_node
from invariance.geometry.registration.solvers import log_optimal_transport
from invariance.geometry.registration.transformer import GeometricStructureEmbedding
from invariance.geometry.roitr import RoITr, orient_normals, ppf

GOLDEN = json.loads((Path(__file__).parent / "golden_roitr_official.json").read_text())


def _t(x):
    return torch.tensor(x, dtype=torch.float64)


def test_golden_official_ppf_structure_embedding_transport_circle_loss_partition():
    g = GOLDEN["ppf"]
    pp, pn = _t(g["patches"]), _t(g["patch_normals"])
    p, n = _t(g["points"])[:, None].expand_as(pp), _t(g["normals"])[:, None].expand_as(pn)
    assert torch.allclose(ppf(p, pp, n, pn), _t(g["out"]), atol=1e-12)
    g = GOLDEN["gse"]
    gse = GeometricStructureEmbedding(8, sigma_d=0.2, sigma_a=15.0, angle_k=3).double()
    gse.load_state_dict({k: _t(v) for k, v in g["state"].items()})
    with torch.no_grad():
        assert torch.allclose(gse(_t(g["points"])), _t(g["out"]), atol=1e-7)
    g = GOLDEN["ot"]
    z = log_optimal_transport(_t(g["scores"]), g["alpha"], g["iters"])
    assert torch.allclose(z, _t(g["out"]), atol=1e-7)
    rm, cm = torch.tensor(g["row_masks"]), torch.tensor(g["col_masks"])
    zm = log_optimal_transport(_t(g["scores"]), g["alpha"], g["iters"], row_mask=rm, col_mask=cm)
    valid = (
        torch.cat([rm, torch.ones(2, 1, dtype=torch.bool)], 1)[:, :, None]
        & torch.cat([cm, torch.ones(2, 1, dtype=torch.bool)], 1)[:, None, :]
    )
    assert torch.allclose(zm[valid], _t(g["out_masked"])[valid], atol=1e-7)
    g = GOLDEN["circle"]
    loss = circle_loss(_t(g["fx"]), _t(g["fy"]), _t(g["overlap"]))
    assert abs(float(loss) - g["out"]) < 1e-12
    g = GOLDEN["p2n"]
    idx, mask = point_to_node(_t(g["points"]), _t(g["nodes"]), g["k"])
    ref_mask = torch.tensor(g["mask"])
    assert torch.equal(mask, ref_mask)
    assert torch.equal(idx[mask], torch.tensor(g["idx"])[ref_mask])


def _net(**kw):
    torch.manual_seed(0)
    return as_float64(RoITr(widths=(16, 24, 32), coarse_dim=32, fine_dim=32, **kw)).eval()


def _pair(seed=0, n=192):
    return make_pair(seed, n_points=n, dtype=torch.float64)


def test_descriptors_are_se3_invariant_and_the_raw_coordinate_twin_is_not():
    net, twin = _net(), _net(use_ppf=False)
    p = _pair()
    fine = lambda x, n: net.encode(x, n)["fine"]
    assert_invariant(fine, (p.src, p.src_normals), G.SE3(), ("points", "vector"), tol=1e-9)
    coarse = lambda x, n: net(x, n, p.tgt, p.tgt_normals)["src"]["coarse"]
    assert_invariant(coarse, (p.src, p.src_normals), G.SE3(), ("points", "vector"), tol=1e-9)
    raw = lambda x, n: twin.encode(x, n)["fine"]
    assert_not_invariant(raw, (p.src, p.src_normals), G.SO3(), ("points", "vector"))


def test_correspondences_unchanged_and_pose_equivariant_under_rotation():
    net = _net()
    p = _pair(1)
    si, ti, conf = net.match(net(p.src, p.src_normals, p.tgt, p.tgt_normals))
    R1 = G.SO3().sample(torch.Generator().manual_seed(5)).double()
    R2 = G.SO3().sample(torch.Generator().manual_seed(6)).double()
    moved = net(p.src @ R1.T + 1.0, p.src_normals @ R1.T, p.tgt @ R2.T, p.tgt_normals @ R2.T)
    si2, ti2, conf2 = net.match(moved)
    assert si.numel() > 0
    assert torch.equal(si, si2) and torch.equal(ti, ti2)
    assert torch.allclose(conf, conf2, atol=1e-9)
    # the pose then comes from RANSAC on the same correspondences, which is equivariant
    # (tests/test_registration.py::test_ransac_finds_the_pose_through_outliers_and_is_equivariant)


def test_loss_reaches_every_parameter_and_normals_orientation_rule():
    torch.manual_seed(0)
    net = RoITr(widths=(16, 24, 32), coarse_dim=32, fine_dim=32)
    p = make_pair(2, n_points=192)
    out = net.loss(p.src, p.src_normals, p.tgt, p.tgt_normals, p.R, p.t)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert all(q.grad is not None for q in net.parameters())
    flipped = orient_normals(p.src, -p.src_normals)
    R = G.SO3().sample(torch.Generator().manual_seed(1)).float()
    moved = orient_normals(p.src @ R.T + 3.0, -p.src_normals @ R.T)
    assert torch.allclose(moved, flipped @ R.T, atol=1e-6)


def test_ppf_is_the_scaled_point_pair_feature():
    g = torch.Generator().manual_seed(0)
    pi, pj = torch.randn(2, 10, 3, generator=g, dtype=torch.float64)
    ni = torch.nn.functional.normalize(torch.randn(10, 3, generator=g, dtype=torch.float64), dim=-1)
    f = ppf(pi, pj, ni, ni)
    assert f.shape == (10, 4) and (f[:, 1:] <= 1).all() and (f[:, 3].abs() < 1e-12).all()


def test_bad_inputs():
    net = _net()
    p = _pair(3)
    assert_rejects_bad_inputs(
        net.encode, {"pos": p.src, "normals": p.src_normals}, name="RoITr.encode",
        aliases={"pos": ["normals"], "normals": ["pos"]},
    )  # fmt: skip
