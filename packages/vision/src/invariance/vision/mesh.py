r"""Triangle meshes for the renderer: PLY reading (ascii and binary), the meshes that ship in
pyvista's examples folder, and ray casting of meshes (Moller-Trumbore) with the renderer's
cameras and shading. Also importable from :mod:`invariance.vision.render`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from invariance.vision._checks import check_int, check_number, check_tensor
from invariance.vision.render import Camera, _rays
from invariance.vision.two_view import _check_camera

__all__ = ["PYVISTA_MESHES", "Mesh", "pyvista_mesh", "read_ply", "render_mesh"]

_INF = float("inf")


#: the triangle meshes shipped in pyvista's examples folder
PYVISTA_MESHES = ("airplane", "ant", "nut", "sphere")


@dataclass
class Mesh:
    """A triangle mesh: ``vertices`` ``(V, 3)`` float, ``faces`` ``(F, 3)`` long vertex indices,
    one ``color`` (3 numbers in ``[0, 1]``)."""

    vertices: Tensor
    faces: Tensor
    color: tuple[float, float, float] = (0.7, 0.7, 0.7)

    def __post_init__(self) -> None:
        v = check_tensor(self.vertices, "vertices", dims=2, expected="(V, 3)")
        if v.shape[1] != 3:
            raise ValueError(f"vertices must have shape (V, 3), got {tuple(v.shape)}")
        f = self.faces
        if not isinstance(f, Tensor) or f.dtype != torch.long or f.dim() != 2 or f.shape[1] != 3:
            raise ValueError("faces must be an (F, 3) long tensor of vertex indices")
        if f.shape[0] == 0:
            raise ValueError("faces must not be empty (empty mesh)")
        if bool(((f < 0) | (f >= v.shape[0])).any()):
            raise ValueError(f"faces must index vertices 0..{v.shape[0] - 1}")
        a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
        if not bool((torch.cross(b - a, c - a, dim=-1).norm(dim=-1) > 0).any()):
            raise ValueError("faces are all degenerate (zero area): empty mesh")
        if len(self.color) != 3 or any(not 0 <= float(x) <= 1 for x in self.color):
            raise ValueError(f"color must be 3 numbers in [0, 1], got {self.color}")

    def normalized(self, radius: float = 1.0) -> Mesh:
        """The mesh centred on its bounding-box centre and scaled to fit a ball of ``radius``."""
        check_number(radius, "radius", lo=0.0, lo_open=True)
        v = self.vertices
        v = v - (v.amin(0) + v.amax(0)) / 2
        return Mesh(v * (radius / v.norm(dim=-1).max()), self.faces, self.color)


_PLY_TYPES = {
    "char": "b", "uchar": "B", "short": "h", "ushort": "H", "int": "i", "uint": "I",
    "float": "f", "double": "d", "int8": "b", "uint8": "B", "int16": "h", "uint16": "H",
    "int32": "i", "uint32": "I", "float32": "f", "float64": "d",
}  # fmt: skip


def read_ply(path: str | Path, *, dtype: torch.dtype = torch.float32) -> Mesh:
    """Read a triangle mesh from a PLY file (ascii or binary little/big endian; vertex ``x y z``
    plus any other scalar properties, faces as index lists; polygons are fanned into
    triangles)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path must name a PLY file, got {str(path)!r}")
    raw = path.read_bytes()
    end = raw.find(b"end_header")
    if not raw.startswith(b"ply") or end < 0:
        raise ValueError(f"path is not a PLY file: {str(path)!r}")
    body = raw[raw.index(b"\n", end) + 1 :]
    fmt, elements = "", []
    for line in raw[:end].decode("ascii", "replace").splitlines():
        tok = line.split()
        if not tok:
            continue
        if tok[0] == "format":
            fmt = tok[1]
        elif tok[0] == "element":
            elements.append((tok[1], int(tok[2]), []))
        elif tok[0] == "property" and elements:
            elements[-1][2].append(tok[1:])
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise ValueError(f"unsupported PLY format {fmt!r} in {str(path)!r}")
    verts, faces = [], []
    if fmt == "ascii":
        words = body.decode("ascii").split()
        pos = 0

        def take(kind: str) -> float:
            nonlocal pos
            pos += 1
            return float(words[pos - 1])
    else:
        order = "<" if fmt == "binary_little_endian" else ">"
        pos = 0

        def take(kind: str) -> float:
            nonlocal pos
            code = order + _PLY_TYPES[kind]
            (val,) = struct.unpack_from(code, body, pos)
            pos += struct.calcsize(code)
            return val

    for name, count, props in elements:
        for _ in range(count):
            row: dict[str, object] = {}
            for p in props:
                if p[0] == "list":
                    k = int(take(p[1]))
                    row[p[3]] = [int(take(p[2])) for _ in range(k)]
                else:
                    row[p[1]] = take(p[0])
            if name == "vertex":
                verts.append([row["x"], row["y"], row["z"]])
            elif name == "face":
                idx = row.get("vertex_indices", row.get("vertex_index", []))
                faces += [[idx[0], idx[i], idx[i + 1]] for i in range(1, len(idx) - 1)]
    if not verts or not faces:
        raise ValueError(f"path holds no triangles: {str(path)!r} (empty mesh)")
    return Mesh(torch.tensor(verts, dtype=dtype), torch.tensor(faces, dtype=torch.long))


