import math
import warnings

import pytest
import torch
from torch import nn

from invariance.core.groups import Scaling
from invariance.core.testing import (
    assert_equivariant,
    assert_not_equivariant,
    assert_not_invariant,
    fuzz_bad_inputs,
    with_package,
)
from invariance.optim import HyperNet
from invariance.optim.data import make_gamma_sine
from invariance.optim.mip import encode_cos_sin


def _primary():
    return nn.Sequential(
        nn.Linear(1, 32), nn.LeakyReLU(), nn.Linear(32, 32), nn.LeakyReLU(), nn.Linear(32, 1)
    )


def test_mip_encoding_norm_invariant():
    g = torch.Generator().manual_seed(0)
    # gammas whose norms vary tenfold; ||E|| is sqrt(k) for all of them (an identity, so an
    # invariance check on it would be vacuous: the value is checked instead)
    scale = torch.logspace(-1, 0, 5, dtype=torch.float64).unsqueeze(1)
    gamma = torch.rand(5, 3, generator=g, dtype=torch.float64) * scale
    norm = lambda z: encode_cos_sin(z, warn=False).norm(dim=-1)
    assert float(gamma.norm(dim=-1).max() / gamma.norm(dim=-1).min()) > 5
    assert torch.allclose(
        norm(gamma), torch.full((5,), math.sqrt(3), dtype=torch.float64), rtol=0, atol=1e-12
    )
    # negative control: the raw input of a plain hypernetwork scales with gamma
    assert_not_invariant(lambda z: z.norm(dim=-1), (gamma,), Scaling(0.1, 1.0), ("scale",))
    with pytest.warns(UserWarning, match=r"\[0, 1\]"):
        encode_cos_sin(gamma * 2)


def test_mip_magnitude_ratio():
    g = torch.Generator().manual_seed(0)
    gamma = torch.rand(4, 1, generator=g, dtype=torch.float64) * 0.5
    base = HyperNet(
        _primary(), cond_dim=1, mip=False, generator=torch.Generator().manual_seed(1)
    ).double()
    mip = HyperNet(
        _primary(), cond_dim=1, mip=True, generator=torch.Generator().manual_seed(1)
    ).double()
    # the baseline is positively homogeneous: theta(c gamma) = c theta(gamma) exactly
    assert_equivariant(base.predict_flat, (gamma,), Scaling(0.1, 2.0), ("scale",), "scale")
    # MIP breaks the proportionality (negative control for the check above)
    assert_not_equivariant(mip.predict_flat, (gamma,), Scaling(0.1, 2.0), ("scale",), "scale")
    with torch.no_grad():
        rb = base.predict_flat(2 * gamma).norm(dim=1) / base.predict_flat(gamma).norm(dim=1)
        rm = mip.predict_flat(2 * gamma).norm(dim=1) / mip.predict_flat(gamma).norm(dim=1)
    assert torch.allclose(rb, torch.full_like(rb, 2.0), atol=1e-12)
    assert (rm - 1).abs().max() < 0.05


