"""Real meshes read offline: a small PLY reader and area-weighted surface sampling.

The ``pyvista`` wheel (0.49.1, MIT) ships ``pyvista/examples/{airplane,ant,nut,sphere}.ply``
(checked by listing the wheel). ``import pyvista`` pulls in ``vtk``, which we do not want, so
:func:`pyvista_example_path` only *locates* the file (``importlib.util.find_spec`` does not import
the package) or reads it straight from a downloaded wheel (a zip), and :func:`read_ply` parses it
with numpy. pyvista is *not* a dependency: when neither the package nor a wheel is available the
loaders raise ``FileNotFoundError`` and the tests that need them skip. The procedural generators in
:mod:`invariance.geometry.data.shapes` stay the primary data.

Supported PLY: ``ascii`` and ``binary_little_endian``/``binary_big_endian``, a ``vertex``
element whose first three properties are x, y, z (others are read and dropped), a ``face``
element with a list property of vertex indices (polygons are fan-triangulated), and any other
elements (skipped; fixed-size only in binary files).
"""

from __future__ import annotations

import importlib.util
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..ops._checks import check_int, check_tensor

__all__ = ["read_ply", "sample_mesh", "pyvista_example_path", "load_pyvista_mesh", "PYVISTA_MESHES"]

PYVISTA_MESHES = ("airplane", "ant", "nut", "sphere")

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip


def _parse_header(f: io.BufferedIOBase) -> tuple[str, list[dict]]:
    if f.readline().strip() != b"ply":
        raise ValueError("not a PLY file (missing 'ply' magic line)")
    fmt, elements = None, []
    while True:
        line = f.readline()
        if not line:
            raise ValueError("PLY header has no 'end_header'")
        tok = line.decode("ascii", "replace").split()
        if not tok or tok[0] in ("comment", "obj_info"):
            continue
        if tok[0] == "format":
            fmt = tok[1]
        elif tok[0] == "element":
            elements.append({"name": tok[1], "count": int(tok[2]), "props": []})
        elif tok[0] == "property":
            if tok[1] == "list":
                elements[-1]["props"].append(
                    (tok[4], "list", _PLY_TYPES[tok[2]], _PLY_TYPES[tok[3]])
                )
            else:
                elements[-1]["props"].append((tok[2], "scalar", _PLY_TYPES[tok[1]], None))
        elif tok[0] == "end_header":
            break
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise ValueError(f"unsupported PLY format {fmt!r}")
    return fmt, elements


def _fan(poly: list[int]) -> list[list[int]]:
    return [[poly[0], poly[i], poly[i + 1]] for i in range(1, len(poly) - 1)]


def read_ply(source: str | os.PathLike | bytes) -> tuple[Tensor, Tensor]:
    """Read a PLY mesh. ``source`` is a path or the file's bytes.

    Returns:
        ``(vertices, faces)``: float64 (V, 3) and int64 (F, 3) (polygons fan-triangulated;
        a point-cloud PLY gives F = 0).
    """
    raw = source if isinstance(source, bytes) else Path(source).read_bytes()
    f = io.BytesIO(raw)
    fmt, elements = _parse_header(f)
    verts, faces = None, []
    if fmt == "ascii":
        lines = f.read().decode("ascii").split("\n")
        li = 0
        for el in elements:
            rows = []
            for _ in range(el["count"]):
                while not lines[li].strip():
                    li += 1
                rows.append(lines[li].split())
                li += 1
            if el["name"] == "vertex":
                verts = np.array([[float(v) for v in r[:3]] for r in rows], dtype=np.float64)
            elif el["name"] == "face":
                for r in rows:
                    k = int(r[0])
                    faces += _fan([int(v) for v in r[1 : 1 + k]])
    else:
        end = "<" if fmt == "binary_little_endian" else ">"
        for el in elements:
            props = el["props"]
            if all(kind == "scalar" for _, kind, _, _ in props):
                dt = np.dtype([(name, end + t) for name, _, t, _ in props])
                arr = np.frombuffer(f.read(dt.itemsize * el["count"]), dtype=dt, count=el["count"])
                if el["name"] == "vertex":
                    verts = np.stack([arr[n].astype(np.float64) for n, *_ in props[:3]], -1)
                continue
            for _ in range(el["count"]):  # elements with list properties: read row by row
                row = []
                for _, kind, t, t2 in props:
                    if kind == "scalar":
                        row.append(np.frombuffer(f.read(np.dtype(t).itemsize), end + t)[0])
                    else:
                        k = int(np.frombuffer(f.read(np.dtype(t).itemsize), end + t)[0])
                        row.append(
                            np.frombuffer(f.read(np.dtype(t2).itemsize * k), end + t2).tolist()
                        )
                if el["name"] == "face":
                    lst = next(r for r in row if isinstance(r, list))
                    faces += _fan([int(v) for v in lst])
    if verts is None:
        raise ValueError("PLY file has no 'vertex' element")
    F = torch.tensor(faces, dtype=torch.long).reshape(-1, 3)
    if F.numel() and (F.min() < 0 or F.max() >= len(verts)):
        raise ValueError(f"face indices out of range for {len(verts)} vertices")
    return torch.from_numpy(np.ascontiguousarray(verts)), F


