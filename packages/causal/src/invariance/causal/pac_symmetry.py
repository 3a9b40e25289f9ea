"""The symmetry of :mod:`invariance.causal.pac_invariance`: interventions of a linear SEM and the
population-optimal head they should leave unchanged.

An invariant representation is one whose optimal head is the same under every intervention
``theta ~ P``. :class:`Intervention` is that action (it replaces ``theta``) in the form the
checks of :mod:`invariance.core.testing` take, and :func:`optimal_head` maps ``theta`` to the
head (and risk) of a feature subset, so that ``check_invariant(optimal_head(sem, parents), ...,
Intervention(sem), ...)`` holds for ``Y``'s parents and fails for all features (the negative
control). Both are re-exported by :mod:`invariance.causal.pac_invariance`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from invariance.causal.data.sem import LinearSEM
from invariance.core import groups as _G

__all__ = ["Intervention", "optimal_head"]


class Intervention(_G.Group):
    """Draws a fresh intervention ``theta ~ P`` of a :class:`LinearSEM`; acts by replacing
    ``theta`` (rep ``"theta"``). The group-like action used to check invariance of a predictor's
    optimal head across environments with :mod:`invariance.core.testing`."""

    name, reps = "interventions", ("theta",)

    def __init__(self, sem: LinearSEM) -> None:
        self.sem = sem

    def sample(self, generator, inputs=()):
        return self.sem.sample_theta(1, generator=generator)[0]

    def _act(self, rep, g, x):
        return g.to(x.dtype).reshape(x.shape)

    def describe(self, g):
        return f"intervention theta={[[round(float(v), 3) for v in row] for row in g]}"


def optimal_head(sem: LinearSEM, subset: list[int], *, with_risk: bool = False):
    """``theta -> argmin_w MSE_theta(X_S w, Y)``: the population-optimal head on a subset.

    ``with_risk=True`` appends the head's population MSE (the invariant risk): the output then
    varies across its entries even for a one-feature subset, so a symmetry check on it is not
    vacuous."""
    idx = torch.tensor(subset, dtype=torch.long)

    def fn(theta: Tensor) -> Tensor:
        cov = sem.covariance(theta)[0]  # checks theta and casts it to the SEM's dtype
        d = sem.d
        sxx, sxy = cov[:d, :d][idx][:, idx], cov[:d, d][idx]
        w = torch.linalg.solve(sxx, sxy)
        if not with_risk:
            return w
        return torch.cat([w, (cov[d, d] - sxy @ w).reshape(1)])

    return fn
