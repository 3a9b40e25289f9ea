r"""Frame Averaging for normal estimation (the FA paper's point-cloud normal task, CPU analogue).

Paper: Puny et al., *Frame Averaging for Invariant and Equivariant Network Design*, ICLR 2022,
arXiv:2110.03336, §5 (FA-PointNet/DGCNN normal estimation on ABC). ABC is not available
offline; the analogue (spec ``geometry.md``, FA "CPU analogue" 3) trains on the aligned
procedural shapes of :func:`invariance.geometry.data.make_shape_classes` (exact normals) and
tests on Haar-SO(3)-rotated shapes and on **real meshes** (the pyvista example PLYs airplane,
ant, nut, read by :func:`invariance.geometry.data.load_pyvista_mesh` without vtk; skipped with a
reason when pyvista is not installed), each under independent Haar rotations.

Model. ``FrameAveraging(PointNetSeg(out_channels=3), output="vectors")``: per-point outputs are
un-framed by the rotation only, so the predicted normals are O(3)-equivariant and
translation-invariant. Loss (sign-agnostic, as in the paper): :math:`1-(\hat n\cdot n)^2` with
:math:`\hat n` the L2-normalised prediction; the same quantity (mean :math:`\sin^2` of the angle
between unoriented normals) is the reported error. The recipe
(:mod:`invariance.geometry.recipes.fa_normals`) compares it with the same ``PointNetSeg``
trained with SO(3) augmentation (baseline), the plain ``PointNetSeg`` and the classical
local-PCA estimator :func:`invariance.geometry.ops.estimate_normals` (k = 16).

Tested (``tests/test_fa_normals.py``): O(3) equivariance of the FA normals in float64 with the
bare backbone as negative control, the loss, and a tiny learning run.
"""

from __future__ import annotations

import importlib

import torch
from torch import Tensor

from invariance.core.groups import haar_so3

from .data.meshes import PYVISTA_MESHES, load_pyvista_mesh, sample_mesh
from .data.shapes import PointCloudDataset
from .ops._checks import check_tensor

__all__ = ["normal_error", "real_mesh_normals"]


def normal_error(pred: Tensor, normal: Tensor) -> Tensor:
    """Mean ``1 - (n̂·n)²`` over points (sign-agnostic), per cloud: (B, N, 3) -> (B,)."""
    check_tensor(pred, "pred", ndim=3, last=3)
    check_tensor(normal, "normal", ndim=3, last=3)
    if pred.shape != normal.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and normal {tuple(normal.shape)} differ")
    n_hat = torch.nn.functional.normalize(pred, dim=-1, eps=1e-12)
    return (1 - (n_hat * normal).sum(-1) ** 2).mean(-1)


def real_mesh_normals(
    n_points: int, *, rotations: int = 4, seed: int = 0, dtype: torch.dtype = torch.float32
) -> PointCloudDataset:
    """Points with exact face normals sampled from the pyvista meshes airplane, ant and nut,
    each under ``rotations`` independent Haar-SO(3) rotations (``y`` = mesh index).

    Raises:
        FileNotFoundError: pyvista (the package, not vtk) is not installed.
    """
    names = [m for m in PYVISTA_MESHES if m != "sphere"]  # a sphere has no PCA frame
    P, N, Y = [], [], []
    for i, name in enumerate(names):
        V, F = load_pyvista_mesh(name)
        for r in range(rotations):
            p, n = sample_mesh(V, F, n_points, seed=1000 * seed + 10 * i + r)
            P.append(p)
            N.append(n)
            Y.append(i)
    pos, nrm = torch.stack(P), torch.stack(N)
    R = haar_so3(len(P), generator=torch.Generator().manual_seed(seed + 4242), dtype=pos.dtype)
    Rt = R.transpose(1, 2)
    return PointCloudDataset((pos @ Rt).to(dtype), (nrm @ Rt).to(dtype), torch.tensor(Y), names)


def __getattr__(name: str) -> object:
    """Config and recipe names moved to ``recipes.fa_normals``; still importable here."""
    if name in {"FANormalsConfig", "FANormalsRecipe"}:
        return getattr(importlib.import_module("invariance.geometry.recipes.fa_normals"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
