r"""TinvNN: transformation-invariant, distance-preserving initial representations.

Paper: Ziwei Zhang, Xin Wang, Zeyang Zhang, Peng Cui, Wenwu Zhu, "Revisiting Transformation
Invariant Geometric Deep Learning: Are Initial Representations All You Need?",
arXiv:2112.12345. No official repository was found (searched "TinvNN"); the full text was not
available offline, so the implementation follows the abstract and the method description in our
spec (``specs/geometry.md`` §4).

Mechanism. From points :math:`X\in\mathbb R^{n\times d}` form squared distances :math:`D`,
double-centre :math:`B=-\tfrac12JDJ`, eigendecompose :math:`B=U\Lambda U^\top` and keep the top-d
pairs :math:`\tilde X=U_d\Lambda_d^{1/2}` ("modified" MDS: eigenvalues sorted descending, column
signs fixed by a permutation-invariant statistic, optional scale normalisation). :math:`\tilde X`
preserves all pairwise distances and is invariant to rotations, reflections and translations
(and, with ``scale``, to uniform scaling); permuting the points permutes its rows. Any backbone
fed :math:`\tilde X` instead of :math:`X` becomes transformation-invariant.

Relation to PCA canonicalisation and Frame Averaging. For Euclidean input the top-d MDS
coordinates equal the centred points projected on the covariance eigenvectors,
:math:`\tilde X=(X-\bar x)V`, so TinvNN is single-frame PCA canonicalisation, and its frame is one
of the 8 elements of Frame Averaging's O(3) frame (columns reversed). We therefore share one op:
``method="pca"`` (default, O(n) via the 3×3 covariance, :func:`~invariance.geometry.ops.canonical_frame`)
and ``method="mds"`` (the literal O(n³) distance-matrix path, :func:`~invariance.geometry.ops.classical_mds`,
also usable on inputs given only as distances via :func:`tinvnn_from_distances`). Tests check
that both give the same coordinates.

Sign disambiguation (our choice, unverified against the paper, exposed as ``sign``):
:math:`s_k=\mathrm{sign}(\sum_i\tilde X_{ik}^3)`, falling back to the sign of the largest-|·| entry.

Equivariant outputs map back through the alignment: outputs in canonical coordinates are
multiplied by :math:`R^\top` (and scaled back / translated for points).

Tested properties (``tests/test_tinvnn.py``):
* E(3) invariance of TinvNN(PointNet) on generic clouds, negative control: the bare backbone and
  ``sign="none"`` (``test_tinvnn_invariant_e3_with_negative_control``).
* Similarity invariance with ``scale="rms"`` (``test_tinvnn_scale_invariance``).
* PCA path == MDS path, and the frame is one of FA's O(3) frames (``test_tinvnn_pca_equals_mds``).
* Distances preserved (``test_tinvnn_preserves_distances``); permutation equivariance of the
  coordinates (``test_tinvnn_permutation``); equivariant outputs (``test_tinvnn_equivariant_output``).
* Learning: TinvNN-PointNet beats PointNet on rotated test shapes (``test_tinvnn_learns_rotated_shapes``).

Deviations. The combinatorial-optimisation (TSP) experiments of the paper are not reproduced.
Symmetric shapes (repeated eigenvalues, zero third moments) have no unique canonical frame; the
coordinates are then not invariant, and ``on_degenerate`` (default ``"warn"``) says so
(``tests/test_tinvnn.py::test_tinvnn_on_degenerate_symmetric_clouds``; see
:mod:`invariance.geometry.ops.frames`).
"""  # noqa: E501

from __future__ import annotations

import importlib
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .ops._checks import check_points
from .ops.frames import canonical_frame, check_on_degenerate, classical_mds, flag_degenerate

__all__ = ["TinvNN", "tinvnn_coordinates", "tinvnn_from_distances"]

Sign = Literal["third_moment", "max_abs", "none"]
Scale = Literal["rms", "max"] | None


