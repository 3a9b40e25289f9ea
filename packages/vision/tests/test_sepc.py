import json
from pathlib import Path

import pytest
import torch

from invariance.core import make_config
from invariance.vision import SEPC, PyramidConv, build_retinanet
from invariance.vision.nn.sepc import SEPCConv, integrated_bn
from invariance.vision.sepc import SEPCRecipe, _level_shift_check, detection_ap

GOLDEN = json.loads((Path(__file__).parent / "golden_sepc.json").read_text())


def _pyr(levels=6, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, c, 2 ** (5 - i), 2 ** (5 - i), generator=g, dtype=torch.float64)
            for i in range(levels)]


def _randomise_offsets(m, std=0.3):
    g = torch.Generator().manual_seed(5)
    for mod in m.modules():
        if isinstance(mod, SEPCConv) and mod.offset is not None:
            torch.nn.init.normal_(mod.offset.weight, std=std, generator=g)


def test_sepc_level_shift_equivariance():
    xs = _pyr()
    for deform in (False, True):
        pc = PyramidConv(channels=4, ibn=True, deform=deform).double().eval()
        _randomise_offsets(pc)
        res = _level_shift_check("shift", lambda *lv, pc=pc: pc(list(lv[:5]))[2:4],
                                 lambda *lv, pc=pc: pc(list(lv[1:]))[1:3], xs)
        assert res.passed and res.error < 1e-12, res
    # negative controls: the bottom level (no finer neighbour after the shift) and iBN in
    # train mode (batch statistics of the whole pyramid change with the shift)
    pc = PyramidConv(channels=4, ibn=False).double()
    res = _level_shift_check("bottom", lambda *lv: pc(list(lv[:5]))[1:2],
                             lambda *lv: pc(list(lv[1:]))[0:1], xs, negative=True)
    assert res.passed and res.error > 1e-3, res
    pc = PyramidConv(channels=4, ibn=True).double().train()
    res = _level_shift_check("ibn-train", lambda *lv: pc(list(lv[:5]))[2:4],
                             lambda *lv: pc(list(lv[1:]))[1:3], xs, negative=True)
    assert res.passed and res.error > 1e-3, res


def test_sepc_zero_offset_equals_plain():
    xs = _pyr(5)
    a = SEPC(channels=4, num_pconv=2, variant="sepc").double().eval()
    b = SEPC(channels=4, num_pconv=2, variant="ibn").double().eval()
    b.load_state_dict({k: v for k, v in a.state_dict().items() if ".offset." not in k})
    for p, q in zip(a(xs)[0] + a(xs)[1], b(xs)[0] + b(xs)[1]):
        assert (p - q).abs().max() < 1e-12
    # and the deformable path really is used on levels >= 1 once offsets move
    _randomise_offsets(a)
    assert (a(xs)[0][1] - b(xs)[0][1]).abs().max() > 1e-6


def test_sepc_ibn_pooled_statistics():
    xs = [t.float() for t in _pyr(5)]
    bn = torch.nn.BatchNorm2d(4, momentum=1.0)
    out = integrated_bn(xs, bn)
    flat = torch.cat([t.transpose(0, 1).reshape(4, -1) for t in xs], dim=1)
    mean, var = flat.mean(1), flat.var(1, unbiased=False)
    assert torch.allclose(bn.running_mean, mean, atol=1e-5)
    for o, x in zip(out, xs):
        ref = (x - mean[None, :, None, None]) / (var[None, :, None, None] + bn.eps).sqrt()
        assert torch.allclose(o, ref, atol=1e-4)


def test_sepc_golden():
    for v, ref in GOLDEN["variants"].items():
        torch.manual_seed(0)
        m = SEPC(channels=4, num_pconv=2, variant=v).double()
        g = torch.Generator().manual_seed(1)
        for mod in m.modules():
            if getattr(mod, "offset", None) is not None:
                torch.nn.init.normal_(mod.offset.weight, std=0.5, generator=g)
            if isinstance(mod, SEPCConv):
                torch.nn.init.normal_(mod.weight, std=0.3, generator=g)
        m.eval()
        xs = [torch.randn(2, 4, s, s, generator=g, dtype=torch.float64) for s in (8, 4, 2, 1, 1)]
        with torch.no_grad():
            cls, loc = m(xs)
        assert [float(t.sum()) for t in cls] == pytest.approx(ref["cls_sum"], rel=1e-9, abs=1e-9)
        assert [float(t.sum()) for t in loc] == pytest.approx(ref["loc_sum"], rel=1e-9, abs=1e-9)


def test_sepc_detection_ap():
    t = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]),
          "labels": torch.tensor([1, 2])}]
    perfect = [{"boxes": t[0]["boxes"], "labels": t[0]["labels"],
                "scores": torch.tensor([0.9, 0.8])}]
    assert detection_ap(perfect, t, 3)["ap"] == pytest.approx(1.0)
    wrong = [{"boxes": t[0]["boxes"] + 15, "labels": t[0]["labels"],
              "scores": torch.tensor([0.9, 0.8])}]
    assert detection_ap(wrong, t, 3)["ap"] == 0.0
    half = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60]]),
             "labels": torch.tensor([1, 2]), "scores": torch.tensor([0.9, 0.8])}]
    assert detection_ap(half, t, 3)["ap"] == pytest.approx(0.5)


def test_sepc_bad_input():
    with pytest.raises(ValueError, match="variant"):
        SEPC(variant="sepc_pro")
    with pytest.raises(TypeError, match="list of >= 2"):
        PyramidConv(channels=4)(torch.rand(1, 4, 8, 8))
    with pytest.raises(ValueError, match="level 1"):
        PyramidConv(channels=4)([torch.rand(1, 4, 8, 8), torch.rand(1, 3, 4, 4)])
    with pytest.raises(ValueError, match="head"):
        build_retinanet(head="fcos")


def test_sepc_retinanet_trains():
    from invariance.core.train import fit_recipe

    r = SEPCRecipe()
    cfg = make_config(r, steps=3, lr=2e-3, n_train=12)
    model, res = fit_recipe(r, cfg, progress=False)
    assert len(res.history) >= 1 and torch.isfinite(torch.tensor(res.history[-1]["loss"]))
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 64, 64)])
    assert set(out[0]) == {"boxes", "scores", "labels"}
