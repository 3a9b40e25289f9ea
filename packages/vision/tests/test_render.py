import math

import pytest
import torch

from invariance.core.testing import assert_rejects_bad_inputs
from invariance.vision.data.prim3d import PRIM3D_CLASSES, make_prim3d
from invariance.vision.render import Camera, Scene, look_at, render

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