def _scale_of(c: Tensor, scale: Scale) -> Tensor:
    if scale is None:
        return torch.ones(c.shape[:-2] + (1, 1), dtype=c.dtype, device=c.device)
    if scale == "rms":
        s = (c**2).sum(-1).mean(-1).sqrt()
    elif scale == "max":
        s = c.norm(dim=-1).amax(-1)
    else:
        raise ValueError(f"scale must be None, 'rms' or 'max', got {scale!r}")
    return s.clamp_min(torch.finfo(c.dtype).tiny).unsqueeze(-1).unsqueeze(-1)


def tinvnn_coordinates(
    pos: Tensor,
    *,
    method: Literal["pca", "mds"] = "pca",
    sign: Sign = "third_moment",
    scale: Scale = None,
    return_transform: bool = False,
    on_degenerate: Literal["ignore", "warn", "raise"] = "warn",
) -> Tensor | tuple[Tensor, Tensor, Tensor, Tensor]:
    """Transformation-invariant initial coordinates of point clouds.

    Args:
        pos (Tensor): (N, 3) or (B, N, 3), N >= 2.
        method (str): ``"pca"`` (3×3 covariance, default) or ``"mds"`` (distance-matrix MDS).
        sign (str): column sign rule (default ``"third_moment"``).
        scale (str, optional): ``None``, ``"rms"`` or ``"max"`` normalisation (default ``None``).
        return_transform (bool): also return ``(center, R, s)`` with
            ``coords = (pos - center) @ R / s`` (default ``False``).
        on_degenerate (str): clouds without a unique canonical frame (repeated covariance
            eigenvalues, e.g. a cube or an icosahedron, or a column whose sign no rule can fix,
            e.g. a centrally symmetric box): ``"warn"`` (default, ``RuntimeWarning``),
            ``"raise"`` (``ValueError``) or ``"ignore"``; their coordinates are finite but not
            invariant.

    Returns:
        (…, N, 3) coordinates (and the transform).
    """
    check_points(pos, "pos", dim=3, min_points=2)
    if sign not in ("third_moment", "max_abs", "none"):
        raise ValueError(f"sign must be 'third_moment', 'max_abs' or 'none', got {sign!r}")
    check_on_degenerate(on_degenerate)
    if method == "pca":
        t, R = canonical_frame(pos, sign=sign, on_degenerate=on_degenerate)
        c = (pos - t.unsqueeze(-2)) @ R
    elif method == "mds":
        check_on_degenerate(on_degenerate)
        t = pos.mean(-2)
        d2 = (pos.unsqueeze(-2) - pos.unsqueeze(-3)).pow(2).sum(-1)  # exact (no matmul cdist)
        c, lam = classical_mds(d2, 3, sign=sign)
        flag_degenerate(lam.flip(-1), on_degenerate=on_degenerate, coords=c, sign=sign)
        # recover the orthogonal alignment (least squares; exact for Euclidean input)
        R = torch.linalg.pinv(pos - t.unsqueeze(-2)) @ c
    else:
        raise ValueError(f"method must be 'pca' or 'mds', got {method!r}")
    s = _scale_of(c, scale)
    c = c / s
    return (c, t, R, s.squeeze(-1).squeeze(-1)) if return_transform else c


def tinvnn_from_distances(dist2: Tensor, d: int = 3, *, sign: Sign = "third_moment") -> Tensor:
    """TinvNN coordinates from a squared-distance matrix only (graphs, geodesics, TSP)."""
    return classical_mds(dist2, d, sign=sign)[0]


