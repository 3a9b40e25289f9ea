"""invariance.control: invariant multi-agent reinforcement learning for Rayleigh-Benard convection.

* :mod:`~invariance.control.rbc`: a batched float64 2-D Boussinesq solver (Fourier x, finite
  differences y, SBDF2) with segment-wise bottom actuation and Nusselt numbers;
* :mod:`~invariance.control.envs`: the control problem as a batched core, a gymnasium env (SARL)
  and a PettingZoo parallel env (MARL);
* :mod:`~invariance.control.marl_rbc`: recentred observations, the shared (translation-equivariant)
  policy and the rewards of Vignon et al. (2023), registered as ``marl_rbc``;
* :mod:`~invariance.control.rl` (extra ``rl``): a stable-baselines3 VecEnv in which every agent is
  a sub-env, PPO, and the baseline controllers (imported on demand).

Importing this package loads torch, gymnasium, pettingzoo and invariance.core only.
"""

from invariance.control import benches as _benches  # noqa: F401  (registers the benches)
from invariance.control import recipes as _recipes  # noqa: F401  (registers the methods)
from invariance.control.envs import (
    RBCControl,
    RBCEnv,
    RBCParallelEnv,
    RBCSetup,
    baseline_state,
    load_state,
    save_state,
)
from invariance.control.marl_rbc import (
    ActorCritic,
    PerAgentPolicy,
    SharedPolicy,
    marl_rewards,
    recentre,
    sarl_rewards,
)
from invariance.control.rbc import (
    RBCSolver,
    RBCState,
    SimulationDiverged,
    blending_matrix,
    bottom_profile,
    segment_temperatures,
)
from invariance.control.recipes.marl_rbc import MarlRBCConfig, MarlRBCRecipe

__version__ = "0.1.0"

__all__ = [
    "RBCSolver",
    "RBCState",
    "SimulationDiverged",
    "bottom_profile",
    "segment_temperatures",
    "blending_matrix",
    "RBCSetup",
    "RBCControl",
    "RBCEnv",
    "RBCParallelEnv",
    "baseline_state",
    "save_state",
    "load_state",
    "recentre",
    "marl_rewards",
    "sarl_rewards",
    "ActorCritic",
    "SharedPolicy",
    "PerAgentPolicy",
    "MarlRBCConfig",
    "MarlRBCRecipe",
]
