r"""Group utilities for GL+(2, R) and SL(2, R): left polar decomposition, the global chart,
invariant Monte-Carlo sampling and sample pairs with closed-form inverses.

From "Lie Group Decompositions for Equivariant Neural Networks" (Mironenco & Forré, ICLR 2024,
arXiv 2310.11366; official code https://github.com/mirceamironenco/rgenn, MIT). Nothing here is
copied from that code; it was read to match conventions (basis, coordinate order, sampler).

Mechanism. Every :math:`g \in GL^+(2)` factors uniquely as :math:`g = P R` with
:math:`P = (g g^\top)^{1/2}` symmetric positive definite (unit determinant for SL(2)) and
:math:`R \in SO(2)` (the *left polar decomposition*). Taking :math:`\log P` (a symmetric matrix)
and the angle :math:`\theta \in [0, 2\pi)` of :math:`R` gives a *global chart* of the group,
coordinates in the trace-metric basis (metric :math:`\alpha = 1`):

* ``gl2``: :math:`(\log P_{11}, \sqrt2 \log P_{12}, \log P_{22}, \theta)`;
* ``sl2``: :math:`(\sqrt2 \log P_{12}, \theta, \sqrt2 \log P_{11})`.

The chart is a diffeomorphism onto its image except on the cut :math:`\theta = 0 \equiv 2\pi`; it
is the input of the kernel networks. Samples are :math:`g = S^{1/2} R` with
:math:`S = \exp(\hat v)`, :math:`v \sim N(0, \sigma^2 I)` in the symmetric (traceless for SL)
coordinates and :math:`R` equidistant (the official sampler) or uniform on SO(2); the inverse
:math:`g^{-1} = R^\top S^{-1/2}` is built in closed form, never by ``torch.linalg.inv``.

Conventions: matrices act on column vectors :math:`p = (x, y)^\top` of the image plane, ``x``
along the width and ``y`` along the height (the ``F.affine_grid`` coordinates in ``[-1, 1]``).

Tested properties (``tests/test_lie.py``): closed-form inverses, unit determinants for SL, polar
reconstruction and the chart round trip to 1e-12 in float64; golden values of the official
``rgenn.groups`` functions (polar factors, chart, closed-form pairs); clear errors for singular,
reflected, non-finite or wrongly shaped matrices.

Deviations: the official chart feeds the angle through ``hat``/``expm`` in a basis scaled by
:math:`1/\sqrt2`, so its own inverse map rotates by :math:`\theta/\sqrt2`; :func:`chart_inverse`
here is the exact inverse of :func:`chart`. Only the metric :math:`\alpha = 1` is implemented.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "GROUPS",
    "ROTATION_SAMPLERS",
    "group_dim",
    "rotation_matrix",
    "rotation_angle",
    "spd_hat",
    "spd_expm",
    "spd_logm",
    "left_polar",
    "polar_log",
    "chart",
    "chart_inverse",
    "sample_pairs",
    "pair_from_coordinates",
    "c4_pairs",
    "relative_elements",
]

#: the linear groups supported (the affine group is R^2 x| H for H one of these)
GROUPS = ("gl2", "sl2")
#: how the SO(2) factor of a sample is drawn
ROTATION_SAMPLERS = ("equidistant", "uniform")
_SQRT2 = math.sqrt(2.0)


# ----------------------------------------------------------------------------- validation


def _check_group(group: str) -> str:
    if not isinstance(group, str) or group not in GROUPS:
        raise ValueError(f"group must be one of {list(GROUPS)}, got {group!r}")
    return group


def _check_matrices(g: Tensor, name: str = "g", *, positive_det: bool = True) -> Tensor:
    """Validate a batch of 2x2 real matrices (..., 2, 2); with ``positive_det`` require det > 0."""
    if not isinstance(g, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(g).__name__}")
    if not g.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {g.dtype}")
    if g.dim() < 2 or tuple(g.shape[-2:]) != (2, 2):
        raise ValueError(f"{name} must have shape (..., 2, 2), got {tuple(g.shape)}")
    if g.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(g.shape)})")
    if not torch.isfinite(g).all():
        raise ValueError(f"{name} contains NaN or inf")
    if positive_det:
        det = torch.linalg.det(g)
        scale = g.flatten(-2).abs().amax(-1).clamp_min(torch.finfo(g.dtype).tiny) ** 2
        bad = det <= 1e3 * torch.finfo(g.dtype).eps * scale
        if bad.any():
            raise ValueError(
                f"{name} must be in GL+(2) (det > 0, not singular); got det "
                f"{float(det[bad].flatten()[0]):.3g} at {int(bad.sum())} matrix(ces)"
            )
    return g


def group_dim(group: str) -> int:
    """Dimension of the chart of ``group``: 4 for ``gl2``, 3 for ``sl2``."""
    return 4 if _check_group(group) == "gl2" else 3


# ----------------------------------------------------------------------------- SO(2) and SPD(2)


def rotation_matrix(theta: Tensor) -> Tensor:
    r"""Rotations :math:`[[\cos\theta, -\sin\theta], [\sin\theta, \cos\theta]]`, (..., 2, 2)."""
    c, s = torch.cos(theta), torch.sin(theta)
    return torch.stack((torch.stack((c, -s), -1), torch.stack((s, c), -1)), -2)


def _angle(r: Tensor) -> Tensor:
    """Angle in [0, 2pi) of rotations r (..., 2, 2); |sin| below a few ulps counts as 0, so the
    identity computed with rounding error maps to 0 and not to ~2pi (the chart's cut)."""
    sin, cos = r[..., 1, 0], r[..., 0, 0]
    eps = 64.0 * torch.finfo(r.dtype).eps
    sin = torch.where(sin.abs() < eps, torch.zeros_like(sin), sin)
    return torch.remainder(torch.atan2(sin, cos), 2.0 * math.pi)


def rotation_angle(r: Tensor) -> Tensor:
    r"""The angle :math:`\theta \in [0, 2\pi)` of rotation matrices ``r`` (..., 2, 2)."""
    _check_matrices(r, "r")
    return _angle(r)


def spd_hat(v: Tensor, group: str = "gl2") -> Tensor:
    r"""Symmetric matrix from coordinates in the trace-metric basis.

    ``gl2``: ``v = (a, b, c)`` -> ``[[a, b/sqrt2], [b/sqrt2, c]]``; ``sl2`` (traceless):
    ``v = (a, b)`` -> ``[[a/sqrt2, b/sqrt2], [b/sqrt2, -a/sqrt2]]``. Shape (..., k) -> (..., 2, 2).
    """
    k = 3 if _check_group(group) == "gl2" else 2
    if not isinstance(v, Tensor) or v.dim() < 1 or v.shape[-1] != k:
        raise ValueError(f"v must have shape (..., {k}) for {group}, got {getattr(v, 'shape', v)}")
    if group == "gl2":
        a, b, c = v.unbind(-1)
        off = b / _SQRT2
        rows = (torch.stack((a, off), -1), torch.stack((off, c), -1))
    else:
        a, b = v.unbind(-1)
        d, off = a / _SQRT2, b / _SQRT2
        rows = (torch.stack((d, off), -1), torch.stack((off, -d), -1))
    return torch.stack(rows, -2)


def _sym_fn(s: Tensor, fn) -> Tensor:
    """``fn`` applied to the eigenvalues of symmetric ``s`` (..., 2, 2) (always in >= float32)."""
    dt = s.dtype if s.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=s.device.type, enabled=False):
        e, v = torch.linalg.eigh(s.to(dt))
        out = (v * fn(e).unsqueeze(-2)) @ v.transpose(-1, -2)
    return out.to(s.dtype)


