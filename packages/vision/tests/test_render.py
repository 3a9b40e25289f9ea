import math

import pytest
import torch

from invariance.core.testing import assert_rejects_bad_inputs
from invariance.vision.data.prim3d import PRIM3D_CLASSES, make_prim3d
from invariance.vision.render import (
    Camera,
    Mesh,
    Scene,
    cast,
    intrinsics,
    look_at,
    project,
    pyvista_mesh,
    read_ply,
    render,
    render_mesh,
    visible,
    world_to_camera,
)

F64 = torch.float64


def _cam(yaw, pitch, roll=0.0, dist=4.0, shift=(0.0, 0.0), fov=40.0):
    t = lambda v: torch.tensor([float(v)], dtype=F64)  # noqa: E731
    return look_at(t(yaw), t(pitch), t(roll), t(dist), torch.tensor([shift], dtype=F64), fov=fov)


def _scene(*prims):
    return Scene.from_primitives([list(prims)], dtype=F64)


def test_depth_of_a_fronto_parallel_box_face_is_exact():
    sc = _scene(dict(kind="box", center=(0, 0, 0), scale=(0.6, 0.6, 0.6)))
    out = render(sc, _cam(0, 0), size=31)
    face = out["depth"][0, 0][out["mask"][0, 0] > 0]
    assert face.numel() > 50
    torch.testing.assert_close(face, torch.full_like(face, 3.4), atol=1e-12, rtol=0)


