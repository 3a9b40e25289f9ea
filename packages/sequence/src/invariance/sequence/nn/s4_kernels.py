r"""S4 and S4D convolution kernels (the SSM parameterisations and their length-L kernels).

Papers: "Efficiently Modeling Long Sequences with Structured State Spaces" (S4, Gu, Goel, Ré,
ICLR 2022, arXiv:2111.00396); "On the Parameterization and Initialization of Diagonal State Space
Models" (S4D, arXiv:2206.11893); "How to Train Your HiPPO" (HTTYH, ICLR 2023, arXiv:2206.12037).
Official code: https://github.com/state-spaces/s4 (Apache-2.0); read for conventions, not copied.
See :mod:`invariance.sequence.s4` for the method docstring (tested properties, deviations) and
:mod:`invariance.sequence.nn.s4_layers` for the layer and encoder built on these kernels.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from invariance.sequence import hippo
from invariance.sequence._checks import check_float, check_int
from invariance.sequence.nn.ssm_kernels import (
    bilinear_dense,
    c_tilde,
    cauchy_dplr_kernel,
    discretize_diag,
    dplr_bilinear_step,
    dplr_full,
    dplr_step_setup,
    vandermonde_kernel,
)

__all__ = ["S4DKernel", "S4Kernel", "W_REAL_MIN", "MAX_KERNEL_LENGTH"]

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
