import pytest
import torch
import torch.nn.functional as F

from invariance.core.groups import PositiveAffine, Scaling
from invariance.core.testing import assert_invariant, assert_not_invariant, fuzz_bad_inputs
from invariance.optim import FactoredSphericalOutput, ZLoss, z_loss
from invariance.optim.data import make_extreme_classification, make_zipf_language
from invariance.optim.zloss import (
    spherical_loss_from_stats,
    spherical_mse_loss,
    taylor_softmax_loss,
)


def _data(n=6, D=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, D, generator=g, dtype=torch.float64) * 2,
        torch.randint(0, D, (n,), generator=g),
    )


def test_zloss_shift_scale_invariant():
    o, y = _data()
    for a, b in [(1.0, 0.0), (3.0, 2.0)]:
        fn = lambda o, a=a, b=b: z_loss(o, y, a, b, reduction="none")
        assert_invariant(fn, (o,), PositiveAffine(0.1, 10.0, 3.0), ("affine",), tol=1e-12)
    # negative control: cross-entropy is shift invariant but not scale invariant
    ce = lambda o: F.cross_entropy(o, y, reduction="none")
    assert_invariant(ce, (o,), PositiveAffine(1.0, 1.0, 3.0), ("affine",))
    assert_not_invariant(ce, (o,), Scaling(0.1, 10.0), ("scale",))


def test_zloss_gradient_sum_and_orthogonal():
    o, y = _data(n=5, D=40)
    o.requires_grad_(True)
    z_loss(o, y, 2.0, 1.0, reduction="sum").backward()
    g = o.grad
    assert g.sum(1).abs().max() < 1e-12
    assert (g * o.detach()).sum(1).abs().max() < 1e-10
    assert g.abs().max() > 1e-3


def test_zloss_gradcheck():
    o, y = _data(n=3, D=7)
    o.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda o: z_loss(o, y, 1.5, 0.5), (o,))
    assert torch.autograd.gradgradcheck(lambda o: z_loss(o, y, 1.5, 0.5), (o,))


def test_zloss_matches_formula_and_module():
    o, y = _data()
    mu = o.mean(1, keepdim=True)
    sd = ((o - mu) ** 2).mean(1).sqrt()
    z = (o.gather(1, y[:, None]).squeeze(1) - mu.squeeze(1)) / sd
    ref = (F.softplus(2.0 * (1.0 - z)) / 2.0).mean()
    assert torch.allclose(z_loss(o, y, 2.0, 1.0), ref, rtol=1e-14)
    assert torch.allclose(ZLoss(a=2.0, b=1.0)(o, y), ref, rtol=1e-14)
    assert "a=2.0" in repr(ZLoss(a=2.0, b=1.0))