class TinvNN(nn.Module):
    """Wrap a backbone so it sees TinvNN's invariant initial coordinates.

    Args:
        backbone (nn.Module): called as ``backbone(coords, *args, **kwargs)`` with coords
            (B, N, 3) (or (N, 3) for unbatched input).
        method (str): ``"pca"`` or ``"mds"`` (default ``"pca"``; identical outputs).
        sign (str): sign rule (default ``"third_moment"``).
        scale (str, optional): ``None``, ``"rms"`` or ``"max"`` (default ``None``).
        output (str): ``"invariant"``, ``"points"`` (map back: ``y s R^T + t``) or ``"vectors"``
            (``y R^T``) (default ``"invariant"``).
        vector_inputs (tuple[str]): keyword inputs of per-point 3-vectors, rotated into the
            canonical frame (default ``()``).
        on_degenerate (str): inputs without a unique canonical frame (repeated covariance
            eigenvalues: cube, icosahedron; or a centrally symmetric cloud whose axis signs no
            rule can fix): ``"warn"`` (default: ``RuntimeWarning`` naming how many clouds),
            ``"raise"`` (``ValueError``) or ``"ignore"``. Their output is finite but not
            invariant.

    Shapes: pos (B, N, 3) -> backbone output.

    Invariance: E(3) (plus uniform scaling with ``scale``) on generic inputs (distinct covariance
    eigenvalues and non-zero third moments); permutation symmetry is the backbone's.
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        method: Literal["pca", "mds"] = "pca",
        sign: Sign = "third_moment",
        scale: Scale = None,
        output: Literal["invariant", "points", "vectors"] = "invariant",
        vector_inputs: tuple[str, ...] = (),
        on_degenerate: Literal["ignore", "warn", "raise"] = "warn",
    ) -> None:
        super().__init__()
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"backbone must be an nn.Module, got {type(backbone).__name__}")
        check_on_degenerate(on_degenerate)
        if sign not in ("third_moment", "max_abs", "none"):
            raise ValueError(f"sign must be 'third_moment', 'max_abs' or 'none', got {sign!r}")
        if method not in ("pca", "mds"):
            raise ValueError(f"method must be 'pca' or 'mds', got {method!r}")
        if output not in ("invariant", "points", "vectors"):
            raise ValueError(f"output must be 'invariant', 'points' or 'vectors', got {output!r}")
        _scale_of(torch.ones(1, 1, 3), scale)  # validates `scale`
        self.backbone = backbone
        self.method, self.sign, self.scale, self.output = method, sign, scale, output
        self.vector_inputs = tuple(vector_inputs)
        self.on_degenerate = on_degenerate

    def reset_parameters(self) -> None:
        if hasattr(self.backbone, "reset_parameters"):
            self.backbone.reset_parameters()

    def extra_repr(self) -> str:
        return f"method={self.method}, sign={self.sign}, scale={self.scale}, output={self.output}"

    def forward(self, pos: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        check_points(pos, "pos", dim=3, min_points=2)
        missing = [n for n in self.vector_inputs if n not in kwargs]
        if missing:
            raise ValueError(f"vector_inputs {missing} were not passed as keyword arguments")
        with torch.no_grad():
            _, t, R, s = tinvnn_coordinates(
                pos.detach(),
                method=self.method,
                sign=self.sign,
                scale=self.scale,
                return_transform=True,
                on_degenerate=self.on_degenerate,
            )
        coords = (pos - t.unsqueeze(-2)) @ R / s.unsqueeze(-1).unsqueeze(-1)
        for name in self.vector_inputs:
            v = kwargs[name]
            if not isinstance(v, Tensor) or v.shape != pos.shape:
                raise ValueError(
                    f"vector input {name!r} must have the shape of pos {tuple(pos.shape)}, "
                    f"got {tuple(getattr(v, 'shape', ()))}"
                )
            check_points(v, name, dim=3)
            kwargs[name] = v @ R
        y = self.backbone(coords, *args, **kwargs)
        if self.output == "invariant":
            return y
        if y.shape[-1] != 3:
            raise ValueError(
                f"output={self.output!r} needs a backbone output with last dim 3, got {tuple(y.shape)}"  # noqa: E501
            )
        lead = y.dim() - R.dim() + 1  # broadcast R (…, 3, 3) over y's middle dims
        Rt = R.transpose(-1, -2).view(*R.shape[:-2], *([1] * lead), 3, 3)
        out = (y.unsqueeze(-2) @ Rt).squeeze(-2)
        if self.output == "points":
            ss = s.view(*s.shape, *([1] * (y.dim() - s.dim())))
            tt = t.view(*t.shape[:-1], *([1] * (y.dim() - t.dim())), 3)
            out = out * ss + tt
        return out


def __getattr__(name: str) -> object:
    """Config and recipe names moved to ``recipes.tinvnn``; still importable here."""
    if name in {"TinvNNRecipe", "TinvNNConfig"}:
        return getattr(importlib.import_module("invariance.geometry.recipes.tinvnn"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
