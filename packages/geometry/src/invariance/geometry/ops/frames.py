r"""PCA frames, canonical (sign-disambiguated) frames and classical MDS.

One eigendecomposition serves three methods:

* **Frame Averaging** (Puny et al., ICLR 2022) averages a backbone over the *frame*
  :math:`\mathcal F(X)=\{(VS,\,t)\}`: :math:`t` the centroid, :math:`V` the eigenvectors of the
  covariance :math:`C=(X-t)^\top(X-t)` (ascending eigenvalues), :math:`S` one of the 8 diagonal
  sign matrices (O(3)) or, for SO(3), the 4 sign choices of the first two columns with the third
  column :math:`c_1\times c_2`. :func:`pca_frames` returns all of them at once.
* **TinvNN** (Zhang et al., arXiv 2112.12345) uses a *single* frame: the descending-eigenvalue
  axes with a permutation-invariant sign rule (:func:`sign_disambiguate`), i.e. PCA
  canonicalisation. For Euclidean input, classical MDS (:func:`classical_mds`) gives exactly the
  same coordinates (up to floating point), so TinvNN's frame is one element of FA's O(3) frame
  (with columns reversed); ``tests/test_tinvnn.py`` checks both facts.

Degenerate eigenvalues. When two covariance eigenvalues coincide (spheres, cubes, regular
polyhedra, a single point, collinear or coplanar-symmetric clouds) the eigenvectors inside that
eigenspace are arbitrary, so the frame is no longer equivariant and frame-averaged / canonicalised
outputs lose exact invariance for that input (they stay well defined, never NaN). We flag such
inputs with a relative gap test ``min(λ2-λ1, λ3-λ2) <= rtol·max(λ3, tiny)`` and act according to
``on_degenerate``: ``"ignore"``, ``"warn"`` (default) or ``"raise"`` (``ValueError``).
:func:`canonical_frame` (a single frame) also flags clouds whose axis signs no sign rule can fix
(:func:`sign_ambiguous`: zero third moment and tied extreme coordinates, e.g. a centrally
symmetric box). A cloud with
all points identical has λ = 0 and is always degenerate. Near-degenerate (but not flagged) inputs
are exactly invariant in exact arithmetic but numerically unstable; sampled symmetric shapes fall
in this class, which is why invariance tests use generic (anisotropic, skewed) clouds.
"""

from __future__ import annotations

import itertools
import warnings
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from ._checks import check_int, check_points, check_tensor

__all__ = [
    "Frames",
    "centroid_covariance",
    "pca_frames",
    "sign_disambiguate",
    "canonical_frame",
    "classical_mds",
    "O3_SIGNS",
    "SO3_SIGNS",
    "frame_signs",
    "flag_degenerate",
    "sign_ambiguous",
    "check_on_degenerate",
]

OnDegenerate = Literal["ignore", "warn", "raise"]

#: the 8 sign patterns of the O(3) frame, in a fixed order (first one all +1)
O3_SIGNS = torch.tensor(list(itertools.product([1.0, -1.0], repeat=3)))
#: the 4 sign patterns of the first two axes of the SO(3) frame
SO3_SIGNS = torch.tensor(list(itertools.product([1.0, -1.0], repeat=2)))


