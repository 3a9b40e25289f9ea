"""Bad-input harness over the public entry points of invariance-optim."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from invariance.core.testing import fuzz_bad_inputs, fuzz_table
from invariance.optim import (
    SGDP,
    AdamP,
    FactoredSphericalOutput,
    HyperNet,
    ZLoss,
    create_optimizer,
    encode_cos_sin,
    project_radial,
    spherical_mse_loss,
    taylor_softmax_loss,
    z_loss,
)
from invariance.optim.data import (
    digits_split,
    make_extreme_classification,
    make_gamma_sine,
    make_zipf_language,
)

G = torch.Generator().manual_seed(0)
W = torch.randn(4, 3, 2, generator=G)
LOGITS = torch.randn(5, 7, generator=G)
TARGET = torch.tensor([0, 3, 6, 1, 2])
H = torch.randn(6, 8, generator=G)
TARGET6 = torch.tensor([0, 1, 2, 3, 4, 5])


def _params():
    return [nn.Parameter(torch.randn(4, 3))]


def _mlp():
    return nn.Sequential(nn.Linear(1, 8), nn.LeakyReLU(), nn.Linear(8, 1))


def _hypernet():
    return HyperNet(_mlp(), cond_dim=2, generator=torch.Generator().manual_seed(0))


HN = _hypernet()
FACT = FactoredSphericalOutput(8, 20, generator=torch.Generator().manual_seed(0))

# (entry point, valid kwargs, options); "arg:kind" accepts list mutations that are valid input
ENTRY_POINTS = [
    (
        lambda **k: AdamP(_params(), **k),
        dict(lr=1e-3, eps=1e-8, weight_decay=0.01, delta=0.1, wd_ratio=0.1),
        dict(name="AdamP"),
    ),
    (
        lambda **k: SGDP(_params(), **k),
        dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01, eps=1e-8, delta=0.1),
        dict(name="SGDP"),
    ),
    (
        lambda **k: create_optimizer(_mlp(), **k),
        dict(name="adamp", lr=1e-3, weight_decay=0.01),
        dict(name="create_optimizer"),
    ),
    (
        project_radial,
        dict(p=W, g=torch.randn(4, 3, 2, generator=G), u=torch.randn(4, 3, 2, generator=G)),
        dict(accept=("p:extra_dim",), skip=("g:extra_dim", "u:extra_dim")),
    ),
    (
        z_loss,
        dict(logits=LOGITS, target=TARGET, a=1.0, b=0.5, eps=1e-12),
        dict(accept=("b:negative",)),
    ),
    (
        lambda **k: ZLoss(**k),
        dict(a=1.0, b=0.5, reduction="mean"),
        dict(name="ZLoss", accept=("b:negative",)),
    ),
    (ZLoss(), dict(logits=LOGITS, target=TARGET), dict(name="ZLoss.forward")),
    (spherical_mse_loss, dict(logits=LOGITS, target=TARGET), {}),
    (taylor_softmax_loss, dict(logits=LOGITS, target=TARGET), {}),
    (
        lambda **k: FactoredSphericalOutput(**k),
        dict(in_features=8, num_classes=20, loss="z", a=1.0, b=0.5, refresh_every=10),
        dict(name="FactoredSphericalOutput", accept=("b:negative",)),
    ),
    (FACT, dict(h=H, target=TARGET6), dict(name="FactoredSphericalOutput.forward")),
    (
        lambda **k: HyperNet(_mlp(), **k),
        dict(cond_dim=2, negative_slope=0.01, theta0="kaiming"),
        dict(name="HyperNet", accept=("negative_slope:negative",)),
    ),
    (
        HN.predict,
        dict(gamma=torch.rand(3, 2, generator=G)),
        dict(name="HyperNet.predict", accept=("gamma:fewer_dims",)),
    ),
    (
        lambda gamma, x: HN(gamma, x),
        dict(gamma=torch.rand(2, generator=G), x=torch.randn(5, 1, generator=G)),
        dict(
            name="HyperNet.forward",
            # x goes to the primary as it is: its shape and dtype are the primary's business
            accept=("x:extra_dim", "x:fewer_dims", "x:empty", "gamma:fewer_dims"),
            skip=("x:int_dtype",),
            aliases={"x": ["args[0]"]},
        ),
    ),
    (
        encode_cos_sin,
        dict(gamma=torch.rand(3, 2, generator=G)),
        dict(accept=("gamma:extra_dim", "gamma:fewer_dims")),
    ),
    (digits_split, dict(seed=0, test_fraction=0.25), dict(accept=("seed:negative",))),
    (
        make_extreme_classification,
        dict(n=50, num_classes=10, dim=4, zipf=1.0, noise=0.5, seed=0),
        dict(accept=("seed:negative",)),
    ),
    (
        make_zipf_language,
        dict(n=50, vocab=20, rank=4, zipf=1.0, temp=2.0, seed=0),
        dict(accept=("seed:negative",)),
    ),
    (
        make_gamma_sine,
        dict(n_gamma=4, n_x=5, cond_dim=1, seed=0),
        dict(accept=("seed:negative",)),
    ),
]


def _name(entry):
    fn, _, opts = entry
    return opts.get("name") or getattr(fn, "__name__", type(fn).__name__)


def _run(entry):
    fn, kwargs, opts = entry
    opts = {**opts, "name": _name(entry)}
    return fuzz_bad_inputs(fn, kwargs, **opts)


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=[_name(e) for e in ENTRY_POINTS])
def test_bad_inputs_handled(entry):
    rep = _run(entry)
    assert rep.tried > 0
    assert not rep.failures, "\n".join(rep.failures)


def test_bad_input_summary():
    reports = [_run(e) for e in ENTRY_POINTS]
    print()
    print(fuzz_table(reports))
    assert all(not r.failures for r in reports)
