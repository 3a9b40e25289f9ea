import pytest
import torch

from invariance.core.recipe import make_config
from invariance.core.testing import fuzz_bad_inputs
from invariance.vision.data.lightbox import make_lightbox
from invariance.vision.prelude import (
    ConvLSTMCell,
    DepthUNet,
    PredNet,
    PreludeNet,
    prediction_error_loss,
)
from invariance.vision.recipes.preludenet import PreludeNetRecipe, depth_metrics


def test_error_units_are_nonnegative_and_vanish_for_a_perfect_prediction():
    torch.manual_seed(0)
    net = PredNet((3, 4, 8))
    out = net(torch.rand(2, 3, 3, 16, 16))
    for e_t in out["errors"]:
        for e in e_t:
            assert (e >= 0).all()
    # E = [relu(A - Ahat), relu(Ahat - A)] is zero iff Ahat == A
    a = torch.rand(2, 3, 8, 8)
    e = torch.cat([torch.relu(a - a), torch.relu(a - a)], 1)
    assert e.abs().max() == 0


def test_first_frame_does_not_enter_the_loss_and_layer_weights_act():
    torch.manual_seed(0)
    errs = [[torch.rand(2, 6, 8, 8), torch.rand(2, 8, 4, 4)] for _ in range(3)]
    base = prediction_error_loss(errs, (1.0, 0.0))
    errs[0][0] = errs[0][0] * 100
    assert prediction_error_loss(errs, (1.0, 0.0)) == base
    assert prediction_error_loss(errs, (1.0, 0.1)) > base
    zero = [[torch.zeros(2, 6, 8, 8), torch.zeros(2, 8, 4, 4)] for _ in range(3)]
    assert prediction_error_loss(zero, (1.0, 0.1)) == 0


def test_causality_exact():
    torch.manual_seed(0)
    net = PreludeNet((3, 4, 8), (4, 4, 8)).double()
    x = torch.rand(1, 5, 3, 16, 16, dtype=torch.float64)
    y = x.clone()
    y[:, 3:] = torch.rand(1, 2, 3, 16, 16, dtype=torch.float64)
    a, b = net(x), net(y)
    assert torch.equal(a["depth"][:, :3], b["depth"][:, :3])
    assert torch.equal(a["prediction"][:, :4], b["prediction"][:, :4])  # prediction of t uses < t
    assert (a["depth"][:, 3:] - b["depth"][:, 3:]).abs().max() > 1e-6


def test_fast_paths_are_the_same_function():
    # no state == zero state (the gate conv skips the zero h half), exactly
    torch.manual_seed(0)
    cell = ConvLSTMCell(5, 4).double()
    x = torch.randn(2, 5, 8, 8, dtype=torch.float64) * 3
    z = torch.zeros(2, 4, 8, 8, dtype=torch.float64)
    for a, b in zip(cell(x, None), cell(x, (z, z))):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # channels-last frames == contiguous frames
    net = PreludeNet((3, 4, 8), (4, 4, 8)).double()
    x = torch.rand(2, 3, 3, 16, 16, dtype=torch.float64)
    a = net(x)["depth"]
    net.encoder.channels_last = False
    torch.testing.assert_close(net(x)["depth"], a, rtol=1e-12, atol=1e-12)


def test_hybrid_mode_keeps_the_depth_gradient_out_of_the_encoder():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 3, 16, 16)
    for mode, reaches in (("hybrid", False), ("supervised", True)):
        net = PreludeNet((3, 4, 8), (4, 4, 8), mode=mode)
        net(x)["depth"].sum().backward()
        g = sum(float(p.grad.abs().sum()) for p in net.encoder.parameters() if p.grad is not None)
        assert (g > 0) == reaches, mode
        assert all(p.grad is not None for p in net.dec.parameters())


