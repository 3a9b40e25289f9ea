import pytest
import torch
from torch import nn

from invariance.core.groups import E3, Permutation, Scaling
from invariance.core.testing import assert_equivariant, assert_invariant, assert_not_invariant
from invariance.geometry import PointNet, TinvNN, tinvnn_coordinates, tinvnn_from_distances
from invariance.geometry.ops import pca_frames
from invariance.geometry.recipes._common import ShapeClsConfig, plain_pointnet, rotated_protocol


def _clouds(b=3, n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, 3, generator=g, dtype=torch.float64).exp() * torch.tensor(
        [3.0, 2.0, 1.0], dtype=torch.float64
    )


def test_tinvnn_invariant_e3_with_negative_control():
    torch.manual_seed(0)
    net = PointNet(num_classes=4).eval()
    x = _clouds()
    assert_invariant(TinvNN(net).eval(), (x,), E3(), ("points",))
    assert_invariant(TinvNN(net, method="mds").eval(), (x,), E3(), ("points",))
    assert_not_invariant(net, (x,), E3(), ("points",))
    assert_not_invariant(TinvNN(net, sign="none").eval(), (x,), E3(), ("points",))  # no sign rule


def test_tinvnn_scale_invariance():
    x = _clouds()
    f = lambda p: tinvnn_coordinates(p, scale="rms")  # noqa: E731
    assert_invariant(f, (x,), Scaling(), ("scale",))
    assert_invariant(f, (x,), E3(), ("points",))
    assert_not_invariant(tinvnn_coordinates, (x,), Scaling(), ("scale",))


def test_tinvnn_pca_equals_mds():
    x = _clouds(b=4, n=60)
    torch.testing.assert_close(
        tinvnn_coordinates(x), tinvnn_coordinates(x, method="mds"), atol=1e-9, rtol=0
    )
    d2 = ((x[0, :, None] - x[0, None]) ** 2).sum(-1)
    torch.testing.assert_close(
        tinvnn_from_distances(d2), tinvnn_coordinates(x[0]), atol=1e-9, rtol=0
    )
    # its frame is one of Frame Averaging's 8 O(3) frames (columns reversed)
    _, t, R, _ = tinvnn_coordinates(x, return_transform=True)
    fa = pca_frames(x).frames
    for b in range(4):
        assert min(float((R[b].flip(-1) - fa[b, k]).abs().max()) for k in range(8)) < 1e-12


def test_tinvnn_preserves_distances():
    x = _clouds()
    c = tinvnn_coordinates(x)
    d = lambda p: ((p[:, :, None] - p[:, None]) ** 2).sum(-1)  # noqa: E731
    torch.testing.assert_close(d(c), d(x), atol=1e-9, rtol=1e-9)


def test_tinvnn_permutation():
    x = _clouds()
    assert_equivariant(tinvnn_coordinates, (x,), Permutation(dim=1), ("nodes",), "nodes")


class _Lin(nn.Module):
    def __init__(self):
        super().__init__()
        self.l = nn.Linear(3, 3)

    def forward(self, pos):
        return torch.tanh(self.l(pos)) + pos


def test_tinvnn_equivariant_output():
    torch.manual_seed(0)
    x = _clouds()
    assert_equivariant(TinvNN(_Lin(), output="points").eval(), (x,), E3(), ("points",), "points")
    assert_equivariant(TinvNN(_Lin(), output="vectors").eval(), (x,), E3(), ("points",), "vector")
    assert_not_invariant(_Lin(), (x,), E3(), ("points",), "points")


def test_tinvnn_bad_input():
    with pytest.raises(ValueError, match="at least 2 points"):
        tinvnn_coordinates(torch.rand(1, 3))
    with pytest.raises(ValueError, match="method"):
        TinvNN(PointNet(num_classes=2), method="svd")
    with pytest.raises(ValueError, match="scale"):
        TinvNN(PointNet(num_classes=2), scale="l1")
    with pytest.raises(ValueError, match="last dimension 3"):
        tinvnn_coordinates(torch.rand(5, 2))


def test_tinvnn_learns_rotated_shapes():
    """Margin from seeds 0-2 (5 classes, 48 points, 100 steps): TinvNN-PointNet rotated accuracy
    0.50/0.40/0.55 vs PointNet 0.20/0.20/0.25; assert +0.15 at seed 0."""
    cfg = ShapeClsConfig(seed=0, n_classes=5, n_per_class=8, n_points=48, steps=100, batch_size=16)
    res, _ = rotated_protocol(
        cfg,
        {"pointnet": lambda: plain_pointnet(cfg), "tinvnn": lambda: TinvNN(plain_pointnet(cfg))},
    )
    assert res["tinvnn"]["rotated_acc"] >= res["pointnet"]["rotated_acc"] + 0.15, res


def _symmetric_clouds():
    import itertools

    cube = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=3)), dtype=torch.float64)
    p = (1 + 5**0.5) / 2
    ico = []
    for a in (-1.0, 1.0):
        for b in (-p, p):
            ico += [[0.0, a, b], [a, b, 0.0], [b, 0.0, a]]
    box = cube * torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)  # distinct eigenvalues
    return {"cube": cube, "icosahedron": torch.tensor(ico, dtype=torch.float64), "box": box}


@pytest.mark.parametrize("name", ["cube", "icosahedron", "box"])
@pytest.mark.parametrize("method", ["pca", "mds"])
def test_tinvnn_on_degenerate_symmetric_clouds(name, method):
    """Issue 14: TinvNN has no unique canonical frame for a cube or an icosahedron (repeated
    eigenvalues) nor for a centrally symmetric box (distinct eigenvalues, but no sign rule can fix
    the axes): it warns by default, raises or stays silent on request."""
    import warnings

    torch.manual_seed(0)
    net = PointNet(num_classes=4).double().eval()
    x = _symmetric_clouds()[name].unsqueeze(0)
    with pytest.warns(RuntimeWarning, match="not unique"):
        y = TinvNN(net, method=method)(x)
    assert torch.isfinite(y).all()
    with pytest.raises(ValueError, match="not unique"):
        TinvNN(net, method=method, on_degenerate="raise")(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TinvNN(net, method=method, on_degenerate="ignore")(x)
        gen = torch.randn(2, 40, 3, dtype=torch.float64).pow(3) * torch.tensor(
            [3.0, 2.0, 1.0], dtype=torch.float64
        )
        TinvNN(net, method=method, on_degenerate="raise")(gen)  # generic clouds pass
    with pytest.raises(ValueError, match="on_degenerate"):
        TinvNN(net, on_degenerate="sometimes")
