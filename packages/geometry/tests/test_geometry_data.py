import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from invariance.core.groups import E3
from invariance.core.testing import assert_equivariant, assert_not_invariant
from invariance.geometry.data import (
    SHAPE_CLASSES,
    load_pyvista_mesh,
    make_nbody,
    make_shape_classes,
    read_ply,
    sample_mesh,
    sample_shape,
    simulate_charged,
)


def test_shape_classes_are_seeded_with_unit_normals():
    assert len(SHAPE_CLASSES) >= 10
    a = make_shape_classes(1, 64, seed=3, dtype=torch.float64)
    b = make_shape_classes(1, 64, seed=3, dtype=torch.float64)
    assert torch.equal(a.pos, b.pos) and torch.equal(a.y, torch.arange(len(SHAPE_CLASSES)))
    assert torch.allclose(a.normal.norm(dim=-1), torch.ones(1, dtype=torch.float64))
    assert torch.allclose(a.pos.mean(1), torch.zeros(1, dtype=torch.float64), atol=0.05)
    assert not torch.equal(make_shape_classes(1, 64, seed=4).pos, a.pos.float())


@pytest.mark.parametrize("name", ["sphere", "cube", "torus", "cone"])
def test_exact_normals_are_normal_to_the_surface(name):
    """Points without noise lie on the surface and normals agree with local PCA normals."""
    from invariance.geometry.ops import estimate_normals

    p, n = sample_shape(name, 2000, generator=torch.Generator().manual_seed(0), jitter=0.0)
    est = estimate_normals(p, 10, orient="none")
    cos = (est * n).sum(-1).abs()
    assert cos.median() > 0.99


def test_rotated_split_rotates_points_and_normals_consistently():
    a = make_shape_classes(1, 32, seed=0, classes=["cone", "hemisphere"], dtype=torch.float64)
    r = make_shape_classes(
        1, 32, seed=0, classes=["cone", "hemisphere"], rotation="so3", dtype=torch.float64
    )
    # a rotation preserves Gram matrices and point-normal dot products
    assert torch.allclose(a.pos @ a.pos.transpose(1, 2), r.pos @ r.pos.transpose(1, 2), atol=1e-10)
    assert torch.allclose((a.pos * a.normal).sum(-1), (r.pos * r.normal).sum(-1), atol=1e-10)
    assert not torch.allclose(a.pos, r.pos)


def test_shape_bad_input():
    with pytest.raises(ValueError, match="unknown shape class"):
        sample_shape("teapot", 10, generator=torch.Generator())
    with pytest.raises(ValueError, match="rotation"):
        make_shape_classes(1, 8, seed=0, rotation="z")
    with pytest.raises(ValueError, match="classes must not be empty"):
        make_shape_classes(1, 8, seed=0, classes=[])


