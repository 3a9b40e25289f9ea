r"""Reference (naive) kernel formulas: the yardstick of the benches and the accuracy tests.

**Bench reference only; not used by the layers.** These functions evaluate the S4 / S4D kernel
formulas the direct way, as the official pure-PyTorch path does (https://github.com/state-spaces/s4,
Apache-2.0: no pykeops, no CUDA extension). They were written here from the formulas of the S4 and
S4D papers (arXiv:2111.00396, arXiv:2206.11893), not copied:

* :func:`naive_vandermonde_kernel`: the S4D kernel
  :math:`K_l = 2\,\mathrm{Re}\sum_n C_n \bar B_n \exp(l\,\Delta A_n)` with the full
  (H, N/2, L) Vandermonde matrix materialised and every entry exponentiated; ZOH
  :math:`\bar B = B(e^{\Delta A}-1)/A` evaluated in the input precision.
* :func:`naive_cauchy`: :math:`r_k = \sum_n v_n/(z_k - w_n) + \bar v_n/(z_k - \bar w_n)` with
  one complex division per (v, n, k), i.e. one per numerator even when several numerators share
  the same poles.
* :func:`naive_dplr_kernel`: the S4 (DPLR, bilinear) kernel from :func:`naive_cauchy` + Woodbury.

The fast versions are :func:`~invariance.sequence.nn.ssm_kernels.vandermonde_kernel` (blocked
GEMM) and :func:`~invariance.sequence.nn.ssm_kernels.cauchy_dplr_kernel` (reciprocals shared by
all numerators, then one batched GEMM).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["naive_vandermonde_kernel", "naive_cauchy", "naive_dplr_kernel"]


def naive_vandermonde_kernel(C: Tensor, B: Tensor, A: Tensor, dt: Tensor, L: int) -> Tensor:
    """Naive S4D (ZOH) kernel: ``C`` (c, H, N2), ``B``/``A`` (H, N2) complex, ``dt`` (H,) ->
    (c, H, L). Bench reference (see the module docstring)."""
    dtA = A * dt.unsqueeze(-1)
    V = torch.exp(dtA.unsqueeze(-1) * torch.arange(L, device=A.device))  # (H, N2, L)
    CB = C * B * (torch.exp(dtA) - 1.0) / A
    return 2 * torch.einsum("chn,hnl->chl", CB, V).real


def naive_cauchy(v: Tensor, z: Tensor, w: Tensor) -> Tensor:
    """Naive Cauchy sums: ``v`` (..., N2), ``z`` (K,), ``w`` (..., N2) -> (..., K), over the
    conjugate-extended ``v``, ``w``. Bench reference (see the module docstring)."""
    vf = torch.cat([v, v.conj()], -1)
    wf = torch.cat([w, w.conj()], -1)
    return (vf.unsqueeze(-1) / (z - wf.unsqueeze(-1))).sum(-2)


def naive_dplr_kernel(C: Tensor, B: Tensor, P: Tensor, w: Tensor, dt: Tensor, L: int) -> Tensor:
    r"""Naive S4 kernel (rank-1 ``P``): the four resolvents :math:`r_{XY}` by :func:`naive_cauchy`,
    Woodbury, :math:`\cdot 2/(1+\omega)`, inverse real FFT. ``C`` (c, H, N2) is :math:`\tilde C`,
    ``B`` (H, N2), ``P`` (1, H, N2), ``w`` (H, N2), ``dt`` (H,). Bench reference."""
    k = torch.arange(L // 2 + 1, device=w.device, dtype=w.real.dtype)
    omega = torch.exp(-2j * math.pi * k / L).to(w.dtype)
    z = 2 * (1 - omega) / (1 + omega)
    dtc = dt.to(w.dtype).unsqueeze(-1)
    X = torch.cat([C, P.conj()], dim=0)  # (c+1, H, N2)
    Y = torch.cat([B.unsqueeze(0), P], dim=0)  # (2, H, N2)
    v = X.unsqueeze(1) * Y.unsqueeze(0) * dtc  # (c+1, 2, H, N2)
    r = naive_cauchy(v, z, w * dtc)  # (c+1, 2, H, K)
    c = C.shape[0]
    k_f = r[:c, 0] - r[:c, 1] * r[c:, 0] / (1 + r[c:, 1])
    return torch.fft.irfft(k_f * 2 / (1 + omega), n=L)[..., :L]
