"""Bad-input harness over the public entry points of invariance-control."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from invariance.control import (
    ActorCritic,
    PerAgentPolicy,
    RBCControl,
    RBCEnv,
    RBCParallelEnv,
    RBCSetup,
    RBCSolver,
    SharedPolicy,
    baseline_state,
    blending_matrix,
    bottom_profile,
    marl_rewards,
    recentre,
    sarl_rewards,
    segment_temperatures,
)
from invariance.core.testing import fuzz_bad_inputs, fuzz_table

SETUP = RBCSetup(
    nx=16, ny=8, n_seg=4, probe_y=2, probe_x=8, hold_steps=2, episode_actions=2, warmup_time=1.0
)
SOLVER = RBCSolver(16, 8)
STATE = SOLVER.perturbed_state(1, amplitude=0.05, mode=1)
CORE = RBCControl(SETUP, 2)
CORE.reset()
G = torch.Generator().manual_seed(0)
ACT = 2 * torch.rand(2, 4, generator=G, dtype=torch.float64) - 1
PROBES = torch.randn(2, 3, 2, 8, generator=G, dtype=torch.float64)
NET = ActorCritic(SETUP.obs_dim, 1, hidden=(8, 8)).double()

# (entry point, valid kwargs, options)
ENTRY_POINTS = [
    (
        RBCSolver,
        dict(nx=16, ny=8, ra=1e4, pr=0.7, lx=3.14, dt=0.05, max_cfl=1.5),
        dict(name="RBCSolver"),
    ),
    (
        lambda bottom, n_steps: SOLVER.step(STATE, bottom, n_steps),
        dict(bottom=torch.ones(1, 16, dtype=torch.float64), n_steps=1),
        dict(name="RBCSolver.step"),
    ),
    (
        segment_temperatures,
        dict(actions=ACT, amplitude=0.75, mean=1.0),
        dict(accept=("mean:negative",)),
    ),
    (
        bottom_profile,
        dict(actions=ACT, nx=16, amplitude=0.75, half_width=0.015, lx=3.14),
        dict(),
    ),
    (
        RBCSetup,
        dict(
            nx=16,
            ny=8,
            n_seg=4,
            probe_y=2,
            probe_x=8,
            hold_steps=2,
            episode_actions=2,
            warmup_time=1.0,
            dt=0.05,
            ra=1e4,
            beta=0.0015,
            nu_offset=2.6726,
        ),
        dict(accept=("nu_offset:negative",)),
    ),
    (
        lambda actions: CORE.step(actions),
        dict(actions=ACT),
        dict(name="RBCControl.step"),
    ),
    (blending_matrix, dict(n_seg=4, nx=16, half_width=0.1, lx=3.14), dict()),
    (
        lambda state, n_seg: SOLVER.local_nusselt(state, n_seg),
        dict(state=STATE, n_seg=4),
        dict(name="RBCSolver.local_nusselt"),
    ),
    (
        lambda batch, amplitude, mode, noise, seed: SOLVER.perturbed_state(
            batch, amplitude=amplitude, mode=mode, noise=noise, seed=seed
        ),
        dict(batch=1, amplitude=0.05, mode=1, noise=0.01, seed=0),
        dict(name="RBCSolver.perturbed_state"),
    ),
    (
        lambda T: SOLVER.state_from_fields(T),
        dict(T=SOLVER.fields(STATE)["T"]),
        dict(name="RBCSolver.state_from_fields"),
    ),
    (
        lambda state, shift: SOLVER.roll(state, shift),
        dict(state=STATE, shift=4),
        dict(name="RBCSolver.roll", accept=("shift:negative",)),
    ),
    (RBCControl, dict(setup=SETUP, n_envs=2), dict()),
    (baseline_state, dict(setup=SETUP, seed=0), dict()),
    (recentre, dict(probes=PROBES, n_seg=4), dict()),
    (
        sarl_rewards,
        dict(nu_global=torch.rand(2, dtype=torch.float64) + 2, offset=2.6726),
        dict(accept=("offset:negative",)),
    ),
    (
        ActorCritic,
        dict(obs_dim=8, act_dim=1, hidden=(4, 4), log_std=-0.5),
        dict(accept=("log_std:negative",)),
    ),
    (
        lambda obs: NET(obs),
        dict(obs=torch.randn(3, SETUP.obs_dim, generator=G, dtype=torch.float64)),
        dict(name="ActorCritic.forward"),
    ),
    (SharedPolicy, dict(net=NET, n_seg=4), dict()),
    (
        lambda probes: SharedPolicy(NET, 4)(probes),
        dict(probes=PROBES),
        dict(name="SharedPolicy.forward"),
    ),
    (PerAgentPolicy, dict(net=NET, n_seg=4, seed=0), dict()),
    (
        marl_rewards,
        dict(
            nu_global=torch.rand(2, dtype=torch.float64) + 2,
            nu_local=torch.rand(2, 4, dtype=torch.float64) + 2,
            beta=0.0015,
            offset=2.6726,
        ),
        dict(accept=("offset:negative",)),
    ),
]


def _rl_entry_points():
    """The ``rl`` extra's entry points (stable-baselines3 installed)."""
    from invariance.control.rl import (
        RBCVecEnv,
        make_ppo,
        ppo_controller,
        proportional_controller,
        random_controller,
        rollout,
        uncontrolled,
    )

    venv = RBCVecEnv(SETUP, 1, "marl")
    return [
        (RBCVecEnv, dict(setup=SETUP, n_sims=1, mode="marl"), dict()),
        (
            make_ppo,
            dict(
                env=venv,
                seed=0,
                lr=1e-3,
                hidden=(4, 4),
                n_epochs=1,
                minibatches=1,
                ent_coef=0.0,
                log_std_init=-0.5,
            ),
            dict(accept=("log_std_init:negative",)),
        ),
        (ppo_controller, dict(model=make_ppo(venv), setup=SETUP, mode="marl"), dict()),
        (rollout, dict(setup=SETUP, controller=uncontrolled(4), n_sims=1, episode_actions=2), {}),
        (uncontrolled, dict(n_seg=4), dict()),
        (random_controller, dict(n_seg=4, seed=0), dict()),
        (proportional_controller, dict(setup=SETUP, gain=5.0, row=0), dict()),
    ]


