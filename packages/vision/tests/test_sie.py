"""SIE: golden values from the official loss, exact properties of the hypernetwork predictor and of
the relative transformations, VICReg terms, a learning test and bad inputs.

Golden values (``golden_sie.json``) were recorded by running ``src/models.py::SIE.forward`` of
https://github.com/facebookresearch/SIE (GPL-3.0) at commit
54541cfa40780aa3e502e3bbb52b30aae672b487 in a scratch venv (torch 2.14.1, CPU, gloo world size 1)
with the backbone and projectors replaced by identities; the JSON's ``provenance`` says how.
"""

import json
import math
from pathlib import Path

import pytest
import torch

from invariance.core import groups as G
from invariance.core.testing import (
    assert_equivariant,
    assert_not_invariant,
    fuzz_bad_inputs,
)
from invariance.core.train import fit_recipe
from invariance.vision.data.rot_digits import make_rot_digits, rotate_glyphs
from invariance.vision.nn.vicreg import covariance_term, variance_term, vicreg_loss
from invariance.vision.recipes.sie import SIEConfig, SIERecipe
from invariance.vision.sie import (
    SIE,
    LinearHyperPredictor,
    VICRegModel,
    relative_quaternion,
    relative_rotation_2d,
    sie_loss,
)

GOLD = json.loads((Path(__file__).parent / "golden_sie.json").read_text())


def test_sie_loss_and_predictor_match_official():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 512, generator=g) * 0.7
    y = x + 0.3 * torch.randn(16, 512, generator=g)
    z = torch.randn(16, 4, generator=g)
    pred = LinearHyperPredictor(256, 4)
    with torch.no_grad():
        w = pred.hyper.output.weight
        w.copy_(torch.randn(w.shape, generator=torch.Generator().manual_seed(1)) / 32.0)
        p = pred(x[:, 256:], z)
        t = sie_loss(x[:, :256], x[:, 256:], y[:, :256], y[:, 256:], p)
    assert abs(float(p.double().sum()) - GOLD["pred_sum"]) < 1e-3
    assert abs(float(p.double().abs().sum()) - GOLD["pred_abs"]) < 1e-3
    torch.testing.assert_close(p.flatten()[:4], torch.tensor(GOLD["pred_first"]), atol=1e-5, rtol=0)
    ref = GOLD["terms"]
    for ours, key in (
        ("inv", "repr_loss_inv"),
        ("equi", "repr_loss_equi"),
        ("var", "std_loss"),
        ("pred_var", "pred_std_loss"),
        ("cov", "cov_loss"),
        ("loss", "loss"),
    ):
        assert abs(float(t[ours]) - ref[key]) < 1e-4 * max(1.0, abs(ref[key])), key


def test_sie_predictor_is_linear_in_z_and_x_with_negative_control():
    g = torch.Generator().manual_seed(0)
    pred = LinearHyperPredictor(8, 2, generator=g).double()
    x = torch.randn(5, 8, generator=g, dtype=torch.float64)
    z1, z2 = torch.randn(2, 5, 2, generator=g, dtype=torch.float64)
    with torch.no_grad():
        lhs = pred(x, 0.3 * z1 - 1.7 * z2)
        rhs = 0.3 * pred(x, z1) - 1.7 * pred(x, z2)
        torch.testing.assert_close(lhs, rhs, atol=1e-12, rtol=0)
        assert float(pred(x, torch.zeros_like(z1)).abs().max()) == 0.0
        torch.testing.assert_close(pred(x, -z1), -pred(x, z1), atol=1e-12, rtol=0)
    s = G.Scaling(0.2, 5.0)
    assert_equivariant(pred, (x, z1), s, (None, "scale"), "scale")
    assert_equivariant(pred, (x, z1), s, ("scale", None), "scale")
    biased = LinearHyperPredictor(8, 2, theta0=True, generator=g).double()
    assert_not_invariant(biased, (x, z1), s, (None, "scale"), "scale")
    with torch.no_grad():
        assert float(biased(x, torch.zeros_like(z1)).abs().max()) > 1e-3
    # the theta0 (output bias) of the hypernetwork stays frozen in SIE's predictor
    assert not pred.hyper.output.bias.requires_grad


