"""Benchmarks against peers (run with ``invariance-causal bench <name>``).

* ``kci_vs_causallearn``: p-value parity and time of our torch KCI against causal-learn's
  ``CIT(data, "kci", approx=True)``, timed interleaved with repeats by
  :func:`invariance.core.bench.compare` (causal-learn is a bench-only reference, imported
  lazily).
* ``cdf_vs_cdnod``: bivariate structure accuracy of Causal de Finetti against causal-learn's
  CD-NOD (environment index as a context variable) and PC on pooled data.
"""

from __future__ import annotations

import time

import torch

from invariance.core.bench import compare, machine, register_bench


@register_bench("causal", "kci_vs_causallearn")
def kci_vs_causallearn(*, device: str = "cpu", quick: bool = False, n: int = 300) -> dict:
    """Max |p_ours - p_causallearn| and median times over a few CI problems of ``n`` samples."""
    from causallearn.utils.cit import CIT  # bench-only reference

    from invariance.causal.ci_tests import kci_test

    n = min(n, 150) if quick else n
    g = torch.Generator().manual_seed(0)
    a, b = (
        torch.randn(n, generator=g, dtype=torch.float64),
        torch.randn(n, generator=g, dtype=torch.float64),
    )
    c = a + 0.5 * torch.randn(n, generator=g, dtype=torch.float64)
    e = torch.sin(c) + 0.3 * torch.randn(n, generator=g, dtype=torch.float64)
    D = torch.stack([a, b, c, e], 1)
    problems = [([0], [1], []), ([0], [3], [2]), ([2], [3], [0]), ([0], [1], [2, 3])]
    diffs = []
    for x, y, z in problems:
        p_ref = CIT(D.numpy(), "kci", approx=True)(x, y, z)
        p_our = kci_test(D[:, x], D[:, y], D[:, z] if z else None)[0]
        diffs.append(abs(p_ref - p_our))
    x, y, z = problems[1]
    # a fresh CIT object per call: causal-learn caches p-values per (x, y, z)
    rows = compare(
        {
            "ours (torch KCI)": lambda: kci_test(D[:, x], D[:, y], D[:, z]),
            "causal-learn CIT kci": lambda: CIT(D.numpy(), "kci", approx=True)(x, y, z),
        },
        reference="causal-learn CIT kci",
        repeats=3 if quick else 5,
        min_run_time=0.2,
        label=f"conditional KCI, n={n}",
    )
    parity = max(diffs)
    for r in rows:
        r["n"] = n
        r["max_abs_p_diff"] = parity
    return {"rows": rows, "machine": machine()}


@register_bench("causal", "cdf_vs_cdnod")
def cdf_vs_cdnod(
    *, device: str = "cpu", quick: bool = False, n_envs: int = 100, n_datasets: int = 30
) -> dict:
    """Accuracy of Causal de Finetti (KCI) vs causal-learn CD-NOD (KCI) and pooled PC."""
    import numpy as np
    from causallearn.search.ConstraintBased.CDNOD import cdnod  # bench-only reference

    from invariance.causal.causal_de_finetti import causal_de_finetti, iid_baseline
    from invariance.causal.data.exchangeable import make_bivariate_exchangeable

    n_datasets = min(n_datasets, 9) if quick else n_datasets
    ok = {"causal_de_finetti": 0, "cdnod": 0, "iid_pc": 0}
    t = {"causal_de_finetti": 0.0, "cdnod": 0.0}
    for i in range(n_datasets):
        d = make_bivariate_exchangeable(n_envs, mode=i % 3, seed=i)
        t0 = time.perf_counter()
        ok["causal_de_finetti"] += causal_de_finetti(d["data"], test="kci").edges == d["edges"]
        t["causal_de_finetti"] += time.perf_counter() - t0
        ok["iid_pc"] += iid_baseline(d["data"], test="kci") == d["edges"]
        data = d["data"].reshape(-1, 2).numpy()
        c = np.repeat(np.arange(n_envs), d["data"].shape[1]).reshape(-1, 1).astype(float)
        t0 = time.perf_counter()
        cg = cdnod(data, c, alpha=0.05, indep_test="kci", show_progress=False)
        t["cdnod"] += time.perf_counter() - t0
        G = cg.G.graph  # G[j, i] = 1 and G[i, j] = -1 means i -> j
        est = {
            (i_, j_)
            for i_ in range(2)
            for j_ in range(2)
            if i_ != j_ and G[j_, i_] == 1 and G[i_, j_] == -1
        }
        und = {
            (i_, j_)
            for i_ in range(2)
            for j_ in range(2)
            if i_ != j_ and G[j_, i_] == -1 and G[i_, j_] == -1
        }
        ok["cdnod"] += (est | und) == d["edges"]
    rows = [
        {
            "name": k,
            "accuracy": round(v / n_datasets, 4),
            "seconds_total": round(t[k], 3) if k in t else None,
            "n_datasets": n_datasets,
            "n_envs": n_envs,
        }
        for k, v in ok.items()
    ]
    return {"rows": rows, "machine": machine()}
