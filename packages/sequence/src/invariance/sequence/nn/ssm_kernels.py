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
from torch.utils.checkpoint import checkpoint

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
    "CAUCHY_CHUNK_ELEMENTS",
]


def _solve(A: Tensor, B: Tensor) -> Tensor:
    """``torch.linalg.solve`` over a batch, one matrix at a time if the batched LAPACK call fails
    (seen with MKL after ``torch.set_num_threads`` lowered and raised the thread count, as
    ``torch.utils.benchmark`` does: "Pivots given to lu_solve must all be greater or equal to
    1")."""
    try:
        return torch.linalg.solve(A, B)
    except RuntimeError:
        if A.dim() < 3:
            raise
        lead = torch.broadcast_shapes(A.shape[:-2], B.shape[:-2])
        A2 = A.expand(*lead, *A.shape[-2:]).reshape(-1, *A.shape[-2:])
        B2 = B.expand(*lead, *B.shape[-2:]).reshape(-1, *B.shape[-2:])
        out = torch.stack([torch.linalg.solve(a, b) for a, b in zip(A2, B2)])
        return out.reshape(*lead, *out.shape[-2:])


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

    Blocked Vandermonde product: with :math:`l = jb + i` (:math:`0\le i<b`),
    :math:`\bar A^l = \bar A^{jb}\,\bar A^{i}`, so the kernel is one real GEMM per channel,
    :math:`K_{j,i} = 2\,\mathrm{Re}\sum_n (C_n\bar B_n\bar A_n^{jb})\,\bar A_n^{i}`, and only
    :math:`H\cdot N/2\cdot(b + L/b)` powers are exponentiated instead of :math:`H\cdot N/2\cdot
    L` (the naive formula, :func:`~invariance.sequence.nn.ssm_reference.naive_vandermonde_kernel`).
    The discretisation and the powers are computed in float64 (they are O(H N (b + L/b)), cheap),
    so the float32 kernel's error does not grow with :math:`l\,|\Delta A|` nor suffer the
    cancellation of :math:`e^{\Delta A}-1` for small :math:`\Delta`; only the GEMM runs in the
    input precision.

    Args:
        C (Tensor): (c, H, N2) complex.
        B, A (Tensor): (H, N2) complex.
        dt (Tensor): (H,) positive steps.
        L (int): kernel length.
        disc (str): ``"zoh"`` or ``"bilinear"``.
        chunk (int, optional): block size :math:`b` (default :math:`\lceil\sqrt L\rceil`); memory
            is O(c H N2 (b + L/b)).

    Returns:
        Tensor (c, H, L), real, in the precision of ``C``.
    """
    hi = torch.complex128
    rd = C.real.dtype
    A64, dt64 = A.to(hi), dt.to(torch.float64)
    dA, dB = discretize_diag(A64, B.to(hi), dt64, disc)
    log_dA = A64 * dt64.unsqueeze(-1) if disc == "zoh" else torch.log(dA)
    CB = C.to(hi) * dB  # (c, H, N2)
    b = max(1, min(L, int(chunk) if chunk is not None else math.isqrt(max(L - 1, 0)) + 1))
    nb = -(-L // b)
    idx = torch.arange(b, device=A.device, dtype=torch.float64)
    inner = torch.exp(log_dA.unsqueeze(-1) * idx)  # (H, N2, b): A^i
    outer = torch.exp(log_dA.unsqueeze(-1) * (idx.new_tensor(range(nb)) * b))  # (H, N2, nb)
    W = CB.unsqueeze(-1) * outer  # (c, H, N2, nb)
    # 2 Re(W^T inner) as one real GEMM: [Re W, -Im W]^T [Re inner; Im inner]
    Wr = torch.cat([W.real, -W.imag], dim=-2).to(rd)  # (c, H, 2 N2, nb)
    Ir = torch.cat([inner.real, inner.imag], dim=-2).to(rd)  # (H, 2 N2, b)
    K = 2 * torch.matmul(Wr.transpose(-1, -2), Ir)  # (c, H, nb, b)
    return K.reshape(*K.shape[:2], nb * b)[..., :L]


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
    dA = _solve(back, eye + d / 2 * A)
    dB = _solve(back, (d[..., 0] * B).unsqueeze(-1)).squeeze(-1)
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
        return _solve(M.transpose(-1, -2).unsqueeze(0), C.unsqueeze(-1)).squeeze(-1)
    return torch.einsum("chn,hnm->chm", C, M)


#: complex elements of one frequency chunk of the Cauchy reciprocals (H x N x chunk); the
#: default chunking keeps each chunk near 32 MB (complex64) and, under autograd, recomputes the
#: chunk in the backward pass (checkpointing) so that memory does not grow with the length.
CAUCHY_CHUNK_ELEMENTS = 1 << 22


def _cauchy_block(V: Tensor, wf: Tensor, zz: Tensor) -> Tensor:
    return torch.matmul(V, torch.reciprocal(zz - wf.unsqueeze(-1)))


def _cauchy(v: Tensor, z: Tensor, w: Tensor, chunk: int | None) -> Tensor:
    r""":math:`\sum_n v_n/(z_k - w_n) + \bar v_n/(z_k - \bar w_n)`; v (..., H, N2), w (H, N2), z
    (K,) -> (..., H, K).

    The reciprocals :math:`1/(z_k - w_n)` are computed once and shared by every numerator (the
    naive formula divides once per numerator), then all numerators are summed against them in one
    batched GEMM per channel. Frequencies are processed in chunks of ``chunk`` (default: about
    :data:`CAUCHY_CHUNK_ELEMENTS` reciprocals per chunk); with several chunks under autograd each
    chunk is checkpointed."""
    vf, wf = _conj_ext(v), _conj_ext(w)  # (..., H, N), (H, N)
    lead = vf.shape[:-2]
    H, N = wf.shape
    V = vf.reshape(-1, H, N).permute(1, 0, 2)  # (H, M, N)
    K = z.shape[0]
    step = max(1, CAUCHY_CHUNK_ELEMENTS // max(1, H * N)) if chunk is None else max(1, int(chunk))
    ckpt = step < K and torch.is_grad_enabled() and (V.requires_grad or wf.requires_grad)
    out = []
    for s in range(0, K, step):
        zz = z[s : s + step]
        if ckpt:
            out.append(checkpoint(_cauchy_block, V, wf, zz, use_reentrant=False))
        else:
            out.append(_cauchy_block(V, wf, zz))
    r = torch.cat(out, dim=-1) if len(out) > 1 else out[0]  # (H, M, K)
    return r.permute(1, 0, 2).reshape(*lead, H, K)


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
    # the nodes in float64 (K values, cheap), then the input precision
    k = torch.arange(L // 2 + 1, device=w.device, dtype=torch.float64)
    omega64 = torch.exp(-2j * math.pi * k / L)
    z = (2 * (1 - omega64) / (1 + omega64)).to(w.dtype)
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
    k_f = k_f[:, 0] * (2 / (1 + omega64)).to(w.dtype)
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