def pyvista_mesh(name: str, *, dtype: torch.dtype = torch.float32) -> Mesh:
    """One of the meshes in pyvista's examples folder (:data:`PYVISTA_MESHES`), normalized to the
    unit ball (needs pyvista installed, only to locate the file)."""
    import importlib.util

    if name not in PYVISTA_MESHES:
        raise ValueError(f"name must be one of {PYVISTA_MESHES}, got {name!r}")
    spec = importlib.util.find_spec("pyvista")
    if spec is None or spec.origin is None:
        raise ValueError("pyvista is not installed: its example meshes are not available")
    return read_ply(Path(spec.origin).parent / "examples" / f"{name}.ply", dtype=dtype).normalized()


def render_mesh(
    mesh: Mesh,
    camera: Camera,
    *,
    size: int = 64,
    light: tuple[float, float, float] | Tensor = (0.4, 1.0, 0.6),
    ambient: float = 0.35,
    background: float = 1.0,
    chunk: int = 1024,
) -> dict[str, Tensor]:
    """Ray cast ``mesh`` from every camera (Moller-Trumbore, nearest hit, both faces visible):
    ``rgb``, ``depth`` (z-depth, 0 on the background), ``normals`` (world frame, facing the
    camera), ``mask`` and ``face`` (the hit triangle, -1 on the background), shaped as in
    :func:`render`; Lambertian flat shading without shadows. Differentiable in the camera and
    the vertices."""
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a Mesh, got {type(mesh).__name__}")
    cam = _check_camera(camera)
    size = check_int(size, "size")
    chunk = check_int(chunk, "chunk")
    ambient = check_number(ambient, "ambient", lo=0.0, hi=1.0)
    background = check_number(background, "background", lo=0.0, hi=1.0)
    dt = cam.position.dtype
    lt = check_tensor(torch.as_tensor(light, dtype=dt), "light").reshape(3)
    if float(lt.norm()) == 0:
        raise ValueError("light must be a non-zero direction")
    lt = lt / lt.norm()
    b = len(cam)
    o, d = _rays(cam, size)
    v = mesh.vertices.to(dt)
    p0, p1, p2 = v[mesh.faces[:, 0]], v[mesh.faces[:, 1]], v[mesh.faces[:, 2]]
    e1, e2 = p1 - p0, p2 - p0
    n_face = torch.cross(e1, e2, dim=-1)
    n_face = n_face / n_face.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    ts, ids = [], []
    for s in range(0, d.shape[1], chunk):
        dd = d[:, s : s + chunk, None, :]  # (B, r, 1, 3)
        pv = torch.cross(dd, e2.expand(b, 1, -1, 3), dim=-1)  # (B, r, F, 3)
        det = (pv * e1).sum(-1)
        ok = det.abs() > 1e-12
        inv = 1.0 / torch.where(ok, det, torch.ones_like(det))
        tv = o[:, :, None, :] - p0  # (B, 1, F, 3)
        u = (tv * pv).sum(-1) * inv
        q = torch.cross(tv.expand_as(pv), e1.expand_as(pv), dim=-1)
        w = (dd * q).sum(-1) * inv
        t = (q * e2).sum(-1) * inv
        hit = ok & (u >= 0) & (w >= 0) & (u + w <= 1) & (t > 1e-6)
        t = torch.where(hit, t, torch.full_like(t, _INF))
        tmin, idx = t.min(-1)
        ts.append(tmin)
        ids.append(idx)
    t_hit, idx = torch.cat(ts, 1), torch.cat(ids, 1)
    mask = torch.isfinite(t_hit)
    tf = torch.where(mask, t_hit, torch.zeros_like(t_hit))
    depth = tf * (d * cam.forward[:, None, :]).sum(-1)
    n = n_face[idx]
    n = torch.where(((n * d).sum(-1, keepdim=True) > 0), -n, n)  # two-sided: face the camera
    n = torch.where(mask[..., None], n, torch.zeros_like(n))
    lam = (n * lt).sum(-1).clamp_min(0)
    col = torch.tensor(mesh.color, dtype=dt)
    lit = col * (ambient + (1 - ambient) * lam)[..., None]
    rgb = torch.where(mask[..., None], lit, torch.full_like(lit, background))

    def img(x: Tensor) -> Tensor:
        return x.reshape(b, size, size, -1).permute(0, 3, 1, 2)

    return {
        "rgb": img(rgb),
        "depth": img(depth[..., None]),
        "normals": img(n),
        "mask": img(mask[..., None].to(dt)),
        "face": img(torch.where(mask, idx, torch.full_like(idx, -1))[..., None]),
    }