def frame_signs(
    group: Literal["O3", "SO3"] = "O3",
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Diagonal sign patterns ``s_f`` (F, 3) with ``frames[..., f, :, :] == frames[..., 0, :, :]
    * s_f`` exactly for the frames of :func:`pca_frames` (O3: the 8 rows of ``O3_SIGNS``; SO3:
    ``(s1, s2, s1*s2)``, since ``(s1 v1) x (s2 v2) = s1 s2 (v1 x v2)``).

    Frame Averaging uses it to frame a cloud once, ``(X - t) R0``, and get every other frame by
    flipping coordinate signs (tested in ``tests/test_ops_frames.py``).
    """
    if group == "O3":
        S = O3_SIGNS
    elif group == "SO3":
        S = torch.cat([SO3_SIGNS, SO3_SIGNS.prod(-1, keepdim=True)], dim=-1)
    else:
        raise ValueError(f"group must be 'O3' or 'SO3', got {group!r}")
    return S.to(dtype=dtype or torch.get_default_dtype(), device=device)


class Frames(NamedTuple):
    """Output of :func:`pca_frames` (leading dims ``...`` = batch, or graphs)."""

    center: Tensor  #: (..., 3) centroid t
    frames: Tensor  #: (..., F, 3, 3) orthogonal matrices V S (columns are axes)
    eigvals: Tensor  #: (..., 3) covariance eigenvalues, ascending
    degenerate: Tensor  #: (...,) bool, repeated eigenvalues (frame not equivariant)


def centroid_covariance(
    pos: Tensor, batch: Tensor | None = None, num_graphs: int | None = None
) -> tuple[Tensor, Tensor]:
    """Centroid and scatter matrix ``(X-t)ᵀ(X-t)``.

    Dense ``pos`` (…, N, 3) gives (…, 3) and (…, 3, 3). With a PyG ``batch`` vector, ``pos`` is
    (N_total, 3) and the outputs are per graph, (G, 3) and (G, 3, 3).
    """
    if batch is None:
        t = pos.mean(dim=-2)
        c = pos - t.unsqueeze(-2)
        return t, c.transpose(-1, -2) @ c
    if batch.dim() != 1 or batch.shape[0] != pos.shape[0]:
        raise ValueError(f"batch must have shape ({pos.shape[0]},), got {tuple(batch.shape)}")
    G = int(batch.max()) + 1 if num_graphs is None else num_graphs
    ones = torch.ones(pos.shape[0], dtype=pos.dtype, device=pos.device)
    cnt = torch.zeros(G, dtype=pos.dtype, device=pos.device).index_add_(0, batch, ones)
    if (cnt == 0).any():
        raise ValueError("every graph in `batch` must have at least one node")
    t = torch.zeros(G, pos.shape[-1], dtype=pos.dtype, device=pos.device).index_add_(0, batch, pos)
    t = t / cnt.unsqueeze(-1)
    c = pos - t[batch]
    outer = c.unsqueeze(-1) * c.unsqueeze(-2)
    cov = torch.zeros(G, 3, 3, dtype=pos.dtype, device=pos.device).index_add_(0, batch, outer)
    return t, cov


def check_on_degenerate(on_degenerate: str) -> None:
    """Raise ``ValueError`` unless ``on_degenerate`` is ``"ignore"``, ``"warn"`` or ``"raise"``."""
    if on_degenerate not in ("ignore", "warn", "raise"):
        raise ValueError(
            f"on_degenerate must be 'ignore', 'warn' or 'raise', got {on_degenerate!r}"
        )


def sign_ambiguous(coords: Tensor, rule: str = "third_moment") -> Tensor:
    """(…,) bool: some column of the centred canonical ``coords`` (…, N, D) has a sign that
    :func:`sign_disambiguate` cannot fix robustly: its third moment is zero up to rounding
    (``|Σc³| <= sqrt(eps)·Σ|c|³``) *and* its largest positive and negative entries have the same
    magnitude up to rounding (a centrally symmetric cloud). ``rule="none"`` never flags (that rule
    promises no invariance)."""
    if rule == "none":
        return torch.zeros(coords.shape[:-2], dtype=torch.bool, device=coords.device)
    tol = torch.finfo(coords.dtype).eps ** 0.5
    m3 = (coords**3).sum(dim=-2).abs()
    a3 = (coords.abs() ** 3).sum(dim=-2)
    pos_max = coords.amax(dim=-2)
    neg_max = (-coords).amax(dim=-2)
    scale = torch.maximum(pos_max.abs(), neg_max.abs())
    tie = (pos_max - neg_max).abs() <= tol * scale
    amb = tie if rule == "max_abs" else tie & (m3 <= tol * a3)
    return amb.any(dim=-1)


def flag_degenerate(
    eigvals: Tensor,
    *,
    rtol: float = 1e-6,
    on_degenerate: OnDegenerate = "warn",
    coords: Tensor | None = None,
    sign: str = "third_moment",
) -> Tensor:
    """Flag clouds whose PCA frame is not unique and act on ``on_degenerate``.

    Args:
        eigvals (Tensor): (…, 3) covariance eigenvalues, ascending.
        rtol (float): relative eigen-gap at or below which eigenvalues count as repeated.
        on_degenerate (str): ``"ignore"``, ``"warn"`` (``RuntimeWarning``) or ``"raise"``
            (``ValueError``).
        coords (Tensor, optional): canonical coordinates (…, N, 3); when given, clouds whose
            axis signs are ambiguous (:func:`sign_ambiguous` under ``sign``) are flagged too.

    Returns:
        (…,) bool, True for the flagged clouds.
    """
    check_on_degenerate(on_degenerate)
    gaps = torch.minimum(eigvals[..., 1] - eigvals[..., 0], eigvals[..., 2] - eigvals[..., 1])
    scale = eigvals[..., 2].abs().clamp_min(torch.finfo(eigvals.dtype).tiny)
    degenerate = gaps <= rtol * scale
    what = f"have repeated covariance eigenvalues (relative gap <= {rtol:g})"
    if coords is not None:
        amb = sign_ambiguous(coords, sign)
        if amb.any():
            what += " or axis signs that no sign rule can fix (centrally symmetric)"
        degenerate = degenerate | amb
    if degenerate.any() and on_degenerate != "ignore":
        msg = (
            f"{int(degenerate.sum())} of {degenerate.numel()} point clouds {what}; their PCA "
            "frame is not unique, so frame-averaged/canonicalised outputs are not exactly "
            "invariant for them (on_degenerate='ignore' silences this)"
        )
        if on_degenerate == "raise":
            raise ValueError(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
    return degenerate


def pca_frames(
    pos: Tensor,
    *,
    group: Literal["O3", "SO3"] = "O3",
    batch: Tensor | None = None,
    num_graphs: int | None = None,
    rtol: float = 1e-6,
    on_degenerate: OnDegenerate = "warn",
) -> Frames:
    r"""All PCA frames of a point cloud (Frame Averaging's E(3)/SE(3) frame).

    Args:
        pos (Tensor): (N, 3), (B, N, 3), or (N_total, 3) with ``batch``.
        group (str): ``"O3"`` -> 8 frames (rotations and reflections), ``"SO3"`` -> 4 proper
            rotations (third axis = first × second) (default: ``"O3"``).
        batch (Tensor, optional): PyG graph-membership vector (N_total,).
        rtol (float): relative eigen-gap below which a cloud is flagged degenerate (default 1e-6).
        on_degenerate (str): ``"ignore"``, ``"warn"`` or ``"raise"`` (default: ``"warn"``).

    Returns:
        :class:`Frames`. Equivariance: for ``pos' = pos Qᵀ + s`` (Q ∈ O(3), or SO(3) for the SO3
        frame), ``center' = Q center + s`` and the *set* ``frames'`` equals ``Q frames``.
    """
    check_points(pos, "pos", dim=3)
    if group not in ("O3", "SO3"):
        raise ValueError(f"group must be 'O3' or 'SO3', got {group!r}")
    t, cov = centroid_covariance(pos, batch, num_graphs)
    eigvals, V = torch.linalg.eigh(cov)
    degenerate = flag_degenerate(eigvals, rtol=rtol, on_degenerate=on_degenerate)
    if group == "O3":
        S = O3_SIGNS.to(dtype=pos.dtype, device=pos.device)  # (8, 3)
        frames = V.unsqueeze(-3) * S.view(*([1] * (V.dim() - 2)), 8, 1, 3)
    else:
        S = SO3_SIGNS.to(dtype=pos.dtype, device=pos.device)  # (4, 2)
        c12 = V[..., :2].unsqueeze(-3) * S.view(*([1] * (V.dim() - 2)), 4, 1, 2)
        c3 = torch.linalg.cross(c12[..., 0], c12[..., 1], dim=-1)
        frames = torch.cat([c12, c3.unsqueeze(-1)], dim=-1)
    return Frames(t, frames, eigvals, degenerate)


def sign_disambiguate(
    coords: Tensor,
    *,
    rule: Literal["third_moment", "max_abs", "none"] = "third_moment",
    tol: float = 1e-9,
) -> Tensor:
    r"""Per-column signs ``s`` (…, D) that make ``coords * s`` independent of column sign flips.

    ``coords`` (…, N, D) are centred canonical coordinates. The rule is permutation-invariant
    over the N points:

    * ``"third_moment"`` (default): :math:`s_k=\mathrm{sign}(\sum_i c_{ik}^3)`; when the third
      moment is tiny (``|Σc³| <= tol·Σ|c|³``, e.g. a centrally symmetric shape) fall back to
      ``"max_abs"``.
    * ``"max_abs"``: the sign of the entry of largest magnitude in the column.
    * ``"none"``: all ones.

    A column where every rule is ambiguous (a centrally symmetric shape) gets ``+1``; the
    canonicalisation is then not invariant for that input (documented failure mode).
    """
    if rule not in ("third_moment", "max_abs", "none"):
        raise ValueError(f"rule must be 'third_moment', 'max_abs' or 'none', got {rule!r}")
    ones = torch.ones(
        coords.shape[:-2] + coords.shape[-1:], dtype=coords.dtype, device=coords.device
    )
    if rule == "none":
        return ones
    mx = coords.gather(-2, coords.abs().argmax(dim=-2, keepdim=True)).squeeze(-2)
    s_max = torch.where(mx < 0, -ones, ones)
    if rule == "max_abs":
        return s_max
    m3 = (coords**3).sum(dim=-2)
    a3 = (coords.abs() ** 3).sum(dim=-2)
    s3 = torch.where(m3 < 0, -ones, ones)
    return torch.where(m3.abs() > tol * a3, s3, s_max)


def canonical_frame(
    pos: Tensor,
    *,
    sign: Literal["third_moment", "max_abs", "none"] = "third_moment",
    rtol: float = 1e-6,
    on_degenerate: OnDegenerate = "warn",
) -> tuple[Tensor, Tensor]:
    """TinvNN's single frame: descending PCA axes with :func:`sign_disambiguate` signs.

    Args:
        pos (Tensor): (N, 3) or (B, N, 3).

    Returns:
        ``(center, R)``: (…, 3) and (…, 3, 3); canonical coordinates are ``(pos - center) @ R``.
        R is one of the 8 O(3) frames of :func:`pca_frames` with its columns reversed.
    """
    check_points(pos, "pos", dim=3)
    t, cov = centroid_covariance(pos)
    eigvals, V = torch.linalg.eigh(cov)
    check_on_degenerate(on_degenerate)
    V = V.flip(-1)  # descending eigenvalues
    c = (pos - t.unsqueeze(-2)) @ V
    s = sign_disambiguate(c, rule=sign)
    flag_degenerate(eigvals, rtol=rtol, on_degenerate=on_degenerate, coords=c, sign=sign)
    return t, V * s.unsqueeze(-2)


def classical_mds(
    dist2: Tensor,
    d: int = 3,
    *,
    sign: Literal["third_moment", "max_abs", "none"] = "third_moment",
) -> tuple[Tensor, Tensor]:
    r"""TinvNN's modified classical MDS from squared distances.

    :math:`B=-\tfrac12 JDJ` with :math:`J=I-\tfrac1n\mathbf 1\mathbf 1^\top`, eigendecomposition
    :math:`B=U\Lambda U^\top`, eigenvalues sorted descending, :math:`\tilde X=U_d\Lambda_d^{1/2}`
    (negative eigenvalues of non-Euclidean input clamped to 0), then column signs by
    :func:`sign_disambiguate`. Invariant to any isometry of the points that produced ``dist2``;
    permuting points permutes rows.

    Args:
        dist2 (Tensor): (n, n) or (B, n, n) symmetric squared distances.
        d (int): output dimension, 1 <= d <= n (default 3).

    Returns:
        ``(coords, eigvals)``: (…, n, d) and the top-d eigenvalues (…, d), descending.
    """
    check_tensor(dist2, "dist2", ndim=(2, 3), finite=False)
    if dist2.shape[-1] != dist2.shape[-2]:
        raise ValueError(
            f"dist2 must be a square (n, n) or (B, n, n) matrix, got {tuple(dist2.shape)}"
        )
    if not torch.isfinite(dist2).all():
        raise ValueError("dist2 contains NaN or Inf values")
    n = dist2.shape[-1]
    check_int(d, "d", 1, n)
    if (dist2 - dist2.transpose(-1, -2)).abs().max() > 1e-6 * dist2.abs().max().clamp_min(1.0):
        raise ValueError("dist2 must be symmetric")
    J = torch.eye(n, dtype=dist2.dtype, device=dist2.device) - 1.0 / n
    Bm = -0.5 * J @ dist2 @ J
    Bm = 0.5 * (Bm + Bm.transpose(-1, -2))
    lam, U = torch.linalg.eigh(Bm)
    lam, U = lam.flip(-1)[..., :d], U.flip(-1)[..., :d]
    X = U * lam.clamp_min(0).sqrt().unsqueeze(-2)
    X = X - X.mean(dim=-2, keepdim=True)
    s = sign_disambiguate(X, rule=sign)
    return X * s.unsqueeze(-2), lam
