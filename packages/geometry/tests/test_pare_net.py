"""PARE-Net blocks: exact SO(3) equivariance of the VN layers and PARE-Conv, invariance of the
Gram-Schmidt head, rotations recovered from features, equivariant hypotheses; negative controls
(the official +1e-9 normalisation, a coordinate-wise non-linearity, features that ignore the
rotation); golden values of the official ``solve_local_rotations``, ``weighted_procrustes`` and
``relative_rotation_error``.

Golden provenance: ``golden_pare_official.json`` was recorded by running the official functions
(github.com/yaorz97/PARENet @ 71baada, ``pareconv/modules/registration/procrustes.py`` and
``metrics.py``) on CPU in float64 with ``ipdb`` stubbed and ``Tensor.cuda`` patched to the
identity; the recording script is in the JSON's ``script`` field."""

import json
from pathlib import Path

import pytest
import torch

from invariance.core import groups as G
from invariance.core.testing import (
    as_float64,
    assert_equivariant,
    assert_invariant,
    assert_not_equivariant,
    assert_rejects_bad_inputs,
)
from invariance.geometry.nn.vector_neurons import VNLinearLeakyReLU
from invariance.geometry.ops import knn
from invariance.geometry.pare_net import (
    PAREConv,
    VNInvariantHead,
    feature_hypotheses,
    solve_local_rotations,
)

GOLDEN = json.loads((Path(__file__).parent / "golden_pare_official.json").read_text())


def test_golden_official_rotation_solvers_and_rre():
    from invariance.geometry.registration import rotation_error, weighted_procrustes

    t = lambda k: torch.tensor(GOLDEN[k], dtype=torch.float64)  # noqa: E731
    R, valid = solve_local_rotations(t("A"), t("B"))
    assert valid.all() and torch.allclose(R, t("R_local"), atol=1e-10)
    Rw, tw = weighted_procrustes(t("P"), t("Q"), t("w"))
    assert torch.allclose(Rw, t("R_wp"), atol=1e-10) and torch.allclose(tw, t("t_wp"), atol=1e-10)
    assert torch.allclose(rotation_error(t("R2"), t("R1")), t("rre_deg"), atol=1e-8)


def _cloud(n=64, seed=0):
    return torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _rot(seed):
    return G.SO3().sample(torch.Generator().manual_seed(seed)).double()


class _QuirkVN(VNLinearLeakyReLU):
    """The official normalisation: F.normalize(p + 1e-9) adds a constant *vector*."""

    def normalize(self, p):
        q = p + 1e-9
        return q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def test_vn_layer_is_exactly_equivariant_and_the_official_quirk_is_not():
    torch.manual_seed(0)
    x = 1e-3 * torch.randn(32, 8, 3, dtype=torch.float64)  # small vectors make the quirk visible
    layer = VNLinearLeakyReLU(8, 16).double()
    assert_equivariant(layer, (x,), G.SO3(), ("vector",), "vector", tol=1e-10)
    quirk = _QuirkVN(8, 16).double()
    quirk.load_state_dict(layer.state_dict())
    assert_not_equivariant(quirk, (x,), G.SO3(), ("vector",), "vector", min_error=1e-10)


def _conv_fn(first, res):
    def f(pos):
        idx, _ = knn(pos, 8, method="brute")
        h = first(pos, pos, idx)
        return res(pos, pos, idx, h)

    return f


def test_pare_conv_blocks_are_so3_equivariant_and_translation_invariant():
    torch.manual_seed(0)
    first = as_float64(PAREConv(0, 8)).eval()
    res = as_float64(PAREConv(8, 16, residual=True)).eval()
    pos = _cloud()
    f = _conv_fn(first, res)
    assert_equivariant(f, (pos,), G.SO3(), ("points",), "vector", tol=1e-10)
    shift = lambda g, x: x + torch.tensor([0.3, -1.0, 2.0], dtype=x.dtype)
    assert_equivariant(f, (pos,), G.SO3(), (shift,), None, tol=1e-10)
    # negative control: a coordinate-wise ReLU on the output is not equivariant
    broken = lambda p: torch.relu(f(p))
    assert_not_equivariant(broken, (pos,), G.SO3(), ("points",), "vector")