def spd_expm(s: Tensor) -> Tensor:
    """Matrix exponential of symmetric matrices (an SPD matrix), via ``eigh``."""
    return _sym_fn(s, torch.exp)


def spd_logm(p: Tensor) -> Tensor:
    """Matrix logarithm of SPD matrices (a symmetric matrix), via ``eigh``."""
    _check_matrices(p, "p")
    return _sym_fn(p, torch.log)


# ----------------------------------------------------------------------------- polar and chart


def _polar_log(g: Tensor) -> tuple[Tensor, Tensor]:
    """(log P, R) with g = P R, P = (g g^T)^(1/2) (no validation)."""
    dt = g.dtype if g.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=g.device.type, enabled=False):
        g2 = g.to(dt)
        e, v = torch.linalg.eigh(g2 @ g2.transpose(-1, -2))
        half_log = 0.5 * torch.log(e)
        vt = v.transpose(-1, -2)
        log_p = (v * half_log.unsqueeze(-2)) @ vt
        r = (v * torch.exp(-half_log).unsqueeze(-2)) @ vt @ g2
    return log_p.to(g.dtype), r.to(g.dtype)


def left_polar(g: Tensor) -> tuple[Tensor, Tensor]:
    r"""Left polar decomposition :math:`g = P R` of ``g`` in GL+(2), shape (..., 2, 2).

    Returns ``(P, R)`` with :math:`P = (g g^\top)^{1/2}` SPD and :math:`R = P^{-1} g \in SO(2)`.
    Raises ``ValueError`` naming ``g`` for singular or orientation-reversing matrices.
    """
    _check_matrices(g, "g")
    log_p, r = _polar_log(g)
    return spd_expm(log_p), r


