r"""S4 / S4D kernels, the S4 layer and a small S4 sequence encoder.

Papers: "Efficiently Modeling Long Sequences with Structured State Spaces" (S4, Gu, Goel, Ré,
ICLR 2022, arXiv:2111.00396); "On the Parameterization and Initialization of Diagonal State Space
Models" (S4D, arXiv:2206.11893); "How to Train Your HiPPO" (HTTYH, ICLR 2023, arXiv:2206.12037).
Official code: https://github.com/state-spaces/s4 (Apache-2.0); read for conventions, not copied.
See :mod:`invariance.sequence.s4` for the method docstring (tested properties, deviations).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invariance.sequence import hippo
from invariance.sequence._checks import check_float, check_int, check_tensor
from invariance.sequence.nn.ssm_kernels import (
    bilinear_dense,
    c_tilde,
    cauchy_dplr_kernel,
    discretize_diag,
    dplr_bilinear_step,
    dplr_full,
    dplr_step_setup,
    fft_conv,
    vandermonde_kernel,
)

__all__ = ["S4DKernel", "S4Kernel", "S4Layer", "S4Model", "TiedDropout", "ssm_param_groups"]

_r2c = torch.view_as_complex
_c2r = torch.view_as_real


#: Re(w) of the S4 state matrix is kept <= -W_REAL_MIN. FouT (and the FouT half of "hippo") has
#: purely imaginary eigenvalues; undamped modes put poles of the Cauchy kernel on the FFT nodes and
#: make the float32 kernel wrong by O(1) (measured: 4.6 at L=40, N=16); with 1e-4 it matches the
#: float64 kernel to ~1e-5.
W_REAL_MIN = 1e-4

#: Longest kernel a layer builds (2^24 steps); longer requests are refused rather than attempted.
MAX_KERNEL_LENGTH = 1 << 24


def _mark_ssm(p: nn.Parameter) -> nn.Parameter:
    """Mark an SSM parameter (A, B, P, dt); :func:`ssm_param_groups` finds them by module type."""
    return p


def _cdtype(p: Tensor) -> torch.dtype:
    return torch.complex128 if p.dtype == torch.float64 else torch.complex64


def _gen(seed: int | None) -> torch.Generator | None:
    return None if seed is None else torch.Generator().manual_seed(int(seed))


def _check_seed(seed: Any) -> None:
    if seed is not None:
        check_int("seed", seed, 0)


def _check_dt(dt_min: Any, dt_max: Any) -> None:
    check_float("dt_min", dt_min, 0.0, lo_open=True)
    check_float("dt_max", dt_max, 0.0, lo_open=True)
    if dt_min > dt_max:
        raise ValueError(f"need dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")


def _check_length(L: Any) -> int:
    return check_int("L", L, 1, MAX_KERNEL_LENGTH)


@torch.no_grad()
def _seeded_linear_(lin: nn.Linear, g: torch.Generator | None) -> None:
    """nn.Linear's default init (uniform in +-1/sqrt(fan_in)) drawn from ``g``."""
    if g is None:
        lin.reset_parameters()
        return
    bound = 1.0 / math.sqrt(lin.in_features)
    lin.weight.uniform_(-bound, bound, generator=g)
    if lin.bias is not None:
        lin.bias.uniform_(-bound, bound, generator=g)