def test_sphere_depth_exact_and_back_projects_onto_the_surface():
    r = 0.9
    sc = _scene(dict(kind="sphere", center=(0, 0, 0), scale=(r, r, r)))
    cam = _cam(37, 21)
    size = 33
    out = render(sc, cam, size=size)
    assert out["depth"][0, 0, size // 2, size // 2].item() == pytest.approx(4 - r, abs=1e-12)
    # back-project every hit pixel: the point lies on the sphere (signed distance ~ 0)
    half = math.tan(math.radians(cam.fov) / 2)
    k = (torch.arange(size, dtype=F64) + 0.5) / size * 2 - 1
    v, u = torch.meshgrid(-k * half, k * half, indexing="ij")
    d_cam = torch.stack([u, v, -torch.ones_like(u)], -1)  # z-depth scaling: camera z = -1
    p_cam = d_cam * out["depth"][0, 0][..., None]
    p = p_cam @ cam.rotation[0].T + cam.position[0]
    sdf = (p.norm(dim=-1) - r)[out["mask"][0, 0] > 0]
    assert sdf.abs().max() < 1e-4


def test_solid_of_revolution_renders_the_same_from_every_yaw():
    sc = _scene(
        dict(kind="cylinder", center=(0, 0, 0), scale=(0.5, 0.7, 0.5), texture=0.6),
        dict(kind="sphere", center=(0, 0.9, 0), scale=(0.3, 0.3, 0.3)),
    )
    # light on the vertical axis, so the shading is yaw-symmetric too
    ref = render(sc, _cam(0, 25), size=24, light=(0, 1, 0))["rgb"]
    for yaw in (33.0, 101.0, -150.0):
        out = render(sc, _cam(yaw, 25), size=24, light=(0, 1, 0))["rgb"]
        assert (out - ref).abs().max() < 1e-5


def test_quarter_roll_rotates_the_image_exactly_and_a_plain_view_is_not_rotated():
    sc, _ = make_prim3d(1, seed=3, classes=(5,), dtype=F64)  # a car: no symmetry
    ref = render(sc, _cam(40, 20, 0, 3.8, (0.2, -0.1)), size=20)["rgb"]
    for k in (1, 2, 3):
        out = render(sc, _cam(40, 20, 90 * k, 3.8, (0.2, -0.1)), size=20)["rgb"]
        torch.testing.assert_close(out, torch.rot90(ref, -k, (-2, -1)), atol=1e-9, rtol=0)
    assert (torch.rot90(ref, 1, (-2, -1)) - ref).abs().max() > 0.1  # negative control


def test_lighting_never_changes_depth_or_normals():
    sc, _ = make_prim3d(1, seed=1, classes=(1,), dtype=F64)
    a = render(sc, _cam(10, 30), size=16, light=(1, 1, 0))
    b = render(sc, _cam(10, 30), size=16, light=(-0.3, 0.5, 1), ambient=0.1, shadows=False)
    assert torch.equal(a["depth"], b["depth"]) and torch.equal(a["normals"], b["normals"])
    assert (a["rgb"] - b["rgb"]).abs().max() > 0.05


def test_depth_gradient_wrt_camera_distance_matches_finite_differences():
    sc = _scene(dict(kind="sphere", center=(0, 0, 0), scale=(1, 1, 1)))
    dist = torch.tensor([4.0], dtype=F64, requires_grad=True)
    cam = look_at(torch.tensor([10.0], dtype=F64), torch.tensor([5.0], dtype=F64), None, dist)
    out = render(sc, cam, size=9)
    out["depth"].sum().backward()
    h = 1e-6

    def f(d):
        c = look_at(torch.tensor([10.0], dtype=F64), torch.tensor([5.0], dtype=F64), None, d)
        return render(sc, c, size=9)["depth"].sum()

    fd = (f(torch.tensor([4.0 + h], dtype=F64)) - f(torch.tensor([4.0 - h], dtype=F64))) / (2 * h)
    assert torch.isfinite(dist.grad).all()
    assert dist.grad.item() == pytest.approx(fd.item(), rel=1e-5)


def test_prim3d_objects_fit_the_frame_and_classes_differ():
    sc, y = make_prim3d(2, seed=0)
    assert len(sc) == 2 * len(PRIM3D_CLASSES) and y.tolist() == sorted(y.tolist())
    cam = look_at(torch.full((len(sc),), 30.0), torch.full((len(sc),), 20.0), distance=3.5, fov=40)
    out = render(sc, cam, size=32, shadows=False)
    cover = out["mask"].mean((1, 2, 3))
    assert (cover > 0.02).all() and (cover < 0.8).all()
    m = out["mask"][:, 0]
    edge = torch.cat([m[:, 0], m[:, -1], m[:, :, 0], m[:, :, -1]], 1)
    assert edge.sum() == 0  # nothing clipped by the frame at the nearest distance


def test_bad_inputs_are_rejected_with_the_argument_named():
    sc = _scene(dict(kind="sphere", center=(0, 0, 0), scale=(1, 1, 1)))
    cam = _cam(0, 10)
    with pytest.raises(ValueError, match="pitch"):
        _cam(0, 90)
    with pytest.raises(ValueError, match="distance"):
        _cam(0, 10, dist=0.0)
    with pytest.raises(ValueError, match="scale"):
        Scene.from_primitives([[dict(kind="box", center=(0, 0, 0), scale=(1, 0, 1))]])
    with pytest.raises(ValueError, match="kind"):
        Scene.from_primitives([[dict(kind="cone", center=(0, 0, 0), scale=(1, 1, 1))]])
    with pytest.raises(ValueError, match="scenes"):
        Scene.from_primitives([])
    with pytest.raises(ValueError, match="empty scene"):
        Scene(
            torch.full((1, 1), -1),
            torch.zeros(1, 1, 3),
            torch.ones(1, 1, 3),
            torch.eye(3).expand(1, 1, 3, 3),
            torch.ones(1, 1, 3),
            torch.zeros(1, 1),
            torch.zeros(1, 1),
        )
    with pytest.raises(ValueError, match="scene_index"):
        render(sc, cam, scene_index=torch.tensor([3]))
    with pytest.raises(TypeError, match="camera"):
        render(sc, "cam")
    with pytest.raises(ValueError, match="light"):
        render(sc, cam, light=(0, 0, 0))
    assert_rejects_bad_inputs(
        lambda yaw, pitch: look_at(yaw, pitch),
        {"yaw": torch.tensor([10.0, 20.0]), "pitch": torch.tensor([5.0, 15.0])},
        name="look_at",
        accept=("yaw:extra_dim", "pitch:extra_dim"),
    )
    assert isinstance(cam, Camera)


def _pixel_centres(size, b=1):
    r, c = torch.meshgrid(
        torch.arange(size, dtype=F64), torch.arange(size, dtype=F64), indexing="ij"
    )
    return torch.stack([c + 0.5, r + 0.5], -1).reshape(1, -1, 2).expand(b, -1, -1)


def test_cast_at_pixel_centres_reproduces_the_render_and_project_inverts_it():
    sc, _ = make_prim3d(1, seed=3, classes=(5, 8), dtype=F64)
    cam = look_at(
        torch.tensor([30.0, 100.0], dtype=F64),
        torch.tensor([20.0, -10.0], dtype=F64),
        torch.tensor([5.0, 0.0], dtype=F64),
        3.5,
    )
    size = 24
    out = render(sc, cam, size=size)
    hit = cast(sc, cam, _pixel_centres(size, 2), size=size)
    torch.testing.assert_close(
        hit["depth"].reshape(2, size, size), out["depth"][:, 0], atol=1e-9, rtol=0
    )
    assert torch.equal(hit["hit"].reshape(2, size, size), out["mask"][:, 0] > 0)
    assert torch.equal(hit["prim"].reshape(2, size, size), out["prim"][:, 0])
    uv, z = project(cam, hit["points"], size)
    m = hit["hit"]
    assert m.sum() > 100
    assert (uv - _pixel_centres(size, 2))[m].abs().max() < 1e-9
    assert (z - hit["depth"])[m].abs().max() < 1e-9
    assert bool(visible(sc, cam, hit["points"])[m].all())


def test_intrinsics_and_extrinsics_follow_the_opencv_convention():
    cam = _cam(0, 0, dist=4.0, fov=60.0)
    k = intrinsics(cam, 32)
    assert k[0, 0].item() == pytest.approx(16 / math.tan(math.radians(30)))
    assert k[0, 2].item() == k[1, 2].item() == 16.0
    t = world_to_camera(cam)[0]
    # the world origin is 4 in front of the camera; world up (+y) points down the image
    torch.testing.assert_close(t[:3, 3], torch.tensor([0.0, 0.0, 4.0], dtype=F64))
    uv, z = project(cam, torch.tensor([[[0.0, 0.5, 0.0]]], dtype=F64), 32)
    assert uv[0, 0, 1] < 16 and uv[0, 0, 0].item() == pytest.approx(16.0) and z.item() == 4.0


def test_a_point_hidden_behind_a_box_is_not_visible():
    sc = _scene(
        dict(kind="box", center=(0, 0, 1.0), scale=(0.5, 0.5, 0.1)),
        dict(kind="sphere", center=(0, 0, -1.0), scale=(0.5, 0.5, 0.5)),
    )
    cam = _cam(0, 0)  # looks along -z from +z: the box hides the sphere's centre front point
    front_of_sphere = torch.tensor([[[0.0, 0.0, -0.5], [0.0, 0.45, -1.0 + 0.218]]], dtype=F64)
    vis = visible(sc, cam, front_of_sphere)
    assert not bool(vis[0, 0])
    side = _cam(90, 0)  # from +x the sphere's front point (0, 0, -0.5) is on its silhouette
    top = torch.tensor([[[0.5, 0.0, -1.0]]], dtype=F64)  # the sphere point facing +x
    assert bool(visible(sc, side, top)[0, 0])
    with pytest.raises(ValueError, match="points"):
        visible(sc, cam, torch.zeros(2, 1, 3, dtype=F64))
    with pytest.raises(ValueError, match="degenerate"):
        cast(
            sc,
            Camera(torch.zeros(1, 3, 3, dtype=F64), torch.zeros(1, 3, dtype=F64)),
            torch.zeros(1, 1, 2, dtype=F64),
            size=8,
        )
    with pytest.raises(TypeError, match="pixels"):
        cast(sc, cam, [[0.0, 0.0]], size=8)


def _cube_mesh(h):
    v = torch.tensor(
        [[x, y, z] for x in (-h, h) for y in (-h, h) for z in (-h, h)], dtype=F64
    )  # vertex index = 4 * (x > 0) + 2 * (y > 0) + (z > 0)
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    f = [[a, b, c] for a, b, c, _ in quads] + [[a, c, d] for a, _, c, d in quads]
    return Mesh(v, torch.tensor(f))


def test_a_cube_mesh_renders_the_depth_of_the_box_primitive():
    mesh = _cube_mesh(0.6)
    sc = _scene(dict(kind="box", center=(0, 0, 0), scale=(0.6, 0.6, 0.6)))
    for yaw, pitch, roll in ((0, 0, 0), (33, 21, 10), (-120, -35, 0)):
        cam = _cam(yaw, pitch, roll)
        a, b = render_mesh(mesh, cam, size=24), render(sc, cam, size=24)
        both = (a["mask"] > 0) & (b["mask"] > 0)
        assert both.sum() > 40
        assert (a["mask"] != b["mask"]).sum() <= 2  # rays grazing an edge at most
        assert (a["depth"] - b["depth"])[both].abs().max() < 1e-9
        assert (a["normals"] - b["normals"]).norm(dim=1, keepdim=True)[both].max() < 1e-9
    front = render_mesh(mesh, _cam(0, 0), size=24)["depth"]
    face = front[front > 0]
    torch.testing.assert_close(face, torch.full_like(face, 3.4), atol=1e-12, rtol=0)


def test_meshes_read_from_ply_and_pyvista_examples(tmp_path):
    p = tmp_path / "tri.ply"
    p.write_text(
        "ply\nformat ascii 1.0\nelement vertex 4\nproperty float x\nproperty float y\n"
        "property float z\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n"
        "-1 -1 0\n1 -1 0\n1 1 0\n-1 1 0\n4 0 1 2 3\n"
    )
    square = read_ply(p, dtype=F64)
    assert square.faces.tolist() == [[0, 1, 2], [0, 2, 3]]
    out = render_mesh(square, _cam(0, 0, dist=2.5), size=16)
    assert bool((out["mask"] > 0).all())  # the 2 x 2 square fills a 40-degree view at 2.5
    torch.testing.assert_close(out["depth"], torch.full_like(out["depth"], 2.5), atol=1e-6, rtol=0)
    pytest.importorskip("pyvista")
    sphere = pyvista_mesh("sphere", dtype=F64)
    assert sphere.vertices.norm(dim=-1).max().item() == pytest.approx(1.0)
    d = render_mesh(sphere, _cam(10, 20), size=17)["depth"][0, 0, 8, 8].item()
    assert 3.0 <= d < 3.05  # a faceted unit sphere seen from 4: just behind its front point
    with pytest.raises(ValueError, match="name"):
        pyvista_mesh("teapot")
    with pytest.raises(ValueError, match="empty mesh"):
        Mesh(torch.zeros(3, 3), torch.tensor([[0, 1, 2]]))
    with pytest.raises(ValueError, match="faces"):
        Mesh(torch.rand(3, 3), torch.tensor([[0, 1, 5]]))
    with pytest.raises(TypeError, match="mesh"):
        render_mesh("sphere", _cam(0, 0))