def sample_mesh(
    vertices: Tensor, faces: Tensor, n: int, *, seed: int, normalize: bool = True
) -> tuple[Tensor, Tensor]:
    """Area-weighted uniform samples on a triangle mesh with exact (face) normals.

    Normals follow the faces' vertex winding (right-hand rule). Degenerate (zero-area) faces
    are never picked. With ``normalize`` the points are centred and scaled to max radius 1.

    Returns:
        (n, 3) points and (n, 3) unit normals, float64.
    """
    check_tensor(vertices, "vertices", ndim=2, last=3)
    check_tensor(faces, "faces", ndim=2, last=3, floating=False)
    if faces.is_floating_point() or faces.is_complex():
        raise TypeError(f"faces must be an integer tensor, got dtype {faces.dtype}")
    if int(faces.min()) < 0 or int(faces.max()) >= vertices.shape[0]:
        raise ValueError(
            f"faces must index the {vertices.shape[0]} vertices, got range "
            f"[{int(faces.min())}, {int(faces.max())}]"
        )
    check_int(n, "n", 1)
    check_int(seed, "seed", 0)
    V = vertices.to(torch.float64)
    a, b, c = V[faces[:, 0]], V[faces[:, 1]], V[faces[:, 2]]
    cr = torch.linalg.cross(b - a, c - a, dim=-1)
    area = 0.5 * cr.norm(dim=-1)
    if not area.sum() > 0:
        raise ValueError("mesh has zero total area")
    g = torch.Generator().manual_seed(seed)
    f = torch.multinomial(area / area.sum(), n, replacement=True, generator=g)
    r1 = torch.rand(n, 1, generator=g, dtype=torch.float64).sqrt()
    r2 = torch.rand(n, 1, generator=g, dtype=torch.float64)
    p = (1 - r1) * a[f] + r1 * (1 - r2) * b[f] + r1 * r2 * c[f]
    nrm = cr[f] / cr[f].norm(dim=-1, keepdim=True)
    if normalize:
        p = p - p.mean(0)
        p = p / p.norm(dim=-1).max()
    return p, nrm


def pyvista_example_path(name: str, *, wheel: str | os.PathLike | None = None) -> bytes:
    """Bytes of ``pyvista/examples/<name>.ply``, from the installed package or a wheel file.

    The installed package is located with ``importlib.util.find_spec`` (pyvista and vtk are
    not imported). ``wheel`` may point to a ``pyvista-*.whl`` (a zip) instead.

    Raises:
        ValueError: unknown name. FileNotFoundError: neither source is available.
    """
    if name not in PYVISTA_MESHES:
        raise ValueError(f"unknown pyvista example {name!r}; choose from {PYVISTA_MESHES}")
    member = f"pyvista/examples/{name}.ply"
    if wheel is not None:
        with zipfile.ZipFile(wheel) as z:
            return z.read(member)
    spec = importlib.util.find_spec("pyvista")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "pyvista is not installed; pass wheel=<path to a pyvista wheel> or use the procedural "
            "generators in invariance.geometry.data"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "examples" / f"{name}.ply"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found in the installed pyvista")
    return path.read_bytes()


def load_pyvista_mesh(
    name: str, *, wheel: str | os.PathLike | None = None
) -> tuple[Tensor, Tensor]:
    """``read_ply`` of a mesh shipped in the pyvista wheel (see :func:`pyvista_example_path`)."""
    return read_ply(pyvista_example_path(name, wheel=wheel))
