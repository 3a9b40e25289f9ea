import json
import math
from pathlib import Path

import pytest
import torch

from invariance.core import groups as G
from invariance.core import make_config
from invariance.core.testing import assert_equivariant, assert_invariant, assert_not_invariant
from invariance.vision import GalaxyNet, GalaxyZooOutput, PlainGalaxyCNN, galaxy_views
from invariance.vision.data.galaxies import QUESTION_SLICES, make_galaxies, simulate_votes
from invariance.vision.recipes.galaxy import GalaxyMeanRecipe, GalaxyNetRecipe, _part_permutation

GOLDEN = json.loads((Path(__file__).parent / "golden_galaxy.json").read_text())


def _tree_residuals(v):
    s = lambda q: v[:, QUESTION_SLICES[q]].sum(1)
    return torch.stack(
        [
            s(0) - 1,
            s(5) - 1,
            s(1) - v[:, 1],
            s(2) - v[:, 4],
            s(3) - v[:, 4],
            s(4) - v[:, 4],
            s(6) - v[:, 0],
            s(7) - v[:, 13],
            s(8) - v[:, 3],
            s(9) - v[:, 7],
            s(10) - v[:, 7],
        ]
    )


def _small_net(merge, **kw):
    return GalaxyNet(
        view_size=45,
        part_size=37,
        width=0.125,
        hidden=16,
        merge=merge,
        init="kaiming",
        dropout=0.0,
        **kw,
    )


def test_galaxy_parts_permute_under_d4():
    x = torch.rand(2, 3, 21, 21, dtype=torch.float64)
    p = galaxy_views(x, view_size=21, part_size=15).reshape(16, 2, -1)
    for k, f in G.D4_ELEMENTS:
        q = galaxy_views(G.d4_act(x, k, f), view_size=21, part_size=15).reshape(16, 2, -1)
        perm = _part_permutation(k, f, True, True)
        assert sorted(perm) == list(range(16))
        assert (q - p[perm]).abs().max() < 1e-12
    # the rotation half of the permutation for the plain representation (spec: [1,2,3,0,7,4,5,6])
    assert _part_permutation(1, False, True, True)[:8] == [1, 2, 3, 0, 7, 4, 5, 6]


def test_galaxy_concat_features_equivariant():
    m = _small_net("concat").double().eval()
    x = torch.rand(2, 3, 45, 45, dtype=torch.float64)
    perms = {g: _part_permutation(*g, True, True) for g in G.D4_ELEMENTS}
    blocks = lambda g, y: y.reshape(16, -1, y.shape[-1])[perms[g]].reshape(y.shape)
    assert_equivariant(m.part_features, (x,), G.D4(), ("image",), blocks, trials=4)
    assert_not_invariant(m.part_features, (x,), G.D4(), ("image",), trials=4)


def test_galaxy_mean_merge_invariant_d4():
    x = torch.rand(2, 3, 45, 45, dtype=torch.float64)
    net = _small_net("mean")
    assert_invariant(net, (x,), G.D4(), ("image",), trials=6)
    m = net.double().eval()
    with torch.no_grad():  # and exhaustively over the 8 elements
        y = m(x)
        assert max(float((m(G.d4_act(x, k, f)) - y).abs().max()) for k, f in G.D4_ELEMENTS) < 1e-12
    # negative controls: the official concat merge and the plain CNN are not invariant
    assert_not_invariant(_small_net("concat"), (x,), G.D4(), ("image",), trials=4)
    plain = PlainGalaxyCNN(view_size=45, width=0.125, hidden=16, init="kaiming", dropout=0.0)
    assert_not_invariant(plain, (x,), G.D4(), ("image",), trials=4)


def test_galaxy_mean_merge_only_approximately_invariant_to_45_degrees():
    # only D4 is exact: a 45-degree rotation (interpolated) is not an exact symmetry
    from invariance.vision.data.galaxies import rotate_images

    m = _small_net("mean").double().eval()
    x = make_galaxies(2, seed=3, size=45)["image"].double()
    with torch.no_grad():
        y = m(x)
        y45 = m(rotate_images(x, torch.full((2,), math.pi / 4, dtype=torch.float64)))
    assert (y - y45).abs().max() > 1e-9


def test_galaxy_no_flip_mean_merge_is_c4_not_mirror_invariant():
    # include_flip=False: the 8 parts are permuted by rot90 only; a mirror maps them outside the
    # set, so the mean merge is C4-invariant but not mirror-invariant (docstring)
    m = (
        GalaxyNet(
            view_size=45,
            part_size=37,
            width=0.125,
            hidden=16,
            merge="mean",
            include_flip=False,
            init="kaiming",
            dropout=0.0,
        )
        .double()
        .eval()
    )
    x = make_galaxies(3, seed=2, size=45)["image"].double()
    assert_invariant(m, (x,), G.C4(), ("image",), trials=3)
    with torch.no_grad():
        mirrored = float((m(G.d4_act(x, 0, True)) - m(x)).abs().max())
    assert mirrored > 1e-6
    assert "only to the 4 rotations" in GalaxyNet.__doc__