def test_lightbox_lighting_changes_images_not_depth_and_shadows_only_darken():
    a = make_lightbox(2, frames=3, size=16, lighting="bright", seed=4)
    b = make_lightbox(2, frames=3, size=16, lighting="dim", seed=4)
    assert torch.equal(a["depth"], b["depth"]) and torch.equal(a["mask"], b["mask"])
    assert (a["images"] - b["images"]).abs().max() > 0.1
    from invariance.vision.render import Scene, look_at, render

    sc = Scene.from_primitives(
        [
            [
                dict(kind="box", center=(0, -1, 0), scale=(3, 0.05, 3)),
                dict(kind="sphere", center=(0, 0, 0), scale=(0.5, 0.5, 0.5)),
            ]
        ]
    )
    cam = look_at(torch.tensor([20.0]), torch.tensor([30.0]), distance=4.0)
    sh = render(sc, cam, size=24, light=(0.5, 1, 0.2), shadows=True)["rgb"]
    no = render(sc, cam, size=24, light=(0.5, 1, 0.2), shadows=False)["rgb"]
    assert (sh <= no + 1e-7).all() and (no - sh).max() > 0.05
    # without shadows the lit term is linear in the light intensity
    r1 = render(sc, cam, size=24, shadows=False, ambient=0.0, intensity=0.4)["rgb"]
    r2 = render(sc, cam, size=24, shadows=False, ambient=0.0, intensity=0.8)["rgb"]
    m = render(sc, cam, size=24)["mask"].expand_as(r1) > 0
    torch.testing.assert_close(r2[m], 2 * r1[m])


def test_learning_reduces_depth_error():
    from invariance.core.train import evaluate, fit_recipe

    cfg = make_config(
        PreludeNetRecipe, steps=40, n_train=16, n_test=8, frames=3, image_size=16, width=8
    )
    r = PreludeNetRecipe()
    torch.manual_seed(0)
    untrained = r.build(cfg)
    before = r.metrics(untrained, r.make_data(cfg, "train"))["abs_rel"]
    model, _ = fit_recipe(r, cfg, progress=False)
    after = evaluate(r, model, cfg, "train")["abs_rel"]
    assert after < 0.7 * before, (before, after)


def test_depth_metrics_and_bad_inputs():
    d = torch.full((1, 1, 4, 4), 2.0)
    m = torch.ones_like(d)
    assert depth_metrics(d, d, m) == {"abs_rel": 0.0, "rmse": 0.0}
    assert depth_metrics(d * 1.5, d, m)["abs_rel"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="divisible"):
        PredNet((3, 4, 8))(torch.rand(1, 2, 3, 10, 10))
    with pytest.raises(ValueError, match="mode"):
        PreludeNet(mode="x")
    with pytest.raises(ValueError, match="lighting"):
        make_lightbox(1, lighting="night")
    with pytest.raises(ValueError, match="errors"):
        prediction_error_loss([[torch.zeros(1)]], (1.0,))
    with pytest.raises(ValueError, match="image_size"):
        make_config(PreludeNetRecipe, image_size=30)


_DEPTH = 1 + torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))

#: bad-input cases (collected by the package summary in test_vision_bad_inputs.py)
ENTRY_POINTS = {
    "PredNet.forward": (PredNet((3, 4)), {"x": torch.rand(1, 2, 3, 8, 8)}, {}),
    "PreludeNet.forward": (
        PreludeNet((3, 4), (4, 4)),
        {"x": torch.rand(1, 2, 3, 8, 8)},
        {},
    ),
    "DepthUNet.forward": (
        DepthUNet(4),
        {"x": torch.rand(2, 3, 8, 8)},
        {"accept": ("x:extra_dim",)},
    ),
    "make_lightbox": (
        make_lightbox,
        {"n_clips": 1, "frames": 2, "size": 8, "seed": 0},
        {"skip": ("seed:negative",)},  # any int seeds the generator
    ),
    "depth_metrics": (
        depth_metrics,
        {"pred": _DEPTH * 1.1, "depth": _DEPTH, "mask": torch.ones(2, 1, 8, 8)},
        {},
    ),
}


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_preludenet_bad_inputs(name):
    fn, kwargs, kw = ENTRY_POINTS[name]
    rep = fuzz_bad_inputs(fn, kwargs, name=name, **kw)
    assert rep.tried > 0 and rep.ok, "\n".join(rep.failures)
