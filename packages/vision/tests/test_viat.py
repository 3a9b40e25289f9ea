import json
import math
from pathlib import Path

import pytest
import torch

from invariance.core.recipe import make_config
from invariance.core.testing import fuzz_bad_inputs
from invariance.vision.recipes.viat import VIATRecipe, _fitness, natural_viewpoints, render_views
from invariance.vision.viat import (
    GMMViews,
    NESState,
    centered_ranks,
    gmm_entropy,
    gmvfool,
    nes_population,
    nes_step,
    population_points,
    random_viewpoints,
    sample_pool_views,
    viat_loss,
    viewpoint,
)

GOLDEN = Path(__file__).parent / "golden_viat_pepg.json"


def test_viewpoint_box_and_reference_values():
    v0 = viewpoint(torch.zeros(6, dtype=torch.float64))
    assert v0.tolist() == [0, 0, 0, 4, 0, 0]
    v1 = viewpoint(torch.ones(6, dtype=torch.float64))
    ref = [22.847825, 137.086948, 53.311591, 4.761594, 0.380797, 0.380797]
    assert v1.tolist() == pytest.approx(ref, abs=1e-6)
    big = viewpoint(torch.randn(1000, 6, dtype=torch.float64) * 10)
    hi = torch.tensor([30, 180, 70, 5, 0.5, 0.5], dtype=torch.float64)
    lo = torch.tensor([-30, -180, -70, 3, -0.5, -0.5], dtype=torch.float64)
    assert ((big <= hi) & (big >= lo)).all()
    r = random_viewpoints(500, generator=torch.Generator().manual_seed(0))
    assert ((r <= hi.float()) & (r >= lo.float())).all()


def test_centered_ranks():
    out = centered_ranks(torch.tensor([3.0, 1.0, 2.0, 5.0]))
    assert out.tolist() == pytest.approx([1 / 6, -0.5, -1 / 6, 0.5], abs=1e-6)


def test_entropy_estimator_difference_and_gradient():
    pop = 4096
    g = torch.Generator().manual_seed(0)
    r = torch.randn(1, pop, 6, generator=g, dtype=torch.float64)
    comp = torch.zeros(1, pop, 6, dtype=torch.long)
    om = torch.ones(1, 1, 6, dtype=torch.float64)
    mu = torch.zeros(1, 1, 6, dtype=torch.float64)
    s1, s2 = 0.01, 0.03
    h1 = gmm_entropy(mu, torch.full_like(mu, s1), om, r, comp, pop)
    h2 = gmm_entropy(mu, torch.full_like(mu, s2), om, r, comp, pop)
    per_dim = (h2 - h1).item() / 6
    assert per_dim == pytest.approx(math.log(s2 / s1), abs=3 / math.sqrt(pop))
    sig = torch.full_like(mu, s1).requires_grad_(True)
    gmm_entropy(mu, sig, om, r, comp, pop).sum().backward()
    assert sig.grad.flatten().tolist() == pytest.approx([1 / s1] * 6, rel=0.01)


def test_nes_step_matches_the_official_pepg_update():
    # Golden values recorded by running the official PEPG class (Heathcliff-saku/VIAT, commit
    # 414f138b9b0c256d16ddf98f47d791edcd686e48, viat/NES_GMM_forAT.py, with the renderer imports
    # stubbed) with np.random.seed(0), num_k=5, popsize=21, sigma_init=0.1, learning_rate=0.1,
    # learning_rate_decay=0.99, average_baseline=False, rank_fitness=True, mu/sigma lambda 1e-4,
    # random_begin=True, for 3 ask/comput_entropy/tell rounds on the fitness
    # -||z - (0.5, -0.3, 0.8, 0.1, -0.6, 0.2)||^2; the draws (r, components) are recorded too.
    g = json.loads(GOLDEN.read_text())
    t = lambda x: torch.tensor(x, dtype=torch.float64)[None]  # noqa: E731
    views = GMMViews(t(g["mu0"]), t(g["sigma0"]))
    state = NESState(torch.zeros_like(views.mu), 0.1)
    for st in g["steps"]:
        r, comp, fit = t(st["r"]), torch.tensor(st["comp"])[None], t(st["fitness"])
        h = gmm_entropy(views.mu, views.sigma, views.omega, r, comp, 21)
        views, state, best = nes_step(views, r, comp, fit, state, popsize=21)
        # the official entropy runs in float32
        assert h.item() == pytest.approx(st["entropy"], abs=1e-5)
        torch.testing.assert_close(views.mu, t(st["mu"]), atol=1e-8, rtol=0)
        torch.testing.assert_close(views.sigma, t(st["sigma"]), atol=1e-8, rtol=0)
        torch.testing.assert_close(best, t(st["best_mu"]), atol=1e-8, rtol=0)
        assert state.lr == pytest.approx(st["lr"])


