"""Parity with the peer implementation ``frame-averaging-pytorch`` (lucidrains, PyPI).

Golden values (``golden_fa_peer.json``) were recorded by running the peer around tiny fixed
backbones (provenance inside the file); the live test runs the peer when it is installed.

Convention differences (the forward pass is otherwise identical, same 8 PCA frames):

* the peer's equivariant output is ``mean_f y_f R_fᵀ`` with no centroid added back, i.e. our
  ``output="vectors"``; our ``output="points"`` equals it plus the centroid ``t``;
* the peer lays the frames out batch-major ``(b f)``, we use ``(f b)``: the same for any backbone
  that treats batch items independently (not for batch-mixing layers such as BatchNorm in
  training mode);
* the peer frames only ``points`` (other tensor arguments are repeated, never rotated), has no
  SO(3) frames, and in stochastic mode draws one frame for the whole batch (we draw one per cloud);
* the peer back-propagates through ``eigh``; we detach the frame (the official code's choice).
"""

import importlib.util
import json
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from invariance.geometry import FrameAveraging, PointNet

GOLD = json.loads((Path(__file__).parent / "golden_fa_peer.json").read_text())
HAS_PEER = importlib.util.find_spec("frame_averaging_pytorch") is not None


class _ChiralPos(nn.Module):
    """Per-point, non-equivariant (chiral) map of the positions only."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 3)

    def forward(self, pos):
        return torch.linalg.cross(self.a(pos), self.b(pos), dim=-1) + pos


def _load(module, sd):
    module.load_state_dict({k: torch.tensor(v, dtype=torch.float64) for k, v in sd.items()})
    return module.double().eval()


def _backbones():
    p = GOLD["pointnet"]
    pn = _load(
        PointNet(num_classes=p["num_classes"], hidden=p["hidden"], global_dim=p["global_dim"]),
        p["state_dict"],
    )
    return pn, _load(_ChiralPos(), GOLD["chiral_state_dict"])


def test_fa_matches_peer_golden():
    pn, ch = _backbones()
    pos = torch.tensor(GOLD["pos"], dtype=torch.float64)
    with torch.no_grad():
        inv = FrameAveraging(pn).eval()(pos)
        vec = FrameAveraging(ch, output="vectors").eval()(pos)
        pts = FrameAveraging(ch, output="points").eval()(pos)
    gold_inv = torch.tensor(GOLD["invariant"], dtype=torch.float64)
    gold_vec = torch.tensor(GOLD["equivariant_vectors"], dtype=torch.float64)
    torch.testing.assert_close(inv, gold_inv, atol=1e-10, rtol=0)
    torch.testing.assert_close(vec, gold_vec, atol=1e-10, rtol=0)
    # the documented convention difference: our "points" output adds the centroid back
    torch.testing.assert_close(pts, gold_vec + pos.mean(1, keepdim=True), atol=1e-10, rtol=0)
    # and the peer's output is not our "points" output (the difference is detectable)
    assert (pts - gold_vec).abs().max() > 0.1


@pytest.mark.skipif(not HAS_PEER, reason="frame-averaging-pytorch is not installed")
def test_fa_matches_peer_live():
    from frame_averaging_pytorch import FrameAverage

    torch.manual_seed(3)
    pn = PointNet(num_classes=5).double().eval()
    ch = _ChiralPos().double().eval()
    g = torch.Generator().manual_seed(11)
    pos = (
        torch.randn(3, 50, 3, generator=g, dtype=torch.float64)
        @ torch.diag(torch.tensor([4.0, 2.0, 1.0], dtype=torch.float64))
        + 3.0
    )
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", UserWarning)  # a torch indexing deprecation in the peer
        peer_inv = FrameAverage(pn, dim=3, invariant_output=True).eval()(pos)
        peer_vec = FrameAverage(ch, dim=3, invariant_output=False).eval()(pos)
        for fpp in (None, 1, "auto"):
            ours = FrameAveraging(pn, frames_per_pass=fpp).eval()(pos)
            torch.testing.assert_close(ours, peer_inv, atol=1e-10, rtol=0)
        vec = FrameAveraging(ch, output="vectors").eval()(pos)
    torch.testing.assert_close(vec, peer_vec, atol=1e-10, rtol=0)
    # float32, the peer's usual dtype: same to 1e-5
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", UserWarning)
        p32 = FrameAverage(pn.float(), dim=3, invariant_output=True).eval()(pos.float())
        o32 = FrameAveraging(pn).eval()(pos.float())
    torch.testing.assert_close(o32, p32, atol=1e-5, rtol=0)