def test_sie_relative_rotations_compose():
    g = torch.Generator().manual_seed(0)
    t1, t2, t3 = torch.rand(3, 20, generator=g, dtype=torch.float64) * 2 * math.pi
    z12, z23, z13 = (
        relative_rotation_2d(t1, t2),
        relative_rotation_2d(t2, t3),
        relative_rotation_2d(t1, t3),
    )
    prod = torch.complex(z12[:, 0], z12[:, 1]) * torch.complex(z23[:, 0], z23[:, 1])
    torch.testing.assert_close(torch.stack([prod.real, prod.imag], -1), z13)


def test_sie_relative_quaternion_matches_scipy_and_composes():
    rot = pytest.importorskip("scipy.spatial.transform").Rotation
    g = torch.Generator().manual_seed(0)
    e1, e2, e3 = (torch.rand(3, 10, 3, generator=g, dtype=torch.float64) - 0.5) * math.pi
    q = relative_quaternion(e1, e2)
    ref = (rot.from_euler("xyz", e1.numpy()).inv() * rot.from_euler("xyz", e2.numpy())).as_quat()
    ref = torch.from_numpy(ref)
    ref = torch.where(ref[:, 3:] < 0, -ref, ref)
    torch.testing.assert_close(q, ref, atol=1e-10, rtol=0)
    assert bool((q[:, 3] >= 0).all())
    # R1^-1 R3 = (R1^-1 R2)(R2^-1 R3)
    q12, q23, q13 = q, relative_quaternion(e2, e3), relative_quaternion(e1, e3)
    r = rot.from_quat(q12.numpy()) * rot.from_quat(q23.numpy())
    comp = torch.from_numpy(r.as_quat())
    comp = torch.where(comp[:, 3:] < 0, -comp, comp)
    torch.testing.assert_close(comp, q13, atol=1e-10, rtol=0)


def test_vicreg_terms_match_their_definitions():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 6, generator=g, dtype=torch.float64) * torch.tensor([0.2, 1, 2, 0.5, 3, 1])
    xc = x - x.mean(0)
    sd = torch.sqrt(xc.var(0) + 1e-4)
    assert abs(float(variance_term(x)) - float(torch.relu(1 - sd).mean() / 2)) < 1e-12
    c = torch.cov(x.T)
    off = c - torch.diag(torch.diagonal(c))
    assert abs(float(covariance_term(x)) - float(off.pow(2).sum() / 6)) < 1e-10
    y = x + 0.1
    t = vicreg_loss(x, y, sim=25, std=25, cov=1)
    assert abs(float(t["inv"]) - 0.01) < 1e-12


def test_rot_digits_views_are_rotations_of_one_glyph():
    glyph = make_rot_digits(4, seed=0, views=2)
    assert glyph["image"].shape == (4, 2, 3, 16, 16)
    from invariance.vision.data.digit_styles import load_digit_glyphs

    g = load_digit_glyphs()[0][:3]
    a = rotate_glyphs(g, torch.zeros(3), 16)
    b = rotate_glyphs(g, torch.full((3,), math.pi / 2), 16)
    c = rotate_glyphs(g, torch.full((3,), 2 * math.pi), 16)
    torch.testing.assert_close(c, a, atol=1e-5, rtol=0)
    err = min(float((torch.rot90(a, k, (1, 2)) - b).abs().max()) for k in (1, -1))
    assert err < 1e-5
    assert float((b - a).abs().max()) > 0.1  # the rotation changes the image


def test_sie_recipe_learns_and_declares_checks():
    r = SIERecipe()
    cfg = SIEConfig(steps=60)
    model, res = fit_recipe(r, cfg, progress=False)
    h = [e["loss"] for e in res.history]
    assert all(math.isfinite(v) for v in h)
    torch.manual_seed(0)
    first = SIE(8, None, 64, 2)
    batch = r.collate([r.make_data(cfg, "train")[i] for i in range(64)])
    model.train()
    with torch.no_grad():
        before = float(first(batch["x"], batch["y"], batch["z"])["loss"])
        after = float(model(batch["x"], batch["y"], batch["z"])["loss"])
    assert after < before
    checks = r.check(model, cfg)
    assert all(c.passed for c in checks) and any(c.negative_control for c in checks)


