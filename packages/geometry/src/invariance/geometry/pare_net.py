r"""PARE-Net building blocks: vector-neuron layers, the position-aware rotation-equivariant
convolution, the invariant (Gram-Schmidt frame) head and the feature-based hypothesis proposer.

Paper: Yao, Du, Li, Zhou, Zhou, Zhang, Xu (ECCV 2024), "PARE-Net: Position-Aware
Rotation-Equivariant Networks for Robust Point Cloud Registration", arXiv:2407.10142. Official
code: github.com/yaorz97/PARENet (no licence file: read for understanding only, nothing copied).

Mechanism (features are *vector neurons*: ``(..., C, 3)`` tensors, C vector channels; every
linear map mixes channels only, so a rotation ``x -> x @ R.T`` commutes with it):

* :class:`VNLinear`, :class:`VNLeakyReLU` (keep a vector when it points along a learned direction,
  otherwise remove its component along that direction, mixed with slope 0.2) and
  :class:`VNLinearLeakyReLU` (linear map, unit-normalised channels, then the VN leaky ReLU).
* :class:`PAREConv`: for a query ``q`` and neighbours ``s_k``, the position-aware channels
  ``L_k = [r_k, c, r_k x c]`` (``r_k = s_k - q``, ``c = mean_k r_k``) feed a correlation net
  (VN layer, channel norms -> invariant scores, two 1x1 layers, softmax over K kernel points);
  a bank of K channel-mixing weights combines the per-neighbour input (``L_k`` in the first block;
  ``[f_k - f_q, f_k, r_k]`` in residual blocks) weighted by the scores; each vector channel is
  unit-normalised, averaged over neighbours, passed through a VN leaky ReLU and a VN linear
  leaky ReLU; residual blocks add a VN-linear shortcut of ``f_q``.
* :class:`VNInvariantHead` (``VNStdFeature``): a learned equivariant frame by Gram-Schmidt
  (``u1``, ``u2``, ``u3 = u1 x u2``); projecting the features on it gives SO(3)-invariant
  features.
* :func:`solve_local_rotations`: the rotation aligning two sets of equivariant feature vectors
  (Kabsch on vectors, no translation); :func:`feature_hypotheses` turns *every* correspondence
  into a pose hypothesis (rotation from its features, translation from its points), scores each
  by its inliers among voter correspondences and refines the best by weighted Procrustes.

Tested properties: blocks SO(3)-equivariant and the head invariant to float64 precision
(< 1e-10), rotations recovered from rotated features, hypotheses equivariant
(``T(P R1^T, Q) = T(P, Q) R1^-1``), each with a negative control.

Deviations: the official VN-linear-leaky-ReLU normalises ``p + 1e-9`` (adding a constant
*vector*), which breaks equivariance at the 1e-7 level; here the norm is clamped instead, which is
exactly equivariant (the official behaviour is reproduced in the tests as a negative control).
Not yet here: the voxel pyramid / FPN network, the GeoTransformer coarse matcher, dual matching,
losses, training and the reproduce experiment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from invariance.geometry.registration.solvers import weighted_procrustes

__all__ = [
    "VNLinear",
    "VNLeakyReLU",
    "VNLinearLeakyReLU",
    "PAREConv",
    "VNInvariantHead",
    "position_aware_channels",
    "solve_local_rotations",
    "feature_hypotheses",
    "HypothesisResult",
]

_EPS = 1e-12


def _check_vn(x: Tensor, name: str, channels: int | None = None) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    if x.dim() < 2 or x.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (..., C, 3), got {tuple(x.shape)}")
    if channels is not None and x.shape[-2] != channels:
        raise ValueError(f"{name} must have {channels} vector channels, got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or Inf values")


def _check_channels(**kw: int) -> None:
    for name, v in kw.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")


def _unit(x: Tensor) -> Tensor:
    """Unit-normalise each vector channel; the clamp acts on the (invariant) norm only."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(_EPS)


