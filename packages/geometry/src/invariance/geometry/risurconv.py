r"""RISurConv: rotation-invariant surface attention-augmented convolution.

Paper: Zhiyuan Zhang, Licheng Yang, Zhiyu Xiang, "RISurConv: Rotation Invariant Surface
Attention-Augmented Convolutions for 3D Point Cloud Classification and Segmentation", ECCV 2024,
arXiv:2408.06110. Official code: https://github.com/cszyzhang/RISurConv (MIT, © 2024 Zhiyuan
Zhang). Written from a reading of ``models/risurconv_utils.py`` and ``models/risurconv_cls.py``;
no code copied.

Mechanism. Each set-abstraction layer picks S centres by farthest point sampling and their K
nearest neighbours (the centre included). Neighbours are put in *ring order* around the centre
normal :math:`n_p` (angle in the tangent plane from the longest projected neighbour). For each
neighbour :math:`x_i` with ring predecessor :math:`x_{i-1}` and successor :math:`x_{i+1}`, the local
triangles :math:`(p,x_i,x_{i-1})` and :math:`(p,x_i,x_{i+1})` give 14 rotation-invariant surface
properties (:func:`risp_features`): the length :math:`\lVert x_i-p\rVert`, and cosines between
edge directions, normals and the two triangle normals. They are embedded (two 1×1 convs with
batch norm, no activation in between, then ReLU), refined by an offset self-attention over the K
neighbours, concatenated with the neighbours' previous features, convolved, max-pooled over K
and refined by an offset self-attention over the S centres. The classifier stacks such layers,
a global layer over all remaining points (centre = centroid, normal = the local reference axis
(LRA): the smallest-eigenvalue axis of a distance-weighted covariance), a transformer encoder and
an MLP head.

Tested properties (``tests/test_risurconv.py``):
* The 14 RISP features are SE(3)-invariant (``test_risurconv_risp_features_invariant``).
* The whole classifier is SE(3)- and point-permutation-invariant in float64 (eval mode);
  negative controls: the official sign-ambiguous LRA at the global layer, and feeding raw
  coordinates instead of RISP features (``test_risurconv_classifier_invariant_with_negative_controls``).
* Ring order is a cyclic rotation of the angular order (``test_risurconv_ring_order``).
* Learning: beats PointNet on rotated test shapes (``test_risurconv_learns_rotated_shapes``).
* Normals are validated (``check_normals``): NaN/Inf and zero vectors are rejected, others are
  scaled to unit length, so a scaled normal gives the same logits
  (``test_risurconv_validates_normals``).

Deviations (all documented fixes or CPU choices):
* **LRA sign (fix).** The official global layer uses the LRA eigenvector with the arbitrary sign
  returned by ``eigh``, so the global features are not rotation-invariant (spec §2 measured a 0.10
  drift). We orient it so that :math:`\sum_i n_i\cdot n_{LRA}\ge0` (normals are consistently
  oriented), falling back to the sign of the third moment :math:`\sum_i((x_i-c)\cdot n_{LRA})^3`.
  ``lra_sign="official"`` restores the ambiguous sign (used as a negative control).
* **Ring order.** The official code sorts a sign-folded cosine whose sign for the reference
  neighbour itself comes from floating-point noise of :math:`u\times u`; we sort
  :math:`\varphi=\operatorname{atan2}((u\times r)\cdot n,\ r\cdot u)\bmod 2\pi` with the reference
  at :math:`\varphi=0` by index and zero-projection points (the centre) at :math:`\pi/2`. This is
  the official order without the noise: the official code forces the sign of the *first* kNN entry
  to +1 (meant for the reference, but with distance-sorted kNN that entry is the centre, whose
  zero projection then sorts at cos = 0, i.e. :math:`\pi/2`); tested against golden values of the
  official ``RISP_features``.
* **FPS start.** pointops starts FPS at index 0 (not permutation-invariant); we start at the
  point farthest from the centroid (``fps_start="first"`` gives the official behaviour).
* **Centring.** The global layer uses coordinates relative to the origin; we centre the input cloud
  so that it is translation-invariant (the official data loader normalises instead).
* **Transformer over the batch (quirk not kept).** The official classifier feeds (B, 1, 512) to a
  ``batch_first=False`` encoder, i.e. samples of a batch attend to each other; we run it per sample
  (sequence length 1), as the paper describes.
* **Kept quirk.** The neighbour attention renormalises its softmax over the *centres* axis
  (``attention / attention.sum(dim=1)`` on a (B, S, K, K) tensor); kept as in the official code.
* **Sizes.** CPU-sized defaults (S = 128/64/32, K = 16, channels 32/64/128, global 256, 1
  transformer layer) instead of 1024→… with 512 global channels and 3 layers; normals are
  estimated by local PCA when not given.
"""  # noqa: E501

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from .ops._checks import check_int, check_points, check_real
from .ops.geometry_features import estimate_normals
from .ops.neighbors import farthest_point_sample, index_points, knn