def test_invariant_head_and_its_negative_control():
    torch.manual_seed(0)
    first = as_float64(PAREConv(0, 8)).eval()
    head = as_float64(VNInvariantHead(8)).eval()
    pos = _cloud()
    idx_of = lambda p: knn(p, 8, method="brute")[0]
    inv = lambda p: head(first(p, p, idx_of(p)))
    assert_invariant(inv, (pos,), G.SO3(), ("points",), tol=1e-10)
    raw = lambda p: first(p, p, idx_of(p))  # the equivariant features themselves
    assert_not_equivariant(raw, (pos,), G.SO3(), ("points",), None)


def test_rotations_are_recovered_from_rotated_features():
    f = torch.randn(10, 6, 3, dtype=torch.float64)
    R = torch.stack([_rot(i) for i in range(10)])
    Re, valid = solve_local_rotations(f, f @ R.transpose(-1, -2))
    assert valid.all() and torch.allclose(Re, R, atol=1e-12)
    # rank-1 features do not determine a rotation: flagged
    line = (
        torch.randn(1, 1, 3, dtype=torch.float64).expand(1, 6, 3) * torch.arange(1.0, 7.0)[:, None]
    )
    _, ok = solve_local_rotations(line, line)
    assert not ok.any()


def test_hypotheses_are_equivariant_and_find_the_pose():
    g = torch.Generator().manual_seed(0)
    src = torch.randn(40, 3, generator=g, dtype=torch.float64)
    R, t = _rot(3), torch.tensor([0.2, 0.1, -0.4], dtype=torch.float64)
    ref = src @ R.T + t
    f_src = torch.randn(40, 5, 3, generator=g, dtype=torch.float64)
    f_ref = f_src @ R.T + 0.01 * torch.randn(40, 5, 3, generator=g, dtype=torch.float64)
    out = torch.rand(40, generator=g) < 0.5
    ref_noisy = ref.clone()
    ref_noisy[out] = torch.randn(int(out.sum()), 3, generator=g, dtype=torch.float64)
    res = feature_hypotheses(src, ref_noisy, f_src, f_ref, src, ref_noisy)
    assert torch.allclose(res.R, R, atol=1e-9) and torch.allclose(res.t, t, atol=1e-9)
    assert res.num_hypotheses == 40
    R1 = _rot(7)
    rot = feature_hypotheses(src @ R1.T, ref_noisy, f_src @ R1.T, f_ref, src @ R1.T, ref_noisy)
    assert torch.allclose(rot.R, res.R @ R1.T, atol=1e-9) and torch.allclose(
        rot.t, res.t, atol=1e-9
    )
    # negative control: features that ignore the source rotation propose the old rotation
    stale = feature_hypotheses(
        src @ R1.T, ref_noisy, f_src, f_ref, src @ R1.T, ref_noisy, refine_steps=0
    )
    assert not torch.allclose(stale.R, res.R @ R1.T, atol=1e-3)


def test_hypothesis_budget_scores_only_the_first_correspondences():
    g = torch.Generator().manual_seed(1)
    src = torch.randn(30, 3, generator=g, dtype=torch.float64)
    R, t = _rot(5), torch.tensor([0.3, -0.1, 0.2], dtype=torch.float64)
    ref = src @ R.T + t
    ref[:10] = torch.randn(10, 3, generator=g, dtype=torch.float64)  # the first 10 are wrong
    f_src = torch.randn(30, 4, 3, generator=g, dtype=torch.float64)
    f_ref = f_src @ R.T
    f_ref[:10] = torch.randn(10, 4, 3, generator=g, dtype=torch.float64)
    bad = feature_hypotheses(src, ref, f_src, f_ref, src, ref, max_hypotheses=10, refine_steps=0)
    good = feature_hypotheses(src, ref, f_src, f_ref, src, ref, max_hypotheses=11)
    assert bad.num_hypotheses == 10 and good.num_hypotheses == 11 and good.best == 10
    assert not torch.allclose(bad.R, R, atol=1e-3)  # control: only outlier hypotheses
    assert torch.allclose(good.R, R, atol=1e-9) and torch.allclose(good.t, t, atol=1e-9)
    assert (
        feature_hypotheses(src, ref, f_src, f_ref, src, ref, max_hypotheses=99).num_hypotheses == 30
    )
    for bad_h, err in ((0, ValueError), (2.5, TypeError), (True, TypeError)):
        with pytest.raises(err, match="max_hypotheses"):
            feature_hypotheses(src, ref, f_src, f_ref, src, ref, max_hypotheses=bad_h)


