import pytest
import torch

from invariance.core.groups import E3
from invariance.core.testing import assert_equivariant, assert_not_invariant
from invariance.geometry import FrameAveraging, PointNetSeg
from invariance.geometry.fa_normals import normal_error, real_mesh_normals
from invariance.geometry.recipes._common import shape_split, train_model
from invariance.geometry.recipes.fa_normals import FANormalsConfig, normals_step
from invariance.geometry.recipes.fa_normals import mean_normal_error as _err


def _clouds(b=2, n=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, 3, generator=g, dtype=torch.float64).exp() * torch.tensor(
        [3.0, 2.0, 1.0], dtype=torch.float64
    )


def test_fa_normals_equivariant_with_negative_control():
    torch.manual_seed(0)
    net = PointNetSeg(out_channels=3, hidden=16, global_dim=16).double()
    fa = FrameAveraging(net, output="vectors").eval()
    x = _clouds()
    assert fa(x).shape == x.shape
    assert_equivariant(fa, (x,), E3(), ("points",), "vector")
    assert_not_invariant(net, (x,), E3(), ("points",), "vector")


def test_normal_error_is_sign_agnostic():
    n = torch.nn.functional.normalize(torch.randn(2, 7, 3, dtype=torch.float64), dim=-1)
    assert normal_error(n, n).abs().max() < 1e-12
    assert normal_error(-3.0 * n, n).abs().max() < 1e-12
    perp = torch.linalg.cross(n, torch.randn_like(n), dim=-1)
    torch.testing.assert_close(normal_error(perp, n), torch.ones(2, dtype=torch.float64))


def test_fa_normals_learns_and_transfers_to_rotations():
    """Tiny run (4 classes x 6 shapes, 48 points, 60 steps): FA's rotated error stays at its
    aligned error while the plain per-point PointNet's grows (seed 0)."""
    cfg = FANormalsConfig(seed=0, n_classes=4, n_per_class=6, n_points=48, steps=60)
    train, val, test = (shape_split(cfg, s) for s in ("train", "val", "test"))
    torch.manual_seed(0)
    fa = train_model(
        FrameAveraging(PointNetSeg(out_channels=3, hidden=32, global_dim=32), output="vectors"),
        train,
        cfg,
        normals_step,
        seed=0,
    )
    pn = train_model(
        PointNetSeg(out_channels=3, hidden=32, global_dim=32), train, cfg, normals_step, seed=0
    )
    fa_rot, fa_al, pn_rot = _err(fa, test), _err(fa, val), _err(pn, test)
    assert fa_rot < 0.5 and abs(fa_rot - fa_al) < 0.1, (fa_rot, fa_al)
    assert fa_rot < pn_rot, (fa_rot, pn_rot)


def test_real_mesh_normals_from_pyvista():
    pytest.importorskip("pyvista", reason="pyvista (optional, ships the example meshes) is absent")
    ds = real_mesh_normals(64, rotations=2, seed=0)
    assert ds.pos.shape == (6, 64, 3) and ds.classes == ["airplane", "ant", "nut"]
    torch.testing.assert_close(ds.normal.norm(dim=-1), torch.ones(6, 64))
