"""Learning test: shared-policy PPO (MARL) lowers the Nusselt number within seconds.

The setting is the quick preset's (32 x 16 grid, 8 segments, 10 actions of 1.5 time units per
episode, 2 simulations per rollout = 16 PPO sub-envs). The bottom actuation preserves the mean
temperature, so a policy that gives every segment the same action leaves the flow uncontrolled: a
lower Nusselt number needs actions that differ between segments and depend on the flow. Random
actions raise it (2.88 vs 2.81 in ``reproduce``).

Measured (load ~5 on 2 CPUs, 2 s per seed): after 4 PPO iterations (8 CFD episodes) the
deterministic policy's episode-mean Nu went from 2.80-2.81 (its start) to 2.48-2.76 on seeds 0-7
(2.62 on seed 0, the one tested); uncontrolled 2.809.
"""

import numpy as np
import pytest
import torch

from invariance.control import RBCSetup, baseline_state

pytest.importorskip("stable_baselines3")

from stable_baselines3 import PPO  # noqa: E402

from invariance.control.rl import (  # noqa: E402
    RBCVecEnv,
    make_ppo,
    ppo_controller,
    rollout,
    uncontrolled,
)

SETUP = RBCSetup(
    nx=32,
    ny=16,
    n_seg=8,
    probe_y=4,
    probe_x=16,
    hold_steps=30,
    episode_actions=10,
    warmup_time=40.0,
)


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _episode_nu(model, init) -> float:
    res = rollout(SETUP, ppo_controller(model, SETUP, "marl"), init_state=init)
    return float(res["episode_nu"][0])


def test_marl_ppo_lowers_the_nusselt_number(tmp_path):
    init = baseline_state(SETUP)
    nu_unc = float(rollout(SETUP, uncontrolled(SETUP.n_seg), init_state=init)["episode_nu"][0])
    env = RBCVecEnv(SETUP, 2, "marl", init)
    model = make_ppo(env, seed=0)
    nu_start = _episode_nu(model, init)
    assert abs(nu_start - nu_unc) < 0.05  # an untrained policy acts (almost) uniformly
    model.learn(4 * SETUP.episode_actions * env.num_envs)  # 4 iterations, 8 CFD episodes
    nu_end = _episode_nu(model, init)
    assert nu_end < nu_start - 0.1, (nu_start, nu_end)
    assert nu_end < nu_unc - 0.1, (nu_unc, nu_end)
    # the learned joint action differs between segments (a uniform one would be uncontrolled)
    obs = env.reset()
    a, _ = model.predict(obs, deterministic=True)
    assert float(np.ptp(a.reshape(2, SETUP.n_seg), axis=1).min()) > 0.1

    # save and resume in stable-baselines3's own format: same actions, training continues
    path = model.save(tmp_path / "marl_ppo.zip") or tmp_path / "marl_ppo.zip"
    back = PPO.load(path, env=env, device="cpu")
    b, _ = back.predict(obs, deterministic=True)
    assert np.array_equal(a, b)
    steps = back.num_timesteps
    back.learn(SETUP.episode_actions * env.num_envs, reset_num_timesteps=False)
    assert back.num_timesteps == steps + SETUP.episode_actions * env.num_envs
