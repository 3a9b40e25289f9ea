"""Recipe ``marl_rbc``: invariant multi-agent RL vs single-agent RL for Rayleigh–Bénard control.

* ``train`` (core's loop): a minimal on-policy actor-critic for the shared MARL policy — each
  optimiser step collects ``n_sims`` fresh episodes with the current policy and takes one
  advantage-weighted policy-gradient + value step (:meth:`MarlRBCRecipe.train_step`).
* ``check``: the shared policy's translation equivariance ``A(roll(s)) = roll(A(s))`` on developed
  flow states, with per-agent weights as the negative control.
* ``reproduce``: stable-baselines3 PPO (the ``rl`` extra) for MARL (every agent of every
  simulation is one sub-env of one shared policy) and SARL (one agent, all segments) after the same
  number of CFD episodes, against uncontrolled, random and proportional control; metric: the
  episode-mean Nusselt number of the deterministic policy (lower is better), per seed. Writes the
  Nusselt and temperature plots (PNG), a GIF of the temperature field (uncontrolled, SARL, MARL),
  the trained agents in stable-baselines3's format and the start state in safetensors.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from invariance.control.envs import RBCControl, RBCSetup, baseline_state, save_state
from invariance.control.marl_rbc import (
    ActorCritic,
    PerAgentPolicy,
    SharedPolicy,
    marl_rewards,
    recentre,
)
from invariance.control.recipes import _marl_rbc_plots as _plots
from invariance.core.groups import CyclicShift
from invariance.core.recipe import CheckResult, Recipe, ReproduceResult, TrainConfig
from invariance.core.registry import register
from invariance.core.testing import check_equivariant, check_not_invariant

__all__ = ["MarlRBCConfig", "MarlRBCRecipe"]


@dataclass
class MarlRBCConfig(TrainConfig):
    """The control problem and the training budget (defaults: the tiny preset).

    Args:
        nx, ny, dt, n_seg, probe_y, probe_x, hold_steps, episode_actions, warmup_time: the
            :class:`~invariance.control.envs.RBCSetup` fields (defaults: a 32 x 16 grid, 8
            segments, 4 x 16 probes, 30 steps per action, 10 actions per episode, 40 time
            units of warm-up).
        ra: Rayleigh number (default: ``1e4``).
        n_sims: simulations per rollout (default: ``2``).
        hidden: width of the two hidden layers of policy and critic (default: ``64``).
        gamma: discount of the returns (default: ``0.99``).
        episodes: CFD episodes per RL arm in ``reproduce`` (default: ``8``).
        seeds: seeds of ``reproduce`` (default: ``3``).
        ppo_epochs: PPO epochs per rollout (default: ``10``).
        gain: gain of the proportional controller (default: ``20.0``).
    """

    steps: int = 2
    batch_size: int = 8
    lr: float = 1e-3
    optimizer: str = "adam"
    nx: int = 32
    ny: int = 16
    ra: float = 1e4
    dt: float = 0.05
    n_seg: int = 8
    probe_y: int = 4
    probe_x: int = 16
    hold_steps: int = 30
    episode_actions: int = 10
    warmup_time: float = 40.0
    n_sims: int = 2
    hidden: int = 64
    gamma: float = 0.99
    episodes: int = 8
    seeds: int = 3
    ppo_epochs: int = 10
    gain: float = 20.0

    ranges: ClassVar[dict] = {
        "nx": (8, 1024),
        "ny": (4, 512),
        "ra": (1.0, 1e8),
        "dt": (1e-6, 1.0),
        "n_seg": (1, 256),
        "probe_y": (1, None),
        "probe_x": (1, None),
        "hold_steps": (1, None),
        "episode_actions": (1, None),
        "warmup_time": (0.0, None),
        "n_sims": (1, 256),
        "hidden": (1, 4096),
        "gamma": (0.0, 1.0),
        "seeds": (1, 100),
        "ppo_epochs": (1, 1000),
        "gain": (0.0, None),
    }

    def validate(self) -> None:
        super().validate()
        self.setup()  # grid/segment/probe/dt consistency, with the argument named

    def setup(self) -> RBCSetup:
        from invariance.core.recipe import ConfigError

        try:
            return RBCSetup(
                nx=self.nx,
                ny=self.ny,
                ra=float(self.ra),
                dt=float(self.dt),
                n_seg=self.n_seg,
                probe_y=self.probe_y,
                probe_x=self.probe_x,
                hold_steps=self.hold_steps,
                episode_actions=self.episode_actions,
                warmup_time=float(self.warmup_time),
            )
        except (TypeError, ValueError) as e:
            raise ConfigError(f"MarlRBCConfig: {e}") from None


# ------------------------------------------------------------------------------ rollouts


def _collect(
    model: ActorCritic, core: RBCControl, cfg: MarlRBCConfig, *, sample: bool, seed: int
) -> dict[str, Tensor]:
    """One episode of the shared policy on ``core``: per-step probes, actions and per-agent
    discounted returns (float32), and the episode-mean Nusselt number per simulation."""
    g = torch.Generator().manual_seed(seed)
    s = core.setup
    probes = core.reset()
    obs_l, act_l, rew_l, nus = [], [], [], []
    for _ in range(s.episode_actions):
        obs = recentre(probes, s.n_seg).float()  # (B, n, D)
        with torch.no_grad():
            mean, _ = model(obs.reshape(-1, obs.shape[-1]))
        mean = mean.reshape(core.n_envs, s.n_seg)
        if sample:
            std = model.log_std.exp().detach()
            a = mean + std * torch.randn(mean.shape, generator=g)
        else:
            a = mean
        out = core.step(a.clamp(-1, 1).double())
        r = marl_rewards(out["nu"], out["nu_local"], beta=s.beta, offset=s.nu_offset)
        obs_l.append(probes.float())
        act_l.append(a)
        rew_l.append(r.float())
        nus.append(out["nu"])
        probes = out["probes"]
    ret = torch.zeros_like(rew_l[0])
    rets = []
    for r in reversed(rew_l):
        ret = r + cfg.gamma * ret
        rets.append(ret)
    rets.reverse()
    return {
        "probes": torch.cat(obs_l),
        "actions": torch.cat(act_l),
        "returns": torch.cat(rets),
        "episode_nu": torch.stack(nus, 1).mean(1),
    }


def _init_state(cfg: MarlRBCConfig):
    return baseline_state(cfg.setup())


def _shift_group(setup: RBCSetup) -> CyclicShift:
    return CyclicShift(dim=-1, max_shift=setup.n_seg - 1)


def _roll_probes(setup: RBCSetup):
    cps = setup.probe_x // setup.n_seg
    return lambda g, x: torch.roll(x, g * cps, dims=-1)


def _roll_actions(g, a):
    return torch.roll(a, g, dims=-1)


def _equivariance_checks(net: nn.Module, probes: Tensor, setup: RBCSetup) -> list[CheckResult]:
    grp = _shift_group(setup)
    shared = SharedPolicy(net, setup.n_seg)
    per_agent = PerAgentPolicy(net, setup.n_seg, seed=1)
    return [
        check_equivariant(
            "shared policy: A(roll(s, k segments)) = roll(A(s), k)",
            shared,
            (probes,),
            grp,
            (_roll_probes(setup),),
            _roll_actions,
            tol=1e-9,
        ),
        check_not_invariant(
            "negative control: per-agent weights are not equivariant",
            per_agent,
            (probes,),
            grp,
            (_roll_probes(setup),),
            _roll_actions,
        ),
    ]


def _check_probes(setup: RBCSetup, n: int = 4, seed: int = 0) -> Tensor:
    """Probe grids of developed flow under random actuation (their actions really vary)."""
    core = RBCControl(setup, n, baseline_state(setup))
    core.reset()
    g = torch.Generator().manual_seed(seed)
    out = core.step(2 * torch.rand(n, setup.n_seg, generator=g, dtype=torch.float64) - 1)
    return out["probes"]


# ------------------------------------------------------------------------------ recipe


@register(
    "marl_rbc",
    domain="control",
    paper=(
        "Effective control of two-dimensional Rayleigh-Benard convection: invariant multi-agent "
        "reinforcement learning is all you need"
    ),
    authors="Vignon, Rabault, Vasanth, Alcantara-Avila, Mortensen, Vinuesa",
    year=2023,
    arxiv="2304.02370",
    code_url="https://github.com/KTH-FlowAI/DeepReinforcementLearning_RayleighBenard2D_Control",
    baseline="sarl_ppo",
    symmetry="joint action equivariant to shifts of the flow by whole segments",
    tags=("reinforcement-learning", "fluid-control", "translation"),
)
class MarlRBCRecipe(Recipe):
    """Shared-policy MARL on a batched Rayleigh–Bénard solver; reproduce: SB3 PPO MARL vs SARL."""

    Config: ClassVar[type] = MarlRBCConfig
    presets: ClassVar[dict] = {
        "tiny": {},
        "quick": {"episodes": 8, "n_sims": 2},
        "full": {"episodes": 96, "n_sims": 4, "episode_actions": 20, "warmup_time": 60.0},
    }

    def make_data(self, cfg: MarlRBCConfig, split: str) -> torch.utils.data.Dataset:
        """Transitions of one episode per simulation of a freshly initialised shared policy
        (``probes``, sampled ``actions``, per-agent discounted ``returns``)."""
        off = {"train": 0, "val": 1, "test": 2}[split]
        core = RBCControl(cfg.setup(), cfg.n_sims, _init_state(cfg))
        torch.manual_seed(cfg.seed)
        model = self.build(cfg)
        d = _collect(model, core, cfg, sample=True, seed=1000 * cfg.seed + off)
        return torch.utils.data.TensorDataset(d["probes"], d["actions"], d["returns"])

    def build(self, cfg: MarlRBCConfig) -> nn.Module:
        s = cfg.setup()
        return ActorCritic(s.obs_dim, 1, hidden=(cfg.hidden, cfg.hidden))

    def step(self, model: nn.Module, batch: Any) -> dict[str, Tensor]:
        """Advantage-weighted policy gradient + value regression of the shared policy."""
        probes, actions, returns = batch
        n_seg = actions.shape[-1]
        obs = recentre(probes, n_seg)
        mean, value = model(obs.reshape(-1, obs.shape[-1]))
        value = value.reshape(actions.shape)
        dist = torch.distributions.Normal(mean.reshape(actions.shape), model.log_std.exp())
        logp = dist.log_prob(actions)
        adv = returns - value.detach()
        adv = (adv - adv.mean()) / (adv.std() + 1e-8) if adv.numel() > 1 else adv
        pg = -(logp * adv).mean()
        vf = 0.5 * (returns - value).pow(2).mean()
        ent = dist.entropy().mean()
        return {"loss": pg + vf - 0.01 * ent, "policy_loss": pg, "value_loss": vf}

    def train_step(self, model: nn.Module, batch: Any, optimizer: Any, step: int) -> dict:
        """On-policy: collect ``n_sims`` episodes with the current policy, one update on them."""
        cfg = self._cfg
        core = RBCControl(cfg.setup(), cfg.n_sims, _init_state(cfg))
        d = _collect(model, core, cfg, sample=True, seed=10_000 + 97 * cfg.seed + step)
        out = self.step(model, (d["probes"], d["actions"], d["returns"]))
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        return {**{k: v.detach() for k, v in out.items()}, "episode_nu": d["episode_nu"].mean()}

    def optimizer(self, cfg: MarlRBCConfig, model: nn.Module) -> Any:
        self._cfg = cfg
        return super().optimizer(cfg, model)

    def metrics(self, model: nn.Module, dataset: Any) -> dict[str, float]:
        """Episode-mean Nusselt number of the deterministic shared policy (and the loss)."""
        cfg = getattr(self, "_cfg", None) or MarlRBCConfig()
        core = RBCControl(cfg.setup(), 1, _init_state(cfg))
        with torch.no_grad():
            d = _collect(model, core, cfg, sample=False, seed=0)
            loss = self.step(model, dataset.tensors)
        return {"episode_nu": float(d["episode_nu"].mean()), "loss": float(loss["loss"])}

    def check(self, model: nn.Module, cfg: MarlRBCConfig) -> list[CheckResult]:
        s = cfg.setup()
        probes = _check_probes(s)
        net = _MeanOnly(model).double()
        return _equivariance_checks(net, probes, s)

    def reproduce(self, cfg: MarlRBCConfig, run: Any, *, quick: bool) -> ReproduceResult:
        """PPO MARL vs PPO SARL (same CFD episodes) and three controllers, >= 3 seeds."""
        if quick:
            cfg = dataclasses.replace(cfg, episodes=min(cfg.episodes, 4), n_sims=2)
        old = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny batched solves: one thread is fastest
        try:
            return _reproduce(cfg, run, quick=quick)
        finally:
            torch.set_num_threads(old)


class _MeanOnly(nn.Module):
    """The actor's mean of an :class:`ActorCritic` (a copy), for the symmetry checks."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.m = copy.deepcopy(model)

    def forward(self, obs: Tensor) -> Tensor:
        return self.m(obs.to(next(self.m.parameters()).dtype))[0]