def test_sie_config_rejects_bad_values():
    from invariance.core.recipe import ConfigError

    with pytest.raises(ConfigError, match="variant"):
        SIEConfig(variant="simclr")
    with pytest.raises(ConfigError, match="views"):
        SIEConfig(views=1)


_G = torch.Generator().manual_seed(0)
_E = {n: torch.randn(6, 4, generator=_G) for n in ("x_inv", "x_eq", "y_inv", "y_eq", "y_eq_pred")}
_IMG = torch.rand(4, 3, 16, 16, generator=_G)

#: bad-input cases (collected by the package summary in test_vision_bad_inputs.py)
ENTRY_POINTS = {
    "LinearHyperPredictor.forward": (
        LinearHyperPredictor(4, 2, generator=_G),
        {"x": torch.randn(3, 4, generator=_G), "z": torch.randn(3, 2, generator=_G)},
        {},
    ),
    "sie_loss": (sie_loss, {**_E, "sim": 10.0, "equi_factor": 0.45}, {}),
    "vicreg_loss": (
        vicreg_loss,
        {"x": torch.randn(6, 4, generator=_G), "y": torch.randn(6, 4, generator=_G)},
        {},
    ),
    "make_rot_digits": (make_rot_digits, {"n": 3, "seed": 0, "views": 2, "size": 8}, {}),
    "relative_rotation_2d": (
        relative_rotation_2d,
        {"theta1": torch.rand(3, generator=_G), "theta2": torch.rand(3, generator=_G)},
        {},
    ),
    "relative_quaternion": (
        relative_quaternion,
        {"euler1": torch.rand(3, 3, generator=_G), "euler2": torch.rand(3, 3, generator=_G)},
        {},
    ),
    "SIE.forward": (
        SIE(4, None, 16, 2).eval(),
        {"x": _IMG, "y": _IMG.flip(-1), "z": torch.randn(4, 2, generator=_G)},
        {},
    ),
    "VICRegModel.forward": (VICRegModel(4, 16).eval(), {"x": _IMG, "y": _IMG.flip(-1)}, {}),
}


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_sie_bad_inputs(name):
    fn, kwargs, kw = ENTRY_POINTS[name]
    rep = fuzz_bad_inputs(fn, kwargs, name=name, **kw)
    assert rep.tried > 0 and rep.ok, "\n".join(rep.failures)


@pytest.mark.parametrize("quick", [True, False])
def test_sie_reproduce_seeds_presets_and_verdict(monkeypatch, quick):
    import invariance.core.train as core_train
    from invariance.core import make_config

    calls = []

    def fake(recipe, cfg, arms, seeds, run=None, split="test"):
        calls.append(cfg)
        m = {
            "r2_inv": 0.1,
            "r2_eq": 0.8,
            "r2_all": 0.75,
            "acc_inv": 0.6,
            "acc_eq": 0.5,
            "acc_all": 0.7,
            "shift_inv": 0.4,
            "shift_eq": 0.9,
            "shift_all": 0.7,
        }
        return {
            "sie": [{**m, "r2_eq": 0.8 + 0.01 * s} for s in seeds],
            "vicreg": [{"r2_all": 0.01 * s, "acc_all": 0.7, "shift_all": 0.3} for s in seeds],
        }

    monkeypatch.setattr(core_train, "train_arms", fake)
    r = SIERecipe()
    res = r.reproduce(make_config(r), None, quick=quick)
    assert res.seeds == [0, 1, 2] and len(res.method_values) == 3
    preset = SIERecipe.presets["quick" if quick else "full"]
    assert all(getattr(calls[0], k) == v for k, v in preset.items())
    assert res.verdict == "wins" and res.invariance_error is not None
