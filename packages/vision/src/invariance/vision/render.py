r"""A small differentiable ray caster for scenes built from textured primitives (pure torch).

Used by the viewpoint methods (VIAT) as the offline stand-in for the NeRF renders of the papers:
every image comes with its exact camera, depth, surface normals, object mask and primitive ids.

* **Scenes** (:class:`Scene`): ``N`` scenes of up to ``P`` primitives each. A primitive is an
  affine image ``x = c + R diag(s) u`` of a unit solid ``u``: the unit sphere (ellipsoids),
  the cube ``[-1, 1]^3`` (oriented boxes) or the capped cylinder ``u_x^2 + u_z^2 <= 1,
  |u_y| <= 1`` (elliptic cylinders). Each has a colour, a stripe texture along its local ``y``
  axis and a scalar ``material`` (used by modality layers, e.g. as a temperature).
* **Cameras** (:func:`look_at`): a pinhole camera on a sphere of radius ``distance`` around a
  target, placed by ``yaw`` (about the world up axis ``+y``), ``pitch`` (elevation, positive
  above the horizon) and ``roll`` (about the viewing axis), then shifted in its image plane by
  ``(shift_x, shift_y)`` world units (before the roll, so a roll only rotates the image).
  OpenGL convention: camera ``x`` right, ``y`` up, looking
  along ``-z``.
* **Rendering** (:func:`render`): one primary ray per pixel centre, analytic intersections with
  every primitive (quadratic for spheres and cylinder sides, slabs for boxes, planes for caps;
  only the ray-primitive pairs whose ray meets the primitive's bounding sphere are solved, which
  gives the same image at a fraction of the cost),
  Lambertian shading with an ambient term and a directional light, optional hard shadows
  (a secondary ray towards the light), white background as in NeRF renders. Depth is the
  z-depth along the viewing axis (a fronto-parallel plane has constant depth). Every output is a
  differentiable function of the camera (through the hit distances, normals and shading;
  silhouette edges are hard, as in any ray caster).

* **Geometry of a view** (:mod:`invariance.vision.two_view`: ``intrinsics``,
  ``world_to_camera``, ``project``, ``cast``, ``visible``): the pinhole model of a render in the
  OpenCV convention and exact correspondences between two views.

* **Meshes** (:mod:`invariance.vision.mesh`: ``Mesh``, ``read_ply``, ``pyvista_mesh``,
  ``render_mesh``): triangle meshes (e.g. the ``.ply`` meshes shipped in pyvista: airplane, ant,
  nut, sphere, read by a small PLY reader, pyvista itself not needed) ray cast with the
  Moller-Trumbore test, flat two-sided shading, the same cameras, depth and outputs as
  :func:`render`.

Both are importable from this module too.

Tested properties: depth of a fronto-parallel box face and of a sphere's front point exact;
depth back-projects onto the surface (signed distance < 1e-4); a solid of revolution renders the
same from every yaw; a 90° camera roll rotates the image by 90° exactly; lighting never changes
depth or normals; gradients of the rendered depth with respect to the camera distance are finite
and match finite differences; :func:`cast` at pixel centres reproduces the rendered depth,
:func:`project` inverts it to 1e-9 (float64), and a point hidden behind a box is not
:func:`visible`; a cube mesh renders the depth of the box primitive to 1e-9 and a
fronto-parallel square mesh has exact depth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from invariance.vision._checks import check_int, check_number, check_tensor

__all__ = [
    "PRIMITIVES",
    "Scene",
    "Camera",
    "look_at",
    "render",
    "rotation_matrix",
]

#: kinds of primitives, by index in :attr:`Scene.kind` (``-1`` marks an empty slot)
PRIMITIVES = ("sphere", "box", "cylinder")
_INF = float("inf")


def rotation_matrix(angles_deg: Tensor) -> Tensor:
    """Rotation matrices ``Ry(yaw) @ Rx(pitch) @ Rz(roll)`` from ``(..., 3)`` angles in degrees."""
    a = torch.deg2rad(angles_deg)
    cy, sy = torch.cos(a[..., 0]), torch.sin(a[..., 0])
    cx, sx = torch.cos(a[..., 1]), torch.sin(a[..., 1])
    cz, sz = torch.cos(a[..., 2]), torch.sin(a[..., 2])
    o, z = torch.ones_like(cy), torch.zeros_like(cy)
    ry = torch.stack([cy, z, sy, z, o, z, -sy, z, cy], -1).reshape(*cy.shape, 3, 3)
    rx = torch.stack([o, z, z, z, cx, -sx, z, sx, cx], -1).reshape(*cy.shape, 3, 3)
    rz = torch.stack([cz, -sz, z, sz, cz, z, z, z, o], -1).reshape(*cy.shape, 3, 3)
    return ry @ rx @ rz


@dataclass
class Scene:
    """``N`` scenes of ``P`` primitive slots (tensors with leading dims ``(N, P)``).

    Attributes:
        kind: ``(N, P)`` long, index into :data:`PRIMITIVES`, ``-1`` for an empty slot.
        center: ``(N, P, 3)`` primitive centres. scale: ``(N, P, 3)`` positive half-extents.
        rotation: ``(N, P, 3, 3)`` local-to-world rotations. color: ``(N, P, 3)`` in ``[0, 1]``.
        texture: ``(N, P)`` stripe contrast in ``[0, 1]`` (0 = plain colour).
        material: ``(N, P)`` a scalar per primitive in ``[0, 1]`` (e.g. temperature).
    """

    kind: Tensor
    center: Tensor
    scale: Tensor
    rotation: Tensor
    color: Tensor
    texture: Tensor
    material: Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.kind, Tensor) or self.kind.dim() != 2:
            raise ValueError("kind must be an (N, P) long tensor")
        if self.kind.dtype != torch.long:
            raise TypeError(f"kind must be a long tensor, got {self.kind.dtype}")
        n, p = self.kind.shape
        if n == 0 or p == 0:
            raise ValueError(f"a scene needs at least one primitive slot, got kind {(n, p)}")
        if bool(((self.kind < -1) | (self.kind >= len(PRIMITIVES))).any()):
            raise ValueError(f"kind must be in -1..{len(PRIMITIVES) - 1}")
        if bool((self.kind < 0).all(dim=1).any()):
            raise ValueError("every scene needs at least one primitive (empty scene in kind)")
        shapes = {
            "center": (n, p, 3),
            "scale": (n, p, 3),
            "rotation": (n, p, 3, 3),
            "color": (n, p, 3),
            "texture": (n, p),
            "material": (n, p),
        }
        for name, shape in shapes.items():
            t = check_tensor(getattr(self, name), name)
            if tuple(t.shape) != shape:
                raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
        used = self.kind >= 0
        if bool((self.scale[used] <= 0).any()):
            raise ValueError("scale must be positive for every used primitive")
        for name in ("color", "texture", "material"):
            t = getattr(self, name)[used]
            if bool(((t < 0) | (t > 1)).any()):
                raise ValueError(f"{name} must lie in [0, 1]")

    def __len__(self) -> int:
        return self.kind.shape[0]

    def __getitem__(self, idx: Tensor | slice | int) -> Scene:
        if isinstance(idx, int):
            idx = slice(idx, idx + 1)
        return Scene(*(getattr(self, f)[idx] for f in _FIELDS))

    def to(self, *args, **kwargs) -> Scene:
        return Scene(
            *(
                getattr(self, f).to(*args, **kwargs)
                if getattr(self, f).is_floating_point()
                else getattr(self, f).to(device=kwargs.get("device", getattr(self, f).device))
                for f in _FIELDS
            )
        )

    @staticmethod
    def from_primitives(scenes: list[list[dict]], dtype: torch.dtype = torch.float32) -> Scene:
        """Build a :class:`Scene` from lists of primitive dicts with keys ``kind`` (a name in
        :data:`PRIMITIVES`), ``center``, ``scale`` (3 numbers), optional ``angles`` (yaw, pitch,
        roll in degrees), ``color`` (3 numbers), ``texture`` and ``material``; pads to the
        longest scene with empty slots."""
        if not isinstance(scenes, (list, tuple)) or not scenes:
            raise ValueError("scenes must be a non-empty list of primitive lists")
        p = max(len(s) for s in scenes)
        if p == 0:
            raise ValueError("scenes must hold at least one primitive")
        n = len(scenes)
        kind = torch.full((n, p), -1, dtype=torch.long)
        center, scale = torch.zeros(n, p, 3, dtype=dtype), torch.ones(n, p, 3, dtype=dtype)
        angles, color = torch.zeros(n, p, 3, dtype=dtype), torch.ones(n, p, 3, dtype=dtype)
        texture, material = torch.zeros(n, p, dtype=dtype), torch.zeros(n, p, dtype=dtype)
        for i, prims in enumerate(scenes):
            for j, pr in enumerate(prims):
                if pr.get("kind") not in PRIMITIVES:
                    raise ValueError(f"kind must be one of {PRIMITIVES}, got {pr.get('kind')!r}")
                kind[i, j] = PRIMITIVES.index(pr["kind"])
                center[i, j] = torch.as_tensor(pr["center"], dtype=dtype)
                scale[i, j] = torch.as_tensor(pr["scale"], dtype=dtype)
                angles[i, j] = torch.as_tensor(pr.get("angles", (0.0, 0.0, 0.0)), dtype=dtype)
                color[i, j] = torch.as_tensor(pr.get("color", (0.7, 0.7, 0.7)), dtype=dtype)
                texture[i, j] = float(pr.get("texture", 0.0))
                material[i, j] = float(pr.get("material", 0.5))
        return Scene(kind, center, scale, rotation_matrix(angles), color, texture, material)


_FIELDS = ("kind", "center", "scale", "rotation", "color", "texture", "material")


@dataclass
class Camera:
    """``B`` pinhole cameras: camera-to-world ``rotation`` (``(B, 3, 3)``, columns = right, up,
    backward) and ``position`` (``(B, 3)``), vertical field of view ``fov`` in degrees."""

    rotation: Tensor
    position: Tensor
    fov: float = 40.0

    def __len__(self) -> int:
        return self.position.shape[0]

    @property
    def forward(self) -> Tensor:
        return -self.rotation[..., :, 2]


def look_at(
    yaw: Tensor,
    pitch: Tensor,
    roll: Tensor | None = None,
    distance: Tensor | float = 4.0,
    shift: Tensor | None = None,
    *,
    target: Tensor | None = None,
    fov: float = 40.0,
) -> Camera:
    """Cameras on a sphere around ``target`` (default the origin); angles in degrees.

    ``yaw`` rotates about the world up axis (yaw 0 looks along ``-z`` from ``+z``), ``pitch`` is
    the elevation (``|pitch| < 90``), ``shift`` (``(B, 2)``) moves the camera in its image plane
    (right, up of the unrolled camera) by world units, and ``roll`` then turns it about its own
    viewing axis, so a roll is an exact rotation of the image (by ``-roll``).
    """
    yaw = check_tensor(torch.as_tensor(yaw), "yaw", dims=1)
    b = yaw.shape[0]
    pitch = check_tensor(torch.as_tensor(pitch), "pitch", dims=1).to(yaw.dtype)
    if pitch.shape[0] != b:
        raise ValueError(f"pitch must have shape ({b},), got {tuple(pitch.shape)}")
    if bool((pitch.abs() >= 89.9).any()):
        raise ValueError("pitch must lie in (-89.9, 89.9) degrees (the look-at frame degenerates)")
    roll = torch.zeros_like(yaw) if roll is None else torch.as_tensor(roll)
    roll = check_tensor(roll, "roll", dims=1).to(yaw.dtype)
    dist = torch.as_tensor(distance, dtype=yaw.dtype).expand(b)
    dist = check_tensor(dist, "distance", dims=1)
    if bool((dist <= 0).any()):
        raise ValueError("distance must be positive")
    shift = torch.zeros(b, 2, dtype=yaw.dtype) if shift is None else torch.as_tensor(shift)
    shift = check_tensor(shift.to(yaw.dtype), "shift", dims=2)
    if tuple(shift.shape) != (b, 2):
        raise ValueError(f"shift must have shape ({b}, 2), got {tuple(shift.shape)}")
    check_number(fov, "fov", lo=0.0, hi=179.0, lo_open=True)
    tgt = torch.zeros(3, dtype=yaw.dtype) if target is None else torch.as_tensor(target)
    tgt = check_tensor(tgt.to(yaw.dtype), "target").reshape(-1, 3).expand(b, 3)
    th, ph, ga = torch.deg2rad(yaw), torch.deg2rad(pitch), torch.deg2rad(roll)
    back = torch.stack(
        [torch.cos(ph) * torch.sin(th), torch.sin(ph), torch.cos(ph) * torch.cos(th)], -1
    )
    right0 = torch.stack([torch.cos(th), torch.zeros_like(th), -torch.sin(th)], -1)
    up0 = torch.cross(back, right0, dim=-1)
    c, s = torch.cos(ga)[:, None], torch.sin(ga)[:, None]
    right, up = c * right0 + s * up0, -s * right0 + c * up0
    pos = tgt + dist[:, None] * back + shift[:, :1] * right0 + shift[:, 1:] * up0
    return Camera(torch.stack([right, up, back], -1), pos, float(fov))


def _rays(cam: Camera, size: int) -> tuple[Tensor, Tensor]:
    """World-space ray origins ``(B, 1, 3)`` and unit directions ``(B, size*size, 3)``."""
    dt = cam.position.dtype
    half = math.tan(math.radians(cam.fov) / 2)
    k = (torch.arange(size, dtype=dt) + 0.5) / size * 2 - 1
    v, u = torch.meshgrid(-k * half, k * half, indexing="ij")
    d_cam = torch.stack([u, v, -torch.ones_like(u)], -1).reshape(-1, 3)
    d_cam = d_cam / d_cam.norm(dim=-1, keepdim=True)
    return cam.position[:, None, :], torch.einsum("bij,rj->bri", cam.rotation, d_cam)


#: radius of the sphere around each unit solid (sphere, cube, capped cylinder), in the unit frame
_BOUND = (1.0, math.sqrt(3.0), math.sqrt(2.0))


def _intersect(
    scene: Scene, o: Tensor, d: Tensor, *, geometry: bool = True
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Nearest positive hit of rays ``o + t d`` (``o``: ``(B, R|1, 3)``, ``d``: ``(B, R, 3)``)
    with every primitive of the per-view scenes: ``t`` ``(B, R, P)`` (inf = miss), the local
    unit-frame hit points ``(B, R, P, 3)`` and unit-frame normals ``(B, R, P, 3)`` (zero for the
    pairs that miss; ``None`` for both unless ``geometry``).

    Only the ray-primitive pairs whose ray passes through the primitive's bounding sphere are
    intersected exactly (the others cannot hit it), so the cost follows the pairs that can hit,
    not ``B * R * P``; the result is the same as intersecting every pair."""
    b, r, p = d.shape[0], d.shape[1], scene.kind.shape[1]
    dt = d.dtype
    kind = scene.kind
    radius = torch.tensor(_BOUND, dtype=dt)[kind.clamp_min(0)] * scene.scale.amax(-1)
    w = scene.center[:, None] - o[:, :, None, :]  # (B, R|1, P, 3)
    du = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    along = (w * du[:, :, None, :]).sum(-1)  # (B, R, P)
    off2 = (w * w).sum(-1) - along**2  # squared distance of the centre from the ray's line
    rad = radius[:, None, :]
    cand = (off2 <= rad * rad * 1.0001 + 1e-9) & (along + rad > 0) & (kind >= 0)[:, None, :]
    bi, ri, pi = cand.nonzero(as_tuple=True)
    o_k = o[bi, ri] if o.shape[1] > 1 else o[bi, 0]
    rt = scene.rotation[bi, pi].transpose(-1, -2)  # world -> local rotation, (K, 3, 3)
    inv_s = 1.0 / scene.scale[bi, pi]
    ol = torch.einsum("kij,kj->ki", rt, o_k - scene.center[bi, pi]) * inv_s
    dl = torch.einsum("kij,kj->ki", rt, d[bi, ri]) * inv_s
    t_k, hit_k, n_k = _unit_hits(kind[bi, pi], ol, dl)
    t = torch.full((b, r, p), _INF, dtype=dt).index_put((bi, ri, pi), t_k)
    if not geometry:
        return t, None, None
    hit = torch.zeros(b, r, p, 3, dtype=dt).index_put((bi, ri, pi), hit_k)
    n = torch.zeros(b, r, p, 3, dtype=dt).index_put((bi, ri, pi), n_k)
    return t, hit, n


