import json
from pathlib import Path

import pytest
import torch
from torch import nn

from invariance.core.groups import Scaling
from invariance.core.testing import (
    assert_invariant,
    assert_not_invariant,
    fuzz_bad_inputs,
    with_package,
)
from invariance.optim import SGDP, AdamP, create_optimizer
from invariance.optim._testing import run_parity_problem, which_views_fire
from invariance.optim.adamp import project_radial
from invariance.optim.data import digits_split
from invariance.optim.factory import param_groups_no_decay_1d

GOLDEN = json.loads((Path(__file__).parent / "golden" / "adamp_parity.json").read_text())
OURS = {
    "adamp": lambda ps, **k: AdamP(ps, lr=1e-2, weight_decay=1e-2, **k),
    "adamp_nesterov": lambda ps, **k: AdamP(ps, lr=1e-2, weight_decay=1e-2, nesterov=True, **k),
    "sgdp": lambda ps, **k: SGDP(ps, lr=0.1, momentum=0.9, weight_decay=1e-3, **k),
    "sgdp_nesterov": lambda ps, **k: SGDP(
        ps, lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True, **k
    ),
    "timm_adamp": lambda ps, **k: AdamP(ps, lr=1e-2, weight_decay=1e-2, **k),
    "timm_sgdp": lambda ps, **k: SGDP(
        ps, lr=0.1, momentum=0.9, weight_decay=1e-3, project_buffer=False, **k
    ),
}
VARIANTS = [(True, None), (False, None), (True, True), (False, True)]  # (foreach, branch_free)


def _ours(name, foreach, branch_free):
    def make(ps):
        opt = OURS[name](ps, foreach=foreach)
        opt._force_branch_free = branch_free
        return opt

    return make


def _max_diff(a, b):
    return max(float((a[k].flatten() - b[k].flatten()).abs().max()) for k in a)


def test_adamp_parity_problem_triggers_every_view():
    assert which_views_fire() == {
        "conv.weight": "channel",
        "lin1.weight": "layer",
        "lin2.weight": "none",
    }
    assert GOLDEN["provenance"]["views_at_step_1"] == which_views_fire()


@pytest.mark.parametrize("foreach,branch_free", VARIANTS)
@pytest.mark.parametrize("name", sorted(OURS))
def test_adamp_parity_golden(name, foreach, branch_free):
    ref = {
        k: torch.tensor(v, dtype=torch.float64)
        for k, v in GOLDEN["configs"][name]["params"].items()
    }
    ours = run_parity_problem(_ours(name, foreach, branch_free), steps=15)
    assert _max_diff(ref, ours) < 1e-5


@with_package("adamp", "timm")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", sorted(OURS))
def test_adamp_parity_live(name, dtype):
    import adamp
    import timm.optim

    cfg = GOLDEN["configs"][name]
    mod = adamp if cfg["package"] == "adamp" else timm.optim
    cls = getattr(mod, cfg["class"])
    ref = run_parity_problem(lambda ps: cls(ps, **cfg["kwargs"]), steps=15, dtype=dtype)
    ours = run_parity_problem(_ours(name, True, None), steps=15, dtype=dtype)
    assert _max_diff(ref, ours) < 1e-5


def test_sgdp_project_buffer_matches_official_not_timm():
    # the official in-place buffer projection really changes the trajectory (3.9e-3-scale)
    a = {k: torch.tensor(v) for k, v in GOLDEN["configs"]["sgdp"]["params"].items()}
    b = {k: torch.tensor(v) for k, v in GOLDEN["configs"]["timm_sgdp"]["params"].items()}
    assert _max_diff(a, b) > 1e-3


def _bn_block(seed=0, bias=False):
    g = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(3, 8, 3, bias=bias).double()
    with torch.no_grad():
        for p in conv.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    x = torch.randn(16, 3, 6, 6, generator=g, dtype=torch.float64)
    y = torch.randn(16, 8, 4, 4, generator=g, dtype=torch.float64)
    return conv, x, y


def _bn_loss(weight, x, y, bias=None, reduce=True):
    out = nn.functional.conv2d(x, weight, bias)
    out = nn.functional.batch_norm(out, None, None, training=True, eps=1e-300)
    per_example = ((out - y) ** 2).mean((1, 2, 3))
    return per_example.mean() if reduce else per_example


def test_bn_weight_scale_invariant_with_negative_control():
    conv, x, y = _bn_block()
    w = conv.weight.detach()
    # per-example losses: they vary across the batch, so the check is not vacuous
    per = lambda w: _bn_loss(w, x, y, reduce=False)
    assert_invariant(per, (w,), Scaling(0.2, 5.0), ("scale",))
    # negative control: without the normalisation the loss sees the weight's scale
    plain = lambda w: ((nn.functional.conv2d(x, w) - y) ** 2).mean((1, 2, 3))
    assert_not_invariant(plain, (w,), Scaling(0.2, 5.0), ("scale",))