def test_nes_climbs_an_analytic_fitness():
    target = torch.tensor([0.4, -0.2, 0.3, 0.1, -0.3, 0.2], dtype=torch.float64)

    def fit(v):  # maximise -|z - z*|^2 in z space (v -> z through atanh)
        a = torch.tensor([30, 180, 70, 1, 0.5, 0.5], dtype=v.dtype)
        b = torch.tensor([0, 0, 0, 4, 0, 0], dtype=v.dtype)
        z = torch.atanh(((v - b) / a).clamp(-0.999999, 0.999999))
        return -((z - target) ** 2).sum(-1)

    g = torch.Generator().manual_seed(0)
    res = gmvfool(fit, 2, k=1, popsize=21, iters=100, lr=0.3, random_mu=False, generator=g)
    err = (res.mean_views.mu[:, 0] - target).norm(dim=-1)
    assert (err < 0.1).all(), err
    first, last = res.mean_fitness[:5].mean(), res.mean_fitness[-5:].mean()
    assert last > first


def _tiny_cfg(**kw):
    base = dict(
        steps=40,
        warmup=40,
        n_classes=3,
        train_objects=2,
        test_objects=2,
        natural_views=12,
        image_size=24,
        eval_iters=3,
        eval_views=6,
        width=12,
        lr=5e-3,
    )
    base.update(kw)
    return make_config(VIATRecipe, **base)


def test_learning_and_gmvfool_finds_worse_views_than_random():
    from invariance.core.train import evaluate, fit_recipe

    torch.manual_seed(0)
    cfg = _tiny_cfg()
    r = VIATRecipe()
    model, res = fit_recipe(r, cfg, progress=False)
    train_m = evaluate(r, model, cfg, "train")
    assert train_m["clean_acc"] > 0.8  # learns the natural views of its objects (chance 1/3)
    # GMVFool's distribution is more adversarial than uniform random views
    assert train_m["gmvfool_ce"] > 0
    # GMVFool raises the classifier's loss over its iterations and finds views far worse than
    # the average random view
    model.eval()
    data = r.make_data(cfg, "test")
    fit = _fitness(model, data.world.scene, data.world.labels, cfg)
    g = torch.Generator().manual_seed(0)
    att = gmvfool(fit, len(data.world.scene), k=3, popsize=11, iters=8, generator=g)
    assert att.mean_fitness[-2:].mean() > att.mean_fitness[:2].mean()
    m = evaluate(r, model, cfg, "test")
    assert att.max_fitness[-1].mean() > m["random_ce"], (att.max_fitness[-1], m)


def test_viat_arm_runs_attacks_and_trains():
    from invariance.core.train import fit_recipe

    cfg = _tiny_cfg(steps=6, warmup=2, attack_every=2, attack_iters=2, arm="viat")
    model, res = fit_recipe(VIATRecipe(), cfg, progress=False)
    pool = model.viat["pool"]
    assert pool is not None and pool.mu.shape == (6, cfg.k, 6)
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in res.history if "loss" in h)


def test_pool_sharing_stays_within_the_class():
    g = torch.Generator().manual_seed(0)
    pool = GMMViews.init(6, 3, generator=g)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    objs = torch.arange(6).repeat(50)
    v, src = sample_pool_views(pool, objs, labels, share_rate=0.5, generator=g)
    assert (labels[src] == labels[objs]).all()
    assert (src != objs).any() and (src == objs).any()
    _, src0 = sample_pool_views(pool, objs, labels, share_rate=0.0, generator=g)
    assert torch.equal(src0, objs)
    assert v.shape == (300, 6)


