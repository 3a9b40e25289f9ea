"""Control environments over the Rayleigh–Bénard solver: a batched core, gymnasium and PettingZoo.

* :class:`RBCSetup`: the control problem (grid, physics, segments, probes, action hold, episode
  length, reward constants), validated where it is made.
* :class:`RBCControl`: ``n_envs`` simulations stepped together (one batched solver): ``reset()``
  and ``step(actions (n_envs, n_seg))`` return probes and Nusselt numbers.
* :class:`RBCEnv`: gymnasium single-agent env (one agent, all segments; SARL).
* :class:`RBCParallelEnv`: PettingZoo parallel env (one agent per segment, recentred
  observations, rewards mixing global and local Nusselt numbers; MARL).

Every episode starts from the same developed convection state (:func:`baseline_state`: a warm-up
from a seeded perturbation with ``init_mode`` roll pairs, cached per setup; the official code
likewise restarts from a saved baseline). States save to and load from safetensors
(:func:`save_state`, :func:`load_state`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from pettingzoo import ParallelEnv
from torch import Tensor

from invariance.control.marl_rbc import marl_rewards, recentre, sarl_rewards
from invariance.control.rbc import RBCSolver, RBCState, bottom_profile, check_dt

__all__ = [
    "RBCSetup",
    "RBCControl",
    "RBCEnv",
    "RBCParallelEnv",
    "baseline_state",
    "save_state",
    "load_state",
]


@dataclass(frozen=True)
class RBCSetup:
    """The control problem (defaults: the paper-analog setting of the spec).

    Args:
        nx, ny: grid (x points, y intervals) (default: ``64``, ``32``).
        ra, pr: Rayleigh and Prandtl numbers (default: ``1e4``, ``0.7``).
        lx: domain length, height 1 (default: ``π``).
        dt: solver time step (default: ``0.05``).
        n_seg: bottom segments = agents (default: ``8``; must divide ``nx`` and ``probe_x``).
        probe_y, probe_x: probe rows and columns (default: ``8``, ``32``).
        hold_steps: solver steps per action (default: ``30``, 1.5 time units).
        episode_actions: actions per episode (default: ``40``).
        amplitude: largest bottom-temperature deviation (default: ``0.75``).
        half_width: blending half-width at segment edges (default: ``0.015``).
        beta: weight of the local Nusselt number in the MARL reward (default: ``0.0015``).
        nu_offset: reward offset, the uncontrolled Nusselt number (default: ``2.6726``).
        warmup_time: time units of the warm-up to the baseline state (default: ``80``).
        init_mode: roll pairs seeded in the warm-up (default: ``2``).
        u_scale: velocity scale of the observations (default: ``2.5``).
    """

    nx: int = 64
    ny: int = 32
    ra: float = 1e4
    pr: float = 0.7
    lx: float = math.pi
    dt: float = 0.05
    n_seg: int = 8
    probe_y: int = 8
    probe_x: int = 32
    hold_steps: int = 30
    episode_actions: int = 40
    amplitude: float = 0.75
    half_width: float = 0.015
    beta: float = 0.0015
    nu_offset: float = 2.6726
    warmup_time: float = 80.0
    init_mode: int = 2
    u_scale: float = 2.5

    def __post_init__(self) -> None:
        for k, v in asdict(self).items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(f"RBCSetup.{k} must be a number, got {v!r}")
            if not math.isfinite(v):
                raise ValueError(f"RBCSetup.{k} must be finite, got {v}")
        for k in ("nx", "ny", "n_seg", "probe_y", "probe_x", "hold_steps", "episode_actions"):
            if not isinstance(getattr(self, k), int) or getattr(self, k) < 1:
                raise ValueError(f"RBCSetup.{k} must be an int >= 1, got {getattr(self, k)!r}")
        if self.nx % self.n_seg:
            raise ValueError(
                f"RBCSetup.n_seg={self.n_seg} must divide nx={self.nx} (the roll by one segment "
                f"must be a whole number of grid columns)"
            )
        if self.nx % self.probe_x or self.probe_x % self.n_seg:
            raise ValueError(
                f"RBCSetup.probe_x={self.probe_x} must divide nx={self.nx} and be divisible by "
                f"n_seg={self.n_seg}"
            )
        if self.probe_y > self.ny - 1:
            raise ValueError(f"RBCSetup.probe_y={self.probe_y} must be <= ny - 1 = {self.ny - 1}")
        if not (0 <= self.beta <= 1):
            raise ValueError(f"RBCSetup.beta must be in [0, 1], got {self.beta}")
        for k in ("amplitude", "half_width", "u_scale"):
            if getattr(self, k) <= 0:
                raise ValueError(f"RBCSetup.{k} must be > 0, got {getattr(self, k)}")
        if self.amplitude >= 1:
            raise ValueError(
                f"RBCSetup.amplitude must be < 1 (bottom colder than top), got {self.amplitude}"
            )
        for k in ("ra", "pr", "lx", "dt"):
            if getattr(self, k) <= 0:
                raise ValueError(f"RBCSetup.{k} must be > 0, got {getattr(self, k)}")
        check_dt(self.nx, self.ny, lx=self.lx, dt=self.dt)
        if self.warmup_time < 0:
            raise ValueError(f"RBCSetup.warmup_time must be >= 0, got {self.warmup_time}")
        if self.half_width >= self.lx / self.n_seg / 2:
            raise ValueError(
                f"RBCSetup.half_width={self.half_width} must be below half a segment "
                f"({self.lx / self.n_seg / 2:.4g})"
            )

    def solver(self, device: str | torch.device = "cpu") -> RBCSolver:
        """The solver of this setup (validates ``dt`` against the stability limit)."""
        return RBCSolver(
            self.nx, self.ny, ra=self.ra, pr=self.pr, lx=self.lx, dt=self.dt, device=device
        )

    @property
    def obs_dim(self) -> int:
        return 3 * self.probe_y * self.probe_x


def save_state(path: str | Path, state: RBCState) -> Path:
    """Write a state to a safetensors file (``path``); returns the path."""
    from safetensors.torch import save_file

    if not isinstance(path, (str, Path)):
        raise TypeError(f"path must be a str or Path, got {type(path).__name__}")
    if not isinstance(state, RBCState):
        raise TypeError(f"state must be an RBCState, got {type(state).__name__}")

    path = Path(path)
    save_file(state.tensors(), str(path))
    return path


def load_state(path: str | Path) -> RBCState:
    """Read a state written by :func:`save_state`."""
    from safetensors.torch import load_file

    if not isinstance(path, (str, Path)):
        raise TypeError(f"path must be a str or Path, got {type(path).__name__}")
    if not Path(path).is_file():
        raise ValueError(f"path {str(path)!r} is not a file")
    return RBCState.from_tensors(load_file(str(path)))


@functools.lru_cache(maxsize=8)
def _baseline(setup: RBCSetup, seed: int) -> RBCState:
    solver = setup.solver()
    st = solver.perturbed_state(1, amplitude=0.05, mode=setup.init_mode, noise=0.01, seed=seed)
    return solver.step(st, None, int(round(setup.warmup_time / setup.dt)))


def baseline_state(setup: RBCSetup, *, seed: int = 0) -> RBCState:
    """The developed uncontrolled state (batch 1) after ``warmup_time`` (cached per setup).

    Args:
        setup: the control problem.
        seed: seed of the start's perturbation (default: ``0``).
    """
    if not isinstance(setup, RBCSetup):
        raise TypeError(f"setup must be an RBCSetup, got {type(setup).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    return _baseline(setup, seed).clone()


class RBCControl:
    """``n_envs`` Rayleigh–Bénard simulations controlled together (one batched solver).

    Args:
        setup: the :class:`RBCSetup` (default: ``RBCSetup()``).
        n_envs: simulations (default: ``1``).
        init_state: the state every episode starts from (default: :func:`baseline_state`).

    ``reset()`` returns probes ``(n_envs, 3, probe_y, probe_x)``; ``step(actions)`` takes
    ``(n_envs, n_seg)`` actions in ``[-1, 1]`` (clipped; NaN is rejected), holds them for
    ``hold_steps`` solver steps and returns ``{"probes", "nu", "nu_local", "nu_wall"}``
    (instantaneous at the end of the hold; ``nu`` is the volume Nusselt number).
    """

    def __init__(
        self, setup: RBCSetup | None = None, n_envs: int = 1, init_state: RBCState | None = None
    ) -> None:
        if isinstance(n_envs, bool) or not isinstance(n_envs, int) or n_envs < 1:
            raise ValueError(f"n_envs must be an int >= 1, got {n_envs!r}")
        if setup is not None and not isinstance(setup, RBCSetup):
            raise TypeError(f"setup must be an RBCSetup, got {type(setup).__name__}")
        if init_state is not None and not isinstance(init_state, RBCState):
            raise TypeError(f"init_state must be an RBCState, got {type(init_state).__name__}")
        self.setup = setup or RBCSetup()
        self.n_envs = n_envs
        self.solver = self.setup.solver()
        s = self.setup
        init = init_state if init_state is not None else baseline_state(s)
        if init.T.shape[1:] != (s.ny + 1, s.nx // 2 + 1):
            raise ValueError(f"init_state has grid {tuple(init.T.shape[1:])}, not this setup's")
        self._init = init.select(slice(0, 1)) if init.batch != 1 else init
        self.rows = torch.tensor(
            [max(1, min(s.ny - 1, round((r + 0.5) * s.ny / s.probe_y))) for r in range(s.probe_y)]
        )
        self.cols = torch.arange(s.probe_x) * (s.nx // s.probe_x)
        self.state: RBCState | None = None
        self.t = 0

    def reset(self) -> Tensor:
        self.state = self._init.map(lambda z: z.expand(self.n_envs, *z.shape[1:]).clone())
        self.t = 0
        return self.probes()

    def probes(self) -> Tensor:
        if self.state is None:
            raise RuntimeError("call reset() first")
        f = self.solver.fields(self.state)
        s = self.setup
        out = torch.stack([f["u"] * s.u_scale, f["v"] * s.u_scale, (f["T"] - 0.5) * 2.0], dim=1)
        return out[:, :, self.rows][..., self.cols]

    def step(self, actions: Tensor | np.ndarray) -> dict[str, Tensor]:
        if self.state is None:
            raise RuntimeError("call reset() first")
        a = actions if isinstance(actions, Tensor) else torch.as_tensor(np.asarray(actions))
        if not a.is_floating_point():
            raise TypeError(f"actions must be floating point, got {a.dtype}")
        s = self.setup
        if a.dim() == 1 and self.n_envs == 1:
            a = a[None]
        if tuple(a.shape) != (self.n_envs, s.n_seg):
            raise ValueError(f"actions must be ({self.n_envs}, {s.n_seg}), got {tuple(a.shape)}")
        if not torch.isfinite(a).all():
            raise ValueError("actions contain NaN or inf")
        a = a.detach().to(torch.float64)
        bottom = bottom_profile(a, s.nx, amplitude=s.amplitude, half_width=s.half_width, lx=s.lx)
        self.state = self.solver.step(self.state, bottom, s.hold_steps)
        self.t += 1
        nu = self.solver.nusselt(self.state)
        return {
            "probes": self.probes(),
            "nu": nu["volume"],
            "nu_wall": nu["bottom"],
            "nu_local": self.solver.local_nusselt(self.state, s.n_seg),
        }


# ------------------------------------------------------------------------------ gymnasium


def _action_array(action: Any, name: str) -> np.ndarray:
    try:
        a = np.asarray(action, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be numeric, got {type(action).__name__}") from None
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf")
    return a


class RBCEnv(gym.Env):
    """Single-agent (SARL) env: one agent sets all ``n_seg`` segment temperatures.

    Observation: the flattened probe grid ``(3 * probe_y * probe_x,)`` float32. Action:
    ``(n_seg,)`` in ``[-1, 1]``. Reward ``-Nu + nu_offset``; the episode is truncated after
    ``episode_actions`` actions.
    """

    metadata = {"render_modes": []}

    def __init__(self, setup: RBCSetup | None = None, init_state: RBCState | None = None) -> None:
        super().__init__()
        self.core = RBCControl(setup, 1, init_state)
        s = self.core.setup
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (s.obs_dim,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (s.n_seg,), np.float32)

    def _obs(self, probes: Tensor) -> np.ndarray:
        return probes[0].flatten().numpy().astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        return self._obs(self.core.reset()), {}

    def step(self, action):
        a = _action_array(action, "action")
        if a.shape != (self.core.setup.n_seg,):
            raise ValueError(f"action must be ({self.core.setup.n_seg},), got shape {a.shape}")
        out = self.core.step(a[None])
        r = float(sarl_rewards(out["nu"], offset=self.core.setup.nu_offset)[0])
        trunc = self.core.t >= self.core.setup.episode_actions
        return self._obs(out["probes"]), r, False, trunc, {"nu": float(out["nu"][0])}


class RBCParallelEnv(ParallelEnv):
    """Multi-agent (MARL) PettingZoo parallel env: one agent per segment.

    Agent ``seg_i`` observes the probe grid rolled so that its segment is centred
    (:func:`~invariance.control.marl_rbc.recentre`), acts with one number in ``[-1, 1]`` and gets
    ``-((1-β) Nu + β Nu_i) + nu_offset``. All agents are truncated together after
    ``episode_actions`` actions.
    """

    metadata = {"render_modes": [], "name": "rbc_marl_v0", "is_parallelizable": True}

    def __init__(self, setup: RBCSetup | None = None, init_state: RBCState | None = None) -> None:
        self.core = RBCControl(setup, 1, init_state)
        s = self.core.setup
        self.possible_agents = [f"seg_{i}" for i in range(s.n_seg)]
        self.agents: list[str] = []
        self._obs_space = gym.spaces.Box(-np.inf, np.inf, (s.obs_dim,), np.float32)
        self._act_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def observation_space(self, agent: str) -> gym.spaces.Box:
        return self._obs_space

    def action_space(self, agent: str) -> gym.spaces.Box:
        return self._act_space

    def _obs(self, probes: Tensor) -> dict[str, np.ndarray]:
        o = recentre(probes, self.core.setup.n_seg)[0].numpy().astype(np.float32)
        return {a: o[i] for i, a in enumerate(self.possible_agents)}

    def reset(self, seed: int | None = None, options: dict | None = None):
        self.agents = list(self.possible_agents)
        obs = self._obs(self.core.reset())
        return obs, {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]):
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise ValueError(f"actions is missing agents {missing}")
        vals = [_action_array(actions[a], "actions").reshape(-1) for a in self.possible_agents]
        if any(v.size != 1 for v in vals):
            raise ValueError("actions must hold one number per agent")
        vec = np.array([v[0] for v in vals])[None]
        out = self.core.step(vec)
        s = self.core.setup
        r = marl_rewards(out["nu"], out["nu_local"], beta=s.beta, offset=s.nu_offset)[0]
        trunc = self.core.t >= s.episode_actions
        obs = self._obs(out["probes"])
        rewards = {a: float(r[i]) for i, a in enumerate(self.possible_agents)}
        infos = {a: {"nu": float(out["nu"][0])} for a in self.possible_agents}
        terms = {a: False for a in self.possible_agents}
        truncs = {a: trunc for a in self.possible_agents}
        if trunc:
            self.agents = []
        return obs, rewards, terms, truncs, infos