def test_adamp_projection_scale_invariant():
    conv, x, y = _bn_block()
    w = conv.weight.detach().clone().requires_grad_(True)
    _bn_loss(w, x, y).backward()
    g, u = w.grad.detach(), torch.randn_like(w)
    w = w.detach()
    project = lambda w, g, u: project_radial(w, g, u)[0]
    # the projection depends only on the direction of w and of g
    assert_invariant(project, (w, g, u), Scaling(0.2, 5.0), ("scale", None, None))
    assert_invariant(project, (w, g, u), Scaling(0.2, 5.0), (None, "scale", None))
    assert project_radial(w, g, u)[1]  # channel view fires on a BN weight

    def broken(w, g, u):  # negative control: forgets to normalise w
        W, U = w.reshape(w.shape[0], -1), u.reshape(u.shape[0], -1)
        return (U - W * (W * U).sum(1, keepdim=True)).reshape(u.shape)

    assert_not_invariant(broken, (w, g, u), Scaling(0.2, 5.0), ("scale", None, None))


@pytest.mark.parametrize("cls,kw", [(AdamP, dict(lr=1e-2)), (SGDP, dict(lr=0.1, momentum=0.9))])
@pytest.mark.parametrize("view", ["channel", "layer"])
def test_adamp_tangent_update(cls, kw, view):
    torch.manual_seed(0)
    conv, x, y = _bn_block()
    w = nn.Parameter(conv.weight.detach().clone())
    opt = cls([w], **kw)
    for _ in range(3):
        opt.zero_grad()
        if view == "channel":
            loss = _bn_loss(w, x, y)
        else:  # normalise over the whole layer only: only the layer view can fire
            out = nn.functional.conv2d(x, w)
            loss = ((out / out.pow(2).mean().sqrt() - y) ** 2).mean()
        loss.backward()
        before = w.detach().clone()
        _, fired = project_radial(before, w.grad, torch.randn_like(before))
        assert fired == (view == "channel") or view == "layer"
        opt.step()
        delta = w.detach() - before
        lhs = w.detach().pow(2).sum() - before.pow(2).sum()
        rhs = delta.pow(2).sum()
        assert abs(float(lhs - rhs)) <= 1e-5 * float(rhs) + 1e-12


def test_adamp_1d_matches_adamw_exactly():
    def run(make):
        torch.manual_seed(0)
        ps = [
            nn.Parameter(torch.randn(7)),
            nn.Parameter(torch.randn(3)),
            nn.Parameter(torch.randn(())),
        ]
        opt = make(ps)
        for t in range(10):
            opt.zero_grad()
            loss = sum(((p - 0.1 * t) ** 2).sum() * (i + 1) for i, p in enumerate(ps))
            loss.backward()
            opt.step()
        return ps

    ref = run(lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1, foreach=True))
    for foreach in (True, False):
        ours = run(lambda ps, f=foreach: AdamP(ps, lr=1e-2, weight_decay=0.1, foreach=f))
        for a, b in zip(ref, ours):
            assert torch.equal(a, b) if foreach else torch.allclose(a, b, rtol=0, atol=1e-7)


@pytest.mark.parametrize(
    "cls,kw",
    [
        (AdamP, dict(lr=1e-2, weight_decay=1e-2)),
        (SGDP, dict(lr=0.1, momentum=0.9, weight_decay=1e-3)),
    ],
)
def test_adamp_state_dict_round_trip(cls, kw):
    def make(ps):
        return cls(ps, **kw)

    ref = run_parity_problem(make, steps=6)
    # 3 steps, save, rebuild from the state_dict, 3 more steps
    from invariance.optim._testing import _problem

    model, x, y = _problem(0, torch.float64)
    opt = make(list(model.parameters()))

    def one(opt):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()

    for _ in range(3):
        one(opt)
    sd = opt.state_dict()
    opt2 = make(list(model.parameters()))
    opt2.load_state_dict(sd)
    for _ in range(3):
        one(opt2)
    got = {k: v.detach() for k, v in model.named_parameters()}
    assert _max_diff(ref, got) < 1e-12