def test_galaxy_augmentation_depends_on_run_seed():
    x = make_galaxies(4, seed=0, size=45)["image"]

    def augmented(seed, step=1):
        r = GalaxyNetRecipe()
        r.build(make_config(r, seed=seed, augment=True))
        return r.augment(x, step)

    a0, a0_again, a1 = augmented(0), augmented(0), augmented(1)
    assert torch.equal(a0, a0_again)  # reproducible given seed and step
    assert not torch.allclose(a0, a1)  # another run seed sees other angles
    assert not torch.allclose(a0, augmented(0, step=2))


def test_galaxy_output_obeys_decision_tree():
    out = GalaxyZooOutput()
    z = torch.randn(64, 37, dtype=torch.float64)
    for q in QUESTION_SLICES:  # official caveat: a group needs one positive input
        z[:, q.start] = z[:, q.start].abs() + 0.01
    p = out(z)
    assert (p >= 0).all()
    assert _tree_residuals(p).abs().max() < 1e-9
    # a question whose inputs are all <= 0 gets all-zero answers (the official 1e-12 guard)
    z[:, 13:15] = -1.0
    assert out(z)[:, 13:15].abs().max() == 0
    # un-normalised mode (first training chunk) only clips
    assert torch.equal(out(z, normalise=False), z.clamp(0, 1))


def test_galaxy_generator_votes_obey_decision_tree():
    d = make_galaxies(24, seed=0, size=45)
    assert d["image"].shape == (24, 3, 45, 45)
    assert 0 <= float(d["image"].min()) and float(d["image"].max()) <= 1
    assert _tree_residuals(d["votes"].double()).abs().max() < 1e-6
    again = make_galaxies(24, seed=0, size=45)
    assert torch.equal(d["image"], again["image"]) and torch.equal(d["votes"], again["votes"])


def test_galaxy_votes_follow_truth_when_reliable():
    truth = torch.randint(0, 2, (8, 11))
    v = simulate_votes(
        truth, torch.full((8,), 50.0), n_volunteers=10, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(v[:, 0:3].argmax(1), truth[:, 0])


def test_galaxy_views_golden():
    x = torch.tensor(GOLDEN["image"], dtype=torch.float64)
    ps = GOLDEN["part_size"]
    ours = galaxy_views(x, view_size=x.shape[-1], part_size=ps, include_45=False)
    assert torch.allclose(ours, torch.tensor(GOLDEN["parts"], dtype=torch.float64), atol=1e-12)


def test_galaxy_output_golden():
    z = torch.tensor(GOLDEN["output_in"], dtype=torch.float64)
    ref = torch.tensor(GOLDEN["output_out"], dtype=torch.float64)
    assert torch.allclose(GalaxyZooOutput()(z), ref, atol=1e-10)


def test_galaxy_bad_input():
    m = _small_net("mean")
    with pytest.raises(ValueError, match="GalaxyNet expects"):
        m(torch.rand(2, 1, 45, 45))
    with pytest.raises(ValueError, match="square"):
        galaxy_views(torch.rand(2, 3, 45, 40))
    with pytest.raises(ValueError, match=r"\(B, 37\)"):
        GalaxyZooOutput()(torch.rand(2, 36))
    with pytest.raises(ValueError, match="merge"):
        GalaxyNet(merge="max")
    with pytest.raises(ValueError, match="too small"):
        GalaxyNet(view_size=20, part_size=20)
    with pytest.raises(TypeError):
        m(None)


def test_galaxy_learns_rotated_test_set():
    # Learning test (default suite, ~10 s idle): train on upright galaxies (angles in [0, 0.5]
    # rad, no mirror), test on galaxies rotated uniformly and mirrored, vs the plain CNN.
    from invariance.core.train import evaluate, fit_recipe

    r = GalaxyMeanRecipe()
    kw = dict(steps=80, n_train=256, lr=2e-3, warmup_steps=20, include_45=False, seed=0)
    cfg = make_config(r, **kw)
    model, _ = fit_recipe(r, cfg, progress=False)
    ours = evaluate(r, model, cfg)["rmse"]
    rb = GalaxyMeanRecipe()
    cfg_b = make_config(rb, model="plain", **kw)
    base, _ = fit_recipe(rb, cfg_b, progress=False)
    theirs = evaluate(rb, base, cfg_b)["rmse"]
    # 3 seeds (softplus output, 80 steps, 256 galaxies, 8 views; re-measured in round 2, same
    # values): GalaxyNet-mean 0.159 / 0.152 / 0.155 vs plain CNN 0.175 / 0.167 / 0.164; margins
    # 0.016 / 0.015 / 0.009 -> assert 0.005 on seed 0. Shorter budgets do not separate the two
    # (40-60 steps, 128-256 galaxies: margins between -0.007 and +0.014 over 3 seeds).
    assert ours < theirs - 0.005, (ours, theirs)
