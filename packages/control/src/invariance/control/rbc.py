r"""A batched 2-D Rayleigh–Bénard (Boussinesq) solver in torch, float64, and the bottom actuation.

Equations (vorticity–streamfunction, free-fall units, height ``H = 1``, ``ΔT = 1``):

.. math::

    \partial_t T + \mathbf u\cdot\nabla T = \kappa \nabla^2 T,\qquad
    \partial_t \omega + \mathbf u\cdot\nabla \omega = \nu \nabla^2 \omega + \partial_x T,\qquad
    \nabla^2 \psi = -\omega,

with ``u = ∂ψ/∂y``, ``v = -∂ψ/∂x``, ``ν = sqrt(Pr/Ra)``, ``κ = 1/sqrt(Pr Ra)``, x periodic on
``[0, lx)`` and no-slip walls at ``y = 0`` (temperature ``T_b(x, t)``, mean 1) and ``y = 1``
(``T = 0``).

Discretisation: Fourier (rfft) in x with 2/3-rule dealiasing of the advection terms; 2nd-order
finite differences in y on ``ny + 1`` points (walls included); SBDF2 time stepping (implicit
diffusion, extrapolated advection and buoyancy). The no-slip conditions ``ψ = ∂ψ/∂y = 0`` enter
through Thom's wall vorticity ``ω_w = -2 ψ_1/Δy²`` taken *implicitly*: per Fourier mode the
unknown is the interior streamfunction and the vorticity equation becomes one banded
``(ny-1) x (ny-1)`` system, factored once with :func:`torch.linalg.lu_factor` (likewise the
temperature). A time step is then a handful of FFTs and one batched ``lu_solve`` for every
environment and mode at once.

Actuation: :mod:`invariance.control.actuation` (the official segment-wise bottom temperature;
re-exported here).

Nusselt numbers (:meth:`RBCSolver.nusselt`): ``-⟨∂T/∂y⟩_x`` at either wall (2nd-order one-sided),
and the volume number ``⟨vT⟩/κ + ⟨T_b⟩ - T_top``; per segment (:meth:`RBCSolver.local_nusselt`)
the same volume formula over the segment's columns.

Tested properties (``tests/test_control_solver.py``, ``tests/test_control_golden.py``):

* the conduction state is stationary to < 1e-12 and has Nu = 1;
* onset: the growth rate is negative at Ra 1500 and positive at Ra 1900 at k_c = 3.117
  (Ra_c = 1707.76);
* rolled state + rolled actuation = rolled trajectory to < 1e-10 (rolling the state alone fails);
  the reflection ``x -> -x`` (T even, ψ odd) to < 1e-10;
* the wall Nusselt numbers agree to 1e-3 at steady state and the volume number within 2 %; at
  96 x 64 the steady Nu at Ra 1e4 is within 1 % of the official 2.6726 (slow test; 2.689);
* :func:`bottom_profile` equals the official ``Tfunc.apply_T`` (run, shenfun import stubbed) to
  < 1e-12 after the change of units; it preserves the mean and stays within ``1 ± A``.

Deviations: finite differences in y instead of the official Chebyshev–Galerkin (shenfun) and
SBDF2 instead of IMEXRK3; H = 1 (the official domain is y ∈ [-1, 1], x ∈ [0, 2π): the same
aspect ratio π); the mean (k = 0) streamfunction is zero at both walls, i.e. no net horizontal
mass flux.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

from invariance.control.actuation import (
    _count,
    _finite,
    _number,
    blending_matrix,
    bottom_profile,
    segment_temperatures,
)

__all__ = [
    "check_dt",
    "RBCSolver",
    "RBCState",
    "SimulationDiverged",
    "bottom_profile",
    "segment_temperatures",
    "blending_matrix",
]

#: free-fall speed bound used by the dt check (peak |u| at Ra <= 1e5 stays well below it)
_U_BOUND = 0.5
_F64 = torch.float64


class SimulationDiverged(RuntimeError):
    """The simulation became non-finite or exceeded the CFL limit (raised instead of NaNs)."""


def check_dt(nx: int, ny: int, *, lx: float, dt: float, max_cfl: float = 1.5) -> None:
    """Raise ``ValueError`` naming ``dt`` when ``dt * 0.5 * (1/dx + 1/dy) > max_cfl`` (0.5 bounds
    the peak free-fall velocity of these flows; the solver also checks the real CFL number)."""
    dx, dy = lx / nx, 1.0 / ny
    cfl_est = dt * _U_BOUND * (1 / dx + 1 / dy)
    if cfl_est > max_cfl:
        dt_max = max_cfl / (_U_BOUND * (1 / dx + 1 / dy))
        raise ValueError(
            f"dt={dt:g} is beyond the stability limit of this grid (nx={nx}, ny={ny}): the "
            f"advective CFL estimate dt*{_U_BOUND}*(1/dx+1/dy) = {cfl_est:.2f} > max_cfl="
            f"{max_cfl:g}; use dt <= {dt_max:.4g}"
        )


# ------------------------------------------------------------------------------------ state


@dataclass
class RBCState:
    """Spectral state of a batch of simulations (rfft along x).

    ``T``, ``psi``: ``(B, ny+1, nx//2+1)`` complex, walls included. ``T_prev``, ``omega_prev``,
    ``NT_prev``, ``Nw_prev``: the SBDF2 history on the interior rows (``None`` before the first
    step). ``t``: simulated time.
    """

    T: Tensor
    psi: Tensor
    T_prev: Tensor | None = None
    omega_prev: Tensor | None = None
    NT_prev: Tensor | None = None
    Nw_prev: Tensor | None = None
    t: float = 0.0

    @property
    def batch(self) -> int:
        return self.T.shape[0]

    def map(self, fn_even, fn_odd=None) -> RBCState:
        """Apply ``fn_even`` to the x-even fields (T, N_T) and ``fn_odd`` to ψ, ω, N_ω."""
        fn_odd = fn_odd or fn_even
        odd = {"psi", "omega_prev", "Nw_prev"}
        kw = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Tensor):
                kw[f.name] = (fn_odd if f.name in odd else fn_even)(v)
        return replace(self, **kw)

    def clone(self) -> RBCState:
        return self.map(lambda z: z.clone())

    def select(self, idx) -> RBCState:
        """Environments ``idx`` of the batch (an index, slice or index tensor)."""
        return self.map(lambda z: z[idx])

    def tensors(self) -> dict[str, Tensor]:
        """Real tensors for saving (safetensors): complex fields as ``(..., 2)``."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Tensor):
                out[f.name] = torch.view_as_real(v.resolve_conj()).contiguous()
        out["t"] = torch.tensor([self.t], dtype=_F64)
        return out

    @classmethod
    def from_tensors(cls, d: dict[str, Tensor]) -> RBCState:
        """Inverse of :meth:`tensors`. The real tensors are copied into fresh storage before the
        complex view: a buffer read from a file may be only 8-byte aligned, and complex128
        kernels on a misaligned view crash natively."""
        names = {f.name for f in fields(cls)} - {"t"}
        if not isinstance(d, dict) or not {"T", "psi"} <= set(d):
            raise ValueError("state tensors must hold at least 'T' and 'psi'")
        unknown = set(d) - names - {"t"}
        if unknown:
            raise ValueError(f"state tensors has unknown entries {sorted(unknown)}")
        kw = {}
        for k, v in d.items():
            if k == "t":
                continue
            if not isinstance(v, Tensor) or v.dtype != _F64 or v.dim() < 1 or v.shape[-1] != 2:
                raise ValueError(f"state tensor {k!r} must be float64 (..., 2) (real, imaginary)")
            if not torch.isfinite(v).all():
                raise ValueError(f"state tensor {k!r} contains NaN or inf")
            kw[k] = torch.view_as_complex(v.clone(memory_format=torch.contiguous_format))
        return cls(**kw, t=float(d["t"][0]) if "t" in d else 0.0)


# ----------------------------------------------------------------------------------- solver


class RBCSolver:
    r"""Batched 2-D Rayleigh–Bénard solver (Fourier x, finite differences y, SBDF2, float64).

    Args:
        nx: points in x (periodic) (default: ``64``).
        ny: intervals in y; the grid has ``ny + 1`` rows, walls included (default: ``32``).
        ra: Rayleigh number (default: ``1e4``).
        pr: Prandtl number (default: ``0.7``).
        lx: domain length in x (height 1) (default: ``π``, aspect ratio of the official setup).
        dt: time step (default: ``0.05``).
        max_cfl: a step whose advective CFL number exceeds this raises
            :class:`SimulationDiverged`; ``dt`` must also keep the estimate
            ``dt * 0.5 * (1/dx + 1/dy)`` below it (default: ``1.5``).
        device: torch device (default: CPU).

    Shapes: physical fields ``(B, ny+1, nx)``, bottom profiles ``(B, nx)``.

    **Symmetry.** The discrete equations commute with cyclic shifts in x (any number of grid
    columns, with the bottom profile shifted alike) and with the reflection ``x -> -x``
    (``T`` even, ``ψ`` and ``ω`` odd); both are tested to round-off.
    """

    def __init__(
        self,
        nx: int = 64,
        ny: int = 32,
        *,
        ra: float = 1e4,
        pr: float = 0.7,
        lx: float = math.pi,
        dt: float = 0.05,
        max_cfl: float = 1.5,
        device: str | torch.device = "cpu",
    ) -> None:
        for name, v in (("nx", nx), ("ny", ny)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{name} must be an int, got {type(v).__name__}")
        if nx < 4 or nx % 2:
            raise ValueError(f"nx must be an even int >= 4, got {nx}")
        if ny < 4:
            raise ValueError(f"ny must be >= 4, got {ny}")
        for name, v in (("ra", ra), ("pr", pr), ("lx", lx), ("dt", dt), ("max_cfl", max_cfl)):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(f"{name} must be a number, got {type(v).__name__}")
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive finite number, got {v}")
        self.nx, self.ny, self.ra, self.pr, self.lx = nx, ny, float(ra), float(pr), float(lx)
        self.dt, self.max_cfl = float(dt), float(max_cfl)
        self.device = torch.device(device)
        self.nu = math.sqrt(pr / ra)
        self.kappa = 1.0 / math.sqrt(pr * ra)
        self.dx, self.dy = lx / nx, 1.0 / ny
        check_dt(nx, ny, lx=lx, dt=dt, max_cfl=max_cfl)
        self.nk = nx // 2 + 1
        dev = self.device
        idx = torch.arange(self.nk, device=dev)
        self.k = (2 * math.pi / lx) * idx.to(_F64)
        kd = self.k.clone()
        kd[-1] = 0.0  # Nyquist mode: no derivative
        self.ik = (1j * kd).to(torch.complex128)
        #: 2/3-rule dealiasing mask of the advection terms (Nyquist dropped)
        self.mask = (idx <= nx // 3).to(_F64) * (idx < nx // 2).to(_F64)
        self._factor()

    def __repr__(self) -> str:
        return (
            f"RBCSolver(nx={self.nx}, ny={self.ny}, ra={self.ra:g}, pr={self.pr:g}, "
            f"lx={self.lx:.4g}, dt={self.dt:g})"
        )

    # ---------------------------------------------------------------- operators
    def _factor(self) -> None:
        m, dy2 = self.ny - 1, self.dy**2
        dev = self.device
        eye = torch.eye(m, dtype=_F64, device=dev)
        d2 = (
            -2 * torch.eye(m, dtype=_F64, device=dev)
            + torch.diag(torch.ones(m - 1, dtype=_F64, device=dev), 1)
            + torch.diag(torch.ones(m - 1, dtype=_F64, device=dev), -1)
        ) / dy2
        k2 = (self.k**2)[:, None, None]
        c = 1.5 / self.dt
        # temperature: (3/(2dt) - κ (D² - k²)) on the interior
        a_t = c * eye - self.kappa * (d2[None] - k2 * eye[None])
        # vorticity from interior ψ (walls by Thom): W is (ny+1) x m
        w_int = -(d2[None] - k2 * eye[None])  # (nk, m, m)
        w = torch.zeros(self.nk, m + 2, m, dtype=_F64, device=dev)
        w[:, 1:-1] = w_int
        w[:, 0, 0] = -2.0 / dy2
        w[:, -1, -1] = -2.0 / dy2
        lap = torch.zeros(self.nk, m, m + 2, dtype=_F64, device=dev)
        ar = torch.arange(m, device=dev)
        lap[:, ar, ar] = 1.0 / dy2
        lap[:, ar, ar + 2] = 1.0 / dy2
        lap[:, ar, ar + 1] = -2.0 / dy2 - self.k[:, None] ** 2
        a_w = c * w_int - self.nu * lap @ w
        self._lu_t = torch.linalg.lu_factor(a_t)
        self._lu_w = torch.linalg.lu_factor(a_w)

    def _solve(self, lu: tuple[Tensor, Tensor], rhs: Tensor) -> Tensor:
        """Solve per mode: ``rhs`` (B, m, nk) complex -> (B, m, nk) complex."""
        b, m, nk = rhs.shape
        r = torch.view_as_real(rhs).permute(2, 1, 0, 3).reshape(nk, m, 2 * b)
        s = torch.linalg.lu_solve(lu[0], lu[1], r)
        return torch.view_as_complex(s.reshape(nk, m, b, 2).permute(2, 1, 0, 3).contiguous())

    def omega(self, psi: Tensor) -> Tensor:
        """Vorticity ``-∇²ψ`` on all rows (Thom's formula at the walls), spectral."""
        dy2 = self.dy**2
        k2 = self.k**2
        w = torch.empty_like(psi)
        w[:, 1:-1] = -(psi[:, 2:] - 2 * psi[:, 1:-1] + psi[:, :-2]) / dy2 + k2 * psi[:, 1:-1]
        w[:, 0] = -2.0 * psi[:, 1] / dy2
        w[:, -1] = -2.0 * psi[:, -2] / dy2
        return w

    # ---------------------------------------------------------------- states
    def _spec(self, f: Tensor) -> Tensor:
        return torch.fft.rfft(f, dim=-1)

    def _phys(self, f: Tensor) -> Tensor:
        return torch.fft.irfft(f, n=self.nx, dim=-1)

    @property
    def x(self) -> Tensor:
        return torch.arange(self.nx, dtype=_F64, device=self.device) * self.dx

    @property
    def y(self) -> Tensor:
        return torch.arange(self.ny + 1, dtype=_F64, device=self.device) * self.dy

    def _check_bottom(self, bottom: Tensor | None, batch: int) -> Tensor:
        if bottom is None:
            return torch.ones(batch, self.nx, dtype=_F64, device=self.device)
        _finite(bottom, "bottom")
        if bottom.shape != (batch, self.nx):
            raise ValueError(f"bottom must be (B={batch}, nx={self.nx}), got {tuple(bottom.shape)}")
        return bottom.to(device=self.device, dtype=_F64)

    def state_from_fields(self, T: Tensor, psi: Tensor | None = None, t: float = 0.0) -> RBCState:
        """A state from physical ``T`` and ``ψ`` ``(B, ny+1, nx)`` (ψ is zeroed at the walls)."""
        _finite(T, "T")
        shape = (self.ny + 1, self.nx)
        if T.dim() != 3 or tuple(T.shape[1:]) != shape:
            raise ValueError(f"T must be (B, {shape[0]}, {shape[1]}), got {tuple(T.shape)}")
        if psi is None:
            psi = torch.zeros_like(T)
        _finite(psi, "psi")
        if psi.shape != T.shape:
            raise ValueError(f"psi must have T's shape {tuple(T.shape)}, got {tuple(psi.shape)}")
        psi = psi.to(device=self.device, dtype=_F64).clone()
        psi[:, 0] = 0.0
        psi[:, -1] = 0.0
        th, ph = self._spec(T.to(device=self.device, dtype=_F64)), self._spec(psi)
        ph = ph * self.mask.to(ph.dtype)
        return RBCState(T=th, psi=ph, t=t)

    def conduction_state(self, batch: int = 1, bottom: Tensor | None = None) -> RBCState:
        """The conduction state ``T = 1 - y``, ``ψ = 0`` (stationary for a uniform bottom)."""
        _count(batch, "batch")
        T = (1.0 - self.y)[None, :, None].expand(batch, -1, self.nx).clone()
        if bottom is not None:
            T[:, 0] = self._check_bottom(bottom, batch)
        return self.state_from_fields(T)

    def perturbed_state(
        self,
        batch: int = 1,
        *,
        amplitude: float = 1e-2,
        mode: int | None = None,
        noise: float = 1e-3,
        seed: int = 0,
    ) -> RBCState:
        """Conduction plus ``amplitude · sin(πy) cos(2π mode x / lx)`` (``mode=None``: none) plus
        ``noise`` · random interior noise (seeded), projected on the dealiased modes."""
        _count(batch, "batch")
        _number(amplitude, "amplitude", positive=False)
        _number(noise, "noise", positive=False)
        if amplitude < 0 or noise < 0:
            raise ValueError(f"amplitude and noise must be >= 0, got {amplitude}, {noise}")
        if mode is not None:
            _count(mode, "mode", lo=0)
        _count(seed, "seed", lo=0)
        g = torch.Generator().manual_seed(seed)
        y, x = self.y, self.x
        T = (1.0 - y)[None, :, None].expand(batch, -1, self.nx).clone()
        if mode is not None:
            T = T + amplitude * torch.sin(math.pi * y)[:, None] * torch.cos(
                2 * math.pi * mode * x / self.lx
            )
        r = torch.randn(batch, self.ny + 1, self.nx, generator=g, dtype=_F64).to(self.device)
        T = T + noise * r * torch.sin(math.pi * y)[:, None]
        th = self._spec(T) * self.mask.to(torch.complex128)
        return RBCState(T=th, psi=torch.zeros_like(th))

    def fields(self, state: RBCState) -> dict[str, Tensor]:
        """Physical ``T``, ``psi``, ``omega``, ``u``, ``v``, each ``(B, ny+1, nx)``."""
        psi = state.psi
        u = torch.zeros_like(psi)
        u[:, 1:-1] = (psi[:, 2:] - psi[:, :-2]) / (2 * self.dy)
        v = -self.ik * psi
        out = torch.stack([state.T, psi, self.omega(psi), u, v])
        T, p, w, uu, vv = self._phys(out).unbind(0)
        return {"T": T, "psi": p, "omega": w, "u": uu, "v": vv}

    # ---------------------------------------------------------------- Nusselt
    def nusselt(self, state: RBCState) -> dict[str, Tensor]:
        """``{"bottom", "top", "volume"}``, each ``(B,)``: wall heat fluxes ``-⟨∂T/∂y⟩_x``
        (2nd-order one-sided) and ``⟨vT⟩/κ + ⟨T_b⟩ - ⟨T_top⟩`` (trapezoid in y)."""
        t0 = state.T[..., 0].real / self.nx  # x-means per row, (B, ny+1)
        dy = self.dy
        nu_b = -(-3 * t0[:, 0] + 4 * t0[:, 1] - t0[:, 2]) / (2 * dy)
        nu_t = -(3 * t0[:, -1] - 4 * t0[:, -2] + t0[:, -3]) / (2 * dy)
        vt = self._vt_rows(state).mean(dim=-1)  # (B, ny+1)
        vol = _trapz(vt, dy) / self.kappa + t0[:, 0] - t0[:, -1]
        return {"bottom": nu_b, "top": nu_t, "volume": vol}

    def _vt_rows(self, state: RBCState) -> Tensor:
        f = self._phys(torch.stack([state.T, -self.ik * state.psi]))
        return f[0] * f[1]

    def local_nusselt(self, state: RBCState, n_seg: int) -> Tensor:
        """``(B, n_seg)`` volume Nusselt over each segment's columns (their mean is the volume
        Nusselt number)."""
        _count(n_seg, "n_seg")
        if self.nx % n_seg:
            raise ValueError(f"n_seg={n_seg} must divide nx={self.nx}")
        T = self._phys(state.T)
        vt = self._vt_rows(state)  # (B, ny+1, nx)
        b = vt.shape[0]
        c = self.nx // n_seg
        vt_seg = _trapz(vt.reshape(b, self.ny + 1, n_seg, c).mean(-1).transpose(1, 2), self.dy)
        tb = T[:, 0].reshape(b, n_seg, c).mean(-1)
        tt = T[:, -1].reshape(b, n_seg, c).mean(-1)
        return vt_seg / self.kappa + tb - tt

    # ---------------------------------------------------------------- stepping
    def _nonlinear(self, state: RBCState, omega: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Advection + buoyancy on the interior rows (spectral) and the CFL number per env."""
        T, psi, ik, dy = state.T, state.psi, self.ik, self.dy
        u = (psi[:, 2:] - psi[:, :-2]) / (2 * dy)
        v = -ik * psi[:, 1:-1]
        wx = ik * omega[:, 1:-1]
        wy = (omega[:, 2:] - omega[:, :-2]) / (2 * dy)
        tx = ik * T[:, 1:-1]
        ty = (T[:, 2:] - T[:, :-2]) / (2 * dy)
        uu, vv, wxx, wyy, txx, tyy = self._phys(torch.stack([u, v, wx, wy, tx, ty])).unbind(0)
        adv = torch.stack([uu * wxx + vv * wyy, uu * txx + vv * tyy])
        adv_h = self._spec(adv) * self.mask.to(torch.complex128)
        nw = -adv_h[0] + tx
        nt = -adv_h[1]
        cfl = self.dt * (uu.abs() / self.dx + vv.abs() / self.dy).amax(dim=(-2, -1))
        return nw, nt, cfl

    def step(self, state: RBCState, bottom: Tensor | None = None, n_steps: int = 1) -> RBCState:
        """Advance ``n_steps`` time steps with the bottom temperature ``bottom`` ``(B, nx)``
        held (``None``: uniform 1). Returns a new state; raises :class:`SimulationDiverged` when
        the CFL number exceeds ``max_cfl`` or a field becomes non-finite."""
        if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 0:
            raise ValueError(f"n_steps must be an int >= 0, got {n_steps!r}")
        if not isinstance(state, RBCState):
            raise TypeError(f"state must be an RBCState, got {type(state).__name__}")
        b = state.batch
        tb_h = self._spec(self._check_bottom(bottom, b))  # (B, nk)
        dy2 = self.dy**2
        c2 = 0.5 / self.dt
        for _ in range(n_steps):
            omega = self.omega(state.psi)
            nw, nt, cfl = self._nonlinear(state, omega)
            worst = float(cfl.max())
            if not math.isfinite(worst) or worst > self.max_cfl:
                bad = torch.nonzero(~(cfl <= self.max_cfl)).flatten()[:8].tolist()
                raise SimulationDiverged(
                    f"simulation diverged at t={state.t:.3f}: CFL number {worst:.3g} > max_cfl="
                    f"{self.max_cfl:g} in envs {bad}; reduce dt or the forcing"
                )
            t_int, w_int = state.T[:, 1:-1], omega[:, 1:-1]
            t_prev = t_int if state.T_prev is None else state.T_prev
            w_prev = w_int if state.omega_prev is None else state.omega_prev
            nt_prev = nt if state.NT_prev is None else state.NT_prev
            nw_prev = nw if state.Nw_prev is None else state.Nw_prev
            rhs_t = c2 * (4 * t_int - t_prev) + 2 * nt - nt_prev
            rhs_t[:, 0] += self.kappa * tb_h / dy2
            rhs_w = c2 * (4 * w_int - w_prev) + 2 * nw - nw_prev
            t_new = self._solve(self._lu_t, rhs_t)
            p_new = self._solve(self._lu_w, rhs_w)
            T = torch.cat([tb_h[:, None], t_new, torch.zeros_like(tb_h)[:, None]], dim=1)
            z = torch.zeros_like(p_new[:, :1])
            psi = torch.cat([z, p_new, z], dim=1)
            state = RBCState(
                T=T,
                psi=psi,
                T_prev=t_int,
                omega_prev=w_int,
                NT_prev=nt,
                Nw_prev=nw,
                t=state.t + self.dt,
            )
        return state

    # ---------------------------------------------------------------- symmetries
    def roll(self, state: RBCState, shift: int) -> RBCState:
        """Shift every field by ``shift`` grid columns in x (``torch.roll`` convention)."""
        if isinstance(shift, bool) or not isinstance(shift, int):
            raise TypeError(f"shift must be an int, got {type(shift).__name__}")
        ang = (-2 * math.pi * shift / self.nx) * torch.arange(
            self.nk, device=self.device, dtype=_F64
        )
        ph = torch.polar(torch.ones_like(ang), ang)
        return state.map(lambda z: z * ph)

    def reflect(self, state: RBCState) -> RBCState:
        """``x -> -x``: ``T`` even, ``ψ``, ``ω`` odd (spectrally: complex conjugation)."""
        return state.map(lambda z: z.conj().resolve_conj(), lambda z: -z.conj().resolve_conj())


def _trapz(f: Tensor, dy: float) -> Tensor:
    """Trapezoid mean over the last dim on ``[0, 1]``."""
    return dy * (f.sum(-1) - 0.5 * (f[..., 0] + f[..., -1]))