def polar_log(g: Tensor) -> tuple[Tensor, Tensor]:
    r"""``(log P, R)`` of the left polar decomposition :math:`g = P R` (see :func:`left_polar`)."""
    _check_matrices(g, "g")
    return _polar_log(g)


def _chart(g: Tensor, group: str) -> Tensor:
    log_p, r = _polar_log(g)
    theta = _angle(r)
    if group == "gl2":
        return torch.stack(
            (log_p[..., 0, 0], _SQRT2 * log_p[..., 0, 1], log_p[..., 1, 1], theta), -1
        )
    return torch.stack((_SQRT2 * log_p[..., 0, 1], theta, _SQRT2 * log_p[..., 0, 0]), -1)


def chart(g: Tensor, group: str = "gl2") -> Tensor:
    r"""Global chart :math:`\xi^{-1}(g) = \mathrm{vee}(\log P + \log R)` of ``g`` (..., 2, 2).

    Returns (..., 4) for ``gl2`` :math:`(\log P_{11}, \sqrt2\log P_{12}, \log P_{22}, \theta)` and
    (..., 3) for ``sl2`` :math:`(\sqrt2\log P_{12}, \theta, \sqrt2\log P_{11})`, with
    :math:`\theta \in [0, 2\pi)`. For ``sl2`` the determinant must be 1 (the trace of
    :math:`\log P` is not represented); ``ValueError`` otherwise.
    """
    _check_group(group)
    _check_matrices(g, "g")
    if group == "sl2":
        det = torch.linalg.det(g)
        if ((det - 1.0).abs() > 1e-3).any():
            raise ValueError(
                f"g must have unit determinant for sl2, got det range "
                f"[{float(det.min()):.4g}, {float(det.max()):.4g}]"
            )
    return _chart(g, group)


def chart_inverse(v: Tensor, group: str = "gl2") -> Tensor:
    r"""Inverse of :func:`chart`: :math:`g = \exp(\log P)\, R(\theta)` from coordinates ``v``."""
    k = group_dim(group)
    if not isinstance(v, Tensor) or not v.is_floating_point():
        raise TypeError(f"v must be a floating-point tensor, got {type(v).__name__}")
    if v.dim() < 1 or v.shape[-1] != k:
        raise ValueError(f"v must have shape (..., {k}) for {group}, got {tuple(v.shape)}")
    if not torch.isfinite(v).all():
        raise ValueError("v contains NaN or inf")
    if group == "gl2":
        sym = spd_hat(torch.stack((v[..., 0], v[..., 1], v[..., 2]), -1), "gl2")
        theta = v[..., 3]
    else:
        sym = spd_hat(torch.stack((v[..., 2], v[..., 0]), -1), "sl2")
        theta = v[..., 1]
    return spd_expm(sym) @ rotation_matrix(theta)


# ----------------------------------------------------------------------------- sampling


