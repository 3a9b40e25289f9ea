r"""Invariant multi-agent RL for Rayleigh–Bénard control: recentred observations, a shared policy.

Paper: Vignon, Rabault, Vasanth, Alcántara-Ávila, Mortensen, Vinuesa, *Effective control of
two-dimensional Rayleigh–Bénard convection: invariant multi-agent reinforcement learning is all you
need*, Physics of Fluids 35, 065146 (2023), arXiv:2304.02370. Official code:
https://github.com/KTH-FlowAI/DeepReinforcementLearning_RayleighBenard2D_Control (MIT; shenfun CFD,
Tensorforce PPO).

Mechanism. The bottom plate is split into ``n_seg`` segments, one agent each. Every agent sees the
*whole* probe grid rolled in x so that its own segment sits at the centre (:func:`recentre`), and
all agents share one policy network. Because the periodic channel is invariant under shifts by one
segment, the joint action is then translation *equivariant*:
``A(roll(s, one segment)) = roll(A(s), 1)`` exactly (:class:`SharedPolicy`), and the experience of
every segment trains the same network, so the action dimension does not grow with ``n_seg``. Agent
``i``'s reward mixes the global and its local Nusselt number,
``r_i = -((1-β) Nu + β Nu_i) + offset`` with ``β = 0.0015`` and ``offset = 2.6726`` (the official
values; :func:`marl_rewards`). The single-agent baseline (SARL) maps the full probe grid to all
``n_seg`` actions with one network and gets ``-Nu + offset``.

Tested properties:

* ``A(roll(s)) = roll(A(s))`` for the shared policy to round-off, with per-agent weights as the
  negative control (``test_control_envs.py::test_shared_policy_is_translation_equivariant``);
* with ``β = 0`` every agent gets the same reward (``test_marl_rewards_global_when_beta_zero``);
* the solver commutes with segment shifts and the reflection, conduction is stationary, the onset
  straddles Ra_c = 1707.76 (``test_control_solver.py``);
* learning: stable-baselines3 PPO on the shared policy (:class:`~invariance.control.rl.RBCVecEnv`)
  lowers the episode-mean Nusselt number from 2.80 to 2.62 in 8 CFD episodes (uncontrolled
  2.81; a uniform joint action cannot lower it, the actuation preserves the mean), and the agent
  saves and resumes in SB3's own format (``test_control_learning.py``).

Parity with the official code cannot be run here: its CFD (shenfun, mpi4py-fft: source
distributions only, needing a compiler with FFTW/MPI headers) and its RL (Tensorforce 0.6.5, which
pins tensorflow 2.6.0 and numpy 1.19.5: no wheels for Python 3.11) do not install. What is
compared instead: the
actuation profile against the official ``Tfunc.apply_T`` (run with its shenfun import stubbed:
``test_control_golden.py``), the steady Nusselt number at Ra 1e4 against the official baseline
2.6726 (``bench nusselt``), and the reward constants (β = 0.0015, offset 2.6726).

Deviations: probes are grid points (no interpolation) and the velocity scale of the observation is
2.5 (our free-fall units have H = 1); the local Nusselt number is the volume Nusselt number over the
segment's columns of the full field (the official code uses 3 probe columns and ``np.gradient``
with unit spacing); PPO is stable-baselines3's (the official code uses Tensorforce).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

from invariance.control.actuation import _count, _finite, _number

__all__ = [
    "recentre",
    "marl_rewards",
    "ActorCritic",
    "SharedPolicy",
    "PerAgentPolicy",
    "sarl_rewards",
]


def recentre(probes: Tensor, n_seg: int) -> Tensor:
    """Per-agent observations: the probe grid rolled in x so that agent ``i``'s segment is centred.

    Args:
        probes: ``(B, C, py, px)`` probe values (``px`` divisible by ``n_seg``).
        n_seg: number of segments (agents).

    Returns ``(B, n_seg, C * py * px)``. Rolling ``probes`` by ``px / n_seg`` columns maps agent
    ``i``'s observation to agent ``i+1``'s (the property the shared policy turns into
    equivariance).
    """
    if not isinstance(probes, Tensor):
        raise TypeError(f"probes must be a tensor, got {type(probes).__name__}")
    if probes.dim() != 4:
        raise ValueError(f"probes must be (B, C, py, px), got shape {tuple(probes.shape)}")
    if isinstance(n_seg, bool) or not isinstance(n_seg, int) or n_seg < 1:
        raise ValueError(f"n_seg must be an int >= 1, got {n_seg!r}")
    if not probes.is_floating_point():
        raise TypeError(f"probes must be a floating tensor, got dtype {probes.dtype}")
    if probes.numel() == 0:
        raise ValueError(f"probes is empty (shape {tuple(probes.shape)})")
    px = probes.shape[-1]
    if px % n_seg:
        raise ValueError(f"n_seg={n_seg} must divide the probe columns px={px}")
    if not torch.isfinite(probes).all():
        raise ValueError("probes contains NaN or inf")
    cps = px // n_seg
    centre = px // 2 - cps // 2
    out = [torch.roll(probes, centre - i * cps, dims=-1) for i in range(n_seg)]
    return torch.stack(out, dim=1).flatten(2)


def marl_rewards(
    nu_global: Tensor, nu_local: Tensor, *, beta: float = 0.0015, offset: float = 2.6726
) -> Tensor:
    """``r_i = -((1 - beta) Nu + beta Nu_i) + offset`` (official ``reward_functions.py``).

    Args:
        nu_global: ``(B,)`` global Nusselt number.
        nu_local: ``(B, n_seg)`` local Nusselt numbers.
        beta: weight of the local number (default: ``0.0015``).
        offset: the uncontrolled Nusselt number (default: ``2.6726``).

    Returns ``(B, n_seg)``.
    """
    if isinstance(beta, bool) or not isinstance(beta, (int, float)):
        raise TypeError(f"beta must be a number, got {type(beta).__name__}")
    if not (math.isfinite(beta) and 0 <= beta <= 1):
        raise ValueError(f"beta must be in [0, 1], got {beta!r}")
    for name, v in (("nu_global", nu_global), ("nu_local", nu_local)):
        if not isinstance(v, Tensor) or not v.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor, got {type(v).__name__}")
        if v.numel() == 0 or not torch.isfinite(v).all():
            raise ValueError(f"{name} must be non-empty and finite")
    if (
        isinstance(offset, bool)
        or not isinstance(offset, (int, float))
        or not math.isfinite(offset)
    ):
        raise ValueError(f"offset must be a finite number, got {offset!r}")
    if nu_global.dim() != 1 or nu_local.dim() != 2 or nu_local.shape[0] != nu_global.shape[0]:
        raise ValueError(
            f"nu_global must be (B,) and nu_local (B, n_seg), got {tuple(nu_global.shape)} and "
            f"{tuple(nu_local.shape)}"
        )
    return -((1 - beta) * nu_global[:, None] + beta * nu_local) + offset


def sarl_rewards(nu_global: Tensor, *, offset: float = 2.6726) -> Tensor:
    """Single-agent reward ``-Nu + offset``.

    Args:
        nu_global: ``(B,)`` global Nusselt number.
        offset: the uncontrolled Nusselt number (default: ``2.6726``).

    Returns ``(B,)``.
    """
    _finite(nu_global, "nu_global")
    if nu_global.dim() != 1:
        raise ValueError(f"nu_global must be (B,), got shape {tuple(nu_global.shape)}")
    offset = _number(offset, "offset", positive=False)
    return -nu_global + offset


class ActorCritic(nn.Module):
    """A dense actor-critic: Gaussian policy with tanh-free mean and a state-independent log-std.

    Args:
        obs_dim: observation size.
        act_dim: action size (1 per agent for MARL, ``n_seg`` for SARL) (default: ``1``).
        hidden: widths of the hidden layers (default: ``(64, 64)``; the paper uses 512-512).
        log_std: initial log standard deviation (default: ``-0.5``).

    Shapes: ``obs (N, obs_dim) -> mean (N, act_dim), value (N,)``.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int = 1,
        *,
        hidden: tuple[int, ...] = (64, 64),
        log_std: float = -0.5,
    ) -> None:
        super().__init__()
        _count(obs_dim, "obs_dim")
        _count(act_dim, "act_dim")
        if isinstance(hidden, (str, bytes)) or not hasattr(hidden, "__iter__"):
            raise TypeError(f"hidden must be a sequence of ints, got {type(hidden).__name__}")
        for h in hidden:
            _count(h, "hidden")
        log_std = _number(log_std, "log_std", positive=False)
        self.obs_dim, self.act_dim, self.hidden = obs_dim, act_dim, tuple(hidden)

        def mlp(out: int) -> nn.Sequential:
            layers: list[nn.Module] = []
            d = obs_dim
            for h in hidden:
                layers += [nn.Linear(d, h), nn.Tanh()]
                d = h
            layers.append(nn.Linear(d, out))
            return nn.Sequential(*layers)

        self.pi = mlp(act_dim)
        self.vf = mlp(1)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(log_std)))

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """``obs (N, obs_dim)`` -> ``(mean (N, act_dim), value (N,))``."""
        _finite(obs, "obs")
        if obs.dim() != 2 or obs.shape[-1] != self.obs_dim:
            raise ValueError(f"obs must be (N, {self.obs_dim}), got shape {tuple(obs.shape)}")
        if obs.dtype != self.log_std.dtype:
            raise TypeError(
                f"obs must have the model's dtype {self.log_std.dtype}, got {obs.dtype}"
            )
        return self.pi(obs), self.vf(obs).squeeze(-1)

    def extra_repr(self) -> str:
        return f"obs_dim={self.obs_dim}, act_dim={self.act_dim}, hidden={self.hidden}"