__all__ = [
    "RISurConvNet",
    "RISurConvSA",
    "risp_features",
    "ring_order",
    "lra_normal",
    "check_normals",
]

_EPS = 1e-7


def _unit(v: Tensor) -> Tensor:
    return v / (v.norm(dim=-1, keepdim=True) + _EPS)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(-1, keepdim=True)


def check_normals(normal: Tensor, pos: Tensor, name: str = "normal") -> Tensor:
    """Validate per-point normals for ``pos`` and return them with unit length.

    Raises:
        TypeError: not a floating tensor. ValueError: a shape other than ``pos``'s, NaN/Inf, or a
        (near-)zero vector (its direction, which every RISP feature uses, is undefined).
    """
    if not isinstance(normal, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(normal).__name__}")
    if not normal.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got dtype {normal.dtype}")
    if normal.shape != pos.shape:
        raise ValueError(
            f"{name} must have the shape of pos {tuple(pos.shape)}, got {tuple(normal.shape)}"
        )
    if not torch.isfinite(normal).all():
        raise ValueError(f"{name} contains NaN or Inf values")
    length = normal.norm(dim=-1, keepdim=True)
    tiny = torch.finfo(normal.dtype).eps ** 0.5
    if (length <= tiny).any():
        raise ValueError(
            f"{name} has {int((length <= tiny).sum())} zero-length vectors (norm <= {tiny:.1g}); "
            "a normal needs a direction"
        )
    return normal / length


def ring_order(local: Tensor, normal: Tensor) -> Tensor:
    """Permutation (B, S, K) that sorts neighbours by angle around the centre normal.

    ``local`` (B, S, K, 3) are neighbour offsets from the centre, ``normal`` (B, S, 3).
    """
    n = normal.unsqueeze(2)
    proj = local - _dot(local, n) * n
    plen = proj.norm(dim=-1)  # (B, S, K)
    ref_idx = plen.argmax(dim=-1, keepdim=True)
    ref = proj.gather(2, ref_idx.unsqueeze(-1).expand(-1, -1, 1, 3))
    sin = _dot(torch.linalg.cross(proj, ref.expand_as(proj), dim=-1), n).squeeze(-1)
    cos = _dot(proj, ref).squeeze(-1)
    phi = torch.remainder(torch.atan2(sin, cos), 2 * math.pi)
    phi = torch.where(
        plen <= 1e-12 * plen.amax(-1, keepdim=True).clamp_min(1e-30), math.pi / 2, phi
    )
    phi = phi.scatter(2, ref_idx, 0.0)
    return phi.argsort(dim=-1, stable=True)


