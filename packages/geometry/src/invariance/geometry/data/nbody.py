r"""Vectorised charged n-body simulator (the NRI / EGNN / EqMotion particle benchmark).

Physics follows the charged-particle simulator of Kipf et al. (NRI), used by EGNN and EqMotion:
``n_balls`` particles in 3-D with charges :math:`q_i\in\{-1,+1\}` (probability ½ each, no
neutral charge), initial positions :math:`\mathcal N(0, \text{loc\_std}^2)`, initial velocities of
norm ``vel_norm`` in a uniformly random direction, Coulomb-like forces
:math:`F_i=\sum_{j\ne i} q_iq_j\,(x_i-x_j)/\lVert x_i-x_j\rVert^3` (like charges repel),
symplectic-Euler steps of ``dt`` (velocity from the force, then position from the new velocity).
The official code clips each force component to ±100 and reflects positions into a box of half
size 5 at t = 0 only; both slightly break E(3) symmetry of the *data*, so both are options
(``max_force=None``, ``box=None`` give an exactly E(3)-symmetric simulator).

This is our own torch implementation (vectorised over simulations, float64); it is not
RNG-compatible with the numpy original. Frame k is the state after ``k * sample_freq`` steps
(frame 0 is the initial state).

Ground truth: the future positions (``target``) and the charges.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..ops._checks import check_int, check_real

__all__ = ["simulate_charged", "NBodyDataset", "make_nbody"]


def _forces(loc: Tensor, q: Tensor, max_force: float | None) -> Tensor:
    diff = loc.unsqueeze(2) - loc.unsqueeze(1)  # (S, n, n, 3): x_i - x_j
    d3 = diff.norm(dim=-1).pow(3)
    n = loc.shape[1]
    eye = torch.eye(n, dtype=torch.bool, device=loc.device)
    coef = (q.unsqueeze(2) * q.unsqueeze(1)) / d3.masked_fill(eye, 1.0)
    coef = coef.masked_fill(eye, 0.0)
    F = (coef.unsqueeze(-1) * diff).sum(2)
    if max_force is not None:
        F = F.clamp(-max_force, max_force)
    return F


def simulate_charged(
    n_sims: int,
    *,
    n_balls: int = 5,
    steps: int = 10000,
    sample_freq: int = 100,
    dt: float = 1e-3,
    loc_std: float = 1.0,
    vel_norm: float = 0.5,
    max_force: float | None = 100.0,
    box: float | None = 5.0,
    seed: int = 0,
    init: tuple[Tensor, Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Simulate ``n_sims`` independent charged systems.

    ``init=(loc0, vel0, charges)`` ((S, n, 3), (S, n, 3), (S, n)) replaces the random initial
    state (then ``seed``, ``loc_std``, ``vel_norm`` and ``box`` are unused).

    Returns:
        ``(loc, vel, charges)``: (S, T, n, 3), (S, T, n, 3) float64 with
        ``T = steps // sample_freq`` frames, and charges (S, n).
    """
    check_int(n_sims, "n_sims", 1)
    check_int(n_balls, "n_balls", 2)
    check_int(steps, "steps", 1)
    check_int(sample_freq, "sample_freq", 1)
    check_int(seed, "seed", 0)
    check_real(dt, "dt", 0.0, lo_open=True)
    check_real(loc_std, "loc_std", 0.0, lo_open=True)
    check_real(vel_norm, "vel_norm", 0.0)
    if max_force is not None:
        check_real(max_force, "max_force", 0.0, lo_open=True)
    if box is not None:
        check_real(box, "box", 0.0, lo_open=True)
    if steps < sample_freq:
        raise ValueError(
            f"need 1 <= sample_freq <= steps, got sample_freq={sample_freq}, steps={steps}"
        )
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    if init is not None:
        loc, vel, q = (t.to(f64) for t in init)
        if loc.shape != (n_sims, n_balls, 3) or vel.shape != loc.shape or q.shape != loc.shape[:2]:
            raise ValueError(
                f"init must be ((S, n, 3), (S, n, 3), (S, n)) with S={n_sims}, n={n_balls}; got "
                f"{tuple(loc.shape)}, {tuple(vel.shape)}, {tuple(q.shape)}"
            )
        box = None
    else:
        q = torch.where(torch.rand(n_sims, n_balls, generator=g, dtype=f64) < 0.5, -1.0, 1.0).to(
            f64
        )
        loc = torch.randn(n_sims, n_balls, 3, generator=g, dtype=f64) * loc_std
        vel = torch.randn(n_sims, n_balls, 3, generator=g, dtype=f64)
        vel = vel * vel_norm / vel.norm(dim=-1, keepdim=True)
    if box is not None:  # reflect into the box (t = 0 only, as in the original)
        over, under = loc > box, loc < -box
        loc = torch.where(over, 2 * box - loc, torch.where(under, -2 * box - loc, loc))
        vel = torch.where(over, -vel.abs(), torch.where(under, vel.abs(), vel))
    T = steps // sample_freq
    L = torch.empty(n_sims, T, n_balls, 3, dtype=f64)
    Vs = torch.empty_like(L)
    L[:, 0], Vs[:, 0] = loc, vel
    vel = vel + dt * _forces(loc, q, max_force)
    k = 1
    for i in range(1, T * sample_freq):
        loc = loc + dt * vel
        if i % sample_freq == 0:
            L[:, k], Vs[:, k] = loc, vel
            k += 1
        vel = vel + dt * _forces(loc, q, max_force)
    return L, Vs, q