def test_zloss_bad_input():
    o, y = _data()
    with pytest.raises(ValueError, match=r"shape \(N, D\)"):
        z_loss(o[0], y)
    with pytest.raises(ValueError, match="target must have shape"):
        z_loss(o, y[:3])
    with pytest.raises(ValueError, match="target values"):
        z_loss(o, y + 100)
    with pytest.raises(TypeError, match="integer"):
        z_loss(o, y.double())
    with pytest.raises(ValueError, match="a must be"):
        ZLoss(a=0.0)
    with pytest.raises(ValueError, match="h must have shape"):
        FactoredSphericalOutput(4, 10)(torch.randn(3, 5), torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize(
    "loss,dense",
    [
        ("z", lambda o, y: z_loss(o, y, 2.0, 1.0)),
        ("mse", spherical_mse_loss),
        ("taylor", taylor_softmax_loss),
    ],
)
@pytest.mark.parametrize("m", [8, 24], ids=["woodbury_m<d", "direct_m>=d"])
def test_factored_matches_dense_sgd(loss, dense, m):
    D, d, lr = 500, 16, (0.5 if loss == "z" else 0.05)
    layer = FactoredSphericalOutput(
        d,
        D,
        loss=loss,
        a=2.0,
        b=1.0,
        dtype=torch.float64,
        refresh_every=7,
        generator=torch.Generator().manual_seed(1),
    )
    W = layer.dense_weight().clone().requires_grad_(True)
    opt = torch.optim.SGD([W], lr=lr)
    dummy = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    layer_opt = torch.optim.SGD([dummy], lr=lr)
    layer.attach(layer_opt)
    g = torch.Generator().manual_seed(2)
    for _ in range(20):
        h = torch.randn(m, d, generator=g, dtype=torch.float64)
        y = torch.randint(0, D, (m,), generator=g)
        y[1] = y[0]  # a repeated target exercises the row aggregation
        h1, h2 = h.clone().requires_grad_(True), h.clone().requires_grad_(True)
        q, s, _ = layer.stats(h, y)
        o = h @ W.detach().T
        assert torch.allclose(q, o.pow(2).sum(1), rtol=1e-10)
        assert torch.allclose(s, o.sum(1), rtol=1e-10, atol=1e-10)
        l1 = layer(h1, y)
        l1.backward()
        layer_opt.step()
        l2 = dense(h2 @ W.T, y)
        opt.zero_grad()
        l2.backward()
        opt.step()
        assert torch.allclose(l1, l2, rtol=1e-10)
        assert torch.allclose(h1.grad, h2.grad, rtol=1e-8, atol=1e-12)
    Wf = layer.dense_weight()
    assert float((Wf - W.detach()).norm() / W.detach().norm()) < 1e-8
    assert float((layer.Q - W.detach().T @ W.detach()).norm() / layer.Q.norm()) < 1e-8


def test_factored_rejects_non_sgd():
    layer = FactoredSphericalOutput(4, 10)
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(TypeError, match="plain SGD"):
        layer.attach(torch.optim.Adam(p))
    with pytest.raises(ValueError, match="momentum"):
        layer.attach(torch.optim.SGD(p, lr=0.1, momentum=0.9))
    with pytest.raises(ValueError, match="weight_decay"):
        layer.attach(torch.optim.SGD(p, lr=0.1, weight_decay=1e-4))
    # an update that was never applied is an error, not a silent no-op
    h = torch.randn(3, 4, requires_grad=True)
    layer(h, torch.tensor([1, 2, 3])).backward()
    with pytest.raises(RuntimeError, match="never applied"):
        layer(h, torch.tensor([1, 2, 3]))


def test_zloss_learns_digits():
    # seeds 0-2 (torch.manual_seed and batch generator): 0.967, 0.966, 0.971 test accuracy
    from invariance.optim.data import digits_split

    xtr, ytr, xte, yte = digits_split(seed=0)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        idx = torch.randint(0, len(xtr), (64,), generator=g)
        loss = z_loss(net(xtr[idx]), ytr[idx], 1.0, 0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    acc = (net(xte).argmax(1) == yte).float().mean()
    assert acc >= 0.90


def test_zloss_beats_other_spherical_losses():
    # D=200 Zipf extreme classification, 200 Adam steps; seeds 0-2 gave test top-1
    # z-loss 0.833/0.847/0.845, Taylor softmax 0.618/0.621/0.615, MSE 0.591/0.597/0.570.
    from invariance.optim.recipes.zloss import _MLP, ZLossConfig, _loss_by_name, _topk, _xc_data

    cfg = ZLossConfig(seed=0, num_classes=200, n_train=4000, steps=200, hidden=64)
    train, test = _xc_data(cfg, "train"), _xc_data(cfg, "test")
    top1 = {}
    for name in ("zloss", "taylor"):
        torch.manual_seed(0)
        model = _MLP(cfg.dim, cfg.hidden, cfg.num_classes)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        g = torch.Generator().manual_seed(0)
        X, Y, _ = train.tensors
        for _ in range(cfg.steps):
            idx = torch.randint(0, len(Y), (cfg.batch_size,), generator=g)
            loss = _loss_by_name(name, model(X[idx]), Y[idx], cfg)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            top1[name] = _topk(model(test.tensors[0]), test.tensors[1], 5)[0]
    assert top1["zloss"] > top1["taylor"] + 0.15


def test_make_zipf_language_ground_truth():
    from invariance.optim.data import make_zipf_language

    d = make_zipf_language(3000, vocab=200, rank=8, seed=3)
    again = make_zipf_language(3000, vocab=200, rank=8, seed=3)
    assert all(torch.equal(d[k], again[k]) for k in d)
    assert d["context"].shape == d["y"].shape == d["bayes_rank"].shape == (3000,)
    assert int(d["y"].min()) >= 0 and int(d["y"].max()) < 200
    acc = [float((d["bayes_rank"] < k).float().mean()) for k in (1, 5, 20)]
    assert 0 < acc[0] < acc[1] < acc[2] <= 1
    # the context carries information: the Bayes top-1 beats always guessing the Zipf mode
    assert acc[0] > float((d["y"] == 0).float().mean()) + 0.05


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_zloss_constant_logits_finite_gradient(dtype):
    # a zero-initialised head gives constant logits; before, sqrt'(0) = inf made the gradient NaN
    y = torch.tensor([0, 3, 1])
    for logits in (torch.zeros(3, 5, dtype=dtype), torch.full((3, 5), 2.5, dtype=dtype)):
        o = logits.clone().requires_grad_(True)
        loss = z_loss(o, y)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(o.grad).all()
        assert o.grad.abs().max() > 0  # the target score is pushed up
        assert (o.grad.argmin(1) == y).all()


def test_zloss_zero_head_learns_with_adam():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    y = (x[:, :4].argmax(1)).long()
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    torch.nn.init.zeros_(net[2].weight)
    torch.nn.init.zeros_(net[2].bias)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    first = None
    for _ in range(50):
        loss = z_loss(net(x), y)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in net.parameters())
        opt.step()
    assert float(loss.detach()) < 0.7 * first


# ----------------------------------------------------------------------------------- bad input

_G = torch.Generator().manual_seed(0)
_LOGITS = torch.randn(5, 7, generator=_G)
_TARGET = torch.tensor([0, 3, 6, 1, 2])
_H = torch.randn(6, 8, generator=_G)
_TARGET6 = torch.tensor([0, 1, 2, 3, 4, 5])


def _layer():
    return FactoredSphericalOutput(8, 20, generator=torch.Generator().manual_seed(0))


def _step(lr):
    layer = _layer()
    layer(_H.clone().requires_grad_(True), _TARGET6).backward()
    layer.step(lr)
    return layer.dense_weight()


def _attach(group):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    _layer().attach(opt, group=group).remove()


_LAYER = _layer()

#: bad-input cases (collected by the package summary in test_optim_bad_inputs.py)
ENTRY_POINTS = {
    "z_loss": (
        z_loss,
        {
            "logits": _LOGITS,
            "target": _TARGET,
            "a": 1.0,
            "b": 0.5,
            "reduction": "mean",
            "eps": 1e-12,
        },
        {"accept": ("b:negative",)},
    ),
    "ZLoss()": (ZLoss, {"a": 1.0, "b": 0.5, "reduction": "mean"}, {"accept": ("b:negative",)}),
    "ZLoss.forward": (ZLoss(), {"logits": _LOGITS, "target": _TARGET}, {}),
    "spherical_mse_loss": (
        spherical_mse_loss,
        {"logits": _LOGITS, "target": _TARGET, "reduction": "sum"},
        {},
    ),
    "taylor_softmax_loss": (
        taylor_softmax_loss,
        {"logits": _LOGITS, "target": _TARGET, "reduction": "sum"},
        {},
    ),
    "spherical_loss_from_stats": (
        spherical_loss_from_stats,
        {
            "name": "z",
            "q": torch.rand(4, generator=_G) * 5 + 1,
            "s": torch.rand(4, generator=_G),
            "oc": torch.rand(4, generator=_G),
            "D": 10,
            "a": 1.0,
            "b": 0.5,
            "eps": 1e-12,
        },
        {"accept": ("b:negative",)},
    ),
    "FactoredSphericalOutput()": (
        FactoredSphericalOutput,
        {
            "in_features": 8,
            "num_classes": 20,
            "loss": "z",
            "a": 1.0,
            "b": 0.5,
            "reduction": "mean",
            "refresh_every": 10,
            "init_std": 0.1,
        },
        {"accept": ("b:negative",)},
    ),
    "FactoredSphericalOutput.forward": (_LAYER, {"h": _H, "target": _TARGET6}, {}),
    "FactoredSphericalOutput.logits": (_LAYER.logits, {"h": _H}, {}),
    "FactoredSphericalOutput.stats": (_LAYER.stats, {"h": _H, "target": _TARGET6}, {}),
    "FactoredSphericalOutput.set_weight": (
        lambda weight: _layer().set_weight(weight),
        {"weight": torch.randn(20, 8, generator=_G)},
        {},
    ),
    "FactoredSphericalOutput.step": (_step, {"lr": 0.1}, {}),
    "FactoredSphericalOutput.attach": (_attach, {"group": 0}, {}),
    "make_extreme_classification": (
        make_extreme_classification,
        {
            "n": 50,
            "num_classes": 10,
            "dim": 4,
            "zipf": 1.0,
            "noise": 0.5,
            "seed": 0,
            "teacher_seed": 1,
        },
        {"accept": ("seed:negative", "teacher_seed:negative")},
    ),
    "make_zipf_language": (
        make_zipf_language,
        {"n": 50, "vocab": 20, "rank": 4, "zipf": 1.0, "temp": 2.0, "seed": 0, "lang_seed": 1},
        {"accept": ("seed:negative", "lang_seed:negative")},
    ),
}


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_zloss_bad_inputs(name):
    fn, kwargs, kw = ENTRY_POINTS[name]
    rep = fuzz_bad_inputs(fn, kwargs, name=name, **kw)
    assert rep.tried > 0 and rep.ok, "\n".join(rep.failures)