def risp_features(xi: Tensor, ni: Tensor, n_p: Tensor, *, shift: int = 1) -> Tensor:
    r"""The 14 rotation-invariant surface properties of ring-ordered neighbours.

    Args:
        xi (Tensor): (B, S, K, 3) neighbours relative to the centre p (p is the origin).
        ni (Tensor): (B, S, K, 3) neighbour normals. n_p (Tensor): (B, S, 3) centre normals.
        shift (int): ring offset of predecessor/successor (official: 2 when S >= 1024, else 1).

    Returns:
        (B, S, K, 14), invariant to any rotation applied to xi, ni, n_p together.
    """
    for name, v, nd in (("xi", xi, 4), ("ni", ni, 4), ("n_p", n_p, 3)):
        if not isinstance(v, Tensor) or not v.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor, got {getattr(v, 'dtype', v)}")
        if v.dim() != nd or v.shape[-1] != 3 or v.numel() == 0:
            raise ValueError(
                f"{name} must be a non-empty {nd}-d tensor (..., 3), got {tuple(v.shape)}"
            )
        if not torch.isfinite(v).all():
            raise ValueError(f"{name} contains NaN or Inf values")
    if ni.shape != xi.shape or n_p.shape != xi.shape[:2] + (3,):
        raise ValueError(
            f"ni {tuple(ni.shape)} must equal xi {tuple(xi.shape)} and n_p {tuple(n_p.shape)} must "
            f"be {tuple(xi.shape[:2]) + (3,)}"
        )
    if isinstance(shift, bool) or not isinstance(shift, int) or not 1 <= shift < xi.shape[2]:
        raise ValueError(f"shift must be an int in [1, K={xi.shape[2]}), got {shift!r}")
    x3, n3 = xi.roll(shift, dims=2), ni.roll(shift, dims=2)  # predecessor x_{i-1}
    x4, n4 = xi.roll(-shift, dims=2), ni.roll(-shift, dims=2)  # successor x_{i+1}
    npp = n_p.unsqueeze(2).expand_as(xi)
    u_pi, u_p3, u_p4 = _unit(xi), _unit(x3), _unit(x4)
    u_3i = _unit(xi - x3)  # x_{i-1} -> x_i
    u_i4 = _unit(x4 - xi)  # x_i -> x_{i+1}
    sn1 = torch.linalg.cross(u_p4, u_pi, dim=-1)
    sn2 = torch.linalg.cross(u_p3, u_pi, dim=-1)
    return torch.cat(
        [
            xi.norm(dim=-1, keepdim=True),  # 1  |x_i - p|
            _dot(u_pi, npp),  # 2  u(p->x_i).n_p
            _dot(-u_pi, ni),  # 3  u(x_i->p).n_i
            _dot(u_pi, u_p3),  # 4  cos angle at p between x_i and x_{i-1}
            _dot(u_p3, npp),  # 5  u(p->x_{i-1}).n_p
            _dot(-u_p3, n3),  # 6  u(x_{i-1}->p).n_{i-1}
            _dot(u_p3, _unit(x3 - xi)),  # 7  cos angle at x_{i-1}
            _dot(-u_3i, ni),  # 8  u(x_i->x_{i-1}).n_i
            _dot(u_3i, n3),  # 9  u(x_{i-1}->x_i).n_{i-1}
            _dot(u_p4, u_pi),  # 10 cos angle at p between x_{i+1} and x_i
            _dot(u_p4, u_i4),  # 11 u(p->x_{i+1}).u(x_i->x_{i+1})
            _dot(u_i4, n4),  # 12 u(x_i->x_{i+1}).n_{i+1}
            _dot(u_pi, n4),  # 13 u(p->x_i).n_{i+1}
            _dot(sn1, sn2),  # 14 triangle-normal cosine
        ],
        dim=-1,
    )


def lra_normal(
    x: Tensor, normal: Tensor | None, *, sign: Literal["fixed", "official"] = "fixed"
) -> Tensor:
    """Local reference axis of whole clouds x (B, N, 3) (already centred): smallest-eigenvalue
    axis of the distance-weighted covariance ``Σ w_i x_i x_iᵀ``, ``w_i ∝ max_j|x_j| - |x_i|``.

    ``sign="fixed"`` orients it by the normals (``Σ n_i·a >= 0``), falling back to the third
    moment; ``"official"`` keeps eigh's arbitrary sign.
    """
    d = x.norm(dim=-1, keepdim=True)
    w = d.amax(1, keepdim=True) - d
    w = w / w.sum(1, keepdim=True).clamp_min(1e-30)
    M = x.transpose(1, 2) @ (w * x)
    _, V = torch.linalg.eigh(M)
    a = V[..., 0]
    if sign == "official":
        return a
    s = (normal * a.unsqueeze(1)).sum((1, 2)) if normal is not None else torch.zeros_like(a[:, 0])
    m3 = ((x * a.unsqueeze(1)).sum(-1) ** 3).sum(1)
    tol = 1e-9 * x.shape[1]
    s = torch.where(s.abs() > tol, s, m3)
    return torch.where(s.unsqueeze(-1) < 0, -a, a)


