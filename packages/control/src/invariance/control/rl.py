"""Reinforcement learning over :class:`~invariance.control.envs.RBCControl` (extra ``rl``).

* :class:`RBCVecEnv`: a stable-baselines3 ``VecEnv`` over ``n_sims`` batched simulations. In
  ``"marl"`` mode every agent of every simulation is one sub-env (``n_sims * n_seg`` sub-envs with
  recentred observations and 1-D actions), so one SB3 PPO policy *is* the shared, invariant MARL
  policy (the official code does the same with Tensorforce's parallel interactions). In
  ``"sarl"`` mode each simulation is one sub-env with the full ``n_seg`` action vector.
* :func:`make_ppo`: SB3 PPO with the settings used here.
* Controllers for the baselines (:func:`uncontrolled`, :func:`random_controller`,
  :func:`proportional_controller`) and :func:`rollout` (episode Nusselt series of any controller).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecEnv
from torch import Tensor

from invariance.control.envs import RBCControl, RBCSetup
from invariance.control.marl_rbc import marl_rewards, recentre, sarl_rewards
from invariance.control.rbc import RBCState

__all__ = [
    "RBCVecEnv",
    "make_ppo",
    "ppo_controller",
    "uncontrolled",
    "random_controller",
    "proportional_controller",
    "rollout",
]

Controller = Callable[[Tensor], Tensor]  # probes (B, 3, py, px) -> actions (B, n_seg)


class RBCVecEnv(VecEnv):
    """SB3 vector env: ``mode="marl"`` (one sub-env per agent per simulation) or ``"sarl"``.

    Args:
        setup: the control problem.
        n_sims: simulations stepped together (default: ``1``).
        mode: ``"marl"`` or ``"sarl"`` (default: ``"marl"``).
        init_state: the episode start (default: the setup's baseline state).

    Episodes of all simulations end together after ``episode_actions`` actions (truncation: the
    ``terminal_observation`` is reported and the envs reset).
    """

    def __init__(
        self,
        setup: RBCSetup,
        n_sims: int = 1,
        mode: str = "marl",
        init_state: RBCState | None = None,
    ) -> None:
        if mode not in ("marl", "sarl"):
            raise ValueError(f"mode must be 'marl' or 'sarl', got {mode!r}")
        self.core = RBCControl(setup, n_sims, init_state)
        self.mode, self.n_sims, self.setup = mode, n_sims, setup
        n = setup.n_seg
        obs = spaces.Box(-np.inf, np.inf, (setup.obs_dim,), np.float32)
        act = spaces.Box(-1.0, 1.0, (1 if mode == "marl" else n,), np.float32)
        self.render_mode = None
        super().__init__(n_sims * n if mode == "marl" else n_sims, obs, act)
        self._actions: np.ndarray | None = None
        self.episode_nu: list[float] = []  # episode-mean Nu of every finished simulation
        self._nu_sum = np.zeros(n_sims)

    def _obs(self, probes: Tensor) -> np.ndarray:
        if self.mode == "marl":
            o = recentre(probes, self.setup.n_seg).reshape(self.num_envs, -1)
        else:
            o = probes.reshape(self.n_sims, -1)
        return o.numpy().astype(np.float32)

    def reset(self) -> np.ndarray:
        self._nu_sum[:] = 0
        return self._obs(self.core.reset())

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, dtype=np.float64)

    def step_wait(self):
        a = np.clip(self._actions.reshape(self.n_sims, self.setup.n_seg), -1.0, 1.0)
        out = self.core.step(a)
        s = self.setup
        if self.mode == "marl":
            r = marl_rewards(out["nu"], out["nu_local"], beta=s.beta, offset=s.nu_offset)
        else:
            r = sarl_rewards(out["nu"], offset=s.nu_offset)
        rewards = r.reshape(-1).numpy().astype(np.float32)
        self._nu_sum += out["nu"].numpy()
        obs = self._obs(out["probes"])
        done = self.core.t >= s.episode_actions
        dones = np.full(self.num_envs, done)
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if done:
            self.episode_nu.extend((self._nu_sum / s.episode_actions).tolist())
            for i in range(self.num_envs):
                infos[i]["terminal_observation"] = obs[i]
                infos[i]["TimeLimit.truncated"] = True
            obs = self.reset()
        return obs, rewards, dones, infos

    def close(self) -> None:
        pass

    def get_attr(self, attr_name, indices=None):
        return [getattr(self, attr_name)] * len(self._idx(indices))

    def set_attr(self, attr_name, value, indices=None):
        setattr(self, attr_name, value)

    def env_method(self, method_name, *args, indices=None, **kwargs):
        return [getattr(self, method_name)(*args, **kwargs)] * len(self._idx(indices))

    def env_is_wrapped(self, wrapper_class, indices=None):
        return [False] * len(self._idx(indices))

    def _idx(self, indices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        return [indices] if isinstance(indices, int) else list(indices)


def make_ppo(
    env: RBCVecEnv,
    *,
    seed: int = 0,
    lr: float = 1e-3,
    hidden: tuple[int, ...] = (64, 64),
    n_epochs: int = 10,
    minibatches: int = 4,
    ent_coef: float = 0.01,
    log_std_init: float = -0.5,
) -> PPO:
    """SB3 PPO: one episode per rollout (``n_steps = episode_actions``), ``minibatches``
    minibatches per epoch (the same number of gradient steps for MARL and SARL), clip 0.2,
    γ = 0.99, GAE λ = 0.95."""
    return PPO(
        "MlpPolicy",
        env,
        n_steps=env.setup.episode_actions,
        batch_size=max(1, env.num_envs * env.setup.episode_actions // minibatches),
        n_epochs=n_epochs,
        learning_rate=lr,
        ent_coef=ent_coef,
        clip_range=0.2,
        gamma=0.99,
        gae_lambda=0.95,
        seed=seed,
        device="cpu",
        verbose=0,
        policy_kwargs={
            "net_arch": {"pi": list(hidden), "vf": list(hidden)},
            "log_std_init": log_std_init,
        },
    )


def ppo_controller(model: PPO, setup: RBCSetup, mode: str) -> Controller:
    """Deterministic (mean) actions of a trained PPO model as a controller."""

    def act(probes: Tensor) -> Tensor:
        b = probes.shape[0]
        if mode == "marl":
            obs = recentre(probes, setup.n_seg).reshape(b * setup.n_seg, -1)
        else:
            obs = probes.reshape(b, -1)
        a, _ = model.predict(obs.numpy().astype(np.float32), deterministic=True)
        return torch.as_tensor(a, dtype=torch.float64).reshape(b, setup.n_seg)

    return act


def uncontrolled(n_seg: int) -> Controller:
    """Zero actions (uniform bottom temperature)."""
    return lambda probes: torch.zeros(probes.shape[0], n_seg, dtype=torch.float64)


def random_controller(n_seg: int, seed: int = 0) -> Controller:
    """Uniform actions in ``[-1, 1]`` (seeded)."""
    g = torch.Generator().manual_seed(seed)
    return lambda probes: (
        2 * torch.rand(probes.shape[0], n_seg, generator=g, dtype=torch.float64) - 1
    )


def proportional_controller(setup: RBCSetup, gain: float = 5.0, row: int = 0) -> Controller:
    """``a_i = -gain * ⟨v⟩_i``: cool the bottom where the fluid near it rises (probe row ``row``,
    averaged over segment ``i``'s probe columns; ``v`` in physical units)."""
    cps = setup.probe_x // setup.n_seg

    def act(probes: Tensor) -> Tensor:
        v = probes[:, 1, row] / setup.u_scale  # (B, px)
        vs = v.reshape(v.shape[0], setup.n_seg, cps).mean(-1)
        return (-gain * vs).clamp(-1, 1).to(torch.float64)

    return act


def rollout(
    setup: RBCSetup,
    controller: Controller,
    *,
    n_sims: int = 1,
    episode_actions: int | None = None,
    init_state: RBCState | None = None,
    keep_fields: bool = False,
) -> dict[str, Any]:
    """Run one episode of ``controller`` on ``n_sims`` simulations.

    Returns ``{"nu": (n_sims, actions) per-action volume Nu, "episode_nu": (n_sims,) mean,
    "nu_wall": ..., "T": final temperature fields (if keep_fields)}``.
    """
    core = RBCControl(setup, n_sims, init_state)
    probes = core.reset()
    nus, walls = [], []
    for _ in range(episode_actions or setup.episode_actions):
        out = core.step(controller(probes))
        probes = out["probes"]
        nus.append(out["nu"])
        walls.append(out["nu_wall"])
    nu = torch.stack(nus, 1)
    res: dict[str, Any] = {"nu": nu, "episode_nu": nu.mean(1), "nu_wall": torch.stack(walls, 1)}
    if keep_fields:
        res["T"] = core.solver.fields(core.state)["T"]
    return res