def test_bad_inputs():
    pos = _cloud(32)
    idx, _ = knn(pos, 4, method="brute")
    conv = PAREConv(0, 8).double().eval()
    assert_rejects_bad_inputs(
        conv,
        {"pos": pos, "query": pos, "idx": idx},
        name="PAREConv.forward",
        skip=("pos:fewer_dims", "pos:empty"),  # idx then points past the end: also rejected
        aliases={"query": ["idx"], "idx": ["query"]},
    )
    f = torch.randn(8, 4, 3, dtype=torch.float64)
    assert_rejects_bad_inputs(
        solve_local_rotations,
        {"f_src": f, "f_ref": f.clone()},
        name="solve_local_rotations",
        aliases={"f_src": ["f_ref"], "f_ref": ["f_src"]},
    )


# --------------------------------------------------------------------------- the PARE-lite model


def _small_net(invariant=True):
    from invariance.geometry.pare_net import PARENet

    torch.manual_seed(0)
    return as_float64(PARENet(channels=(4, 8, 16), out_channels=8, k=8, invariant=invariant)).eval()


def test_parenet_descriptors_are_se3_invariant_and_the_twin_is_not():
    from invariance.geometry.registration import make_pair

    net, twin = _small_net(), _small_net(invariant=False)
    twin.load_state_dict(net.state_dict())
    pos = make_pair(0, n_points=128, dtype=torch.float64).src
    for key in ("coarse_in", "fine", "match"):
        assert_invariant(lambda p, k=key: net.encode(p)[k], (pos,), G.SE3(), ("points",), tol=1e-8)
    for key in ("eq0", "eq0_enc"):
        assert_equivariant(lambda p, k=key: net.encode(p)[k], (pos,), G.SO3(), ("points",),
                           "vector", tol=1e-8)  # fmt: skip
    assert_not_equivariant(
        lambda p: twin.encode(p)["coarse_in"], (pos,), G.SO3(), ("points",), None
    )


def test_parenet_registration_is_equivariant():
    from invariance.geometry.registration import make_pair

    net = _small_net()
    p = make_pair(1, n_points=128, dtype=torch.float64)
    res, c = net.register(p.src, p.tgt)
    R1 = _rot(4)
    res2, c2 = net.register(p.src @ R1.T, p.tgt)
    assert torch.equal(c["src_idx"], c2["src_idx"]) and torch.equal(c["tgt_idx"], c2["tgt_idx"])
    assert torch.allclose(res2.R, res.R @ R1.T, atol=1e-8)
    assert torch.allclose(res2.t, res.t, atol=1e-8)


def test_parenet_encoder_hypotheses_are_equivariant_and_the_option_is_checked():
    from invariance.geometry.pare_net import PARENet
    from invariance.geometry.registration import make_pair

    with pytest.raises(ValueError, match="hypothesis_features"):
        PARENet(hypothesis_features="both")
    net = _small_net()
    enc = _small_net()
    enc.hypothesis_features = "encoder"
    assert (net.hypothesis_key, enc.hypothesis_key) == ("eq0", "eq0_enc")
    p = make_pair(1, n_points=128, dtype=torch.float64)
    res, c = enc.register(p.src, p.tgt)
    res_dec, c_dec = net.register(p.src, p.tgt)
    assert torch.equal(c["src_idx"], c_dec["src_idx"])  # same matches, other rotations
    R1 = _rot(4)
    res2, c2 = enc.register(p.src @ R1.T, p.tgt)
    assert torch.allclose(res2.R, res.R @ R1.T, atol=1e-8)
    assert torch.allclose(res2.t, res.t, atol=1e-8)


def test_parenet_loss_trains_every_parameter():
    from invariance.geometry.pare_net import PARENet
    from invariance.geometry.registration import make_pair

    torch.manual_seed(0)
    net = PARENet(channels=(4, 8, 16), out_channels=8, k=8)
    p = make_pair(2, n_points=128, split="full")
    out = net.loss(p.src, p.tgt, p.R, p.t)
    assert torch.isfinite(out["loss"]) and out["loss"] > 0
    out["loss"].backward()
    assert all(q.grad is not None for q in net.parameters())