class TiedDropout(nn.Module):
    r"""Dropout with one mask per (sample, channel), shared along the sequence: input (B, L, H),
    mask (B, 1, H), kept entries scaled by :math:`1/(1-p)`. The official S4/S4D layers'
    ``DropoutNd(tie=True)`` (written here from its description: a whole channel is dropped for a
    whole sequence). Identity in eval mode.

    Args:
        p (float): drop probability in [0, 1).
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = check_float("p", p, 0.0, 1.0, hi_open=True)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.rand(x.shape[0], *([1] * (x.dim() - 2)), x.shape[-1], device=x.device)
        return x * (keep >= self.p).to(x.dtype) / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class S4DKernel(nn.Module):
    r"""Diagonal SSM (S4D) convolution kernel, computed by a Vandermonde product.

    :math:`K_l = 2\,\mathrm{Re}\sum_{n<N/2} C_n \bar B_n \bar A_n^l` with
    :math:`A_n = -e^{a_n} + i\,\theta_n` (real part kept negative), ZOH or bilinear discretisation
    and one :math:`\Delta_h` per channel, :math:`\log\Delta_h\sim
    U[\log\Delta_{min},\log\Delta_{max}]`.

    Args:
        d_model (int): number of channels H.
        d_state (int, optional): state size N (even; N/2 complex modes). (default: 64)
        init (str, optional): ``lin`` | ``inv`` | ``legs`` | ``real`` | ``random`` (see
            :func:`invariance.sequence.hippo.diag_init`). (default: ``"lin"``)
        dt_min, dt_max (float, optional): timescale range. (default: 1e-3, 1e-1)
        disc (str, optional): ``zoh`` | ``bilinear``. (default: ``"zoh"``)
        channels (int, optional): output channels c of the kernel (2 for bidirectional). (default:
            1)
        seed (int, optional): seed of the random parts of the init (C, Δ). (default: None = global
            RNG)

    Shapes:
        ``forward(L)`` -> (c, H, L).
    """

    def __init__(
        self,
        d_model: int,
        *,
        d_state: int = 64,
        init: str = "lin",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        disc: str = "zoh",
        channels: int = 1,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        check_int("d_model", d_model, 1)
        check_int("d_state", d_state, 2)
        if d_state % 2:
            raise ValueError(f"d_state must be even and >= 2, got {d_state}")
        check_int("channels", channels, 1)
        _check_dt(dt_min, dt_max)
        _check_seed(seed)
        if disc not in ("zoh", "bilinear"):
            raise ValueError(f"disc must be 'zoh' or 'bilinear', got {disc!r}")
        if init not in hippo.DIAG_INITS:
            raise ValueError(f"init must be one of {hippo.DIAG_INITS}, got {init!r}")
        self.H, self.N, self.init, self.disc, self.channels = d_model, d_state, init, disc, channels
        self.dt_min, self.dt_max, self.seed = dt_min, dt_max, seed
        H, N2 = d_model, d_state // 2
        self.log_dt = _mark_ssm(nn.Parameter(torch.empty(H)))
        self.log_A_real = _mark_ssm(nn.Parameter(torch.empty(H, N2)))
        self.A_imag = _mark_ssm(nn.Parameter(torch.empty(H, N2)))
        self.B = _mark_ssm(nn.Parameter(torch.empty(H, N2, 2)))
        self.C = nn.Parameter(torch.empty(channels, H, N2, 2))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        g = _gen(self.seed)
        A, B = hippo.diag_init(self.init, self.N, H=self.H, generator=g)
        self.log_A_real.copy_(torch.log(-A.real))
        self.A_imag.copy_(A.imag)
        self.B.copy_(_c2r(B))
        self.log_dt.copy_(hippo.init_log_dt(self.H, self.dt_min, self.dt_max, generator=g))
        C = torch.randn(self.channels, self.H, self.N // 2, 2, generator=g) * math.sqrt(0.5)
        self.C.copy_(C)

    def ssm(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Continuous parameters ``(A, B, C, dt)``: (H, N2), (H, N2), (c, H, N2) complex, (H,)."""
        A = -torch.exp(self.log_A_real) + 1j * self.A_imag
        return A, _r2c(self.B), _r2c(self.C), torch.exp(self.log_dt)

    def forward(self, L: int, *, chunk: int | None = None) -> Tensor:
        _check_length(L)
        A, B, C, dt = self.ssm()
        return vandermonde_kernel(C, B, A, dt, L, disc=self.disc, chunk=chunk)

    # recurrent mode -------------------------------------------------------------------------
    def step_params(self) -> tuple[Tensor, Tensor, Tensor]:
        """Discrete ``(dA, dB, C)`` for :meth:`step`: diagonal (H, N2), (H, N2), (c, H, N2)."""
        A, B, C, dt = self.ssm()
        dA, dB = discretize_diag(A, B, dt, self.disc)
        return dA, dB, C

    def default_state(self, batch: int) -> Tensor:
        return torch.zeros(batch, self.H, self.N // 2, dtype=_cdtype(self.C), device=self.C.device)

    def step(
        self, u: Tensor, state: Tensor, params: tuple[Tensor, Tensor, Tensor]
    ) -> tuple[Tensor, Tensor]:
        r"""One step :math:`x' = \bar A x + \bar B u`, :math:`y = 2\mathrm{Re}(C x')`; ``u`` (B,
        H)."""
        dA, dB, C = params
        state = dA * state + dB * u.unsqueeze(-1)
        return 2 * torch.einsum("chn,bhn->bch", C, state).real, state

    def extra_repr(self) -> str:
        return (
            f"d_model={self.H}, d_state={self.N}, init={self.init!r}, disc={self.disc!r}, "
            f"dt=[{self.dt_min:g}, {self.dt_max:g}], channels={self.channels}"
        )


class S4Kernel(nn.Module):
    r"""DPLR (S4) convolution kernel: Cauchy sums + Woodbury on the FFT nodes.

    State matrix :math:`A = \mathrm{diag}(w) - PP^*` initialised from a HiPPO measure's NPLR form
    (:func:`invariance.sequence.hippo.nplr`), bilinear discretisation, :math:`\tilde C = C(I-\bar
    A^{L})` stored as the trainable ``C`` for the current ``l_max`` (the S4 truncation trick).
    A longer input doubles ``l_max`` (:meth:`double_length`), as the official code does.

    Args:
        d_model (int): channels H.
        d_state (int, optional): state size N. (default: 64)
        l_max (int): kernel length :math:`\tilde C` is built for.
        measure (str, optional): HiPPO measure (``legs``, ``fout``, ``legt``, ``lagt``, ...), or
            ``"hippo"`` = half LegS, half FouT channels. (default: ``"legs"``)
        rank (int, optional): rank of P (LegT needs 2). (default: 1)
        b_clip (float, optional): clamp of Im(B), as the official init. (default: 2.0)
        dt_min, dt_max (float, optional): timescale range. (default: 1e-3, 1e-1)
        channels (int, optional): output channels c. (default: 1)
        seed (int, optional): seed of C and Δ. (default: None)
        step_mode (str, optional): recurrent mode: ``"linear"``, O(N·R) per step through the DPLR
            structure (bilinear + Woodbury, half state), or ``"dense"``, the full N×N discrete
            matrix, O(N²) per step (slow reference). (default: ``"linear"``)

    Shapes:
        ``forward(L)`` -> (c, H, L), L <= l_max after doubling.
    """

    def __init__(
        self,
        d_model: int,
        *,
        d_state: int = 64,
        l_max: int,
        measure: str = "legs",
        rank: int | None = None,
        b_clip: float | None = 2.0,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        channels: int = 1,
        seed: int | None = None,
        step_mode: str = "linear",
    ) -> None:
        super().__init__()
        check_int("d_model", d_model, 1)
        check_int("d_state", d_state, 2)
        if d_state % 2:
            raise ValueError(f"d_state must be even and >= 2, got {d_state}")
        if step_mode not in ("linear", "dense"):
            raise ValueError(f"step_mode must be 'linear' or 'dense', got {step_mode!r}")
        self.step_mode = step_mode
        check_int("l_max", l_max, 1, MAX_KERNEL_LENGTH)
        check_int("channels", channels, 1)
        if rank is not None:
            check_int("rank", rank, 1)
        if b_clip is not None:
            check_float("b_clip", b_clip, 0.0, lo_open=True)
        _check_dt(dt_min, dt_max)
        _check_seed(seed)
        measures = ["legs", "fout"] if measure == "hippo" else [measure]
        for m in measures:
            if m not in hippo.NPLR_MEASURES:
                raise ValueError(
                    f"measure must be 'hippo' or one of {hippo.NPLR_MEASURES}, got {m!r}"
                )
        if d_model % len(measures):
            raise ValueError(
                f"d_model={d_model} must be divisible by {len(measures)} for measure={measure!r}"
            )
        if rank is None:
            rank = 2 if "legt" in measures else 1
        self.H, self.N, self.measure, self.rank, self.b_clip = (
            d_model,
            d_state,
            measure,
            rank,
            b_clip,
        )
        self.dt_min, self.dt_max, self.channels, self.seed = dt_min, dt_max, channels, seed
        self._measures = measures
        H, N2 = d_model, d_state // 2
        self.register_buffer("l_max", torch.tensor(int(l_max)))
        self.log_dt = _mark_ssm(nn.Parameter(torch.empty(H)))
        self.log_w_real = _mark_ssm(nn.Parameter(torch.empty(H, N2)))
        self.w_imag = _mark_ssm(nn.Parameter(torch.empty(H, N2)))
        self.P = _mark_ssm(nn.Parameter(torch.empty(rank, H, N2, 2)))
        self.B = _mark_ssm(nn.Parameter(torch.empty(H, N2, 2)))
        self.C = nn.Parameter(torch.empty(channels, H, N2, 2))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, C: Tensor | None = None) -> None:
        """Re-initialise; ``C`` (c, H, N2) complex is the *true* output map (default random)."""
        g = _gen(self.seed)
        per = self.H // len(self._measures)
        ws, Ps, Bs = [], [], []
        for m in self._measures:
            form = hippo.nplr(m, self.N, rank=self.rank, b_clip=self.b_clip)
            ws.append(form.w.expand(per, -1))
            Ps.append(form.P.unsqueeze(1).expand(-1, per, -1))
            Bs.append(form.B.expand(per, -1))
        w, P, B = torch.cat(ws), torch.cat(Ps, dim=1), torch.cat(Bs)
        self.log_w_real.copy_(torch.log((-w.real).clamp_min(W_REAL_MIN)))
        self.w_imag.copy_(w.imag)
        self.P.copy_(_c2r(P.contiguous()))
        self.B.copy_(_c2r(B.contiguous()))
        self.log_dt.copy_(hippo.init_log_dt(self.H, self.dt_min, self.dt_max, generator=g))
        if C is None:
            C = torch.complex(
                torch.randn(self.channels, self.H, self.N // 2, generator=g),
                torch.randn(self.channels, self.H, self.N // 2, generator=g),
            ) * math.sqrt(0.5)
        self.set_true_C(C)

    def ssm(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``(w, P, B, C_tilde, dt)``: (H, N2), (R, H, N2), (H, N2), (c, H, N2) complex, (H,)."""
        w = -torch.exp(self.log_w_real).clamp_min(W_REAL_MIN) + 1j * self.w_imag
        return w, _r2c(self.P), _r2c(self.B), _r2c(self.C), torch.exp(self.log_dt)

    def dense_discrete(self, dtype: torch.dtype = torch.complex128) -> tuple[Tensor, Tensor]:
        """Full-state bilinear ``(dA, dB)`` of shapes (H, N, N), (H, N) (for stepping and tests)."""
        w, P, B, _, dt = self.ssm()
        A, Bf = dplr_full(w.to(dtype), P.to(dtype), B.to(dtype))
        return bilinear_dense(
            A, Bf, dt.to(torch.float64 if dtype == torch.complex128 else torch.float32)
        )

    @torch.no_grad()
    def set_true_C(self, C: Tensor) -> None:
        r"""Store :math:`\tilde C = C(I - \bar A^{l_{max}})` for a true output map ``C`` (c, H,
        N2)."""
        dA, _ = self.dense_discrete()
        Cf = torch.cat([C, C.conj()], -1).to(torch.complex128)
        Ct = c_tilde(Cf, dA, int(self.l_max))[..., : self.N // 2]
        self.C.copy_(_c2r(Ct.to(_cdtype(self.C)).contiguous()))

    def true_C(self) -> Tensor:
        r"""Full-state true :math:`C = \tilde C (I - \bar A^{l_{max}})^{-1}`, shape (c, H, N)."""
        dA, _ = self.dense_discrete()
        Ct = _r2c(self.C).to(torch.complex128)
        return c_tilde(torch.cat([Ct, Ct.conj()], -1), dA, int(self.l_max), inverse=True)

    @torch.no_grad()
    def double_length(self) -> None:
        r""":math:`\tilde C \leftarrow \tilde C (I + \bar A^{L})` and ``l_max *= 2`` (same true
        C)."""
        dA, _ = self.dense_discrete()
        L = int(self.l_max)
        Ct = _r2c(self.C).to(torch.complex128)
        Cf = torch.cat([Ct, Ct.conj()], -1)
        eye = torch.eye(self.N, dtype=dA.dtype)
        Cf = torch.einsum("chn,hnm->chm", Cf, eye + torch.linalg.matrix_power(dA, L))
        self.C.copy_(_c2r(Cf[..., : self.N // 2].to(_cdtype(self.C)).contiguous()))
        self.l_max.fill_(2 * L)

    def forward(self, L: int, *, chunk: int | None = None) -> Tensor:
        """Kernel of length ``L`` (c, H, L). ``chunk``: frequencies per chunk of the Cauchy sums
        (default: automatic, about 32 MB of reciprocals per chunk, checkpointed under autograd;
        see :func:`~invariance.sequence.nn.ssm_kernels.cauchy_dplr_kernel`)."""
        _check_length(L)
        while L > int(self.l_max):
            self.double_length()
        w, P, B, C, dt = self.ssm()
        return cauchy_dplr_kernel(C, B, P, w, dt, int(self.l_max), chunk=chunk)[..., :L]

    # recurrent mode ----------------------------------------------------------------------------
    # ``step_mode="linear"`` (default): O(N R) per step on the half state, bilinear step through the
    # DPLR structure (Woodbury). ``"dense"``: the full N x N discrete matrix, O(N^2) per step (the
    # slow reference of the tests and the bench).
    def step_params(self) -> tuple[Tensor, ...]:
        """Constants of :meth:`step`. Linear mode: ``(a, Pc, Ph, dB, D, W, C)`` (see
        :func:`~invariance.sequence.nn.ssm_kernels.dplr_step_setup`; ``C`` the true full-state
        output map (c, H, N)); dense mode: ``(dA, dB, C)`` full state, (H, N, N), (H, N), (c, H, N).
        Both in the kernel's complex dtype."""
        cd = _cdtype(self.C)
        C = self.true_C().to(cd)
        if self.step_mode == "dense":
            dA, dB = self.dense_discrete()
            return dA.to(cd), dB.to(cd), C
        if self.step_mode != "linear":
            raise ValueError(f"step_mode must be 'linear' or 'dense', got {self.step_mode!r}")
        w, P, B, _, dt = self.ssm()
        return (*dplr_step_setup(w, P, B, dt), C)

    def default_state(self, batch: int) -> Tensor:
        """Zero state: (batch, H, N2) half state (linear mode) or (batch, H, N) (dense mode)."""
        n = self.N if self.step_mode == "dense" else self.N // 2
        return torch.zeros(batch, self.H, n, dtype=_cdtype(self.C), device=self.C.device)

    def step(self, u: Tensor, state: Tensor, params: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        r"""One step :math:`x' = \bar A x + \bar B u`, :math:`y = \mathrm{Re}(C x')`; ``u`` (B,
        H). Returns ``(y (B, c, H), state)``."""
        if len(params) == 3:  # dense reference, O(N^2)
            dA, dB, C = params
            state = torch.einsum("hnm,bhm->bhn", dA, state) + dB * u.unsqueeze(-1)
            return torch.einsum("chn,bhn->bch", C, state).real, state
        *prm, C = params
        state = dplr_bilinear_step(state, u, *prm)
        n2 = state.shape[-1]
        # y = Re(C [x, conj x]) = Re(C1 x) + Re(C2 conj x)
        y = (C[..., :n2] * state.unsqueeze(1)).sum(-1) + (
            C[..., n2:] * state.conj().unsqueeze(1)
        ).sum(-1)
        return y.real, state

    def extra_repr(self) -> str:
        return (
            f"d_model={self.H}, d_state={self.N}, measure={self.measure!r}, rank={self.rank}, "
            f"l_max={int(self.l_max)}, dt=[{self.dt_min:g}, {self.dt_max:g}], "
            f"channels={self.channels}, step_mode={self.step_mode!r}"
        )


class S4Layer(nn.Module):
    r"""S4 layer: SSM convolution + skip :math:`D`, GELU, dropout, position-wise linear + GLU.

    .. math::  y = \mathrm{GLU}(W\,\mathrm{GELU}(K * u + D \odot u) + b)

    Args:
        d_model (int): channels H.
        d_state (int, optional): state size N. (default: 64)
        kernel (str, optional): ``"s4d"`` (diagonal, Vandermonde) or ``"s4"`` (DPLR, Cauchy).
            (default: ``"s4d"``)
        l_max (int, optional): maximum length, required for ``kernel="s4"``. (default: None)
        bidirectional (bool, optional): add an anti-causal kernel (non-causal layer). (default:
            False)
        dropout (float, optional): dropout after the activation. (default: 0.0)
        tie_dropout (bool, optional): one dropout mask per (sample, channel) shared along the
            sequence (:class:`TiedDropout`, as the official standalone S4D layer's
            ``DropoutNd``); ``False`` uses ``nn.Dropout`` (independent per position, as the
            official ``S4Block`` default). (default: True)
        seed (int, optional): seeds *every* parameter of the layer: the kernel's init (C, Δ,
            random A), the skip ``D`` and the output linear map. (default: None = global RNG)
        circular (bool, optional): FFT without zero padding, a deliberately *broken* variant whose
            convolution wraps around (negative control of the causality tests). (default: False)
        **kernel_kwargs: passed to :class:`S4DKernel` / :class:`S4Kernel` (``init``, ``measure``,
            ``dt_min``, ``dt_max``, ``disc``, ...).

    Shapes:
        input (B, L, H), output (B, L, H).

    Invariance:
        causal layers are equivariant to delays :math:`u_t \mapsto u_{t-s}` (zero-filled), up to
        the constant response to zeros in the first ``s`` outputs: :math:`f(\mathrm{delay}_s u) =
        \mathrm{delay}_s^{f(0)} f(u)`.
    """

    def __init__(
        self,
        d_model: int,
        *,
        d_state: int = 64,
        kernel: str = "s4d",
        l_max: int | None = None,
        bidirectional: bool = False,
        dropout: float = 0.0,
        tie_dropout: bool = True,
        circular: bool = False,
        seed: int | None = None,
        **kernel_kwargs: Any,
    ) -> None:
        super().__init__()
        if kernel not in ("s4d", "s4"):
            raise ValueError(f"kernel must be 's4d' or 's4', got {kernel!r}")
        check_int("d_model", d_model, 1)
        check_float("dropout", dropout, 0.0, 1.0, hi_open=True)
        _check_seed(seed)
        self.seed = seed
        self.d_model, self.bidirectional, self.circular, self.kernel_type = (
            d_model,
            bidirectional,
            circular,
            kernel,
        )
        channels = 2 if bidirectional else 1
        if kernel == "s4":
            if l_max is None:
                raise ValueError("kernel='s4' needs l_max (the length C~ is built for)")
            self.kernel = S4Kernel(
                d_model, d_state=d_state, l_max=l_max, channels=channels, seed=seed, **kernel_kwargs
            )
        else:
            self.kernel = S4DKernel(
                d_model, d_state=d_state, channels=channels, seed=seed, **kernel_kwargs
            )
        self.D = nn.Parameter(torch.empty(d_model))
        self.activation = nn.GELU()
        if dropout > 0:
            self.dropout: nn.Module = TiedDropout(dropout) if tie_dropout else nn.Dropout(dropout)
        else:
            self.dropout = nn.Identity()
        self.output_linear = nn.Linear(d_model, 2 * d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw ``D`` and the output map (from ``seed`` when given; the kernel is seeded by
        the same ``seed`` in its own constructor)."""
        g = None if self.seed is None else torch.Generator().manual_seed(int(self.seed) + 1)
        with torch.no_grad():
            self.D.copy_(torch.randn(self.d_model, generator=g))
        _seeded_linear_(self.output_linear, g)

    def _check(self, u: Tensor) -> None:
        check_tensor("u", u, floating=True)
        if u.dim() != 3 or u.shape[-1] != self.d_model:
            raise ValueError(f"u must have shape (B, L, {self.d_model}), got {tuple(u.shape)}")

    def _post(self, y: Tensor) -> Tensor:
        return F.glu(self.output_linear(self.dropout(self.activation(y))), dim=-1)

    def forward(self, u: Tensor) -> Tensor:
        self._check(u)
        L = u.shape[1]
        k = self.kernel(L)  # (c, H, L)
        x = u.transpose(1, 2)
        y = fft_conv(x, k.to(x.dtype), bidirectional=self.bidirectional, circular=self.circular)
        y = y + x * self.D.unsqueeze(-1)
        return self._post(y.transpose(1, 2))

    @torch.no_grad()
    def forward_recurrent(self, u: Tensor) -> Tensor:
        """The same map computed by stepping the recurrence (causal layers only)."""
        self._check(u)
        if self.bidirectional:
            raise ValueError("recurrent mode needs a causal layer (bidirectional=False)")
        params = self.kernel.step_params()
        state = self.kernel.default_state(u.shape[0]).to(params[0].dtype)
        ys = []
        for t in range(u.shape[1]):
            y, state = self.kernel.step(u[:, t].to(params[0].real.dtype), state, params)
            ys.append(y[:, 0])
        y = torch.stack(ys, dim=1).to(u.dtype) + u * self.D
        return self._post(y)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, kernel={self.kernel_type!r}, "
            f"bidirectional={self.bidirectional}"
        )


class S4Model(nn.Module):
    r"""Small S4 sequence encoder: linear encoder, ``n_layers`` pre-norm residual S4 layers, linear
    decoder, optional pooling. Usable as a drop-in ``(B, L, d_input) -> (B, L, d_output)`` encoder.

    Args:
        d_input (int): input features.
        d_output (int): output features.
        d_model (int, optional): width H. (default: 64)
        n_layers (int, optional): S4 layers. (default: 2)
        d_state (int, optional): state size N. (default: 64)
        kernel (str, optional): ``"s4d"`` | ``"s4"``. (default: ``"s4d"``)
        dropout (float, optional): dropout in each layer and after it. (default: 0.0)
        pool (str, optional): ``None`` (per step), ``"mean"`` (masked mean) or ``"last"``.
            (default: None)
        bidirectional (bool, optional): non-causal layers. (default: False)
        l_max (int, optional): maximum length (needed by ``kernel="s4"``). (default: None)
        seed (int, optional): seeds every parameter: layer i gets ``seed + i``, the encoder and
            decoder a stream of their own. (default: None = global RNG)
        **kernel_kwargs: passed to each layer's kernel.

    Shapes:
        x (B, L, d_input), mask (B, L) bool (True = valid; optional) -> (B, L, d_output), or
        (B, d_output) when pooled.

    Invariance:
        causal, unpooled: delay-equivariant as :class:`S4Layer`.
    """

    def __init__(
        self,
        d_input: int,
        d_output: int,
        *,
        d_model: int = 64,
        n_layers: int = 2,
        d_state: int = 64,
        kernel: str = "s4d",
        dropout: float = 0.0,
        pool: str | None = None,
        bidirectional: bool = False,
        l_max: int | None = None,
        seed: int | None = None,
        **kernel_kwargs: Any,
    ) -> None:
        super().__init__()
        if pool not in (None, "mean", "last"):
            raise ValueError(f"pool must be None, 'mean' or 'last', got {pool!r}")
        check_int("n_layers", n_layers, 1)
        check_int("d_input", d_input, 1)
        check_int("d_output", d_output, 1)
        check_int("d_model", d_model, 1)
        check_float("dropout", dropout, 0.0, 1.0, hi_open=True)
        _check_seed(seed)
        self.d_input, self.d_output, self.pool = d_input, d_output, pool
        self.encoder = nn.Linear(d_input, d_model)
        self.layers = nn.ModuleList(
            [
                S4Layer(
                    d_model,
                    d_state=d_state,
                    kernel=kernel,
                    l_max=l_max,
                    bidirectional=bidirectional,
                    dropout=dropout,
                    seed=None if seed is None else seed + i,
                    **kernel_kwargs,
                )
                for i in range(n_layers)
            ]
        )
        self.norms = nn.ModuleList([nn.LayerNorm(d_model) for _ in range(n_layers)])
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.decoder = nn.Linear(d_model, d_output)
        if seed is not None:  # encoder / decoder seeded too (the layers use seed + i)
            g = torch.Generator().manual_seed(int(seed) + 7919)
            _seeded_linear_(self.encoder, g)
            _seeded_linear_(self.decoder, g)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        check_tensor("x", x, floating=True)
        if x.dim() != 3 or x.shape[-1] != self.d_input:
            raise ValueError(f"x must have shape (B, L, {self.d_input}), got {tuple(x.shape)}")
        if mask is not None and mask.shape != x.shape[:2]:
            raise ValueError(f"mask must have shape {tuple(x.shape[:2])}, got {tuple(mask.shape)}")
        h = self.encoder(x)
        for layer, norm in zip(self.layers, self.norms):
            h = h + self.dropout(layer(norm(h)))
        out = self.decoder(h)
        if self.pool is None:
            return out
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        if self.pool == "mean":
            m = mask.to(out.dtype).unsqueeze(-1)
            return (out * m).sum(1) / m.sum(1).clamp_min(1.0)
        last = mask.long().sum(1).clamp_min(1) - 1
        return out[torch.arange(out.shape[0], device=out.device), last]


def ssm_param_groups(
    model: nn.Module, *, lr: float, weight_decay: float = 0.0, ssm_lr: float = 1e-3
) -> list[dict[str, Any]]:
    """AdamW parameter groups in the S4 recipe: SSM parameters (A, B, P, Δ) get ``ssm_lr`` and no
    weight decay; 1-D parameters (biases, norms, D) no weight decay; the rest
    ``lr``/``weight_decay``."""
    ssm_ids = {
        id(p)
        for m in model.modules()
        if isinstance(m, (S4DKernel, S4Kernel))
        for name, p in m.named_parameters()
        if name != "C"
    }
    ssm, no_decay, decay = [], [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if id(p) in ssm_ids:
            ssm.append(p)
        elif p.dim() <= 1:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [
        {"params": decay, "lr": lr, "weight_decay": weight_decay},
        {"params": no_decay, "lr": lr, "weight_decay": 0.0},
        {"params": ssm, "lr": ssm_lr, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]
