import pytest
import torch

from invariance.core.testing import assert_rejects_bad_inputs
from invariance.vision import modalities as M
from invariance.vision.data.prim3d import make_prim3d
from invariance.vision.render import look_at, render


@pytest.fixture(scope="module")
def frames():
    torch.manual_seed(0)
    sc, _ = make_prim3d(1, seed=0, classes=(0, 5))
    idx = torch.tensor([0, 1])
    a = render(
        sc,
        look_at(torch.tensor([30.0, 100.0]), torch.tensor([20.0, 15.0]), distance=3.5),
        size=32,
        scene_index=idx,
    )
    b = render(
        sc,
        look_at(torch.tensor([33.0, 103.0]), torch.tensor([20.0, 15.0]), distance=3.5),
        size=32,
        scene_index=idx,
    )
    return sc, a, b


def test_every_modality_is_pixel_aligned_and_in_range(frames):
    _, a, b = frames
    g = torch.Generator().manual_seed(0)
    outs = [
        M.infrared(a["material"], a["mask"], generator=g),
        M.depth_map(a["depth"], a["mask"]),
        M.normal_map(a["normals"], a["mask"]),
        M.events(a["rgb"], b["rgb"]),
        M.sketch(a["rgb"]),
        M.paint(a["rgb"], generator=g),
    ]
    for o in outs:
        assert o.shape == a["rgb"].shape
        assert o.min() >= 0 and o.max() <= 1
        assert o.std() > 0.01  # not a constant image
    # the object region of the depth/normal maps is exactly the mask
    assert torch.equal(M.depth_map(a["depth"], a["mask"])[:, :1] > 0, a["mask"] > 0)


def test_events_vanish_for_identical_frames_and_a_global_gain(frames):
    _, a, b = frames
    assert M.events(a["rgb"], a["rgb"]).sum() == 0
    # log-intensity change is blind to a global gain (eps -> 0 limit: use a tiny eps)
    x = a["rgb"] * 0.5 + 0.25
    assert M.events(x, x * 1.1, eps=1e-9).sum() == 0
    assert M.events(a["rgb"], b["rgb"]).sum() > 0  # a small camera motion does fire


def test_infrared_ignores_colour_and_is_reproducible(frames):
    sc, a, _ = frames
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    ir1 = M.infrared(a["material"], a["mask"], generator=g1)
    ir2 = M.infrared(a["material"], a["mask"], generator=g2)
    assert torch.equal(ir1, ir2)
    flipped = M.infrared(a["material"], a["mask"], noise=0.0, flip=True)
    plain = M.infrared(a["material"], a["mask"], noise=0.0)
    torch.testing.assert_close(flipped, 1 - plain)


def test_bad_inputs(frames):
    _, a, b = frames
    with pytest.raises(ValueError, match="frame1"):
        M.events(a["rgb"], b["rgb"][:, :, :16])
    with pytest.raises(ValueError, match="low"):
        M.sketch(a["rgb"], low=0.5, high=0.2)
    with pytest.raises(ValueError, match="mask"):
        M.infrared(a["material"], a["mask"][:, :, :10])
    assert_rejects_bad_inputs(M.sketch, {"rgb": a["rgb"]}, name="sketch", accept=())
    assert_rejects_bad_inputs(
        M.normal_map, {"normals": a["normals"], "mask": a["mask"]}, name="normal_map"
    )
