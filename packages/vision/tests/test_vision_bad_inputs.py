"""Bad-input harness (CONTRIBUTING.md, "Bad input") over the public entry points of
invariance-vision: every derived bad call (NaN/inf, empty, wrong dims or dtype, negative or
non-numeric hyper-parameters, unknown strings) must raise ValueError/TypeError naming the
argument. ``test_bad_input_summary`` prints the tried/handled table shown in the README: these
entry points plus the ``ENTRY_POINTS`` that the methods' own test files declare."""

from pathlib import Path

import pytest
import torch

from invariance.core.testing import bad_input_summary, fuzz_bad_inputs
from invariance.vision import (
    BSS,
    SEPC,
    GalaxyNet,
    GalaxyZooOutput,
    PlainGalaxyCNN,
    PyramidConv,
    SimCLR,
    SSLAugment,
    batch_styles_standardization,
    build_retinanet,
    detection_ap,
    galaxy_views,
    make_digit_scenes,
    make_digit_styles,
    make_galaxies,
    nt_xent_loss,
    simulate_votes,
)
from invariance.vision.data.galaxies import rotate_images
from invariance.vision.galaxy import galaxy_loss


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def _img(n=2, c=3, s=45, seed=0):
    return torch.rand(n, c, s, s, generator=_g(seed))


_NET = dict(view_size=45, part_size=37, width=0.125, hidden=8, init="kaiming", dropout=0.0)
_GNET = GalaxyNet(**_NET, merge="mean").eval()
_PLAIN = PlainGalaxyCNN(view_size=45, width=0.125, hidden=8, init="kaiming", dropout=0.0).eval()
_PC = PyramidConv(channels=4, ibn=True, deform=True).eval()
_NECK = SEPC(channels=4, num_pconv=1, variant="sepc").eval()
_SIMCLR = SimCLR(width=4, feat_dim=8, proj_dim=4).eval()
_TRUTH = torch.randint(0, 2, (4, 11), generator=_g())
_T = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([1])}]
_P = [{"boxes": _T[0]["boxes"], "labels": torch.tensor([1]), "scores": torch.tensor([0.9])}]


def _pyramid(fn):
    def call(x0, x1, x2):
        with torch.no_grad():
            return fn([x0, x1, x2])

    return call


def _lv(i):
    return torch.randn(2, 4, 8 >> i, 8 >> i, generator=_g(i))


_LEVEL_ALIASES = {f"x{i}": [f"level {i}"] for i in range(3)}

ENTRY_POINTS = {
    "GalaxyNet.forward": (_GNET, {"x": _img()}, {}),
    "GalaxyNet()": (GalaxyNet, {**_NET, "merge": "mean"}, {}),
    "PlainGalaxyCNN.forward": (_PLAIN, {"x": _img()}, {}),
    "GalaxyZooOutput.forward": (
        GalaxyZooOutput(),
        {"x": torch.rand(3, 37, generator=_g())},
        {"accept": ("x:extra_dim",)},
    ),
    "galaxy_views": (galaxy_views, {"x": _img(), "view_size": 45, "part_size": 37}, {}),
    "galaxy_loss": (
        galaxy_loss,
        {"pred": torch.rand(3, 37, generator=_g(1)), "votes": torch.rand(3, 37, generator=_g(2))},
        {},
    ),
    "make_galaxies": (
        make_galaxies,
        {"n": 2, "seed": 0, "size": 24, "n_volunteers": 5, "noise": 0.02},
        {"skip": ("seed:negative",)},
    ),
    "simulate_votes": (
        simulate_votes,
        {"truth": _TRUTH, "beta": torch.full((4,), 2.0), "n_volunteers": 5},
        {},
    ),
    "rotate_images": (rotate_images, {"x": _img(), "angle": torch.tensor([0.3, 1.0])}, {}),
    "batch_styles_standardization": (
        batch_styles_standardization,
        {"x": _img(4, s=16), "r": 0.1, "mode": "mix", "lam": 0.5, "window": "centered"},
        {},
    ),
    "BSS()": (BSS, {"r_range": (0.01, 0.2), "mode": "swap", "window": "centered", "p": 1.0}, {}),
    "BSS.forward": (BSS(r_range=(0.01, 0.2)), {"x": _img(4, s=16)}, {}),
    "SSLAugment.forward": (SSLAugment(), {"x": _img(4, s=16)}, {}),
    "SSLAugment()": (SSLAugment, {"jitter": 0.4, "hue": 0.1}, {}),
    "nt_xent_loss": (
        nt_xent_loss,
        {
            "z1": torch.randn(4, 8, generator=_g(1)),
            "z2": torch.randn(4, 8, generator=_g(2)),
            "temperature": 0.2,
        },
        {},
    ),
    "SimCLR.forward": (_SIMCLR, {"x": _img(2, s=16)}, {}),
    "make_digit_styles": (
        make_digit_styles,
        {"n": 4, "seed": 0, "domain": "A", "size": 16},
        {"skip": ("seed:negative",)},
    ),
    "make_digit_scenes": (
        make_digit_scenes,
        {"n": 2, "seed": 0, "size": 64, "max_objects": 2},
        {"skip": ("seed:negative",)},
    ),
    "PyramidConv.forward": (
        _pyramid(_PC),
        {"x0": _lv(0), "x1": _lv(1), "x2": _lv(2)},
        {"aliases": _LEVEL_ALIASES},
    ),
    "SEPC.forward": (
        _pyramid(_NECK),
        {"x0": _lv(0), "x1": _lv(1), "x2": _lv(2)},
        {"aliases": _LEVEL_ALIASES},
    ),
    "SEPC()": (SEPC, {"channels": 4, "num_pconv": 1, "variant": "sepc"}, {}),
    "build_retinanet": (
        build_retinanet,
        {
            "head": "sepc",
            "num_classes": 3,
            "image_size": 64,
            "width": 4,
            "channels": 8,
            "num_pconv": 1,
            "beta": 0.11,
        },
        {},
    ),
    "detection_ap": (detection_ap, {"preds": _P, "targets": _T, "num_classes": 3}, {}),
}


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_vision_bad_inputs(name):
    fn, kwargs, kw = ENTRY_POINTS[name]
    rep = fuzz_bad_inputs(fn, kwargs, name=name, **kw)
    assert rep.tried > 0
    assert rep.ok, "\n".join(rep.failures)


def test_bad_input_summary():
    here = Path(__file__)
    bad_input_summary(here.parent, extra=ENTRY_POINTS, exclude=(here.name,))
