r"""HiPPO matrices, their NPLR/DPLR forms, diagonal (S4D) initialisations and timescales.

Paper: "How to Train Your HiPPO: State Space Models with Generalized Orthogonal Basis Projections",
Gu, Johnson, Timalsina, Rudra, Ré, ICLR 2023, arXiv:2206.12037. Also "On the Parameterization and
Initialization of Diagonal State Space Models" (S4D, Gu, Gupta, Goel, Ré, NeurIPS 2022,
arXiv:2206.11893) for the diagonal initialisations.
Official code: https://github.com/state-spaces/s4 (Apache-2.0), files ``src/models/hippo/hippo.py``
and ``src/models/sequence/kernels/dplr.py``. This module was written from the equations (read in the
paper and the spec notes); no code was copied.

Mechanism. A HiPPO pair :math:`(A, B)` defines the linear ODE :math:`x'(t) = A x(t) + B u(t)` whose
impulse responses :math:`K_n(t) = e_n^\top e^{tA} B` form an orthogonal basis for a measure
:math:`\omega`: the state is the projection of the input's history onto that basis. HTTYH's main
result is that the *time-invariant* LegS system has

.. math::  K_n(t) = \sqrt{2n+1}\, P_n(2e^{-t}-1)\, e^{-t},

i.e. it projects the history onto exponentially warped Legendre polynomials, so the history
:math:`u(T-r)` can be read back from :math:`x(T)` (:func:`legs_reconstruct`). LegT and FouT project
onto Legendre / Fourier bases on a sliding window :math:`[0, 2)` (official scaling). Every matrix is
"normal plus low rank": :math:`A + PP^\top = w_{re} I + S` with :math:`S` skew-symmetric, so
:math:`A = V(\Lambda - \tilde P \tilde P^*)V^*` with unitary :math:`V` (:func:`nplr`), the form the
S4 kernel uses. The timescale :math:`\Delta` rescales time: a channel with step :math:`\Delta`
remembers about :math:`1/\Delta` samples, hence :math:`\log\Delta\sim U[\log\Delta_{min},
\log\Delta_{max}]` with :math:`[\Delta_{min}, \Delta_{max}] \approx [1/L_{max}, 1/L_{min}]`.

Tested properties (packages/sequence/tests/test_s4_hippo.py):
- ``test_hippo_legs_is_exp_warped_legendre``: :math:`e_n^\top e^{tA}B` equals the closed form
(1e-8).
- ``test_hippo_legt_fout_lagt_bases``: LegT/FouT/LagT impulse responses match their bases.
- ``test_hippo_nplr_reconstructs_matrices``: :math:`V(\Lambda-\tilde P\tilde P^*)V^* = A`,
  :math:`V\tilde B = B` (b_clip=None), AP normal, for every measure with a rank correction.
- ``test_hippo_legs_reconstructs_history``: the state reconstructs the input's history.
- ``test_hippo_diag_inits``: S4D-Lin/Inv closed forms, Re(A) = -1/2.
- ``test_hippo_nplr_canonical_sign``: each eigenvector's sign gives :math:`\mathrm{Re}\,\tilde
  B_n > 0`; ``test_hippo_nplr_rejects_bad_b_clip``.

Deviations: none in the math. ``nplr`` handles the Fourier zero eigenvalue by building a real basis
of
the null space (the official code hard-codes it to :math:`(e_0 + i e_1)/\sqrt 2`, which is the same
subspace). Randomness takes a ``generator``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from invariance.sequence._checks import check_float, check_int, check_tensor

__all__ = [
    "MEASURES",
    "NPLR",
    "transition",
    "rank_correction",
    "nplr",
    "diag_init",
    "init_log_dt",
    "timescale_range",
    "legendre",
    "laguerre",
    "basis",
    "legs_reconstruct",
]

#: Measures with a closed-form transition matrix.
MEASURES = ("legs", "legt", "lmu", "lagt", "glagt", "fout", "foud", "fourier_decay", "legsd")
#: Measures for which :func:`rank_correction` (and hence :func:`nplr`) is defined.
NPLR_MEASURES = ("legs", "legt", "lagt", "fout", "foud", "fourier_decay", "legsd")


def _check_n(measure: str, N: int) -> None:
    if not isinstance(N, int) or N < 1:
        raise ValueError(f"state size N must be a positive int, got {N!r}")
    if measure not in MEASURES:
        raise ValueError(f"unknown HiPPO measure {measure!r}; expected one of {MEASURES}")


def _fourier_pairs(N: int, freq_scale: float, dtype: torch.dtype) -> Tensor:
    """Block rotation generator: A[2k,2k+1] = -s*k, A[2k+1,2k] = s*k (k = 0..N/2-1), shape (N,
    N)."""
    A = torch.zeros(N, N, dtype=dtype)
    for k in range(N // 2):
        if 2 * k + 1 < N:
            A[2 * k, 2 * k + 1] = -freq_scale * k
            A[2 * k + 1, 2 * k] = freq_scale * k
    return A


def _fourier_b(N: int, dtype: torch.dtype) -> Tensor:
    """B = [1, 0, sqrt2, 0, sqrt2, 0, ...] of shape (N,)."""
    B = torch.zeros(N, dtype=dtype)
    B[0::2] = math.sqrt(2.0)
    B[0] = 1.0
    return B


def transition(
    measure: str, N: int, *, dtype: torch.dtype = torch.float64, **measure_args: float
) -> tuple[Tensor, Tensor]:
    r"""HiPPO transition pair ``(A, B)`` for a measure, as real tensors of shapes (N, N) and (N,).

    Index ``n`` is the row, ``k`` the column (0-based).

    - ``legs`` (scaled Legendre): :math:`A_{nk} = -\sqrt{(2n+1)(2k+1)}` (n>k), :math:`-(n+1)` (n=k),
      0 (n<k); :math:`B_n=\sqrt{2n+1}`.
    - ``legt`` (translated Legendre, window 2, official halved scaling):
      :math:`A_{nk} = -\tfrac12\sqrt{(2n+1)(2k+1)}\,s_{nk}`, :math:`s_{nk}=1` (n>=k) else
      :math:`(-1)^{n-k}`; :math:`B_n = \tfrac12\sqrt{2n+1}`.
    - ``lmu``: LegT in the Legendre Memory Unit normalisation.
    - ``lagt`` (translated Laguerre): :math:`A = \tfrac12 I - \mathrm{tril}(1)` (-1/2 on the
      diagonal, -1 below), :math:`B=\beta` (``beta`` default 1).
    - ``glagt`` (generalised Laguerre, ``alpha`` default 0, ``beta`` default 0.01).
    - ``fout`` (truncated Fourier on a window, N even): rotation blocks of frequency
      :math:`\pi k` minus the rank-one endpoint term :math:`BB^\top`.
    - ``foud`` (Fourier with exponential decay), ``fourier_decay``, ``legsd`` (LegS minus its
      rank-one part, the diagonalisable "S4D-LegS" system).
    """
    _check_n(measure, N)
    q = torch.arange(N, dtype=dtype)
    n_idx = q[:, None]
    k_idx = q[None, :]
    r = torch.sqrt(2 * q + 1)
    if measure in ("legs", "legsd"):
        A = -(r[:, None] * r[None, :]) * (n_idx > k_idx).to(dtype) - torch.diag(q + 1)
        B = r.clone()
        if measure == "legsd":
            A = A + 0.5 * B[:, None] * B[None, :]
            B = B / 2
    elif measure == "legt":
        sign = torch.where(
            n_idx >= k_idx, torch.ones_like(n_idx * k_idx), (-1.0) ** (n_idx - k_idx)
        )
        A = -0.5 * r[:, None] * r[None, :] * sign
        B = 0.5 * r
    elif measure == "lmu":
        R = (2 * q + 1)[:, None]
        A = (
            torch.where(
                n_idx < k_idx, -torch.ones_like(n_idx * k_idx), (-1.0) ** (n_idx - k_idx + 1)
            )
            * R
        )
        B = ((-1.0) ** q) * (2 * q + 1)
    elif measure == "lagt":
        beta = float(measure_args.get("beta", 1.0))
        A = 0.5 * torch.eye(N, dtype=dtype) - torch.tril(torch.ones(N, N, dtype=dtype))
        B = beta * torch.ones(N, dtype=dtype)
    elif measure == "glagt":
        alpha = float(measure_args.get("alpha", 0.0))
        beta = float(measure_args.get("beta", 0.01))
        A = -torch.eye(N, dtype=dtype) * (1 + beta) / 2 - torch.tril(
            torch.ones(N, N, dtype=dtype), -1
        )
        # generalised binomial coefficient C(alpha + n, n) = Gamma(alpha+n+1) / (Gamma(n+1)
        # Gamma(alpha+1))
        lg = torch.tensor(
            [
                math.lgamma(alpha + n + 1) - math.lgamma(n + 1) - math.lgamma(alpha + 1)
                for n in range(N)
            ],
            dtype=dtype,
        )
        B = torch.exp(lg)
        L = torch.exp(
            0.5
            * torch.tensor(
                [math.lgamma(n + alpha + 1) - math.lgamma(n + 1) for n in range(N)], dtype=dtype
            )
        )
        A = (1.0 / L[:, None]) * A * L[None, :]
        B = (1.0 / L) * B * math.exp(-0.5 * math.lgamma(1 - alpha)) * beta ** ((1 - alpha) / 2)
    elif measure == "fout":
        B = _fourier_b(N, dtype)
        A = _fourier_pairs(N, math.pi, dtype) - B[:, None] * B[None, :]
    elif measure == "fourier_decay":
        B = _fourier_b(N, dtype)
        A = _fourier_pairs(N, math.pi, dtype) - 0.5 * B[:, None] * B[None, :]
        B = 0.5 * B
    elif measure == "foud":
        A = _fourier_pairs(N, 2 * math.pi, dtype) - 0.5 * torch.eye(N, dtype=dtype)
        B = _fourier_b(N, dtype)
    else:  # pragma: no cover - guarded by _check_n
        raise ValueError(measure)
    return A.contiguous(), B.contiguous()


def rank_correction(
    measure: str, N: int, *, rank: int = 1, dtype: torch.dtype = torch.float64
) -> Tensor:
    r"""Low-rank ``P`` of shape (rank, N) such that :math:`A + P^\top P` is normal (scalar + skew).

    LegS: :math:`P_n = \sqrt{n+1/2}` (rank 1). LegT: rank 2 (even / odd entries of
    :math:`\sqrt{2n+1}/\sqrt2`). LagT: :math:`1/\sqrt2`. FouT: :math:`P = B`. ``foud``/``legsd``
    are already normal (P = 0). Extra rows (rank above the minimum) are zero.
    """
    _check_n(measure, N)
    if measure not in NPLR_MEASURES:
        raise ValueError(
            f"no rank correction for measure {measure!r}; expected one of {NPLR_MEASURES}"
        )
    q = torch.arange(N, dtype=dtype)
    if measure == "legs":
        P = torch.sqrt(0.5 + q)[None]
    elif measure == "legt":
        p = torch.sqrt(1 + 2 * q) / math.sqrt(2.0)
        p_even, p_odd = p.clone(), p.clone()
        p_even[1::2] = 0.0
        p_odd[0::2] = 0.0
        P = torch.stack([p_odd, p_even])
    elif measure == "lagt":
        P = torch.full((1, N), math.sqrt(0.5), dtype=dtype)
    elif measure == "fout":
        P = _fourier_b(N, dtype)[None]
    elif measure == "fourier_decay":
        P = _fourier_b(N, dtype)[None] / math.sqrt(2.0)
    else:  # foud, legsd: already normal
        P = torch.zeros(1, N, dtype=dtype)
    if rank < P.shape[0]:
        raise ValueError(f"measure {measure!r} needs rank >= {P.shape[0]}, got rank={rank}")
    if rank > P.shape[0]:
        P = torch.cat([P, torch.zeros(rank - P.shape[0], N, dtype=dtype)])
    return P


class NPLR(NamedTuple):
    r"""DPLR form of a HiPPO pair: :math:`A = V(\mathrm{diag}(w) - P P^*)V^*`, :math:`B = V \tilde
    B`.

    Only one member of each conjugate pair is kept: ``w`` (N/2,), ``P`` (rank, N/2), ``B`` (N/2,)
    are complex, ``V`` (N, N/2) complex; the full unitary is ``[V, V.conj()]``.
    """

    w: Tensor
    P: Tensor
    B: Tensor
    V: Tensor


def nplr(
    measure: str,
    N: int,
    *,
    rank: int = 1,
    b_clip: float | None = 2.0,
    dtype: torch.dtype = torch.complex64,
) -> NPLR:
    r"""Normal-plus-low-rank / diagonal-plus-low-rank form of a HiPPO matrix.

    Diagonalises :math:`A + P^\top P = w_{re} I + S` (S skew) in float64 with ``eigh(-iS)``, keeps
    the eigenvalues with negative imaginary part (one per conjugate pair) and maps ``B`` and ``P``
    into the eigenbasis. Each eigenvector's sign is fixed so that :math:`\mathrm{Re}\,\tilde B_n
    > 0` (the phase within that is LAPACK's ``eigh`` in float64). ``b_clip`` clamps
    :math:`\mathrm{Im}(\tilde B)` to ``[-b_clip, b_clip]``
    as the official S4 code does by default (2.0); use ``None`` for the exact HiPPO ``B``.

    Args:
        measure (str): one of :data:`NPLR_MEASURES`.
        N (int): state size (even).
        rank (int, optional): rank of the correction. (default: 1; LegT needs 2)
        b_clip (float, optional): clamp on the imaginary part of :math:`\tilde B`. (default: 2.0)
        dtype (torch.dtype, optional): complex output dtype. (default: complex64)
    """
    _check_n(measure, N)
    if N % 2:
        raise ValueError(f"nplr needs an even state size N, got N={N}")
    check_int("rank", rank, 1)
    if b_clip is not None:
        if isinstance(b_clip, bool) or not isinstance(b_clip, (int, float)):
            raise TypeError(f"b_clip must be a positive number or None, got {b_clip!r}")
        if not (math.isfinite(b_clip) and b_clip > 0):
            raise ValueError(f"b_clip must be a positive finite number or None, got {b_clip}")
    A, B = transition(measure, N)
    P = rank_correction(measure, N, rank=rank)
    AP = A + P.T @ P
    S = AP + AP.T
    w_re = torch.diagonal(AP).mean()
    if (S - 2 * w_re * torch.eye(N, dtype=A.dtype)).abs().max() > 1e-6:
        raise RuntimeError(f"A + P^T P is not scalar + skew-symmetric for measure {measure!r}")
    w_im, V = torch.linalg.eigh(AP.to(torch.complex128) * -1j)
    order = torch.argsort(w_im)
    w_im, V = w_im[order], V[:, order]
    w = (w_re + 1j * w_im)[: N // 2].clone()
    V = V[:, : N // 2].clone()
    if N >= 4 and w[-2].imag.abs() < 1e-4:
        raise RuntimeError("nplr supports at most one zero eigenvalue pair")
    if w[-1].imag.abs() < 1e-4:
        # Zero eigenvalue (Fourier): the kept eigenvector is an arbitrary complex vector of the
        # 2-d real null space; replace it by (n1 + i n2)/sqrt2 with n1, n2 a real orthonormal basis,
        # so that [V, conj V] stays unitary.
        _, _, Vh = torch.linalg.svd(AP - w_re * torch.eye(N, dtype=AP.dtype))
        n1, n2 = Vh[-1], Vh[-2]
        V[:, -1] = (n1 + 1j * n2).to(torch.complex128) / math.sqrt(2.0)
        w[-1] = w_re + 0j
    # Canonical sign: each eigenvector is defined up to a unit factor; flip it so that
    # Re(B~_n) > 0 (Im(B~_n) > 0 when the real part vanishes). eigh runs in float64 here, the
    # official code's eig in float32, so without a convention the sign of a mode (and of the
    # kernel with C = 1) depends on the LAPACK build; the clip below is symmetric in the sign.
    Bt0 = V.conj().T @ B.to(torch.complex128)
    flip = (Bt0.real < -1e-12) | ((Bt0.real.abs() <= 1e-12) & (Bt0.imag < 0))
    V = torch.where(flip, -V, V)
    Vh = V.conj().T
    B_t = Vh @ B.to(torch.complex128)
    P_t = P.to(torch.complex128) @ Vh.T  # (rank, N/2): V^* applied to each row
    if b_clip is not None:
        B_t = B_t.real + 1j * torch.clamp(B_t.imag, -b_clip, b_clip)
    return NPLR(w.to(dtype), P_t.to(dtype), B_t.to(dtype), V.to(dtype))


DIAG_INITS = ("lin", "inv", "legs", "real", "random")


def diag_init(
    kind: str, N: int, *, H: int = 1, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    r"""Diagonal (S4D) initialisation: ``(A, B)`` complex of shape (H, N/2) each.

    :math:`A_n = -\tfrac12 - i\,\mathrm{im}_n` with

    - ``lin`` (S4D-Lin): :math:`\mathrm{im}_n = \pi n`;
    - ``inv`` (S4D-Inv): :math:`\mathrm{im}_n = \tfrac{N}{\pi}\left(\tfrac{N}{2n+1} - 1\right)`;
    - ``legs`` (S4D-LegS): the eigenvalues of the LegS NPLR form, with its (clipped) :math:`\tilde
    B`;
    - ``real`` (S4D-Real): :math:`A_n = -(n+1)`;
    - ``random``: :math:`\mathrm{im}_n = e^{z}`, :math:`z\sim N(0,1)` (the ablation of the paper).

    ``B = 1`` except for ``legs``.
    """
    if kind not in DIAG_INITS:
        raise ValueError(f"unknown diagonal init kind {kind!r}; expected one of {DIAG_INITS}")
    check_int("N", N, 2)
    check_int("H", H, 1)
    if N % 2:
        raise ValueError(f"diagonal init needs an even state size N >= 2, got N={N}")
    n = torch.arange(N // 2, dtype=torch.float64)
    real = torch.full((N // 2,), -0.5, dtype=torch.float64)
    B = torch.ones(N // 2, dtype=torch.complex128)
    if kind == "lin":
        im = math.pi * n
    elif kind == "inv":
        im = N / math.pi * (N / (2 * n + 1) - 1)
    elif kind == "legs":
        form = nplr("legs", N, b_clip=2.0, dtype=torch.complex128)
        im = -form.w.imag
        B = form.B
    elif kind == "real":
        im = torch.zeros_like(n)
        real = -(n + 1)
    else:
        im = torch.exp(torch.randn(H, N // 2, generator=generator, dtype=torch.float64))
    A = (real - 1j * im).to(torch.complex128)
    A = A.expand(H, N // 2).clone() if A.dim() == 1 else A
    return A.to(torch.complex64), B.expand(H, N // 2).clone().to(torch.complex64)


def init_log_dt(
    H: int,
    dt_min: float = 1e-3,
    dt_max: float = 1e-1,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Timescale initialisation: :math:`\log\Delta_h \sim U[\log\Delta_{min}, \log\Delta_{max}]`,
    shape (H,)."""
    check_int("H", H, 1)
    check_float("dt_min", dt_min, 0.0, lo_open=True)
    check_float("dt_max", dt_max, 0.0, lo_open=True)
    if not (0 < dt_min <= dt_max):
        raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
    u = torch.rand(H, generator=generator)
    return u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)


def timescale_range(max_len: int, min_len: int = 10) -> tuple[float, float]:
    r"""HTTYH's rule for the :math:`\Delta` range: a channel with step :math:`\Delta` covers about
    :math:`1/\Delta` steps, so dependencies from ``min_len`` to ``max_len`` steps need
    :math:`[\Delta_{min}, \Delta_{max}] = [1/L_{max}, 1/L_{min}]`."""
    check_int("max_len", max_len, 1)
    check_int("min_len", min_len, 1)
    if not (1 <= min_len <= max_len):
        raise ValueError(f"need 1 <= min_len <= max_len, got min_len={min_len}, max_len={max_len}")
    return 1.0 / max_len, 1.0 / min_len


def legendre(N: int, x: Tensor) -> Tensor:
    """Legendre polynomials P_0..P_{N-1} at ``x`` by the three-term recurrence, shape (N,
    *x.shape)."""
    out = [torch.ones_like(x), x.clone()]
    for n in range(1, N - 1):
        out.append(((2 * n + 1) * x * out[n] - n * out[n - 1]) / (n + 1))
    return torch.stack(out[:N])


def laguerre(N: int, x: Tensor) -> Tensor:
    """Laguerre polynomials L_0..L_{N-1} at ``x``, shape (N, *x.shape)."""
    out = [torch.ones_like(x), 1 - x]
    for n in range(1, N - 1):
        out.append(((2 * n + 1 - x) * out[n] - n * out[n - 1]) / (n + 1))
    return torch.stack(out[:N])


def basis(measure: str, N: int, t: Tensor) -> Tensor:
    r"""Closed-form basis functions :math:`K_n(t)` that :math:`e_n^\top e^{tA}B` equals (or
    approximates, for the windowed bases as N grows), shape (N, *t.shape).

    - ``legs``: :math:`\sqrt{2n+1} P_n(2e^{-t}-1) e^{-t}` (exact, HTTYH Thm. 1).
    - ``legt``: :math:`\tfrac12\sqrt{2n+1} P_n(1-t)` on :math:`[0,2)`, 0 after.
    - ``fout``: :math:`\tfrac12` (n=0), :math:`\tfrac{\sqrt2}{2}\cos(\pi k t)` (n=2k),
      :math:`\tfrac{\sqrt2}{2}\sin(\pi k t)` (n=2k+1, k>=1) on :math:`[0,2)`, 0 after; n=1 is 0.
    - ``lagt``: :math:`e^{-t/2} L_n(t)` (exact).
    """
    t = t.to(torch.float64)
    n = torch.arange(N, dtype=torch.float64).view(-1, *([1] * t.dim()))
    if measure == "legs":
        return torch.sqrt(2 * n + 1) * legendre(N, 2 * torch.exp(-t) - 1) * torch.exp(-t)
    if measure == "legt":
        inside = ((t >= 0) & (t < 2)).to(torch.float64)
        return 0.5 * torch.sqrt(2 * n + 1) * legendre(N, 1 - t) * inside
    if measure == "fout":
        inside = ((t >= 0) & (t < 2)).to(torch.float64)
        k = torch.div(n, 2, rounding_mode="floor")
        out = torch.where(n % 2 == 0, torch.cos(math.pi * k * t), torch.sin(math.pi * k * t))
        out = out * math.sqrt(2.0) / 2
        out[0] = 0.5
        return out * inside
    if measure == "lagt":
        return laguerre(N, t) * torch.exp(-t / 2)
    raise ValueError(
        f"no closed-form basis for measure {measure!r}; expected legs, legt, fout, lagt"
    )


def legs_reconstruct(state: Tensor, r: Tensor) -> Tensor:
    r"""Read the input's history back from a (TI-)LegS state.

    With :math:`x(T) = \int_0^T e^{(T-s)A}B\,u(s)\,ds` and the basis above, substituting
    :math:`\tau = e^{-(T-s)}` shows :math:`x_n` is the coefficient of :math:`u(T+\log\tau)` on the
    orthonormal Legendre basis :math:`\sqrt{2n+1}P_n(2\tau-1)` of :math:`[0,1]`, hence

    .. math::  u(T-r) \approx \sum_n x_n \sqrt{2n+1}\,P_n(2e^{-r}-1).

    Args:
        state (Tensor): LegS state, shape (..., N).
        r (Tensor): look-back times :math:`r\ge0` (in units of the continuous time), shape (R,).

    Returns:
        Tensor of shape (..., R).
    """
    check_tensor("state", state, floating=True)
    check_tensor("r", r, ndim=1, floating=True)
    if bool((r < 0).any()):
        raise ValueError("r (look-back times) must be >= 0")
    N = state.shape[-1]
    r = r.to(torch.float64)
    n = torch.arange(N, dtype=torch.float64)[:, None]
    phi = torch.sqrt(2 * n + 1) * legendre(N, 2 * torch.exp(-r) - 1)  # (N, R)
    return state.to(torch.float64) @ phi