class VNLinear(nn.Module):
    """Channel-mixing linear map ``(..., C_in, 3) -> (..., C_out, 3)`` (no bias: equivariant)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        _check_channels(in_channels=in_channels, out_channels=out_channels)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: Tensor) -> Tensor:
        _check_vn(x, "x", self.in_channels)
        return torch.einsum("oc,...cd->...od", self.weight, x)

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.out_channels}"


def _vn_leaky(x: Tensor, d: Tensor, slope: float) -> Tensor:
    dot = (x * d).sum(-1, keepdim=True)
    dd = (d * d).sum(-1, keepdim=True).clamp_min(_EPS)
    keep = (dot >= 0).to(x.dtype)
    proj = x - (dot / dd) * d
    return slope * x + (1 - slope) * (keep * x + (1 - keep) * proj)


class VNLeakyReLU(nn.Module):
    """Vector-neuron leaky ReLU with a learned direction per channel (``slope`` 0.2)."""

    def __init__(self, channels: int, *, slope: float = 0.2) -> None:
        super().__init__()
        _check_channels(channels=channels)
        if not 0.0 <= slope < 1.0:
            raise ValueError(f"slope must be in [0, 1), got {slope}")
        self.channels, self.slope = channels, float(slope)
        self.direction = VNLinear(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        _check_vn(x, "x", self.channels)
        return _vn_leaky(x, self.direction(x), self.slope)


class VNLinearLeakyReLU(nn.Module):
    """``VNLinear`` -> unit-normalised channels -> VN leaky ReLU (direction from the input)."""

    def __init__(self, in_channels: int, out_channels: int, *, slope: float = 0.2) -> None:
        super().__init__()
        _check_channels(in_channels=in_channels, out_channels=out_channels)
        if not 0.0 <= slope < 1.0:
            raise ValueError(f"slope must be in [0, 1), got {slope}")
        self.in_channels, self.slope = in_channels, float(slope)
        self.linear = VNLinear(in_channels, out_channels)
        self.direction = VNLinear(in_channels, out_channels)

    def normalize(self, p: Tensor) -> Tensor:
        return _unit(p)

    def forward(self, x: Tensor) -> Tensor:
        _check_vn(x, "x", self.in_channels)
        return _vn_leaky(self.normalize(self.linear(x)), self.direction(x), self.slope)


def position_aware_channels(rel: Tensor) -> Tensor:
    """``(M, k, 3)`` neighbour offsets -> ``(M, k, 3, 3)`` channels ``[r_k, c, r_k x c]``."""
    c = rel.mean(dim=1, keepdim=True).expand_as(rel)
    return torch.stack([rel, c, torch.linalg.cross(rel, c, dim=-1)], dim=-2)


class PAREConv(nn.Module):
    """Position-aware rotation-equivariant convolution (see the module docstring).

    Args:
        in_channels: vector channels of the input features (``0`` for the first block, which
            sees only the position-aware channels).
        out_channels: vector channels of the output (even).
        kernel_size: K, the number of kernel points of the weight bank (default: ``4``).
        residual: the residual form (input ``[f_k - f_q, f_k, r_k]`` and a shortcut).

    Shapes: ``pos`` ``(N, 3)`` support points, ``query`` ``(M, 3)``, ``idx`` ``(M, k)`` neighbour
    indices into ``pos`` (the first one is the query itself, or its nearest support point),
    ``feats`` ``(N, C_in, 3)`` (``None`` for the first block) -> ``(M, C_out, 3)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int = 4,
        residual: bool = False,
        slope: float = 0.2,
    ) -> None:
        super().__init__()
        _check_channels(out_channels=out_channels, kernel_size=kernel_size)
        if out_channels % 2:
            raise ValueError(f"out_channels must be even, got {out_channels}")
        if residual and (not isinstance(in_channels, int) or in_channels < 1):
            raise ValueError(f"in_channels must be >= 1 for a residual block, got {in_channels!r}")
        if not residual and in_channels != 0:
            raise ValueError(
                "the first (non-residual) block takes no input features: in_channels=0"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.residual = kernel_size, residual
        k2 = 2 * kernel_size
        self.score_vn = VNLinearLeakyReLU(3, k2, slope=slope)
        self.score_mlp = nn.Sequential(
            nn.Linear(k2, kernel_size),
            nn.BatchNorm1d(kernel_size),
            nn.ReLU(),
            nn.Linear(kernel_size, kernel_size),
        )
        cin = 2 * in_channels + 1 if residual else 3
        half = out_channels // 2
        self.bank = nn.Parameter(torch.empty(kernel_size, half, cin))
        self.act = VNLeakyReLU(half, slope=slope)
        self.out = VNLinearLeakyReLU(half, out_channels, slope=slope)
        self.shortcut = VNLinear(in_channels, out_channels) if residual else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.bank, a=math.sqrt(5))

    def forward(
        self, pos: Tensor, query: Tensor, idx: Tensor, feats: Tensor | None = None
    ) -> Tensor:
        for name, t in (("pos", pos), ("query", query)):
            if not isinstance(t, Tensor) or t.dim() != 2 or t.shape[-1] != 3:
                raise ValueError(f"{name} must be an (N, 3) tensor")
            if not t.is_floating_point() or not torch.isfinite(t).all():
                raise ValueError(f"{name} must be a finite floating tensor")
        if not isinstance(idx, Tensor) or idx.dtype != torch.long or idx.dim() != 2:
            raise TypeError("idx must be an (M, k) int64 tensor of neighbour indices")
        if idx.shape[0] != query.shape[0] or idx.shape[1] < 1:
            raise ValueError(f"idx {tuple(idx.shape)} must have one row per query point")
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= pos.shape[0]):
            raise ValueError(f"idx must index the {pos.shape[0]} support points")
        rel = pos[idx] - query[:, None, :]  # (M, k, 3)
        lk = position_aware_channels(rel)  # (M, k, 3, 3)
        z = self.score_vn(lk).norm(dim=-1)  # (M, k, 2K) invariant
        M, k = idx.shape
        s = self.score_mlp(z.reshape(M * k, -1)).reshape(M, k, -1).softmax(dim=-1)
        if self.residual:
            if feats is None:
                raise ValueError("feats is required for a residual block")
            _check_vn(feats, "feats", self.in_channels)
            if feats.shape[0] != pos.shape[0]:
                raise ValueError(f"feats must have one row per support point ({pos.shape[0]})")
            fk = feats[idx]  # (M, k, C, 3)
            fq = feats[idx[:, :1]].expand_as(fk)
            x = torch.cat([fk - fq, fk, rel.unsqueeze(-2)], dim=-2)
        else:
            x = lk
        w = torch.einsum("mkq,qoc->mkoc", s, self.bank)  # per-neighbour mixing weights
        y = _unit(torch.einsum("mkoc,mkcd->mkod", w, x)).mean(dim=1)
        y = self.out(self.act(y))
        if self.shortcut is not None:
            y = y + self.shortcut(feats[idx[:, 0]])
        return y