def sample_pairs(
    n: int,
    group: str = "sl2",
    *,
    spd_var: float = 0.1,
    rotations: str = "equidistant",
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    r"""``n`` group elements and their closed-form inverses, each of shape (n, 2, 2).

    :math:`g = S^{1/2} R`, :math:`g^{-1} = R^\top S^{-1/2}` with :math:`S = \exp(\hat v)`,
    :math:`v \sim N(0, \mathrm{spd\_var}\, I)` in the symmetric basis of :func:`spd_hat` (traceless
    for ``sl2``, so :math:`\det g = 1`), and :math:`R` at ``rotations="equidistant"`` angles
    ``linspace(-pi, pi, n)`` (the official sampler; both ends are the same rotation) or
    ``"uniform"`` i.i.d. angles in :math:`[-\pi, \pi)`.

    Args:
        n: number of samples, >= 1.
        group: ``"gl2"`` or ``"sl2"`` (default: ``"sl2"``).
        spd_var: variance of the SPD log-coordinates, >= 0; 0 gives pure rotations (default: 0.1).
        rotations: ``"equidistant"`` or ``"uniform"`` (default: ``"equidistant"``).
        generator: the random generator (default: the global one).
        dtype, device: of the returned tensors.
    """
    _check_group(group)
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if isinstance(spd_var, bool) or not isinstance(spd_var, (int, float)):
        raise TypeError(f"spd_var must be a number, got {type(spd_var).__name__}")
    if not math.isfinite(spd_var) or spd_var < 0:
        raise ValueError(f"spd_var must be finite and >= 0, got {spd_var}")
    if rotations not in ROTATION_SAMPLERS:
        raise ValueError(f"rotations must be one of {list(ROTATION_SAMPLERS)}, got {rotations!r}")
    gen_dev = generator.device if generator is not None else torch.device("cpu")
    k = 3 if group == "gl2" else 2
    v = torch.randn(n, k, generator=generator, dtype=torch.float64, device=gen_dev)
    v = v * math.sqrt(spd_var)
    if rotations == "equidistant":
        theta = torch.linspace(-math.pi, math.pi, n, dtype=torch.float64)
    else:
        u = torch.rand(n, generator=generator, dtype=torch.float64, device=gen_dev)
        theta = (2.0 * u - 1.0) * math.pi
    g, g_inv = pair_from_coordinates(v.cpu(), theta.cpu(), group)
    return g.to(dtype=dtype, device=device), g_inv.to(dtype=dtype, device=device)


def pair_from_coordinates(v: Tensor, theta: Tensor, group: str = "sl2") -> tuple[Tensor, Tensor]:
    r"""The closed-form pair :math:`(g, g^{-1})` with :math:`g = \exp(\hat v)^{1/2} R(	heta)`.

    ``v``: (n, 3) for ``gl2`` or (n, 2) for ``sl2`` (coordinates of :math:`\log S`, see
    :func:`spd_hat`); ``theta``: (n,). Returns two (n, 2, 2) tensors; :math:`g^{-1}` is
    :math:`R(	heta)^	op \exp(-\hat v / 2)`, no matrix inversion.
    """
    _check_group(group)
    for name, t in (("v", v), ("theta", theta)):
        if not isinstance(t, Tensor) or not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {type(t).__name__}")
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} contains NaN or inf")
    if theta.dim() != 1 or v.dim() != 2 or v.shape[0] != theta.shape[0]:
        raise ValueError(
            f"v must be (n, k) and theta (n,), got {tuple(v.shape)} and {tuple(theta.shape)}"
        )
    half = 0.5 * spd_hat(v, group)
    p, p_inv = spd_expm(half), spd_expm(-half)
    r = rotation_matrix(theta.to(v.dtype))
    return p @ r, r.transpose(-1, -2) @ p_inv


def c4_pairs(
    dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> tuple[Tensor, Tensor]:
    """The four rotations by 0, 90, 180, 270 degrees (exact integer entries) and their inverses,
    each (4, 2, 2): samples under which a network is exactly rot90-invariant."""
    r = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    q = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)
    g = torch.stack([torch.linalg.matrix_power(q, k) @ r for k in range(4)])
    return g.to(dtype=dtype, device=device), g.transpose(-1, -2).to(dtype=dtype, device=device)


def relative_elements(h_out_inv: Tensor, h_in: Tensor) -> Tensor:
    r"""All products :math:`h_o^{-1} h_i`: (n_out, 2, 2) x (n_in, 2, 2) -> (n_out, n_in, 2, 2)."""
    return h_out_inv.unsqueeze(1) @ h_in.unsqueeze(0)
