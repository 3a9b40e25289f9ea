"""Bad-input harness over the public entry points of invariance-control."""

from __future__ import annotations

import pytest
import torch

from invariance.control import (
    RBCControl,
    RBCSetup,
    RBCSolver,
    bottom_profile,
    marl_rewards,
    recentre,
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
    (recentre, dict(probes=PROBES, n_seg=4), dict()),
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


def test_bad_input_summary():
    reports = [_run(e) for e in ENTRY_POINTS]
    print()
    print(fuzz_table(reports, markdown=True))
    assert all(not r.failures for r in reports)
