r"""Normal estimation and point-pair features (PPF).

PPF (Drost et al. 2010; the rotation-invariant coordinates of PyG's ``PPFConv`` and of RoITr):
for points :math:`p_i, p_j` with normals :math:`n_i, n_j` and :math:`d=p_j-p_i`,

.. math:: \mathrm{PPF}_{ij}=\big(\lVert d\rVert,\ \angle(n_i,d),\ \angle(n_j,d),\ \angle(n_i,n_j)\big),
   \qquad \angle(a,b)=\operatorname{atan2}(\lVert a\times b\rVert,\ a\cdot b).

Our :func:`point_pair_features` equals ``torch_geometric.nn.conv.ppf_conv.point_pair_features``
(checked in ``tests/test_ops_features.py``) but accepts any leading dimensions.
"""  # noqa: E501

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ._checks import check_int, check_points, check_tensor
from .neighbors import index_points, knn

__all__ = ["estimate_normals", "point_pair_features", "vector_angle"]


def vector_angle(a: Tensor, b: Tensor) -> Tensor:
    """Unsigned angle in [0, π] between vectors (…, 3), via atan2 (stable near 0 and π)."""
    return torch.atan2(torch.linalg.cross(a, b, dim=-1).norm(dim=-1), (a * b).sum(-1))


def point_pair_features(pos_i: Tensor, pos_j: Tensor, normal_i: Tensor, normal_j: Tensor) -> Tensor:
    """PPF of point pairs: inputs (…, 3), output (…, 4). Invariant to E(3) acting on all four.

    Coincident points give ``d = 0`` and angles 0 (atan2(0, 0) = 0).
    """
    for name, t in (
        ("pos_i", pos_i),
        ("pos_j", pos_j),
        ("normal_i", normal_i),
        ("normal_j", normal_j),
    ):
        check_tensor(t, name, last=3)
        if t.shape != pos_i.shape:
            raise ValueError(
                f"{name} {tuple(t.shape)} must have the shape of pos_i {tuple(pos_i.shape)}"
            )
    d = pos_j - pos_i
    return torch.stack(
        [
            d.norm(dim=-1),
            vector_angle(normal_i, d),
            vector_angle(normal_j, d),
            vector_angle(normal_i, normal_j),
        ],
        dim=-1,
    )


def estimate_normals(
    pos: Tensor,
    k: int = 16,
    *,
    orient: Literal["centroid", "none"] = "centroid",
) -> Tensor:
    """Unit normals by local PCA: the smallest-eigenvalue axis of each k-NN patch (self included).

    Args:
        pos (Tensor): (N, 3) or (B, N, 3), N >= 3.
        k (int): patch size, 3 <= k <= N (default 16).
        orient (str): ``"centroid"`` flips each normal to point away from the cloud centroid
            (``n·(p - centroid) >= 0``; outward for star-shaped surfaces, and E(3)-equivariant);
            ``"none"`` leaves the eigensolver's arbitrary sign (default ``"centroid"``).

    Returns:
        (…, N, 3) unit normals; E(3)-equivariant (``n' = n Qᵀ``) and permutation-equivariant.

    Fallbacks (tested): a patch of duplicate or collinear points has a repeated smallest
    eigenvalue, so its normal is *some* unit vector orthogonal to the patch (not unique); it is
    never NaN.
    """
    check_points(pos, "pos", dim=3, min_points=3)
    check_int(k, "k", 3)
    if orient not in ("centroid", "none"):
        raise ValueError(f"orient must be 'centroid' or 'none', got {orient!r}")
    squeeze = pos.dim() == 2
    x = pos.unsqueeze(0) if squeeze else pos
    idx, _ = knn(x, k)
    nb = index_points(x, idx)  # (B, N, k, 3)
    c = nb - nb.mean(dim=-2, keepdim=True)
    cov = c.transpose(-1, -2) @ c
    _, V = torch.linalg.eigh(cov)
    n = V[..., 0]
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    if orient == "centroid":
        out = x - x.mean(dim=1, keepdim=True)
        flip = (n * out).sum(-1, keepdim=True) < 0
        n = torch.where(flip, -n, n)
    return n[0] if squeeze else n