class VNInvariantHead(nn.Module):
    """Invariant features by a learned equivariant frame (``VNStdFeature``).

    ``(..., C, 3)`` -> ``(..., C, 3)`` SO(3)-invariant (flatten for a descriptor); ``frame`` is
    the ``(..., 3, 3)`` rows ``u1, u2, u3``."""

    def __init__(self, channels: int, *, slope: float = 0.2) -> None:
        super().__init__()
        _check_channels(channels=channels)
        if channels < 4:
            raise ValueError(f"channels must be >= 4, got {channels}")
        self.channels = channels
        self.net = nn.Sequential(
            VNLinearLeakyReLU(channels, channels // 2, slope=slope),
            VNLinearLeakyReLU(channels // 2, channels // 4, slope=slope),
        )
        self.to_frame = VNLinear(channels // 4, 2)

    def frame(self, x: Tensor) -> Tensor:
        v = self.to_frame(self.net(x))
        u1 = _unit(v[..., 0, :])
        u2 = _unit(v[..., 1, :] - (v[..., 1, :] * u1).sum(-1, keepdim=True) * u1)
        u3 = torch.linalg.cross(u1, u2, dim=-1)
        return torch.stack([u1, u2, u3], dim=-2)

    def forward(self, x: Tensor) -> Tensor:
        _check_vn(x, "x", self.channels)
        return x @ self.frame(x).transpose(-1, -2)


def solve_local_rotations(
    f_src: Tensor, f_ref: Tensor, *, rtol: float = 1e-6
) -> tuple[Tensor, Tensor]:
    """Rotations ``R`` with ``f_ref ≈ f_src @ R.T`` per correspondence.

    Args:
        f_src, f_ref: ``(P, D, 3)`` equivariant feature vectors of the two sides.
        rtol: hypotheses whose cross-covariance has a second singular value below ``rtol`` times
            the first are flagged (nearly rank-1 features do not determine a rotation).

    Returns:
        ``R (P, 3, 3)`` (proper rotations) and ``valid (P,)`` bool.
    """
    _check_vn(f_src, "f_src")
    _check_vn(f_ref, "f_ref")
    if f_src.shape != f_ref.shape or f_src.dim() != 3:
        raise ValueError(
            f"f_src {tuple(f_src.shape)} and f_ref {tuple(f_ref.shape)} must both be (P, D, 3)"
        )
    H = f_src.transpose(-1, -2) @ f_ref  # sum_d f_src_d f_ref_d^T
    U, S, Vh = torch.linalg.svd(H)
    V = Vh.transpose(-1, -2)
    det = torch.sign(torch.linalg.det(V @ U.transpose(-1, -2)))
    det = torch.where(det == 0, torch.ones_like(det), det)
    D = torch.ones(*det.shape, 3, dtype=f_src.dtype, device=f_src.device)
    D[..., 2] = det
    R = (V * D.unsqueeze(-2)) @ U.transpose(-1, -2)
    valid = S[..., 1] > rtol * S[..., 0]
    return R, valid


@dataclass
class HypothesisResult:
    """Output of :func:`feature_hypotheses`."""

    R: Tensor
    t: Tensor
    inliers: Tensor
    num_hypotheses: int
    best: int


def feature_hypotheses(
    src: Tensor,
    ref: Tensor,
    f_src: Tensor,
    f_ref: Tensor,
    voters_src: Tensor,
    voters_ref: Tensor,
    *,
    radius: float = 0.1,
    refine_steps: int = 5,
    voter_weights: Tensor | None = None,
) -> HypothesisResult:
    """PARE-Net's proposer: one hypothesis per correspondence from its equivariant features.

    Args:
        src, ref: ``(P, 3)`` the correspondences' points (``ref ≈ src @ R.T + t``).
        f_src, f_ref: ``(P, D, 3)`` their equivariant features.
        voters_src, voters_ref: ``(V, 3)`` correspondences that vote (inlier if the hypothesis
            maps the source voter within ``radius`` of the reference voter).
        radius: acceptance radius (default: ``0.1``).
        refine_steps: weighted-Procrustes refinements of the best hypothesis on its inliers.
        voter_weights: ``(V,)`` weights of the voters in the refinement (default: uniform).
    """
    for name, x in (
        ("src", src),
        ("ref", ref),
        ("voters_src", voters_src),
        ("voters_ref", voters_ref),
    ):
        if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[-1] != 3 or x.shape[0] == 0:
            raise ValueError(f"{name} must be a non-empty (N, 3) tensor")
        if not x.is_floating_point() or not torch.isfinite(x).all():
            raise ValueError(f"{name} must be a finite floating tensor")
    if src.shape != ref.shape or voters_src.shape != voters_ref.shape:
        raise ValueError("src/ref and voters_src/voters_ref must pair up (same shapes)")
    if f_src.shape[0] != src.shape[0]:
        raise ValueError(f"f_src must have one row per correspondence ({src.shape[0]})")
    if not (isinstance(radius, (int, float)) and math.isfinite(radius) and radius > 0):
        raise ValueError(f"radius must be a positive finite number, got {radius!r}")
    if not isinstance(refine_steps, int) or refine_steps < 0:
        raise ValueError(f"refine_steps must be an int >= 0, got {refine_steps!r}")
    R, valid = solve_local_rotations(f_src, f_ref)
    t = ref - (src.unsqueeze(-2) @ R.transpose(-1, -2)).squeeze(-2)
    pred = torch.einsum("vj,pij->pvi", voters_src, R) + t[:, None, :]
    counts = ((pred - voters_ref).norm(dim=-1) < radius).sum(-1)
    counts = torch.where(valid, counts, torch.full_like(counts, -1))
    best = int(counts.argmax())
    Rb, tb = R[best], t[best]
    w = voter_weights if voter_weights is not None else torch.ones_like(voters_src[:, 0])
    inl = (voters_src @ Rb.T + tb - voters_ref).norm(dim=-1) < radius
    for _ in range(refine_steps):
        if int(inl.sum()) < 3:
            break
        try:
            Rb, tb = weighted_procrustes(voters_src, voters_ref, w * inl.to(w.dtype))
        except ValueError:  # degenerate inlier set: keep the hypothesis
            break
        inl = (voters_src @ Rb.T + tb - voters_ref).norm(dim=-1) < radius
    return HypothesisResult(Rb, tb, inl, int(src.shape[0]), best)
