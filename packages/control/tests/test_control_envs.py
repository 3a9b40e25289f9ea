"""Environments: gymnasium/PettingZoo API checks, recentring, rewards, policy equivariance."""

import warnings

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
    SharedPolicy,
    baseline_state,
    load_state,
    marl_rewards,
    recentre,
    save_state,
)
from invariance.core.groups import CyclicShift
from invariance.core.testing import check_equivariant, check_not_invariant

SETUP = RBCSetup(
    nx=32,
    ny=16,
    n_seg=4,
    probe_y=4,
    probe_x=16,
    hold_steps=5,
    episode_actions=4,
    warmup_time=30.0,
)


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _probes(n=3, seed=0):
    core = RBCControl(SETUP, n)
    core.reset()
    g = torch.Generator().manual_seed(seed)
    return core.step(2 * torch.rand(n, SETUP.n_seg, generator=g, dtype=torch.float64) - 1)


def test_gymnasium_env_passes_the_checker():
    from gymnasium.utils.env_checker import check_env

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*infinity.*")
        check_env(RBCEnv(SETUP), skip_render_check=True)


def test_pettingzoo_parallel_env_passes_the_api_test():
    from pettingzoo.test import parallel_api_test

    parallel_api_test(RBCParallelEnv(SETUP), num_cycles=6)


def test_recentre_maps_agent_views_under_a_segment_shift():
    p = _probes()["probes"]
    cps = SETUP.probe_x // SETUP.n_seg
    o = recentre(p, SETUP.n_seg)
    o_rolled = recentre(torch.roll(p, cps, -1), SETUP.n_seg)
    # agent i+1 of the shifted flow sees what agent i saw
    assert torch.equal(o_rolled[:, 1:], o[:, :-1])
    assert torch.equal(o_rolled[:, 0], o[:, -1])
    assert not torch.equal(o[:, 0], o[:, 1])


def _roll_probes(g, x):
    return torch.roll(x, g * (SETUP.probe_x // SETUP.n_seg), -1)


def _roll_actions(g, a):
    return torch.roll(a, g, -1)


def test_shared_policy_is_translation_equivariant():
    p = _probes()["probes"]
    net = ActorCritic(SETUP.obs_dim, 1, hidden=(32, 32)).double()
    grp = CyclicShift(dim=-1, max_shift=SETUP.n_seg - 1)
    ok = check_equivariant(
        "shared", SharedPolicy(net, SETUP.n_seg), (p,), grp, (_roll_probes,), _roll_actions
    )
    assert ok.passed and ok.error < 1e-12, ok
    assert ok.variation > 1e-2  # the actions really vary across the states
    bad = check_not_invariant(
        "per-agent",
        PerAgentPolicy(net, SETUP.n_seg, seed=3),
        (p,),
        grp,
        (_roll_probes,),
        _roll_actions,
    )
    assert bad.passed and bad.error > 1e-2, bad


def test_marl_rewards_global_when_beta_zero():
    out = _probes()
    r0 = marl_rewards(out["nu"], out["nu_local"], beta=0.0)
    assert torch.allclose(r0, r0[:, :1].expand_as(r0))
    r = marl_rewards(out["nu"], out["nu_local"])
    assert float((r - r[:, :1]).abs().max()) > 0  # the local part differs between agents
    assert torch.allclose(r.mean(-1), -out["nu"] + 2.6726, atol=1e-12)  # mean local = global


def test_env_rejects_nan_actions_and_bad_grids():
    core = RBCControl(SETUP, 2)
    core.reset()
    with pytest.raises(ValueError, match="actions"):
        core.step(torch.full((2, SETUP.n_seg), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError, match="actions"):
        core.step(torch.zeros(2, SETUP.n_seg + 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="n_seg"):
        RBCSetup(nx=30, n_seg=4, probe_x=10)
    with pytest.raises(ValueError, match="dt"):
        RBCSetup(nx=64, ny=32, dt=0.5)


def save_file_with(path, tensors):
    from safetensors.torch import save_file

    save_file(tensors, str(path))
    return path


def test_state_roundtrip_through_safetensors(tmp_path):
    st = baseline_state(SETUP)
    back = load_state(save_state(tmp_path / "state.safetensors", st))
    assert torch.equal(back.T, st.T) and torch.equal(back.psi, st.psi) and back.t == st.t
    # a loaded state resumes the simulation exactly (complex fields in aligned storage: a
    # misaligned complex128 view of the file buffer crashed natively)
    assert all(v.data_ptr() % 16 == 0 for v in (back.T, back.psi, back.T_prev, back.omega_prev))
    a = torch.rand(2, SETUP.n_seg, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    outs = []
    for init in (st, back):
        core = RBCControl(SETUP, 2, init)
        core.reset()
        outs.append(core.step(a)["nu"])
    assert torch.equal(outs[0], outs[1])
    with pytest.raises(ValueError, match="state"):
        load_state(save_file_with(tmp_path / "bad.safetensors", {"T": torch.zeros(3)}))


def test_ppo_smoke_marl_vecenv():
    pytest.importorskip("stable_baselines3")
    from invariance.control.rl import RBCVecEnv, make_ppo, ppo_controller, rollout

    env = RBCVecEnv(SETUP, n_sims=1, mode="marl")
    assert env.num_envs == SETUP.n_seg
    model = make_ppo(env, seed=0, hidden=(16, 16), n_epochs=1)
    model.learn(2 * SETUP.episode_actions * env.num_envs)
    assert len(env.episode_nu) == 2 and np.isfinite(env.episode_nu).all()
    res = rollout(SETUP, ppo_controller(model, SETUP, "marl"))
    assert res["nu"].shape == (1, SETUP.episode_actions)
