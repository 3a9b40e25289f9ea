"""Grouped exchangeable data with known causal structure (Causal de Finetti generators).

Each dataset has ``n_envs`` groups (environments); inside a group the samples are i.i.d. given
per-group latent mechanism parameters, which change independently per mechanism (the ICM
principle). Arrays are ``(n_envs, n_per_env)`` per variable; multivariate data are stacked as
``(n_envs, n_per_env, n_vars)``. Every generator returns the ground-truth edge set.

* :func:`make_bivariate_exchangeable`: our re-implementation of the official continuous
  bivariate generator of Guo et al. (NeurIPS 2023, repo syguo96/Causal-de-Finetti,
  ``experiments/synthetic_data_generation.py``): per-group location ``U(-1,1)`` per variable,
  Laplace noise around it, an integer lower/upper-triangular mixing (3 classes: X->Y, Y->X,
  independent) and, in a random half of the groups, a quadratic mechanism change on the effect.
* :func:`make_linear_gaussian_icm`: linear-Gaussian ICM data with per-group random intercepts for
  the cause and the effect (for the fast Fisher-z tests).
* :func:`make_multivariate_binary`: the official multivariate binary generator: a random DAG
  ``G(n, 1/2)`` with forward edges (every node on an edge), ``theta_env,i ~ Beta(1, 3)`` and
  ``X_i = Bernoulli(theta_i) XOR prod(parents)``.
"""

from __future__ import annotations

import torch

from invariance.causal._checks import check_float, check_number, check_seed

__all__ = ["make_bivariate_exchangeable", "make_linear_gaussian_icm", "make_multivariate_binary"]

STRUCTURES = {0: {(0, 1)}, 1: {(1, 0)}, 2: set()}