# ------------------------------------------------------------------------------ reproduce

ARMS = ("uncontrolled", "random", "proportional", "sarl_ppo", "marl_ppo")


def _sb3_equivariance_error(model: Any, setup: RBCSetup, probes: Tensor) -> tuple[float, float]:
    """Relative error of ``A(roll(s)) = roll(A(s))`` for a trained SB3 MARL policy (float64 copy
    of its mean action), max over all shifts by whole segments; and the actions' spread."""
    pol = copy.deepcopy(model.policy).double()
    n = setup.n_seg

    def act(p: Tensor) -> Tensor:
        obs = recentre(p, n).reshape(p.shape[0] * n, -1)
        with torch.no_grad():  # SB3's preprocessing casts to float32, so call the layers directly
            latent = pol.mlp_extractor.forward_actor(pol.pi_features_extractor(obs))
            a = pol.action_net(latent)
        return a.reshape(p.shape[0], n).clamp(-1, 1)

    ref = act(probes)
    roll = _roll_probes(setup)
    err = max(
        float((act(roll(k, probes)) - torch.roll(ref, k, -1)).abs().max()) for k in range(1, n)
    )
    spread = float(ref.max() - ref.min())
    return err / max(1.0, float(ref.abs().max())), spread


def _train_ppo(cfg: MarlRBCConfig, setup: RBCSetup, init: Any, mode: str, seed: int) -> Any:
    from invariance.control.rl import RBCVecEnv, make_ppo

    torch.manual_seed(seed)
    env = RBCVecEnv(setup, cfg.n_sims, mode, init)
    model = make_ppo(
        env, seed=seed, lr=cfg.lr, hidden=(cfg.hidden, cfg.hidden), n_epochs=cfg.ppo_epochs
    )
    iters = max(1, math.ceil(cfg.episodes / cfg.n_sims))
    model.learn(iters * setup.episode_actions * env.num_envs)
    return model, list(env.episode_nu)