def test_viat_loss_forms():
    torch.manual_seed(0)
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    y = torch.tensor([0, 1, 2, 0])
    ce = viat_loss(a, b, y, y)
    ref = torch.nn.functional.cross_entropy(torch.cat([a, b]), torch.cat([y, y]))
    assert ce.item() == pytest.approx(ref.item())
    tr0 = viat_loss(a, a, y, y, objective="trades")
    assert tr0.item() == pytest.approx(torch.nn.functional.cross_entropy(a, y).item(), abs=1e-6)
    assert viat_loss(a, b, y, y, objective="trades").item() > tr0.item()


def test_population_layout():
    views = GMMViews.init(2, 5, generator=torch.Generator().manual_seed(1))
    r, comp = nes_population(views, 21, generator=torch.Generator().manual_seed(2))
    assert r.shape == (2, 25, 6) and comp.shape == (2, 25, 6)
    assert (r[:, :5] == 0).all() and torch.equal(r[:, 5:15], -r[:, 15:])
    z = population_points(views, r, comp)
    torch.testing.assert_close(z[:, :5], views.mu)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="popsize"):
        nes_population(GMMViews.init(1, 2), 20)
    with pytest.raises(ValueError, match="objective"):
        viat_loss(
            torch.zeros(1, 2),
            torch.zeros(1, 2),
            torch.zeros(1).long(),
            torch.zeros(1).long(),
            objective="x",
        )
    with pytest.raises(ValueError, match="share_rate"):
        sample_pool_views(
            GMMViews.init(2, 2), torch.tensor([0]), torch.tensor([0, 1]), share_rate=2.0
        )
    with pytest.raises(ValueError, match="objects"):
        sample_pool_views(GMMViews.init(2, 2), torch.tensor([5]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="fitness_fn"):
        gmvfool(lambda v: torch.zeros(3), 1, k=2, popsize=5, iters=1)
    with pytest.raises(ValueError, match="popsize"):
        make_config(VIATRecipe, popsize=8)
    with pytest.raises(ValueError, match="sigma"):
        GMMViews(torch.zeros(1, 2, 6), -torch.ones(1, 2, 6))


_LOGITS = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
_TARGET = torch.tensor([0, 1, 2, 0])

#: bad-input cases (collected by the package summary in test_vision_bad_inputs.py)
ENTRY_POINTS = {
    "viewpoint": (viewpoint, {"z": torch.randn(3, 6)}, {"accept": ("z:extra_dim", "z:fewer_dims")}),
    "centered_ranks": (centered_ranks, {"x": torch.randn(5)}, {"accept": ("x:extra_dim",)}),
    "random_viewpoints": (random_viewpoints, {"n": 3}, {}),
    "natural_viewpoints": (natural_viewpoints, {"n": 3}, {}),
    "viat_loss": (
        viat_loss,
        {
            "logits_nat": _LOGITS,
            "logits_adv": _LOGITS.flip(0),
            "target_nat": _TARGET,
            "target_adv": _TARGET.flip(0),
            "objective": "trades",
            "beta": 6.0,
        },
        {"accept": ("logits_nat:extra_dim", "logits_adv:extra_dim")},
    ),
}


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_viat_bad_inputs(name):
    fn, kwargs, kw = ENTRY_POINTS[name]
    rep = fuzz_bad_inputs(fn, kwargs, name=name, **kw)
    assert rep.tried > 0 and rep.ok, "\n".join(rep.failures)


def test_natural_views_render():
    v = natural_viewpoints(8, generator=torch.Generator().manual_seed(0))
    assert ((v[:, 2] >= 10) & (v[:, 2] <= 40)).all() and (v[:, [0, 4, 5]] == 0).all()
    from invariance.vision.data.prim3d import make_prim3d

    sc, _ = make_prim3d(1, seed=0, classes=(0, 4))
    x = render_views(sc, torch.tensor([0, 1] * 4), v, size=16, fov=40.0)
    assert x.shape == (8, 3, 16, 16) and (x < 1).any()