def _g(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    if generator is not None:
        return generator
    return torch.Generator().manual_seed(check_seed(seed))


def _mode(mode: int | None, g: torch.Generator) -> int:
    """``mode`` (0 = X->Y, 1 = Y->X, 2 = independent), drawn from ``g`` when None."""
    if mode is None:
        return int(torch.randint(0, 3, (1,), generator=g))
    if mode not in (0, 1, 2):
        raise ValueError(f"mode must be 0 (X->Y), 1 (Y->X) or 2 (independent), got {mode!r}")
    return mode


def _bivariate(x: torch.Tensor, y: torch.Tensor, mode: int) -> dict:
    return {
        "x": x,
        "y": y,
        "data": torch.stack([x, y], -1),
        "mode": mode,
        "edges": set(STRUCTURES[mode]),
    }


def _check(n_envs: int, n_per_env: int) -> None:
    if not isinstance(n_envs, int) or n_envs < 2:
        raise ValueError(f"n_envs must be an int >= 2, got {n_envs!r}")
    if not isinstance(n_per_env, int) or n_per_env < 2:
        raise ValueError(
            f"n_per_env must be an int >= 2 (Causal de Finetti needs 2), got {n_per_env!r}"
        )


def make_bivariate_exchangeable(
    n_envs: int,
    *,
    n_per_env: int = 2,
    mode: int | None = None,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
) -> dict:
    """Official-style continuous bivariate data.

    Args:
        n_envs (int): number of groups.
        n_per_env (int): samples per group (default: 2).
        mode (int, optional): 0 = X->Y, 1 = Y->X, 2 = independent; random if None.
        seed (int): seed (default: 0).

    Returns a dict with ``x``, ``y`` (``(n_envs, n_per_env)`` float64), ``data``
    (``(n_envs, n_per_env, 2)``), ``mode`` and ``edges`` (the true edge set).
    """
    _check(n_envs, n_per_env)
    g = _g(seed, generator)
    mode = _mode(mode, g)
    loc = torch.rand(2, n_envs, 1, generator=g, dtype=torch.float64) * 2 - 1
    u = torch.rand(2, n_envs, n_per_env, generator=g, dtype=torch.float64) - 0.5
    lap = -torch.sign(u) * torch.log1p(-2 * u.abs())  # Laplace(0, 1) by inverse CDF
    noise = loc + lap
    A = torch.randint(1, 10, (2, 2), generator=g).double()
    if mode == 0:
        A = A.tril()
        A[0, 0] = 1.0
    elif mode == 1:
        A = A.triu()
        A[1, 1] = 1.0
    else:
        A = torch.eye(2, dtype=torch.float64)
    D = torch.einsum("ij,jkh->ikh", A, noise)
    changed = torch.randperm(n_envs, generator=g)[: n_envs // 2]
    c = float(torch.randint(1, 10, (1,), generator=g))
    B = (A - torch.eye(2, dtype=torch.float64)) * c
    extra = torch.einsum("ij,jkh->ikh", B, noise**2)
    mask = torch.zeros(1, n_envs, 1, dtype=torch.float64)
    mask[:, changed] = 1.0
    D = D + extra * mask
    return _bivariate(D[0], D[1], mode)


def make_linear_gaussian_icm(
    n_envs: int,
    *,
    n_per_env: int = 2,
    mode: int | None = None,
    coef: float = 1.0,
    cause_scale: float = 2.0,
    effect_scale: float = 0.5,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
) -> dict:
    """Linear-Gaussian ICM data: cause ``= theta_env + e``, effect ``= coef * cause + psi_env + e``.

    ``theta_env ~ N(0, cause_scale^2)`` and ``psi_env ~ N(0, effect_scale^2)`` independently per
    group, unit noise; ``mode`` as in :func:`make_bivariate_exchangeable`. Same return format.
    The default scales differ on purpose: with ``coef = 1`` and equal scales the collider
    dependence ``Y_1 / X_2 | Y_2`` has exactly zero partial correlation, so Fisher-z cannot see it.
    """
    _check(n_envs, n_per_env)
    check_float("coef", coef)
    check_number("cause_scale", cause_scale)
    check_number("effect_scale", effect_scale)
    g = _g(seed, generator)
    mode = _mode(mode, g)
    theta = torch.randn(n_envs, 1, generator=g, dtype=torch.float64) * cause_scale
    psi = torch.randn(n_envs, 1, generator=g, dtype=torch.float64) * effect_scale
    e1 = torch.randn(n_envs, n_per_env, generator=g, dtype=torch.float64)
    e2 = torch.randn(n_envs, n_per_env, generator=g, dtype=torch.float64)
    cause = theta + e1
    effect = (coef * cause if mode != 2 else 0.0) + psi + e2
    x, y = (cause, effect) if mode in (0, 2) else (effect, cause)
    return _bivariate(x, y, mode)


def make_multivariate_binary(
    n_envs: int,
    n_vars: int = 3,
    *,
    n_per_env: int = 2,
    edge_prob: float = 0.5,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
) -> dict:
    """Official-style multivariate binary data on a random DAG (every node on an edge).

    Returns ``data`` (``(n_envs, n_per_env, n_vars)`` long), ``edges`` and ``adjacency``.
    """
    _check(n_envs, n_per_env)
    if not isinstance(n_vars, int) or n_vars < 2:
        raise ValueError(f"n_vars must be an int >= 2, got {n_vars!r}")
    check_float("edge_prob", edge_prob, 0.0, 1.0, lo_open=True)
    g = _g(seed, generator)
    for _ in range(1000):
        adj = (torch.rand(n_vars, n_vars, generator=g) < edge_prob).triu(1)
        touched = adj.any(0) | adj.any(1)
        if bool(touched.all()):
            break
    else:  # pragma: no cover - astronomically unlikely for sensible edge_prob
        raise RuntimeError("could not draw a DAG touching every node")
    u = torch.rand(n_envs, n_vars, generator=g, dtype=torch.float64)
    theta = 1.0 - (1.0 - u) ** (1.0 / 3.0)  # Beta(1, 3) quantile function
    data = torch.zeros(n_envs, n_per_env, n_vars, dtype=torch.long)
    for i in range(n_vars):
        factor = (
            torch.rand(n_envs, n_per_env, generator=g, dtype=torch.float64) < theta[:, i : i + 1]
        ).long()
        parents = adj[:, i].nonzero().flatten().tolist()
        if parents:
            prod = torch.ones(n_envs, n_per_env, dtype=torch.long)
            for p in parents:
                prod = prod * data[..., p]
            data[..., i] = (factor != prod).long()
        else:
            data[..., i] = factor
    edges = {(int(a), int(b)) for a, b in adj.nonzero().tolist()}
    return {"data": data, "edges": edges, "adjacency": adj}
