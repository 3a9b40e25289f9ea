"""Golden values from the official actuation profile (``Tfunc.apply_T``).

Provenance: KTH-FlowAI/DeepReinforcementLearning_RayleighBenard2D_Control (MIT), commit
d1a8dd6ca0ca7041694ba2b417985f57512c14d2, ``Tfunc.py``, class ``Tfunc``, method ``apply_T``. Run
in a scratch venv (Python 3.11, sympy 1.14.0, numpy 2.4.6): ``Tfunc(nb_seg=n, dicTemp={"T0": a0,
...})``, ``dx`` set on the instance where noted (official default 0.03), the returned
``sympy.Piecewise`` lambdified over ``x`` with numpy and evaluated at the official grid points
``x_j = 2 pi j / nx``. The module's only other import, ``from shenfun import *`` (shenfun has no
wheel here), was replaced by a stub module exporting ``np`` (numpy), the one name ``Tfunc.py``
takes from it.

Units: the official cell has height 2, x in [0, 2 pi), bottom mean 2 and top 1; ours has height 1,
x in [0, pi), bottom mean 1 and top 0. So ours = official - 1 at x_ours = x_official / 2, and our
``half_width`` is the official ``dx`` / 2.
"""

import torch

from invariance.control.rbc import bottom_profile

# 4 segments, nx 32, official dx = 0.3 (half_width 0.15: two grid points inside each blend)
ACT_4 = [0.9, -0.4, 0.1, -1.0]
OFFICIAL_4 = [
    2.0375,
    2.637114722897122,
    2.75,
    2.75,
    2.75,
    2.75,
    2.75,
    2.6727627051401344,
    2.2624999999999997,
    1.8522372948598649,
    1.775,
    1.775,
    1.775,
    1.775,
    1.775,
    1.8047066518691788,
    1.9624999999999997,
    2.1202933481308204,
    2.15,
    2.15,
    2.15,
    2.15,
    2.15,
    2.0846453658878077,
    1.7375000000000105,
    1.3903546341122222,
    1.325,
    1.325,
    1.325,
    1.325,
    1.325,
    1.4378852771028832,
]

# 8 segments, nx 64, official default dx = 0.03; the deviations exceed 0.75, so K2 = 1.1 rescales
ACT_8 = [0.5, -0.25, 1.0, -1.0, 0.0, 0.75, -0.5, 0.3]
OFFICIAL_8 = [
    2.204545454545458,
    2.27272727272727,
    2.27272727272727,
    2.27272727272727,
    2.27272727272727,
    2.27272727272727,
    2.27272727272727,
    2.27272727272727,
    2.0170454545454586,
    1.76136363636364,
    1.76136363636364,
    1.76136363636364,
    1.76136363636364,
    1.76136363636364,
    1.76136363636364,
    1.76136363636364,
    2.187500000000005,
    2.61363636363636,
    2.61363636363636,
    2.61363636363636,
    2.61363636363636,
    2.61363636363636,
    2.61363636363636,
    2.61363636363636,
    1.931818181818119,
    1.25,
    1.25,
    1.25,
    1.25,
    1.25,
    1.25,
    1.25,
    1.590909090909092,
    1.93181818181818,
    1.93181818181818,
    1.93181818181818,
    1.93181818181818,
    1.93181818181818,
    1.93181818181818,
    1.93181818181818,
    2.1874999999999876,
    2.44318181818182,
    2.44318181818182,
    2.44318181818182,
    2.44318181818182,
    2.44318181818182,
    2.44318181818182,
    2.44318181818182,
    2.017045454545489,
    1.59090909090909,
    1.59090909090909,
    1.59090909090909,
    1.59090909090909,
    1.59090909090909,
    1.59090909090909,
    1.59090909090909,
    1.8636363636363669,
    2.13636363636364,
    2.13636363636364,
    2.13636363636364,
    2.13636363636364,
    2.13636363636364,
    2.13636363636364,
    2.13636363636364,
]


def _ours(actions, nx, half_width):
    a = torch.tensor([actions], dtype=torch.float64)
    return bottom_profile(a, nx, half_width=half_width)[0] + 1.0


def test_bottom_profile_matches_the_official_tfunc():
    for act, nx, hw, ref in ((ACT_4, 32, 0.15, OFFICIAL_4), (ACT_8, 64, 0.015, OFFICIAL_8)):
        ref = torch.tensor(ref, dtype=torch.float64)
        assert float((_ours(act, nx, hw) - ref).abs().max()) < 1e-12  # measured 6.3e-14
    # the golden values are not trivially matched: a sharp step (no blending) misses them
    sharp = _ours(ACT_4, 32, 1e-6)
    assert float((sharp - torch.tensor(OFFICIAL_4, dtype=torch.float64)).abs().max()) > 0.1