def _unit_hits(kind: Tensor, ol: Tensor, dl: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Exact intersection of ``K`` rays (unit-frame origins and directions ``(K, 3)``) with the
    unit solid of each ray's primitive ``kind`` ``(K,)``: ``t`` (inf = miss), hit points and
    unit-frame normals."""
    eps = 1e-6
    # unit sphere
    a = (dl * dl).sum(-1)
    bq = 2 * (ol * dl).sum(-1)
    cq = (ol * ol).sum(-1) - 1
    disc = bq * bq - 4 * a * cq
    sq = disc.clamp_min(1e-20).sqrt()
    t0, t1 = (-bq - sq) / (2 * a), (-bq + sq) / (2 * a)
    t_sph = torch.where(t0 > eps, t0, torch.where(t1 > eps, t1, _INF))
    t_sph = torch.where(disc > 0, t_sph, _INF)
    # unit cube (slabs)
    ds = torch.where(dl.abs() < 1e-12, torch.full_like(dl, 1e-12), dl)
    ta, tb = (-1 - ol) / ds, (1 - ol) / ds
    tmin, tmax = torch.minimum(ta, tb), torch.maximum(ta, tb)
    tnear, near_axis = tmin.max(-1)
    tfar = tmax.min(-1).values
    hit_box = (tnear <= tfar) & (tfar > eps)
    t_box = torch.where(hit_box, torch.where(tnear > eps, tnear, tfar), _INF)
    # unit cylinder along y: side and caps
    ac = dl[..., 0] ** 2 + dl[..., 2] ** 2
    bc = 2 * (ol[..., 0] * dl[..., 0] + ol[..., 2] * dl[..., 2])
    cc = ol[..., 0] ** 2 + ol[..., 2] ** 2 - 1
    discc = bc * bc - 4 * ac * cc
    acs = ac.clamp_min(1e-20)
    sqc = discc.clamp_min(1e-20).sqrt()
    ts = torch.stack([(-bc - sqc) / (2 * acs), (-bc + sqc) / (2 * acs)], -1)
    ys = ol[..., 1:2] + ts * dl[..., 1:2]
    ok_side = (discc[..., None] > 0) & (ac[..., None] > 1e-12) & (ys.abs() <= 1) & (ts > eps)
    t_side = torch.where(ok_side, ts, _INF).min(-1).values
    dy = ds[..., 1:2]
    tc = torch.cat([(-1 - ol[..., 1:2]) / dy, (1 - ol[..., 1:2]) / dy], -1)
    xc = ol[..., 0:1] + tc * dl[..., 0:1]
    zc = ol[..., 2:3] + tc * dl[..., 2:3]
    ok_cap = (xc * xc + zc * zc <= 1) & (tc > eps)
    t_cap = torch.where(ok_cap, tc, _INF).min(-1).values
    t_cyl = torch.minimum(t_side, t_cap)
    t = torch.where(kind == 0, t_sph, torch.where(kind == 1, t_box, t_cyl))
    tf = torch.where(torch.isfinite(t), t, torch.zeros_like(t))
    hit = ol + tf[..., None] * dl
    # unit-frame normals
    axis = torch.nn.functional.one_hot(near_axis, 3).to(hit.dtype)
    n_box = -axis * torch.sign(ds)
    on_cap = t_cap < t_side
    z = torch.zeros_like(tf)
    n_cyl = torch.where(
        on_cap[..., None],
        torch.stack([z, torch.sign(hit[..., 1]), z], -1),
        torch.stack([hit[..., 0], z, hit[..., 2]], -1),
    )
    k = kind[..., None]
    n = torch.where(k == 0, hit, torch.where(k == 1, n_box, n_cyl))
    return t, hit, n


def _scene_index(scene: Scene, b: int, scene_index: Tensor | None) -> Tensor:
    """The scene each of ``b`` views shows: ``scene_index`` checked, or by default scene ``i``
    for view ``i`` (``len(scene) == b``) or scene 0 for every view (``len(scene) == 1``)."""
    if scene_index is None:
        if len(scene) not in (1, b):
            raise ValueError(
                f"scene_index is needed when the scene count ({len(scene)}) is neither 1 nor the "
                f"number of cameras ({b})"
            )
        scene_index = torch.arange(b) if len(scene) == b else torch.zeros(b, dtype=torch.long)
    if not isinstance(scene_index, Tensor) or scene_index.dtype != torch.long:
        raise TypeError("scene_index must be a long tensor")
    if tuple(scene_index.shape) != (b,):
        raise ValueError(f"scene_index must have shape ({b},), got {tuple(scene_index.shape)}")
    if bool(((scene_index < 0) | (scene_index >= len(scene))).any()):
        raise ValueError(f"scene_index must lie in 0..{len(scene) - 1}")
    return scene_index


def render(
    scene: Scene,
    camera: Camera,
    *,
    size: int = 64,
    scene_index: Tensor | None = None,
    light: tuple[float, float, float] | Tensor = (0.4, 1.0, 0.6),
    ambient: float = 0.35,
    intensity: float = 1.0,
    shadows: bool = True,
    background: float = 1.0,
    chunk: int = 32,
) -> dict[str, Tensor]:
    """Render ``B`` views; view ``b`` shows scene ``scene_index[b]`` (default: scene ``b`` when
    ``len(scene) == B``, scene 0 when ``len(scene) == 1``).

    ``light`` is the direction towards a directional light (world frame; one for all views or
    ``(B, 3)``) of strength ``intensity``; a lit point has brightness ``ambient + intensity *
    (1 - ambient) * max(0, n . light)`` times its albedo, clipped at 1.

    Returns ``rgb`` ``(B, 3, S, S)`` in ``[0, 1]``, ``depth`` ``(B, 1, S, S)`` (z-depth, 0 on
    the background), ``normals`` ``(B, 3, S, S)`` (world frame, 0 on the background),
    ``mask`` ``(B, 1, S, S)``, ``prim`` ``(B, 1, S, S)`` (hit primitive slot, -1 on the
    background) and ``material`` ``(B, 1, S, S)``.
    """
    if not isinstance(scene, Scene):
        raise TypeError(f"scene must be a Scene, got {type(scene).__name__}")
    if not isinstance(camera, Camera):
        raise TypeError(f"camera must be a Camera, got {type(camera).__name__}")
    size = check_int(size, "size")
    chunk = check_int(chunk, "chunk")
    ambient = check_number(ambient, "ambient", lo=0.0, hi=1.0)
    intensity = check_number(intensity, "intensity", lo=0.0)
    background = check_number(background, "background", lo=0.0, hi=1.0)
    b = len(camera)
    check_tensor(camera.position, "camera.position", dims=2)
    check_tensor(camera.rotation, "camera.rotation", dims=3)
    scene_index = _scene_index(scene, b, scene_index)
    dt = camera.position.dtype
    lt = torch.as_tensor(light, dtype=dt)
    lt = check_tensor(lt, "light").reshape(-1, 3).expand(b, 3)
    if bool((lt.norm(dim=-1) == 0).any()):
        raise ValueError("light must be a non-zero direction")
    lt = lt / lt.norm(dim=-1, keepdim=True)
    outs = [
        _render_chunk(
            scene[scene_index[i : i + chunk]].to(dtype=dt),
            Camera(camera.rotation[i : i + chunk], camera.position[i : i + chunk], camera.fov),
            lt[i : i + chunk],
            size,
            ambient,
            intensity,
            shadows,
            background,
        )
        for i in range(0, b, chunk)
    ]
    return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}


def _render_chunk(
    scene: Scene,
    cam: Camera,
    light: Tensor,
    size: int,
    ambient: float,
    intensity: float,
    shadows: bool,
    bg: float,
) -> dict[str, Tensor]:
    b = len(cam)
    o, d = _rays(cam, size)
    t, hit_l, n_l = _intersect(scene, o, d)
    t_min, idx = t.min(-1)
    mask = torch.isfinite(t_min)
    gather = idx[..., None, None].expand(-1, -1, 1, 3)
    n_u = n_l.gather(2, gather).squeeze(2)
    y_local = hit_l.gather(2, gather).squeeze(2)[..., 1]
    rot = scene.rotation.gather(1, idx[..., None, None].expand(-1, -1, 3, 3))
    scl = scene.scale.gather(1, idx[..., None].expand(-1, -1, 3))
    n_w = torch.einsum("brij,brj->bri", rot, n_u / scl)
    n_w = n_w / n_w.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    n_w = torch.where(mask[..., None], n_w, torch.zeros_like(n_w))
    t_hit = torch.where(mask, t_min, torch.zeros_like(t_min))
    depth = t_hit * (d * cam.forward[:, None, :]).sum(-1)
    color = scene.color.gather(1, idx[..., None].expand(-1, -1, 3))
    tex = scene.texture.gather(1, idx)
    stripes = 0.5 * (1 + torch.cos(3 * math.pi * y_local))
    albedo = color * (1 - tex * stripes)[..., None]
    lam = (n_w * light[:, None, :]).sum(-1).clamp_min(0)
    if shadows:
        p = o + t_hit[..., None] * d + 1e-4 * n_w
        ts, _, _ = _intersect(scene, p, light[:, None, :].expand_as(d), geometry=False)
        lam = lam * (~torch.isfinite(ts.min(-1).values)).to(lam.dtype)
    shade = ambient + intensity * (1 - ambient) * lam
    lit = albedo * shade[..., None]
    if intensity > 1:
        lit = lit.clamp_max(1.0)
    rgb = torch.where(mask[..., None], lit, torch.full_like(albedo, bg))
    material = scene.material.gather(1, idx)

    def img(x: Tensor) -> Tensor:
        return x.reshape(b, size, size, -1).permute(0, 3, 1, 2)

    return {
        "rgb": img(rgb),
        "depth": img(depth[..., None]),
        "normals": img(n_w),
        "mask": img(mask[..., None].to(d.dtype)),
        "prim": img(torch.where(mask, idx, torch.full_like(idx, -1))[..., None]),
        "material": img(torch.where(mask, material, torch.zeros_like(material))[..., None]),
    }


#: names defined in the two-view geometry and mesh modules, importable from here too
_MOVED = {
    **dict.fromkeys(("intrinsics", "world_to_camera", "project", "cast", "visible"), "two_view"),
    **dict.fromkeys(("Mesh", "read_ply", "pyvista_mesh", "render_mesh", "PYVISTA_MESHES"), "mesh"),
}


def __getattr__(name: str) -> object:
    """``from invariance.vision.render import cast, read_ply, ...`` keeps working."""
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(f"invariance.vision.{_MOVED[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