class NBodyDataset(Dataset):
    """Past/future trajectory windows (EqMotion layout: agents first, then time).

    Items: ``{"loc": (n, T_p, 3), "vel": (n, T_p, 3), "target": (n, T_f, 3), "charges": (n,)}``.
    ``vel`` is the finite difference of ``loc`` with the first frame copied from the second (as in
    the official EqMotion loader).
    """

    def __init__(self, loc: Tensor, target: Tensor, charges: Tensor) -> None:
        if loc.dim() != 4 or loc.shape[-1] != 3 or target.shape[:2] != loc.shape[:2]:
            raise ValueError(
                f"loc (S, n, T_p, 3) and target (S, n, T_f, 3) mismatch: {tuple(loc.shape)}, {tuple(target.shape)}"  # noqa: E501
            )
        if loc.shape[2] < 2:
            raise ValueError(f"need at least 2 past frames, got {loc.shape[2]}")
        self.loc, self.target, self.charges = loc, target, charges
        vel = torch.zeros_like(loc)
        vel[:, :, 1:] = loc[:, :, 1:] - loc[:, :, :-1]
        vel[:, :, 0] = vel[:, :, 1]
        self.vel = vel

    def __len__(self) -> int:
        return self.loc.shape[0]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {
            "loc": self.loc[i],
            "vel": self.vel[i],
            "target": self.target[i],
            "charges": self.charges[i],
        }


def make_nbody(
    n_sims: int,
    *,
    past: int = 10,
    future: int = 10,
    n_balls: int = 5,
    sample_freq: int = 100,
    dt: float = 1e-3,
    seed: int = 0,
    max_force: float | None = 100.0,
    box: float | None = 5.0,
    dtype: torch.dtype = torch.float32,
) -> NBodyDataset:
    """Simulate and cut into (past, future) windows starting at frame 0."""
    check_int(past, "past", 2)
    check_int(future, "future", 1)
    check_int(sample_freq, "sample_freq", 1)
    steps = (past + future) * sample_freq
    L, _, q = simulate_charged(
        n_sims,
        n_balls=n_balls,
        steps=steps,
        sample_freq=sample_freq,
        dt=dt,
        seed=seed,
        max_force=max_force,
        box=box,
    )
    L = L.transpose(1, 2).to(dtype)  # (S, n, T, 3)
    return NBodyDataset(L[:, :, :past], L[:, :, past : past + future], q.to(dtype))