class _OffsetAttention2d(nn.Module):
    """Offset self-attention over the K neighbours of each centre; x (B, C, K, S).

    Keeps the official softmax renormalisation over the centres axis."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.q = nn.Conv2d(channels, channels // 4, 1, bias=False)
        self.k = nn.Conv2d(channels, channels // 4, 1, bias=False)
        self.v = nn.Conv2d(channels, channels, 1)
        self.trans = nn.Conv2d(channels, channels, 1)
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        q = self.q(x).permute(0, 3, 2, 1)  # (B, S, K, c)
        k = self.k(x).permute(0, 3, 1, 2)  # (B, S, c, K)
        v = self.v(x).permute(0, 3, 1, 2)  # (B, S, C, K)
        att = torch.softmax(q @ k, dim=-1)
        att = att / (1e-9 + att.sum(dim=1, keepdim=True))
        r = (v @ att).permute(0, 2, 3, 1)  # (B, C, K, S)
        return x + torch.relu(self.norm(self.trans(x - r)))


class _OffsetAttention1d(nn.Module):
    """PCT offset self-attention over the S centres; x (B, C, S)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.q = nn.Conv1d(channels, channels // 4, 1, bias=False)
        self.k = nn.Conv1d(channels, channels // 4, 1, bias=False)
        self.v = nn.Conv1d(channels, channels, 1)
        self.trans = nn.Conv1d(channels, channels, 1)
        self.norm = nn.BatchNorm1d(channels)

    def forward(self, x: Tensor) -> Tensor:
        att = torch.softmax(self.q(x).transpose(1, 2) @ self.k(x), dim=-1)  # (B, S, S)
        att = att / (1e-9 + att.sum(dim=1, keepdim=True))
        r = self.v(x) @ att
        return x + torch.relu(self.norm(self.trans(x - r)))


class RISurConvSA(nn.Module):
    """One RISurConv set-abstraction layer.

    Args:
        npoint (int | None): centres S (``None`` with ``group_all``). nsample (int | None): K.
        in_channels (int): previous feature width (0 for the first layer). out_channels (int).
        group_all (bool): one centre (the centroid) over all points, normal = LRA (default False).
        lra_sign (str): ``"fixed"`` (ours) or ``"official"`` (ambiguous sign) (default ``"fixed"``).
        fps_start: FPS start rule, ``"farthest_from_centroid"`` (default) or ``"first"``.
        features (str): ``"risp"`` (paper) or ``"xyz"`` (raw local coordinates padded to 14
            channels; a non-invariant ablation used as negative control) (default ``"risp"``).
        embed_channels (tuple[int, int]): widths of the two embedding convs (official (32, 64)).

    Shapes: xyz (B, N, 3), normal (B, N, 3), feats (B, N, C_in) or None ->
        (new_xyz (B, S, 3), new_normal (B, S, 3), new_feats (B, S, C_out)).

    Invariance: SO(3) rotations (of xyz and normals, about the origin for ``group_all``) and point
    permutations.
    """

    def __init__(
        self,
        *,
        npoint: int | None,
        nsample: int | None,
        in_channels: int,
        out_channels: int,
        group_all: bool = False,
        lra_sign: Literal["fixed", "official"] = "fixed",
        fps_start: Literal["farthest_from_centroid", "first"] = "farthest_from_centroid",
        features: Literal["risp", "xyz"] = "risp",
        embed_channels: tuple[int, int] = (32, 64),
    ) -> None:
        super().__init__()
        if not group_all and (not npoint or not nsample or npoint < 1 or nsample < 3):
            raise ValueError(
                f"need npoint >= 1 and nsample >= 3 unless group_all, got {npoint}, {nsample}"
            )
        if lra_sign not in ("fixed", "official") or fps_start not in (
            "farthest_from_centroid",
            "first",
        ):
            raise ValueError(f"bad lra_sign={lra_sign!r} or fps_start={fps_start!r}")
        if features not in ("risp", "xyz"):
            raise ValueError(f"features must be 'risp' or 'xyz', got {features!r}")
        self.npoint, self.nsample, self.group_all = npoint, nsample, group_all
        self.in_channels, self.out_channels = in_channels, out_channels
        self.lra_sign, self.fps_start, self.features = lra_sign, fps_start, features
        e1, e2 = embed_channels
        self.embed = nn.Sequential(
            nn.Conv2d(14, e1, 1, bias=False),
            nn.BatchNorm2d(e1),
            nn.Conv2d(e1, e2, 1, bias=False),
            nn.BatchNorm2d(e2),
        )
        self.att_local = _OffsetAttention2d(e2)
        self.conv = nn.Sequential(
            nn.Conv2d(e2 + in_channels, out_channels, 1), nn.BatchNorm2d(out_channels)
        )
        self.att_global = _OffsetAttention1d(out_channels)

    def extra_repr(self) -> str:
        return (
            f"npoint={self.npoint}, nsample={self.nsample}, in={self.in_channels}, "
            f"out={self.out_channels}, group_all={self.group_all}"
        )

    def forward(
        self, xyz: Tensor, normal: Tensor, feats: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        check_points(xyz, "xyz", dim=3, min_points=1)
        if xyz.dim() != 3:
            raise ValueError(f"xyz must be batched (B, N, 3), got {tuple(xyz.shape)}")
        normal = check_normals(normal, xyz)
        if feats is not None:
            if not isinstance(feats, Tensor) or feats.shape[:2] != xyz.shape[:2]:
                raise ValueError(
                    f"feats must be (B, N, C) with (B, N) = {tuple(xyz.shape[:2])}, got "
                    f"{tuple(getattr(feats, 'shape', ()))}"
                )
            if feats.shape[-1] != self.in_channels:
                raise ValueError(
                    f"feats must have {self.in_channels} channels, got {feats.shape[-1]}"
                )
        B, N, _ = xyz.shape
        if self.group_all:
            center = xyz.mean(1, keepdim=True)
            c_normal = lra_normal(xyz - center, normal, sign=self.lra_sign)[:, None]
            idx = torch.arange(N, device=xyz.device).view(1, 1, N).expand(B, 1, N)
            local = xyz.unsqueeze(1)  # official: coordinates relative to the origin, not centred
            order_local = local - center.unsqueeze(2)
        else:
            if self.npoint > N or self.nsample > N:
                raise ValueError(
                    f"layer needs npoint={self.npoint} and nsample={self.nsample} <= {N} points"
                )
            start = 0 if self.fps_start == "first" else "farthest_from_centroid"
            fps = farthest_point_sample(xyz, self.npoint, start=start)
            center, c_normal = index_points(xyz, fps), index_points(normal, fps)
            idx, _ = knn(xyz, self.nsample, center)
            local = index_points(xyz, idx) - center.unsqueeze(2)
            order_local = local
        order = ring_order(order_local, c_normal)
        idx = idx.gather(2, order)
        local = local.gather(2, order.unsqueeze(-1).expand(-1, -1, -1, 3))
        nb_normal = index_points(normal, idx)
        shift = 2 if center.shape[1] >= 1024 else 1
        if self.features == "risp":
            f = risp_features(local, nb_normal, c_normal, shift=shift)
        else:
            f = torch.cat([local, nb_normal, local.new_zeros(*local.shape[:-1], 8)], -1)
        h = torch.relu(self.embed(f.permute(0, 3, 2, 1)))  # (B, 64, K, S)
        h = self.att_local(h)
        if feats is not None:
            h = torch.cat([h, index_points(feats, idx).permute(0, 3, 2, 1)], 1)
        h = torch.relu(self.conv(h)).max(dim=2).values  # (B, C_out, S)
        h = self.att_global(h)
        return center, c_normal, h.transpose(1, 2)


class RISurConvNet(nn.Module):
    """RISurConv classification network (CPU-sized defaults).

    Args:
        num_classes (int).
        npoints (Sequence[int]): centres per stage (default (128, 64, 32)).
        nsamples (Sequence[int]): neighbours per stage (default (16, 16, 16)).
        channels (Sequence[int]): widths per stage (default (32, 64, 128)).
        global_channels (int): width of the global layer and transformer (default 256).
        transformer_layers (int): encoder layers (official 3) (default 1). heads (int) (default 8).
        dropout (float): head dropout (default 0.4). normal_k (int): kNN for normal estimation
            when normals are not given (default 16).
        lra_sign, fps_start, features, embed_channels: see :class:`RISurConvSA`.

    Shapes: pos (B, N, 3), normal (B, N, 3) or None -> logits (B, num_classes).

    Invariance: SE(3) (rotation of pos and normals, translation of pos) and point permutation,
    exact in eval mode on generic inputs.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        npoints: Sequence[int] = (128, 64, 32),
        nsamples: Sequence[int] = (16, 16, 16),
        channels: Sequence[int] = (32, 64, 128),
        global_channels: int = 256,
        transformer_layers: int = 1,
        heads: int = 8,
        dropout: float = 0.4,
        normal_k: int = 16,
        lra_sign: Literal["fixed", "official"] = "fixed",
        fps_start: Literal["farthest_from_centroid", "first"] = "farthest_from_centroid",
        features: Literal["risp", "xyz"] = "risp",
        embed_channels: tuple[int, int] = (32, 64),
    ) -> None:
        super().__init__()
        check_int(num_classes, "num_classes", 1)
        check_int(global_channels, "global_channels", 1)
        check_int(transformer_layers, "transformer_layers", 1)
        check_int(heads, "heads", 1)
        check_real(dropout, "dropout", 0.0, 1.0, hi_open=True)
        check_int(normal_k, "normal_k", 3)
        if not (len(npoints) == len(nsamples) == len(channels) >= 1):
            raise ValueError(
                f"npoints, nsamples, channels must have the same length >= 1, got {npoints}, {nsamples}, {channels}"  # noqa: E501
            )
        if global_channels % heads:
            raise ValueError(
                f"global_channels={global_channels} must be divisible by heads={heads}"
            )
        self.num_classes, self.normal_k = num_classes, normal_k
        self.min_points = max(max(npoints), max(nsamples))
        stages, c_in = [], 0
        for s, k, c in zip(npoints, nsamples, channels):
            stages.append(
                RISurConvSA(
                    npoint=s,
                    nsample=k,
                    in_channels=c_in,
                    out_channels=c,
                    fps_start=fps_start,
                    features=features,
                    embed_channels=embed_channels,
                )
            )
            c_in = c
        stages.append(
            RISurConvSA(
                npoint=None,
                nsample=None,
                in_channels=c_in,
                out_channels=global_channels,
                group_all=True,
                lra_sign=lra_sign,
                features=features,
                embed_channels=embed_channels,
            )
        )
        self.stages = nn.ModuleList(stages)
        layer = nn.TransformerEncoderLayer(
            global_channels,
            heads,
            dim_feedforward=2 * global_channels,
            dropout=0.05,
            batch_first=True,
        )
        self.transformer = nn.TransformerEncoder(
            layer, transformer_layers, enable_nested_tensor=False
        )
        g = global_channels
        self.head = nn.Sequential(
            nn.Linear(g, g // 2),
            nn.BatchNorm1d(g // 2),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(g // 2, g // 4),
            nn.BatchNorm1d(g // 4),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(g // 4, num_classes),
        )

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}"

    def forward(self, pos: Tensor, normal: Tensor | None = None) -> Tensor:
        check_points(pos, "pos", dim=3, min_points=self.min_points)
        if pos.dim() != 3:
            raise ValueError(f"pos must be batched (B, N, 3), got {tuple(pos.shape)}")
        if normal is None:
            with torch.no_grad():
                normal = estimate_normals(pos, min(self.normal_k, pos.shape[1]))
        else:
            normal = check_normals(normal, pos)
        xyz = pos - pos.mean(1, keepdim=True)
        feats = None
        for stage in self.stages:
            xyz, normal, feats = stage(xyz, normal, feats)
        x = self.transformer(feats)  # (B, 1, C): one token per sample
        return self.head(x[:, 0])


def __getattr__(name: str) -> object:
    """Config and recipe names moved to ``recipes.risurconv``; still importable here."""
    if name in {"RISurConvConfig", "RISurConvRecipe"}:
        return getattr(importlib.import_module("invariance.geometry.recipes.risurconv"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