def test_mip_zero_output_weights_give_theta0():
    hn = HyperNet(_primary(), cond_dim=2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hn.output.weight.zero_()
    gam = torch.rand(6, 2)
    pred = hn.predict(gam)
    for name, t0 in hn.theta0.items():
        assert torch.equal(pred[name], t0.expand_as(pred[name]))
    # and the primary then behaves exactly like a network holding theta0
    ref = _primary()
    ref.load_state_dict(hn.theta0)
    x = torch.randn(6, 5, 1)
    assert torch.allclose(hn(gam, x), ref(x), atol=1e-6)


def test_mip_bias_blocks_start_at_theta0():
    hn = HyperNet(_primary(), cond_dim=1, generator=torch.Generator().manual_seed(0))
    for name, (o, size) in hn.offsets.items():
        block = hn.output.weight[o : o + size]
        assert (block.abs().max() == 0) == (hn.roles[name] != "weight")
    assert all(v.abs().max() == 0 for k, v in hn.theta0.items() if hn.roles[k] == "bias")


def _norm_primary(norm):
    return nn.Sequential(nn.Linear(3, 16), norm, nn.ReLU(), nn.Linear(16, 2))


@pytest.mark.parametrize("norm", [nn.LayerNorm(16), nn.BatchNorm1d(16), nn.GroupNorm(4, 16)])
def test_mip_norm_primary_does_not_start_constant(norm):
    # before: norm scales got theta0 = 0 and zeroed output rows, so the primary's output was
    # the same for every input (std 0 over x)
    hn = HyperNet(_norm_primary(norm), cond_dim=2, generator=torch.Generator().manual_seed(0))
    x = torch.randn(10, 3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = hn(torch.tensor([0.3, 0.7]), x)
    assert float(out.std(0).min()) > 0.1
    assert torch.equal(hn.theta0["1.weight"], torch.ones(16))
    assert torch.equal(hn.theta0["1.bias"], torch.zeros(16))


class _Custom(nn.Module):
    """Parameters whose names say nothing about their role."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 4)
        self.bias_table = nn.Parameter(torch.randn(4, 4))  # 2-D, used as a weight below
        self.norm = nn.LayerNorm(4)
        self.layer_scale = nn.Parameter(torch.full((4,), 0.5))

    def forward(self, x):
        return self.norm(self.proj(x) @ self.bias_table) * self.layer_scale


def test_mip_roles_not_name_suffix():
    hn = HyperNet(_Custom(), cond_dim=1, generator=torch.Generator().manual_seed(0))
    assert hn.roles == {
        "proj.weight": "weight",
        "proj.bias": "bias",
        "bias_table": "weight",
        "norm.weight": "scale",
        "norm.bias": "shift",
        "layer_scale": "other",
    }
    t0 = hn.theta0
    assert t0["bias_table"].std() > 0.1  # a weight: Kaiming, not zeroed for its name
    assert torch.equal(t0["layer_scale"], torch.full((4,), 0.5))  # unknown role: primary's init
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert float(hn(torch.tensor([0.5]), x).std(0).min()) > 0.05


def test_mip_batched_gamma_with_batchnorm():
    gam = torch.rand(4, 2, generator=torch.Generator().manual_seed(0))
    x = torch.randn(4, 10, 3, generator=torch.Generator().manual_seed(1))
    hn = HyperNet(_norm_primary(nn.BatchNorm1d(16)), cond_dim=2)
    with pytest.raises(ValueError, match=r"gamma.*BatchNorm.*once per gamma"):
        hn(gam, x)
    # each row equals a single-gamma call when the BatchNorm keeps no running statistics
    hn = HyperNet(_norm_primary(nn.BatchNorm1d(16, track_running_stats=False)), cond_dim=2)
    with torch.no_grad():
        out = hn(gam, x)
        for i in range(4):
            assert torch.allclose(out[i], hn(gam[i], x[i]), atol=1e-5)
    # and in eval mode (running statistics read, not written)
    hn = HyperNet(_norm_primary(nn.BatchNorm1d(16)), cond_dim=2).eval()
    with torch.no_grad():
        out = hn(gam, x)
        assert torch.allclose(out[1], hn(gam[1], x[1]), atol=1e-5)


def test_mip_bad_input():
    hn = HyperNet(_primary(), cond_dim=2)
    with pytest.raises(ValueError, match=r"gamma must have shape \(2,\)"):
        hn.predict(torch.rand(3, 3))
    with pytest.raises(TypeError, match="floating"):
        hn.predict(torch.ones(2, dtype=torch.long))
    with pytest.raises(TypeError, match="nn.Module"):
        HyperNet(lambda x: x, cond_dim=1)
    with pytest.raises(ValueError, match="cond_dim"):
        HyperNet(_primary(), cond_dim=0)


@with_package("hyperlight")
def test_mip_parity_hyperlight():
    from hyperlight import HyperNet as HLHyperNet

    primary = _primary()
    shapes = {n: tuple(p.shape) for n, p in primary.named_parameters()}
    torch.manual_seed(0)
    ref = HLHyperNet(
        input_shapes={"gamma": (2,)},
        output_shapes=shapes,
        hidden_sizes=[16, 64, 128],
        encoding="cos|sin",
    )
    ours = HyperNet(primary, cond_dim=2, hidden_sizes=(16, 64, 128))
    ref_lins = [m for m in ref.backbone.modules() if isinstance(m, nn.Linear)]
    our_lins = [*ours.hidden, ours.output]
    assert len(ref_lins) == len(our_lins)
    with torch.no_grad():
        for a, b in zip(ref_lins, our_lins):
            b.weight.copy_(a.weight)
            b.bias.copy_(a.bias)
    gam = torch.rand(5, 2, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = ref(gamma=gam)
    got = ours.predict(gam)
    for name in shapes:
        assert torch.allclose(got[name], want[name], atol=1e-6)
    indep = ref.get_independent_weights()
    for name, t0 in ours.theta0.items():
        assert torch.equal(t0, indep[name])


def test_mip_learns_better_than_baseline():
    # gamma-conditioned sine regression, primary MLP with 5 linear layers, Adam lr 3e-3, 200 steps,
    # 8 gammas x 32 x per step. Measured MIP/baseline ratios on seeds 0, 1, 2:
    # final training loss (mean of the last 50 steps) 0.064, 0.129, 0.117;
    # held-out loss (11 x 64 grid) 0.069, 0.096, 0.106. Asserted on seed 0.
    from invariance.optim.recipes.mip import _train_gamma_regression

    kw = dict(seed=0, steps=200, lr=3e-3, depth=5)
    mip = _train_gamma_regression(mip=True, **kw)
    base = _train_gamma_regression(mip=False, **kw)
    assert mip["train_loss_final"] < 0.2 * base["train_loss_final"]
    assert mip["test_loss"] < 0.2 * base["test_loss"]


# ----------------------------------------------------------------------------------- bad input

_G = torch.Generator().manual_seed(0)


def _mlp():
    return nn.Sequential(nn.Linear(1, 8), nn.LeakyReLU(), nn.Linear(8, 1))


_HN = HyperNet(_mlp(), cond_dim=2, generator=torch.Generator().manual_seed(0))
_GAMMAS = torch.rand(3, 2, generator=_G)

#: bad-input cases (collected by the package summary in test_optim_bad_inputs.py)
ENTRY_POINTS = {
    "HyperNet()": (
        lambda **k: HyperNet(_mlp(), **k),
        {"cond_dim": 2, "negative_slope": 0.01, "theta0": "kaiming"},
        {"accept": ("negative_slope:negative",)},
    ),
    "HyperNet.predict": (_HN.predict, {"gamma": _GAMMAS}, {"accept": ("gamma:fewer_dims",)}),
    "HyperNet.predict_flat": (
        _HN.predict_flat,
        {"gamma": _GAMMAS},
        {"accept": ("gamma:fewer_dims",)},
    ),
    # encode is E(gamma) on the last dim: any leading shape is valid
    "HyperNet.encode": (
        _HN.encode,
        {"gamma": _GAMMAS},
        {"accept": ("gamma:extra_dim", "gamma:fewer_dims")},
    ),
    "HyperNet.forward": (
        lambda gamma, x: _HN(gamma, x),
        {"gamma": torch.rand(2, generator=_G), "x": torch.randn(5, 1, generator=_G)},
        {
            # x goes to the primary as it is: its shape and dtype are the primary's business
            "accept": ("x:extra_dim", "x:fewer_dims", "x:empty", "gamma:fewer_dims"),
            "skip": ("x:int_dtype",),
            "aliases": {"x": ["args[0]"]},
        },
    ),
    "encode_cos_sin": (
        encode_cos_sin,
        {"gamma": _GAMMAS},
        {"accept": ("gamma:extra_dim", "gamma:fewer_dims")},
    ),
    "make_gamma_sine": (
        make_gamma_sine,
        {"n_gamma": 4, "n_x": 5, "cond_dim": 1, "seed": 0},
        {"accept": ("seed:negative",)},
    ),
}


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_mip_bad_inputs(name):
    fn, kwargs, kw = ENTRY_POINTS[name]
    rep = fuzz_bad_inputs(fn, kwargs, name=name, **kw)
    assert rep.tried > 0 and rep.ok, "\n".join(rep.failures)