def _reproduce(cfg: MarlRBCConfig, run: Any, *, quick: bool) -> ReproduceResult:
    from invariance.control.rl import (
        ppo_controller,
        proportional_controller,
        random_controller,
        rollout,
        uncontrolled,
    )

    t0 = time.time()
    setup = cfg.setup()
    init = baseline_state(setup)
    n = setup.n_seg
    seeds = list(range(max(cfg.seeds, 3)))
    vals: dict[str, list[float]] = {a: [] for a in ARMS}
    series: dict[str, Tensor] = {}
    snaps: dict[str, Tensor] = {}
    curves: dict[str, list[list[float]]] = {"marl_ppo": [], "sarl_ppo": []}
    inv: list[float] = []
    spreads: list[float] = []
    kw = {"init_state": init, "keep_fields": True, "keep_frames": True}
    fixed = {
        "uncontrolled": rollout(setup, uncontrolled(n), **kw),
        "proportional": rollout(setup, proportional_controller(setup, cfg.gain), **kw),
    }
    frames: dict[str, Tensor] = {}
    saved: list[str] = []
    if run is not None and getattr(
        run, "enabled", True
    ):  # the episode start, to restart or resume episodes
        saved.append(str(save_state(run.path / "baseline_state.safetensors", init)))
    probes = _check_probes(setup)
    for s in seeds:
        outs = dict(fixed)  # deterministic controllers: the same value for every seed
        outs["random"] = rollout(setup, random_controller(n, seed=s), **kw)
        for mode in ("sarl", "marl"):
            model, curve = _train_ppo(cfg, setup, init, mode, s)
            curves[f"{mode}_ppo"].append(curve)
            outs[f"{mode}_ppo"] = rollout(setup, ppo_controller(model, setup, mode), **kw)
            if run is not None and getattr(
                run, "enabled", True
            ):  # stable-baselines3's own format (PPO.load)
                model.save(run.path / f"{mode}_ppo_seed{s}.zip")
                saved.append(str(run.path / f"{mode}_ppo_seed{s}.zip"))
            if mode == "marl":
                e, sp = _sb3_equivariance_error(model, setup, probes)
                inv.append(e)
                spreads.append(sp)
        for a in ARMS:
            vals[a].append(float(outs[a]["episode_nu"][0]))
            if s == seeds[0]:
                series[a] = outs[a]["nu"][0]
                snaps[a] = outs[a]["T"][0]
                frames[a] = outs[a]["frames"][:, 0]
        if run is not None:
            run.log_metrics({"seed": s, **{a: vals[a][-1] for a in ARMS}})
    plots = _plots.plots(run, setup, series, snaps, curves) if run is not None else []
    if run is not None and getattr(run, "enabled", True):
        plots += _plots.animation(run, setup, frames, series)
    episodes = max(1, math.ceil(cfg.episodes / cfg.n_sims)) * cfg.n_sims
    not_showable = ""
    if quick:
        not_showable = (
            f"quick trains PPO for {episodes} CFD episodes per arm; MARL vs SARL needs on the "
            f"order of 100 (the paper: 350); this run shows the solver, the controllers and the "
            f"pipeline"
        )
    base_nu = vals["uncontrolled"][0]
    if run is not None:  # the training curves (long) go to recipe_results.json and the plot
        run.write_results({"episode_nu": vals, "training_episode_nu": curves})
    return ReproduceResult(
        task=(
            f"Rayleigh-Benard control, Ra {setup.ra:g}, grid {setup.nx}x{setup.ny}, "
            f"{n} segments, {setup.episode_actions} actions x {setup.hold_steps * setup.dt:g} "
            f"time units, PPO after {episodes} CFD episodes"
        ),
        metric="episode-mean Nusselt number",
        method="marl_ppo",
        baseline="sarl_ppo",
        method_values=vals["marl_ppo"],
        baseline_values=vals["sarl_ppo"],
        higher_is_better=False,
        invariance_error=max(inv),
        seeds=seeds,
        arms={a: vals[a] for a in ("uncontrolled", "random", "proportional")},
        not_showable=not_showable,
        seconds=time.time() - t0,
        plots=plots,
        details={
            "cfd_episodes_per_rl_arm": episodes,
            "uncontrolled_nu": base_nu,
            "reduction_vs_uncontrolled": {
                a: 1 - sum(v) / len(v) / base_nu for a, v in vals.items() if a != "uncontrolled"
            },
            "training_curves": "recipe_results.json (training_episode_nu), marl_rbc_nusselt.png",
            "invariance_error_is": (
                "max relative |A(roll(s, k segments)) - roll(A(s), k)| of the trained MARL policy "
                "(float64 copy), k = 1..n_seg-1, over 4 developed states"
            ),
            "marl_action_spread": spreads,
            "proportional_gain": cfg.gain,
            "saved": [str(p).rsplit("/", 1)[-1] for p in saved],
        },
    )
