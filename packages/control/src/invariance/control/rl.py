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

from invariance.control.actuation import _count, _number
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
        _check_setup(setup)
        _count(n_sims, "n_sims")
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
    γ = 0.99, GAE λ = 0.95.

    Args:
        env: the :class:`RBCVecEnv` (``"marl"``: the PPO policy is the shared policy).
        seed: seed of SB3 (default: ``0``).
        lr: Adam learning rate (default: ``1e-3``, the paper's).
        hidden: widths of the policy and value networks (default: ``(64, 64)``).
        n_epochs: PPO epochs per rollout (default: ``10``).
        minibatches: minibatches per epoch (default: ``4``).
        ent_coef: entropy bonus (default: ``0.01``, the paper's).
        log_std_init: initial log standard deviation of the actions (default: ``-0.5``).

    Save and resume with SB3's own format: ``model.save(path)``, ``PPO.load(path, env=env)``,
    ``model.learn(n, reset_num_timesteps=False)``.
    """
    if not isinstance(env, RBCVecEnv):
        raise TypeError(f"env must be an RBCVecEnv, got {type(env).__name__}")
    _count(seed, "seed", lo=0)
    _number(lr, "lr")
    _count(n_epochs, "n_epochs")
    _count(minibatches, "minibatches")
    _number(ent_coef, "ent_coef", positive=False)
    _number(log_std_init, "log_std_init", positive=False)
    if ent_coef < 0:
        raise ValueError(f"ent_coef must be >= 0, got {ent_coef}")
    if isinstance(hidden, (str, bytes)) or not hasattr(hidden, "__iter__"):
        raise TypeError(f"hidden must be a sequence of ints, got {type(hidden).__name__}")
    for h in hidden:
        _count(h, "hidden")
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
    """Deterministic (mean) actions of a trained PPO model as a controller.

    Args:
        model: a PPO model trained on an :class:`RBCVecEnv` of ``setup``.
        setup: the control problem.
        mode: ``"marl"`` (one action per recentred agent view) or ``"sarl"``.
    """
    if not hasattr(model, "predict"):
        raise TypeError(f"model must be a stable-baselines3 model, got {type(model).__name__}")
    _check_setup(setup)
    if mode not in ("marl", "sarl"):
        raise ValueError(f"mode must be 'marl' or 'sarl', got {mode!r}")

    def act(probes: Tensor) -> Tensor:
        b = probes.shape[0]
        if mode == "marl":
            obs = recentre(probes, setup.n_seg).reshape(b * setup.n_seg, -1)
        else:
            obs = probes.reshape(b, -1)
        a, _ = model.predict(obs.numpy().astype(np.float32), deterministic=True)
        return torch.as_tensor(a, dtype=torch.float64).reshape(b, setup.n_seg)

    return act


def _check_setup(setup: Any) -> None:
    if not isinstance(setup, RBCSetup):
        raise TypeError(f"setup must be an RBCSetup, got {type(setup).__name__}")


def uncontrolled(n_seg: int) -> Controller:
    """Zero actions (uniform bottom temperature) for ``n_seg`` segments."""
    _count(n_seg, "n_seg")
    return lambda probes: torch.zeros(probes.shape[0], n_seg, dtype=torch.float64)


def random_controller(n_seg: int, seed: int = 0) -> Controller:
    """Uniform actions in ``[-1, 1]`` for ``n_seg`` segments (seeded by ``seed``)."""
    _count(n_seg, "n_seg")
    _count(seed, "seed", lo=0)
    g = torch.Generator().manual_seed(seed)
    return lambda probes: (
        2 * torch.rand(probes.shape[0], n_seg, generator=g, dtype=torch.float64) - 1
    )


def proportional_controller(setup: RBCSetup, gain: float = 5.0, row: int = 0) -> Controller:
    """``a_i = -gain * ⟨v⟩_i``: cool the bottom where the fluid near it rises (probe row ``row``,
    averaged over segment ``i``'s probe columns; ``v`` in physical units; ``gain >= 0``)."""
    _check_setup(setup)
    gain = _number(gain, "gain", positive=False)
    if gain < 0:
        raise ValueError(f"gain must be >= 0 (a negative gain heats rising fluid), got {gain}")
    _count(row, "row", lo=0)
    if row >= setup.probe_y:
        raise ValueError(f"row must be < probe_y={setup.probe_y}, got {row}")
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
    keep_frames: bool = False,
) -> dict[str, Any]:
    """Run one episode of ``controller`` on ``n_sims`` simulations.

    Args:
        setup: the control problem.
        controller: ``probes (B, 3, py, px) -> actions (B, n_seg)``.
        n_sims: simulations run together (default: ``1``).
        episode_actions: actions in the episode (default: ``setup.episode_actions``).
        init_state: the start (default: the setup's baseline state).
        keep_fields: also return the final temperature field (default: ``False``).
        keep_frames: also return the temperature field at the start and after every action
            (default: ``False``).

    Returns ``{"nu": (n_sims, actions) per-action volume Nu, "episode_nu": (n_sims,) mean,
    "nu_wall": ..., "T": (n_sims, ny + 1, nx) final temperature (if keep_fields),
    "frames": (actions + 1, n_sims, ny + 1, nx) temperatures (if keep_frames)}``.
    """
    _check_setup(setup)
    if not callable(controller):
        raise TypeError(f"controller must be callable, got {type(controller).__name__}")
    _count(n_sims, "n_sims")
    if episode_actions is not None:
        _count(episode_actions, "episode_actions")
    core = RBCControl(setup, n_sims, init_state)
    probes = core.reset()
    nus, walls = [], []
    frames = [core.solver.fields(core.state)["T"]] if keep_frames else []
    for _ in range(setup.episode_actions if episode_actions is None else episode_actions):
        out = core.step(controller(probes))
        probes = out["probes"]
        nus.append(out["nu"])
        walls.append(out["nu_wall"])
        if keep_frames:
            frames.append(core.solver.fields(core.state)["T"])
    nu = torch.stack(nus, 1)
    res: dict[str, Any] = {"nu": nu, "episode_nu": nu.mean(1), "nu_wall": torch.stack(walls, 1)}
    if keep_fields:
        res["T"] = core.solver.fields(core.state)["T"]
    if keep_frames:
        res["frames"] = torch.stack(frames)
    return res