def _norm_growth(make_opt, steps=100, seed=0):
    g = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(3, 8, 3, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.3)
    bn = nn.BatchNorm2d(8, affine=False)
    head = nn.Linear(8, 4)
    x = torch.randn(64, 3, 8, 8, generator=g)
    yt = torch.randint(0, 4, (64,), generator=g)
    opt = make_opt([conv.weight, *head.parameters()])
    n0 = float(conv.weight.detach().norm())
    for _ in range(steps):
        opt.zero_grad()
        out = head(torch.relu(bn(conv(x))).mean((2, 3)))
        nn.functional.cross_entropy(out, yt).backward()
        opt.step()
    return float(conv.weight.detach().norm()) / n0 - 1


def test_adamp_limits_norm_growth():
    # margins picked from seeds 0, 1, 2 (growth ratio AdamP/Adam <= 0.05, SGDP/SGD <= 0.05)
    adam = _norm_growth(lambda ps: torch.optim.Adam(ps, lr=1e-2))
    adamp = _norm_growth(lambda ps: AdamP(ps, lr=1e-2))
    sgd = _norm_growth(lambda ps: torch.optim.SGD(ps, lr=0.5, momentum=0.9))
    sgdp = _norm_growth(lambda ps: SGDP(ps, lr=0.5, momentum=0.9))
    assert adam > 0.05 and sgd > 0.05
    assert adamp <= adam / 3
    assert sgdp <= sgd / 3


def test_adamp_bad_input():
    p = [nn.Parameter(torch.randn(3, 3))]
    with pytest.raises(ValueError, match="lr"):
        AdamP(p, lr=-1.0)
    with pytest.raises(ValueError, match="betas"):
        AdamP(p, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="momentum"):
        SGDP(p, lr=0.1, momentum=1.0)
    with pytest.raises(TypeError, match="delta"):
        AdamP(p, delta="0.1")
    with pytest.raises(ValueError, match="ndim"):
        project_radial(torch.randn(3), torch.randn(3), torch.randn(3))
    with pytest.raises(ValueError, match="unknown optimizer"):
        create_optimizer(nn.Linear(2, 2), "adamq")


def test_create_optimizer_no_decay_on_1d():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    opt = create_optimizer(model, "adamp", lr=1e-3, weight_decay=0.05)
    assert isinstance(opt, AdamP)
    decay, no = opt.param_groups
    assert decay["weight_decay"] == 0.05 and all(p.ndim > 1 for p in decay["params"])
    assert no["weight_decay"] == 0.0 and all(p.ndim <= 1 for p in no["params"])
    assert len(decay["params"]) + len(no["params"]) == len(list(model.parameters()))
    sgdp = create_optimizer(model, "sgdp", weight_decay=1e-4)
    assert isinstance(sgdp, SGDP) and sgdp.defaults["nesterov"]


# ------------------------------------------------------------------ drop-in behaviour (issue 14)

DROP_IN = [
    (AdamP, dict(weight_decay=0.1, nesterov=True)),
    (AdamP, dict(weight_decay=0.1)),
    (SGDP, dict(momentum=0.9, weight_decay=0.1, nesterov=True)),
    (SGDP, dict(momentum=0.9, weight_decay=0.1)),
]


def _drop_in_params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        nn.Parameter(torch.randn(16, 8, generator=g)),
        nn.Parameter(torch.randn(8, generator=g)),
    ]


def _drop_in_run(params, opt, steps, lr_fn=None):
    for t in steps:
        if lr_fn is not None:
            lr_fn(t)
        g = torch.Generator().manual_seed(100 + t)
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
    return [p.detach().clone() for p in params]


def test_sgdp_lr_from_param_groups():
    # torch's ``required`` convention: lr may come from every parameter group instead
    a, b = _drop_in_params(), _drop_in_params()
    ref = SGDP(a, lr=0.1, momentum=0.9)
    opt = SGDP([{"params": b, "lr": 0.1}], momentum=0.9)
    for x, y in zip(_drop_in_run(a, ref, range(3)), _drop_in_run(b, opt, range(3))):
        assert torch.equal(x, y)
    with pytest.raises(ValueError, match="lr"):
        SGDP(_drop_in_params())
    with pytest.raises(ValueError, match="lr"):
        AdamP([{"params": _drop_in_params(), "lr": -1.0}])


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("cls,kw", DROP_IN)
def test_tensor_lr_matches_float(cls, kw, foreach):
    lrs = [1e-2, 5e-3, 0.0, 0.0, 2e-3]
    ps = _drop_in_params()
    opt = cls(ps, lr=lrs[0], foreach=foreach, **kw)
    want = _drop_in_run(ps, opt, range(5), lambda t: opt.param_groups[0].__setitem__("lr", lrs[t]))
    lr = torch.tensor(lrs[0])
    ps = _drop_in_params()
    opt = cls(ps, lr=lr, foreach=foreach, **kw)
    got = _drop_in_run(ps, opt, range(5), lambda t: lr.fill_(lrs[t]))
    for a, b in zip(got, want):
        assert torch.equal(a, b)