try:
    import stable_baselines3  # noqa: F401

    ENTRY_POINTS += _rl_entry_points()
except ImportError:  # the rl extra is not installed: its entry points are not public
    pass


def _name(entry):
    fn, _, opts = entry
    return opts.get("name") or getattr(fn, "__name__", type(fn).__name__)


def _run(entry):
    fn, kwargs, opts = entry
    opts = {**opts, "name": _name(entry)}
    return fuzz_bad_inputs(fn, kwargs, **opts)


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=[_name(e) for e in ENTRY_POINTS])
def test_bad_inputs_handled(entry):
    rep = _run(entry)
    assert rep.tried > 0
    assert not rep.failures, "\n".join(rep.failures)


@pytest.mark.parametrize(
    "bad", [np.full(4, np.nan, np.float32), np.zeros(5, np.float32), "x"], ids=str
)
def test_env_step_rejects_bad_actions(bad):
    env = RBCEnv(SETUP)
    env.reset(seed=0)
    with pytest.raises((ValueError, TypeError), match="action"):
        env.step(bad)
    penv = RBCParallelEnv(SETUP)
    penv.reset(seed=0)
    per_agent = bad if isinstance(bad, str) else bad[:1] if bad.size == 4 else bad[:2]
    with pytest.raises((ValueError, TypeError), match="actions"):
        penv.step({a: per_agent for a in penv.agents})


def test_bad_input_summary():
    reports = [_run(e) for e in ENTRY_POINTS]
    print()
    print(fuzz_table(reports, markdown=True))
    assert all(not r.failures for r in reports)
