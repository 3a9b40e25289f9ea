r"""Functional state-space kernels: discretisation, Vandermonde (diagonal), Cauchy + Woodbury
(DPLR),
the slow dense reference, FFT convolution and the recurrent step.

Written from the S4 / S4D papers (arXiv:2111.00396, arXiv:2206.11893) and the HTTYH paper
(arXiv:2206.12037); the official code (https://github.com/state-spaces/s4, Apache-2.0) was read for
the conventions (conjugate-pair storage, the :math:`\tilde C` truncation trick, the bilinear FFT
nodes), not copied.

Conventions: a diagonal system keeps one member of each conjugate pair, so a state of size N is
stored as N/2 complex numbers and every kernel is :math:`2\,\mathrm{Re}(\cdot)` of the half sum.
Shapes: ``H`` channels (d_model), ``N2`` = N/2, ``c`` output channels of the kernel (2 when
bidirectional), ``L`` length.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "discretize_diag",
    "vandermonde_kernel",
    "dplr_full",
    "bilinear_dense",
    "dense_kernel",
    "c_tilde",
    "cauchy_dplr_kernel",
    "dplr_step_setup",
    "dplr_bilinear_step",
    "fft_conv",
]


def _conj_ext(x: Tensor) -> Tensor:
    """Append the conjugate half along the last dim: (..., N2) -> (..., 2*N2)."""
    return torch.cat([x, x.conj()], dim=-1)


def discretize_diag(A: Tensor, B: Tensor, dt: Tensor, disc: str = "zoh") -> tuple[Tensor, Tensor]:
    r"""Discretise a diagonal system. ``A``, ``B``: (H, N2) complex; ``dt``: (H,). Returns
    :math:`(\bar A, \bar B)` of shape (H, N2).

    ZOH: :math:`\bar A = e^{\Delta A}`, :math:`\bar B = B(e^{\Delta A}-1)/A`.
    Bilinear: :math:`\bar A = (1+\Delta A/2)/(1-\Delta A/2)`, :math:`\bar B = \Delta B/(1-\Delta
    A/2)`.
    """
    dtA = A * dt.unsqueeze(-1)
    if disc == "zoh":
        dA = torch.exp(dtA)
        return dA, B * (dA - 1.0) / A
    if disc == "bilinear":
        den = 1.0 - dtA / 2
        return (1.0 + dtA / 2) / den, B * dt.unsqueeze(-1) / den
    raise ValueError(f"disc must be 'zoh' or 'bilinear', got {disc!r}")


def vandermonde_kernel(
    C: Tensor,
    B: Tensor,
    A: Tensor,
    dt: Tensor,
    L: int,
    *,
    disc: str = "zoh",
    chunk: int | None = None,
) -> Tensor:
    r"""Diagonal SSM convolution kernel :math:`K_l = 2\,\mathrm{Re}\sum_n C_n \bar B_n \bar A_n^l`.

    Computed as a Vandermonde product with :math:`\bar A_n^l = \exp(l \log \bar A_n)`.

    Args:
        C (Tensor): (c, H, N2) complex.
        B, A (Tensor): (H, N2) complex.
        dt (Tensor): (H,) positive steps.
        L (int): kernel length.
        disc (str): ``"zoh"`` or ``"bilinear"``.
        chunk (int, optional): process the length in chunks of this size (bounds memory at
            O(H N2 chunk)).

    Returns:
        Tensor (c, H, L), real.
    """
    dA, dB = discretize_diag(A, B, dt, disc)
    log_dA = A * dt.unsqueeze(-1) if disc == "zoh" else torch.log(dA)
    CB = C * dB  # (c, H, N2)
    step = L if chunk is None else max(1, int(chunk))
    out = []
    for start in range(0, L, step):
        ell = torch.arange(start, min(L, start + step), device=A.device, dtype=log_dA.real.dtype)
        V = torch.exp(log_dA.unsqueeze(-1) * ell)  # (H, N2, l)
        out.append(2 * torch.einsum("chn,hnl->chl", CB, V).real)
    return torch.cat(out, dim=-1)


def dplr_full(w: Tensor, P: Tensor, B: Tensor) -> tuple[Tensor, Tensor]:
    r"""Dense full-state matrices of a DPLR system stored as conjugate halves.

    ``w`` (H, N2), ``P`` (R, H, N2), ``B`` (H, N2) -> :math:`A = \mathrm{diag}(w_f) - P_f P_f^*`
    of shape (H, N, N) and :math:`B_f` (H, N), with :math:`x_f = [x, \bar x]`.
    """
    wf, Pf, Bf = _conj_ext(w), _conj_ext(P), _conj_ext(B)
    A = torch.diag_embed(wf) - torch.einsum("rhn,rhm->hnm", Pf, Pf.conj())
    return A, Bf


def bilinear_dense(A: Tensor, B: Tensor, dt: Tensor) -> tuple[Tensor, Tensor]:
    r"""Bilinear discretisation of dense systems: ``A`` (H, N, N), ``B`` (H, N), ``dt`` (H,).

    :math:`\bar A = (I - \Delta A/2)^{-1}(I + \Delta A/2)`, :math:`\bar B = (I-\Delta
    A/2)^{-1}\Delta B`.
    """
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    d = dt.to(A.dtype).view(-1, 1, 1)
    back = eye - d / 2 * A
    dA = torch.linalg.solve(back, eye + d / 2 * A)
    dB = torch.linalg.solve(back, (d[..., 0] * B).unsqueeze(-1)).squeeze(-1)
    return dA, dB


def dense_kernel(dA: Tensor, dB: Tensor, C: Tensor, L: int) -> Tensor:
    r"""Slow reference kernel :math:`K_l = \mathrm{Re}(C \bar A^l \bar B)` by explicit powers.

    ``dA`` (H, N, N), ``dB`` (H, N), ``C`` (c, H, N) (full state, not halves). Returns (c, H, L).
    """
    x = dB
    out = []
    for _ in range(L):
        out.append(torch.einsum("chn,hn->ch", C, x).real)
        x = torch.einsum("hnm,hm->hn", dA, x)
    return torch.stack(out, dim=-1)


def c_tilde(C: Tensor, dA: Tensor, L: int, *, inverse: bool = False) -> Tensor:
    r""":math:`\tilde C = C(I - \bar A^L)` (or :math:`C(I-\bar A^L)^{-1}` with ``inverse``).

    ``C`` (c, H, N) full state, ``dA`` (H, N, N). The truncated generating function of the kernel,
    :math:`\sum_{l<L} K_l\,\omega^l = \tilde C (I - \bar A\omega)^{-1}\bar B` for
    :math:`\omega^L=1`,
    is what the Cauchy kernel evaluates, so it returns exactly :math:`K_0..K_{L-1}`.
    """
    eye = torch.eye(dA.shape[-1], dtype=dA.dtype, device=dA.device)
    M = eye - torch.linalg.matrix_power(dA, L)  # (H, N, N)
    if inverse:
        # C_true M = C~  <=>  M^T C_true^T = C~^T
        return torch.linalg.solve(M.transpose(-1, -2).unsqueeze(0), C.unsqueeze(-1)).squeeze(-1)
    return torch.einsum("chn,hnm->chm", C, M)


def _cauchy(v: Tensor, z: Tensor, w: Tensor, chunk: int | None) -> Tensor:
    r""":math:`\sum_n v_n/(z_k - w_n) + \bar v_n/(z_k - \bar w_n)`; v (..., H, N2), w (H, N2), z
    (K,) -> (..., H, K)."""
    vf, wf = _conj_ext(v), _conj_ext(w)
    K = z.shape[0]
    step = K if chunk is None else max(1, int(chunk))
    out = []
    for s in range(0, K, step):
        zz = z[s : s + step]
        out.append((vf.unsqueeze(-1) / (zz - wf.unsqueeze(-1))).sum(-2))
    return torch.cat(out, dim=-1)


def cauchy_dplr_kernel(
    C: Tensor, B: Tensor, P: Tensor, w: Tensor, dt: Tensor, L: int, *, chunk: int | None = None
) -> Tensor:
    r"""S4 (DPLR, bilinear) kernel by Cauchy sums at the FFT nodes and the Woodbury identity.

    With :math:`\omega_k = e^{-2\pi i k/L}` and :math:`z_k = 2(1-\omega_k)/(1+\omega_k)`, the
    resolvent terms are :math:`r_{XY}(k) = \sum_n \Delta X_n Y_n/(z_k - \Delta w_n)` (full
    conjugate sums) for :math:`X\in\{\tilde C, P^*\}`, :math:`Y\in\{B, P\}`;
    :math:`\hat K = r_{CB} - r_{CP}(I + r_{QP})^{-1} r_{QB}`, then
    :math:`\hat K\cdot 2/(1+\omega)` and an inverse real FFT of length L.

    Args:
        C (Tensor): :math:`\tilde C` for length ``L``, (c, H, N2) complex.
        B (Tensor): (H, N2); P (Tensor): (R, H, N2); w (Tensor): (H, N2); dt (Tensor): (H,).
        L (int): kernel length (the one :math:`\tilde C` was built for).
        chunk (int, optional): process the frequencies in chunks.

    Returns:
        Tensor (c, H, L), real.
    """
    R = P.shape[0]
    c = C.shape[0]
    k = torch.arange(L // 2 + 1, device=w.device, dtype=w.real.dtype)
    omega = torch.exp(-2j * math.pi * k / L).to(w.dtype)
    z = 2 * (1 - omega) / (1 + omega)
    dtc = dt.to(w.dtype).unsqueeze(-1)
    X = torch.cat([C, P.conj()], dim=0)  # (c+R, H, N2)
    Y = torch.cat([B.unsqueeze(0), P], dim=0)  # (1+R, H, N2)
    v = X.unsqueeze(1) * Y.unsqueeze(0) * dtc  # (c+R, 1+R, H, N2)
    r = _cauchy(v, z, w * dtc, chunk)  # (c+R, 1+R, H, K)
    r00, r01 = r[:c, :1], r[:c, 1:]  # (c,1,H,K), (c,R,H,K)
    r10, r11 = r[c:, :1], r[c:, 1:]  # (R,1,H,K), (R,R,H,K)
    if R == 1:
        k_f = r00 - r01 * r10 / (1 + r11)
    else:
        eye = torch.eye(R, dtype=r.dtype, device=r.device)
        M = eye + r11.permute(2, 3, 0, 1)  # (H, K, R, R)
        sol = torch.linalg.solve(M, r10.permute(2, 3, 0, 1))  # (H, K, R, 1)
        k_f = r00 - torch.einsum("crhk,hkrs->cshk", r01, sol)
    k_f = k_f[:, 0] * 2 / (1 + omega)
    return torch.fft.irfft(k_f, n=L)[..., :L]


def dplr_step_setup(
    w: Tensor, P: Tensor, B: Tensor, dt: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    r"""Per-step constants of the O(N) bilinear step of a DPLR system (half-state storage).

    With :math:`A = \mathrm{diag}(w) - PP^*` (conjugate-pair halves, rank R) the bilinear step is
    :math:`x' = (I - \tfrac\Delta2 A)^{-1}[(I + \tfrac\Delta2 A)x + \Delta Bu]`. The backward
    half is inverted with Woodbury: :math:`(D^{-1} + \tfrac\Delta2 PP^*)^{-1} = D - \tfrac\Delta2
    DP(I_R + \tfrac\Delta2 P^*DP)^{-1}P^*D`, :math:`D = \mathrm{diag}(1/(1 - \tfrac\Delta2 w))`.
    For conjugate-symmetric full states every :math:`P^*(\cdot)` is a *real* R-vector,
    :math:`2\,\mathrm{Re}\sum_{n<N/2}\bar P_n(\cdot)_n`, so the state is stepped as N/2 complex
    numbers.

    Args:
        w (Tensor): (H, N2) complex. P (Tensor): (R, H, N2). B (Tensor): (H, N2). dt (Tensor): (H,).

    Returns:
        ``(a, Pc, Ph, dB, D, W)``: ``a = 1 + dt/2 w`` (H, N2), ``Pc = conj(P)`` and
        ``Ph = dt/2 P`` (R, H, N2), ``dB = dt B`` (H, N2), ``D`` (H, N2) and
        ``W = (I_R + 2Re(P^* D Ph))^{-1}`` (H, R, R), real.
    """
    half = (dt / 2).to(w.real.dtype).unsqueeze(-1)  # (H, 1)
    a = 1.0 + half * w
    D = 1.0 / (1.0 - half * w)
    dB = 2 * half * B
    Ph = P * half  # (R, H, N2): dt/2 P
    Pc = P.conj().resolve_conj()
    M = 2 * (Pc.unsqueeze(1) * (D * Ph).unsqueeze(0)).sum(-1).real  # (R, R, H): [r, s, h]
    eye = torch.eye(P.shape[0], dtype=M.dtype, device=M.device)
    W = torch.linalg.inv(eye + M.permute(2, 0, 1))  # (H, R, R)
    return a, Pc, Ph, dB, D, W


def dplr_bilinear_step(
    x: Tensor, u: Tensor, a: Tensor, Pc: Tensor, Ph: Tensor, dB: Tensor, D: Tensor, W: Tensor
) -> Tensor:
    r"""One O(N R) bilinear step of a DPLR system on the half state.

    ``x`` (b, H, N2) complex, ``u`` (b, H) real, constants from :func:`dplr_step_setup`. Returns
    the next half state :math:`x' = \bar A x + \bar B u` (equal to the dense step on
    :math:`[x, \bar x]`). Written with broadcasts, not einsum: at these sizes the per-op overhead
    dominates.
    """
    xr = x.unsqueeze(1)  # (b, 1, H, N2)
    s = 2 * (Pc * xr).sum(-1, keepdim=True).real  # P^* x_full: (b, R, H, 1), real
    y = a * x - (Ph * s).sum(1) + dB * u.unsqueeze(-1)
    Dy = D * y
    t = 2 * (Pc * Dy.unsqueeze(1)).sum(-1).real  # P^* D y: (b, R, H)
    if W.shape[-1] == 1:
        t = t * W[:, 0, 0]
    else:
        t = torch.einsum("hrs,bsh->brh", W, t)
    return Dy - D * (Ph * t.unsqueeze(-1)).sum(1)


def fft_conv(
    u: Tensor, k: Tensor, *, bidirectional: bool = False, circular: bool = False
) -> Tensor:
    r"""Long convolution by FFT. ``u`` (B, H, L), ``k`` (c, H, Lk) with ``Lk >= L``.

    Causal: :math:`y_t = \sum_{m\ge0} k^{(0)}_m u_{t-m}`. Bidirectional (c=2) adds the anti-causal
    part :math:`\sum_{m\ge1} k^{(1)}_{m-1} u_{t+m}`. ``circular=True`` drops the zero padding and
    wraps around (only useful as a negative control: it breaks causality).
    """
    L = u.shape[-1]
    k = k[..., :L]
    if bidirectional:
        if k.shape[0] != 2:
            raise ValueError(
                f"bidirectional conv needs a kernel with 2 channels, got shape {tuple(k.shape)}"
            )
        k = F.pad(k[0], (0, L)) + F.pad(k[1].flip(-1), (L, 0))  # (H, 2L)
    else:
        k = k[0]
    n = L if circular else 2 * L
    if circular and bidirectional:
        raise ValueError("circular and bidirectional cannot be combined")
    y = torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(k, n=n), n=n)
    return y[..., :L]
