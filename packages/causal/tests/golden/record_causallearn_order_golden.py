"""Record golden p-values from causal-learn for argument-order cases (run by hand, not by pytest).

    uv run python packages/causal/tests/golden/record_causallearn_order_golden.py

Writes ``causallearn_order_golden.json`` next to this file:

* ``kci``: conditional KCI problems whose x column index exceeds the y index. For each, the
  p-value of ``CIT(D, "kci", approx=True)(x, y, z)`` (causal-learn sorts the two index lists, so
  it computes ``KCI_CInd(D[:, y], D[:, x], D[:, z])``) and of ``KCI_CInd().compute_pvalue`` called
  directly in the given order (conditional KCI is not symmetric in its two arguments).
* ``cdf_bivariate``: datasets of :func:`invariance.causal.make_bivariate_exchangeable` and the
  three p-values the official Causal de Finetti pipeline computes on them: columns
  ``D = [X1, X2, Y1, Y2]``, ``CIT(D, "kci", approx=True)`` called as ``([0], [3], [1])`` (X->Y),
  ``([2], [1], [3])`` (Y->X) and ``([0], [2])`` (independence), as in the official
  ``run_causaldf_bivariate``.

Data are rounded to 8 decimals before testing, and stored as used.
"""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import numpy as np
from causallearn.utils.cit import CIT
from causallearn.utils.KCI.KCI import KCI_CInd

from invariance.causal import make_bivariate_exchangeable

OUT = Path(__file__).with_name("causallearn_order_golden.json")


def kci_cases() -> list[dict]:
    rng = np.random.default_rng(0)
    cases = []
    for n in (60, 150, 220):
        a, b, c = rng.standard_normal((3, n))
        D = np.stack(
            [
                a,
                np.sin(a) + 0.5 * rng.standard_normal(n),
                a + 0.3 * b,
                np.tanh(2 * a) * c + 0.2 * rng.standard_normal(n),
            ],
            axis=1,
        ).round(8)
        for x, y, z in (([2], [1], [3]), ([3], [0], [1]), ([3], [1], [0, 2])):
            p_cit = float(CIT(D, "kci", approx=True)(x, y, z))
            p_direct = float(KCI_CInd().compute_pvalue(D[:, x], D[:, y], D[:, z])[0])
            cases.append(
                {
                    "name": f"cind_x{x[0]}_gt_y{y[0]}_z{''.join(map(str, z))}_n{n}",
                    "x": x,
                    "y": y,
                    "z": z,
                    "p_cit": p_cit,
                    "p_direct": p_direct,
                    "data": D.tolist(),
                }
            )
    return cases


def cdf_cases() -> list[dict]:
    cases = []
    for mode in (0, 1, 2):
        for seed in (11, 12):
            d = make_bivariate_exchangeable(100, mode=mode, seed=seed)
            data = d["data"][:, :2].double().numpy().round(8)  # (E, 2, 2): [group, sample, var]
            X, Y = data[:, :, 0], data[:, :, 1]
            D = np.hstack((X, Y))  # columns X1, X2, Y1, Y2
            cit = CIT(D, "kci", approx=True)
            cases.append(
                {
                    "name": f"biv_mode{mode}_seed{seed}",
                    "p_xy": float(cit([0], [3], [1])),
                    "p_yx": float(cit([2], [1], [3])),
                    "p_ind": float(cit([0], [2])),
                    "data": data.tolist(),
                }
            )
    return cases


if __name__ == "__main__":
    out = {
        "provenance": (
            f"causal-learn {version('causal-learn')} (CIT(D, 'kci', approx=True) and "
            "KCI_CInd().compute_pvalue); recorded by tests/golden/"
            "record_causallearn_order_golden.py (numpy default_rng(0) data, and "
            "invariance.causal.make_bivariate_exchangeable(100, mode, seed 11/12))"
        ),
        "kci": kci_cases(),
        "cdf_bivariate": cdf_cases(),
    }
    OUT.write_text(json.dumps(out))
    print(f"wrote {OUT} ({len(out['kci'])} KCI cases, {len(out['cdf_bivariate'])} CdF cases)")