@pytest.mark.parametrize("tensor_lr", [False, True])
@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("cls,kw", DROP_IN)
def test_zero_lr_no_update(cls, kw, foreach, tensor_lr):
    lr = torch.tensor(1e-2) if tensor_lr else 1e-2
    ps = _drop_in_params()
    opt = cls(ps, lr=lr, foreach=foreach, **kw)
    _drop_in_run(ps, opt, range(3))
    if tensor_lr:
        lr.fill_(0.0)
    else:
        opt.param_groups[0]["lr"] = 0.0
    before = [p.detach().clone() for p in ps]
    for a, b in zip(_drop_in_run(ps, opt, range(3, 6)), before):
        assert torch.equal(a, b)


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("cls,kw", DROP_IN)
def test_step_leaves_grad_unchanged(cls, kw, foreach):
    # timm's suite checks this for foreach=False only on non-timm classes; both paths here
    ps = _drop_in_params()
    opt = cls(ps, lr=1e-2, foreach=foreach, **kw)
    for t in range(2):
        g = torch.Generator().manual_seed(t)
        grads = [3 * torch.randn(p.shape, generator=g) for p in ps]
        for p, gr in zip(ps, grads):
            p.grad = gr.clone()
        opt.step()
        for p, gr in zip(ps, grads):
            assert torch.equal(p.grad, gr)


def test_create_optimizer_contract():
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"name must be one of .*adamp.*sgdp"):
        create_optimizer(model, "lamb")
    with pytest.raises(TypeError, match="name"):
        create_optimizer(model, 3)
    with pytest.raises(ValueError, match="lr"):
        create_optimizer(model, "adamw", lr=float("nan"))
    # the call the core's default Recipe.optimizer makes
    opt = create_optimizer(model, "AdamP", lr=1e-3, weight_decay=0.05)
    assert isinstance(opt, AdamP) and [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    # parameter groups pass through; a Tensor lr reaches AdamP/SGDP
    groups = [{"params": list(model[0].parameters()), "lr": 0.5}]
    opt = create_optimizer(groups, "sgdp", lr=torch.tensor(0.1))
    assert opt.param_groups[0]["lr"] == 0.5
    assert set(create_optimizer.__code__.co_varnames[:4]) == {
        "model_or_params",
        "name",
        "lr",
        "weight_decay",
    }


# ----------------------------------------------------------------------------------- bad input

_G = torch.Generator().manual_seed(0)


def _params():
    return [nn.Parameter(torch.randn(4, 3, generator=_G))]


def _mlp():
    return nn.Sequential(nn.Linear(1, 8), nn.LeakyReLU(), nn.Linear(8, 1))


#: bad-input cases (collected by the package summary in test_optim_bad_inputs.py)
ENTRY_POINTS = {
    "AdamP()": (
        lambda **k: AdamP(_params(), **k),
        {"lr": 1e-3, "eps": 1e-8, "weight_decay": 0.01, "delta": 0.1, "wd_ratio": 0.1},
        {},
    ),
    "SGDP()": (
        lambda **k: SGDP(_params(), **k),
        {
            "lr": 0.1,
            "momentum": 0.9,
            "dampening": 0.1,
            "weight_decay": 0.01,
            "eps": 1e-8,
            "delta": 0.1,
        },
        {},
    ),
    "create_optimizer": (
        lambda **k: create_optimizer(_mlp(), **k),
        {"name": "adamp", "lr": 1e-3, "weight_decay": 0.01},
        {},
    ),
    "param_groups_no_decay_1d": (
        lambda **k: param_groups_no_decay_1d(_mlp(), **k),
        {"weight_decay": 0.01},
        {},
    ),
    "project_radial": (
        project_radial,
        {
            "p": torch.randn(4, 3, 2, generator=_G),
            "g": torch.randn(4, 3, 2, generator=_G),
            "u": torch.randn(4, 3, 2, generator=_G),
            "delta": 0.1,
            "eps": 1e-8,
        },
        {"accept": ("p:extra_dim",), "skip": ("g:extra_dim", "u:extra_dim")},
    ),
    "digits_split": (
        digits_split,
        {"seed": 0, "test_fraction": 0.25},
        {"accept": ("seed:negative",)},
    ),
}


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_adamp_bad_inputs(name):
    fn, kwargs, kw = ENTRY_POINTS[name]
    rep = fuzz_bad_inputs(fn, kwargs, name=name, **kw)
    assert rep.tried > 0 and rep.ok, "\n".join(rep.failures)