class SharedPolicy(nn.Module):
    """Invariant MARL: one actor applied to every agent's recentred observation.

    Args:
        net: a module mapping ``(N, obs_dim)`` to ``(N, 1)`` (an :class:`ActorCritic`'s mean or
            any callable module; for an ActorCritic the mean action is used).
        n_seg: number of agents.

    Shapes: ``probes (B, C, py, px) -> actions (B, n_seg)`` in ``[-1, 1]`` (clipped).

    **Equivariance.** ``self(roll(probes, px/n_seg, -1)) == roll(self(probes), 1, -1)``.
    """

    def __init__(self, net: nn.Module, n_seg: int) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be an nn.Module, got {type(net).__name__}")
        self.net, self.n_seg = net, _count(n_seg, "n_seg")

    def _act(self, obs: Tensor) -> Tensor:
        out = self.net(obs)
        return (out[0] if isinstance(out, tuple) else out).squeeze(-1)

    def forward(self, probes: Tensor) -> Tensor:
        obs = recentre(probes, self.n_seg)  # (B, n, D)
        b = obs.shape[0]
        return self._act(obs.reshape(b * self.n_seg, -1)).reshape(b, self.n_seg).clamp(-1, 1)


class PerAgentPolicy(SharedPolicy):
    """Negative control: the same architecture with separate weights per agent (not equivariant).

    Built from a template ``net`` copied ``n_seg`` times, each copy re-initialised
    (``reset_parameters`` of its layers under seed ``seed + i``), so the agents really differ.
    """

    def __init__(self, net: nn.Module, n_seg: int, *, seed: int = 0) -> None:
        super().__init__(net, n_seg)
        _count(seed, "seed", lo=0)
        nets = []
        for i in range(n_seg):
            m = copy.deepcopy(net)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + i)
                for layer in m.modules():
                    if layer is not m and hasattr(layer, "reset_parameters"):
                        layer.reset_parameters()
            nets.append(m)
        self.nets = nn.ModuleList(nets)

    def forward(self, probes: Tensor) -> Tensor:
        obs = recentre(probes, self.n_seg)
        cols = []
        for i, m in enumerate(self.nets):
            out = m(obs[:, i])
            cols.append((out[0] if isinstance(out, tuple) else out).squeeze(-1))
        return torch.stack(cols, dim=1).clamp(-1, 1)
