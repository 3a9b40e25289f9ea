"""Benchmark ``invariance-control bench solver``: solver ms/step, env steps/s, batched vs loop.

Times, through :func:`invariance.core.bench.compare` (interleaved repeats, one thread):

* one solver step of ``n_envs`` simulations solved as one batch against a Python loop over
  ``n_envs`` single simulations (the ratio is the gain of batching the per-mode solves);
* one control step (``hold_steps`` solver steps + probes + Nusselt numbers) of the batched env.

There is no official-code comparison: the official CFD (shenfun, mpi4py-fft) does not install here.
"""

from __future__ import annotations

from typing import Any

import torch

from invariance.core.bench import compare, machine, register_bench

__all__ = ["bench_solver", "bench_nusselt"]


@register_bench("control", "solver")
def bench_solver(
    *,
    quick: bool = False,
    nx: int = 64,
    ny: int = 32,
    envs: str = "1,4,16",
    repeats: int = 3,
    min_run_time: float = 0.2,
) -> dict[str, Any]:
    """Solver ms/step (batched vs a loop over single simulations) and env actions/s."""
    from invariance.control.envs import RBCControl, RBCSetup
    from invariance.control.rbc import RBCSolver

    sizes = [int(v) for v in envs.split(",") if v.strip()]
    if not sizes or min(sizes) < 1:
        raise ValueError(f"envs must list positive counts, got {envs!r}")
    if quick:
        nx, ny, sizes, repeats, min_run_time = 32, 16, [1, 4], 2, 0.1
    solver = RBCSolver(nx, ny)
    rows: list[dict[str, Any]] = []
    for b in sizes:
        st = solver.step(solver.perturbed_state(b, amplitude=0.05, mode=2, noise=0.01), None, 5)
        singles = [st.select(slice(i, i + 1)) for i in range(b)]
        fns = {
            f"batched_{b}": lambda st=st: solver.step(st, None, 1),
            f"loop_{b}": lambda ss=singles: [solver.step(s, None, 1) for s in ss],
        }
        for r in compare(
            fns,
            reference=f"loop_{b}",
            repeats=repeats,
            min_run_time=min_run_time,
            label=f"{nx}x{ny} solver step, {b} envs",
        ):
            r["ms_per_env_step"] = round(r["median_ms"] / b, 4)
            rows.append(r)
    setup = RBCSetup(
        nx=nx, ny=ny, n_seg=8, probe_x=min(32, nx), probe_y=min(8, ny - 1), warmup_time=0.0
    )
    for b in sizes[-1:]:
        core = RBCControl(setup, b, solver.perturbed_state(1, amplitude=0.05, mode=2))
        core.reset()
        act = torch.zeros(b, setup.n_seg, dtype=torch.float64)
        r = compare(
            {f"env_action_{b}": lambda core=core, act=act: core.step(act)},
            repeats=repeats,
            min_run_time=min_run_time,
            label=f"{nx}x{ny} control step ({setup.hold_steps} solver steps), {b} envs",
        )[0]
        r["ms_per_env_step"] = round(r["median_ms"] / b, 4)
        r["env_actions_per_s"] = round(1e3 * b / r["median_ms"], 2)
        rows.append(r)
    return {"rows": rows, "machine": machine(), "threads": 1}


@register_bench("control", "nusselt")
def bench_nusselt(
    *, quick: bool = False, grids: str = "64x32:0.05,64x48:0.025,96x64:0.02", ra: float = 1e4
) -> dict[str, Any]:
    """Steady Nusselt numbers at Ra (default 1e4) per grid ``NXxNY:dt``, vs the official 2.6726.

    Each grid starts from a seeded 2-roll-pair perturbation, runs 80 time units, then 20 more;
    ``drift`` is the change of the bottom-wall number over the last 20 (0 = steady).
    """
    import math
    import time

    from invariance.control.rbc import RBCSolver

    if quick:
        grids = "64x32:0.05"
    rows = []
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for spec in grids.split(","):
            try:
                shape, dt_s = spec.split(":")
                nx, ny = (int(v) for v in shape.lower().split("x"))
                dt = float(dt_s)
            except ValueError:
                raise ValueError(f"grids entries are NXxNY:dt, got {spec!r}") from None
            s = RBCSolver(nx, ny, ra=ra, dt=dt)
            t0 = time.perf_counter()
            st = s.perturbed_state(1, amplitude=0.05, mode=2, noise=0.01, seed=0)
            st = s.step(st, None, int(round(80 / dt)))
            a = s.nusselt(st)
            st = s.step(st, None, int(round(20 / dt)))
            b = s.nusselt(st)
            secs = time.perf_counter() - t0
            rows.append(
                {
                    "grid": f"{nx}x{ny}",
                    "dt": dt,
                    "nu_bottom": round(float(b["bottom"]), 5),
                    "nu_top": round(float(b["top"]), 5),
                    "nu_volume": round(float(b["volume"]), 5),
                    "vs_official_2.6726": round(float(b["bottom"]) / 2.6726 - 1, 5),
                    "drift": float(f"{float(b['bottom'] - a['bottom']):.2g}"),
                    "ms_per_step": round(1e3 * secs / int(round(100 / dt)), 3),
                }
            )
    finally:
        torch.set_num_threads(old)
    if not all(math.isfinite(r["nu_bottom"]) for r in rows):
        raise RuntimeError("non-finite Nusselt number")
    return {"rows": rows, "machine": machine(), "threads": 1}