def _write_ply(path: Path, binary: bool) -> None:
    V = [(0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (1.0, 1.0, 0.0), (0.0, 1.0, 0.0)]
    head = [
        "ply",
        f"format {'binary_little_endian' if binary else 'ascii'} 1.0",
        "comment test",
        "element vertex 4",
        "property float x",
        "property float y",
        "property float z",
        "property uchar red",
        "element face 1",
        "property list uchar int vertex_indices",
        "end_header",
    ]
    body = b""
    if binary:
        for v in V:
            body += struct.pack("<fffB", *v, 7)
        body += struct.pack("<B4i", 4, 0, 1, 2, 3)
    else:
        body = ("\n".join(f"{x} {y} {z} 7" for x, y, z in V) + "\n4 0 1 2 3\n").encode()
    path.write_bytes(("\n".join(head) + "\n").encode() + body)


@pytest.mark.parametrize("binary", [False, True])
def test_read_ply_ascii_and_binary(tmp_path, binary):
    f = tmp_path / "quad.ply"
    _write_ply(f, binary)
    V, F = read_ply(f)
    assert V.shape == (4, 3) and F.tolist() == [[0, 1, 2], [0, 2, 3]]
    p, n = sample_mesh(V, F, 100, seed=0, normalize=False)
    assert torch.allclose(p[:, 2], torch.zeros(100, dtype=torch.float64))
    assert torch.allclose(n, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(100, 3))
    assert (p[:, :2] >= 0).all() and (p[:, :2] <= 1).all()


def test_read_ply_errors(tmp_path):
    bad = tmp_path / "bad.ply"
    bad.write_bytes(b"not a ply\n")
    with pytest.raises(ValueError, match="not a PLY"):
        read_ply(bad)
    with pytest.raises(ValueError, match="faces is empty"):
        sample_mesh(torch.zeros(3, 3), torch.zeros(0, 3, dtype=torch.long), 5, seed=0)


_WHEEL = os.environ.get("INVARIANCE_PYVISTA_WHEEL")


def _pyvista_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("pyvista") is not None or bool(_WHEEL)


@pytest.mark.skipif(
    not _pyvista_available(), reason="needs pyvista installed or INVARIANCE_PYVISTA_WHEEL"
)
@pytest.mark.parametrize(
    "name, nv, nf", [("airplane", 1335, 2452), ("ant", 486, 912), ("nut", 523, 1046)]
)
def test_pyvista_meshes_read_without_vtk(name, nv, nf):
    V, F = load_pyvista_mesh(name, wheel=_WHEEL)
    assert V.shape == (nv, 3) and F.shape == (nf, 3)
    p, n = sample_mesh(V, F, 256, seed=0)
    assert p.shape == (256, 3) and torch.isfinite(n).all()


def test_pyvista_missing_is_a_clear_error():
    if _pyvista_available():
        pytest.skip("pyvista is available here")
    with pytest.raises(FileNotFoundError, match="pyvista is not installed"):
        load_pyvista_mesh("ant")
    with pytest.raises(ValueError, match="unknown pyvista example"):
        load_pyvista_mesh("teapot")


def test_nbody_simulator_is_e3_equivariant_without_clipping():
    g = torch.Generator().manual_seed(0)
    loc0 = torch.randn(4, 5, 3, generator=g, dtype=torch.float64)
    vel0 = 0.5 * torch.randn(4, 5, 3, generator=g, dtype=torch.float64)
    q = torch.where(torch.rand(4, 5, generator=g) < 0.5, -1.0, 1.0).double()

    def sim(loc0, vel0, max_force=None):
        return simulate_charged(
            4, steps=300, sample_freq=100, init=(loc0, vel0, q), max_force=max_force
        )[0]

    assert_equivariant(sim, (loc0, vel0), E3(), ("points", "vector"), "points", tol=1e-8)
    # negative control: the official per-component force clip breaks rotation symmetry
    clipped = lambda a, b: sim(a, b, max_force=0.05)  # noqa: E731
    assert_not_invariant(clipped, (loc0, vel0), E3(), ("points", "vector"), "points")


def test_nbody_dataset_layout_and_seeding():
    ds = make_nbody(6, past=4, future=3, sample_freq=50, seed=1)
    item = ds[0]
    assert (
        item["loc"].shape == (5, 4, 3)
        and item["target"].shape == (5, 3, 3)
        and item["charges"].shape == (5,)
    )
    assert torch.allclose(item["vel"][:, 1:], item["loc"][:, 1:] - item["loc"][:, :-1])
    assert torch.equal(item["vel"][:, 0], item["vel"][:, 1])
    assert torch.equal(make_nbody(6, past=4, future=3, sample_freq=50, seed=1).loc, ds.loc)
    with pytest.raises(ValueError, match=r"past must be in \[2"):
        make_nbody(2, past=1)
    with pytest.raises(ValueError, match="init must be"):
        simulate_charged(2, init=(torch.zeros(2, 4, 3), torch.zeros(2, 4, 3), torch.zeros(2, 4)))


@pytest.mark.parametrize("name", ["airplane", "ant", "nut", "sphere"])
def test_read_ply_matches_pyvista_reader(name):
    """Our numpy PLY reader equals pyvista/vtk's own reader on the shipped meshes."""
    pv = pytest.importorskip("pyvista", reason="pyvista (optional) is not installed")
    from invariance.geometry.data.meshes import pyvista_example_path

    V, F = load_pyvista_mesh(name)
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".ply") as f:
        f.write(pyvista_example_path(name))
        f.flush()
        mesh = pv.read(f.name).triangulate()
    pts = np.asarray(mesh.points, dtype=np.float64)
    # vtk keeps float32; an ascii file parsed in float64 differs by <= 1 float32 ulp
    np.testing.assert_allclose(V.numpy(), pts, rtol=2e-7, atol=1e-6)
    faces = np.asarray(mesh.faces).reshape(-1, 4)
    assert (faces[:, 0] == 3).all()
    np.testing.assert_array_equal(F.numpy(), faces[:, 1:])
