r"""Conditional independence tests in torch: KCI (kernel), Fisher-z (partial correlation), G-test.

KCI: Zhang, Peters, Janzing, Schölkopf, *Kernel-based Conditional Independence Test and
Application in Causal Discovery*, UAI 2011 (arXiv:1202.3775). Our implementation follows the
conventions of causal-learn's ``KCI_UInd`` / ``KCI_CInd`` (MIT licence; read, not copied) so the
p-values agree: each block is z-scored with ``ddof=1``; Gaussian kernels with the "empirical"
widths (``KCI``: :math:`\sigma = 1.2 / 0.7 / 0.4` for ``n < 200 / < 1200 / else``, scaled by the
dimension of ``Z``; ``HSIC``: :math:`\sigma = 0.8 / 0.5 / 0.3`, scaled by the dimension of ``X``);
for the conditional test ``X`` is augmented with ``Z / 2``; kernels are centred and regressed on
``Z`` with :math:`R_z = \epsilon (K_z + \epsilon I)^{-1}`, :math:`\epsilon=10^{-3}`; the statistic
is :math:`\operatorname{tr}(\tilde K_X \tilde K_Y)` and the null is the gamma approximation with
the mean and variance of the weighted :math:`\chi^2` mixture whose weights are the eigenvalue
products of the (eigen-truncated at :math:`10^{-5}\lambda_{\max}`) residual kernels.

The p-value is ``1 - GammaCDF(stat; k, theta) = gammaincc(k, stat / theta)`` (pure torch).

Tested properties (``tests/test_ci_tests.py``): p-values match causal-learn 0.1.4.8 golden values
(``kci_golden.json``) to 1e-6, also with the x column index above the y index, in both
argument orders (``golden/causallearn_order_golden.json``: causal-learn's ``CIT`` sorts the
indices, and conditional KCI is not symmetric); p-values are invariant to a joint permutation of
the samples; uniform p-values under the null (KS test) and power under an alternative; Fisher-z
and G-test agree with closed forms / scipy; non-finite and constant columns, and float input to
the G-test, are rejected.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["fisher_z_test", "g_test", "kci_test"]

_EPS_REG = 1e-3
_EIG_THRESH = 1e-5


def _as_2d(a: Tensor | None, n: int | None, name: str) -> Tensor | None:
    """Return ``a`` as a float64 ``(n, k)`` tensor (1-D input becomes one column).

    Rejects (naming ``name``) anything but a 1-D/2-D numeric tensor, a sample count that differs
    from ``n``, non-finite values and constant columns (a constant column carries no information
    and its z-score is undefined).
    """
    if a is None:
        return None
    if not isinstance(a, Tensor):
        try:
            a = torch.as_tensor(a)
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(f"{name} must be a tensor of numbers, got {type(a).__name__}") from e
    if a.dtype == torch.bool or a.is_complex():
        raise TypeError(f"{name} must hold real numbers, got dtype {a.dtype}")
    if a.dim() == 1:
        a = a.unsqueeze(1)
    if a.dim() != 2:
        raise ValueError(f"{name} must be 1-D (n,) or 2-D (n, k), got shape {tuple(a.shape)}")
    if n is not None and a.shape[0] != n:
        raise ValueError(f"{name} has {a.shape[0]} samples but x has {n}")
    a = a.to(torch.float64)
    if not torch.isfinite(a).all():
        raise ValueError(f"{name} must be finite (it holds NaN or inf)")
    if a.shape[0] > 0 and a.shape[1] > 0:
        const = (a == a[:1]).all(dim=0)
        if bool(const.any()):
            cols = const.nonzero().flatten().tolist()
            raise ValueError(f"{name} has constant column(s) {cols}: nothing to test")
    return a


def _zscore(a: Tensor) -> Tensor:
    """Column z-score with ``ddof=1`` (inputs are checked non-constant by :func:`_as_2d`)."""
    sd = a.std(dim=0, unbiased=True, keepdim=True)
    return (a - a.mean(dim=0, keepdim=True)) / sd


def _gauss_kernel(a: Tensor, inv_sq_width: float) -> Tensor:
    """``exp(-0.5 * ||a_i - a_j||^2 * inv_sq_width)``: ``(n, k) -> (n, n)``."""
    sq = torch.cdist(a, a).pow(2)
    return torch.exp(-0.5 * sq * inv_sq_width)


def _center(K: Tensor) -> Tensor:
    """``H K H`` with ``H = I - 1/n``."""
    return K - K.mean(0, keepdim=True) - K.mean(1, keepdim=True) + K.mean()


def _kci_width(n: int) -> float:
    return 1.2 if n < 200 else (0.7 if n < 1200 else 0.4)


def _hsic_width(n: int) -> float:
    return 0.8 if n < 200 else (0.5 if n < 1200 else 0.3)


def _gamma_sf(stat: Tensor, mean: Tensor, var: Tensor) -> float:
    """Upper tail of the gamma distribution with the given mean and variance at ``stat``."""
    k = mean**2 / var
    theta = var / mean
    return float(torch.special.gammaincc(k, stat / theta))


def _truncated_psd(K: Tensor) -> Tensor:
    """Rebuild ``K`` from its eigenpairs with eigenvalue > 1e-5 * max (drops the rest)."""
    w, v = torch.linalg.eigh(0.5 * (K + K.T))
    keep = w > w.max() * _EIG_THRESH
    v = v[:, keep] * w[keep].sqrt()
    return v @ v.T


def kci_test(x: Tensor, y: Tensor, z: Tensor | None = None) -> tuple[float, float]:
    r"""Kernel (conditional) independence test of ``x ⊥ y | z``; returns ``(p_value, statistic)``.

    Args:
        x (Tensor): ``(n,)`` or ``(n, dx)``.
        y (Tensor): ``(n,)`` or ``(n, dy)``.
        z (Tensor, optional): ``(n,)`` or ``(n, dz)`` conditioning set; ``None`` or zero columns
            gives the unconditional (HSIC) test.

    Cost is :math:`O(n^3)` (eigendecompositions); keep ``n`` below a few thousand.
    """
    if isinstance(x, Tensor) and x.dim() >= 1 and x.shape[0] < 5:
        raise ValueError(f"kci_test needs at least 5 samples in x, got {x.shape[0]}")
    x = _as_2d(x, None, "x")
    n = x.shape[0]
    if n < 5:
        raise ValueError(f"kci_test needs at least 5 samples in x, got {n}")
    y = _as_2d(y, n, "y")
    z = _as_2d(z, n, "z")
    xs, ys = _zscore(x), _zscore(y)
    if z is None or z.shape[1] == 0:
        Kx = _center(_gauss_kernel(xs, xs.shape[1] / _hsic_width(n) ** 2))
        Ky = _center(_gauss_kernel(ys, ys.shape[1] / _hsic_width(n) ** 2))
        stat = (Kx * Ky).sum()
        mean = torch.diagonal(Kx).sum() * torch.diagonal(Ky).sum() / n
        var = 2 * Kx.pow(2).sum() * Ky.pow(2).sum() / n**2
        return _gamma_sf(stat, mean, var), float(stat)
    zs = _zscore(z)
    xz = torch.cat([xs, 0.5 * zs], dim=1)
    inv_w = 1.0 / (_kci_width(n) ** 2 * zs.shape[1])
    Kx = _center(_gauss_kernel(xz, inv_w))
    Ky = _center(_gauss_kernel(ys, inv_w))
    Kz = _center(_gauss_kernel(zs, inv_w))
    eye = torch.eye(n, dtype=torch.float64)
    Rz = _EPS_REG * torch.linalg.pinv(Kz + _EPS_REG * eye, hermitian=True)
    KxR = Rz @ Kx @ Rz
    KyR = Rz @ Ky @ Rz
    stat = (KxR * KyR).sum()
    # uu_prod eigen-weights: Hadamard product of the truncated PSD residual kernels
    P = _truncated_psd(KxR) * _truncated_psd(KyR)
    mean = torch.diagonal(P).sum()
    var = 2 * P.pow(2).sum()
    return _gamma_sf(stat, mean, var), float(stat)


def fisher_z_test(x: Tensor, y: Tensor, z: Tensor | None = None) -> tuple[float, float]:
    r"""Gaussian partial-correlation test of ``x ⊥ y | z`` (1-D ``x``, ``y``): ``(p_value, |z|)``.

    :math:`\sqrt{n - |Z| - 3}\,|\operatorname{atanh}\rho_{xy\cdot z}|` against a standard normal.
    """
    if isinstance(x, Tensor) and x.dim() >= 1 and x.shape[0] < 4:
        raise ValueError(f"fisher_z_test needs at least 4 samples in x, got {x.shape[0]}")
    x = _as_2d(x, None, "x")
    n = x.shape[0]
    y = _as_2d(y, n, "y")
    z = _as_2d(z, n, "z")
    if x.shape[1] != 1 or y.shape[1] != 1:
        raise ValueError(f"fisher_z_test needs 1-D x and y, got {tuple(x.shape)}, {tuple(y.shape)}")
    k = 0 if z is None else z.shape[1]
    if n - k - 3 < 1:
        raise ValueError(f"fisher_z_test needs n > |z| + 3, got n={n}, |z|={k}")
    data = torch.cat([x, y] + ([z] if k else []), dim=1)
    C = torch.corrcoef(data.T)
    prec = torch.linalg.pinv(C, hermitian=True)
    r = (-prec[0, 1] / torch.sqrt(prec[0, 0] * prec[1, 1])).clamp(-1 + 1e-15, 1 - 1e-15)
    stat = math.sqrt(n - k - 3) * abs(float(torch.atanh(r)))
    p = math.erfc(stat / math.sqrt(2.0))
    return p, stat


def _as_codes(a: Tensor, n: int | None, name: str, *, column: bool) -> Tensor:
    """Integer category codes: ``(n,)`` (``column``) or ``(n, k)``; floats are rejected (casting
    them would silently merge or split categories), as are empty and constant inputs."""
    if not isinstance(a, Tensor):
        try:
            a = torch.as_tensor(a)
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(f"{name} must be a tensor of integer codes") from e
    if a.is_floating_point() or a.is_complex():
        raise TypeError(
            f"g_test needs integer (discrete) {name}, got dtype {a.dtype}; cast category codes "
            f"with .long() first"
        )
    if a.dim() == 2 and column and a.shape[1] == 1:
        a = a[:, 0]
    if a.dim() == 1 and not column:
        a = a.unsqueeze(1)
    want = 1 if column else 2
    if a.dim() != want:
        shape = "(n,)" if column else "(n,) or (n, k)"
        raise ValueError(f"{name} must have shape {shape}, got {tuple(a.shape)}")
    if n is None and a.shape[0] < 2:
        raise ValueError(f"g_test needs at least 2 samples in {name}, got {a.shape[0]}")
    if n is not None and a.shape[0] != n:
        raise ValueError(f"{name} has {a.shape[0]} samples but x has {n}")
    a = a.long()
    if column and bool((a == a[0]).all()):
        raise ValueError(f"{name} is constant: nothing to test")
    return a


def g_test(x: Tensor, y: Tensor, z: Tensor | None = None) -> tuple[float, float]:
    r"""G-test (log-likelihood ratio) of ``x ⊥ y | z`` for discrete data: ``(p_value, G)``.

    Counts are stratified by every observed configuration of ``z``; degrees of freedom are
    :math:`\sum_{z}(|X_z|-1)(|Y_z|-1)` over strata (levels observed in that stratum).
    ``x``, ``y`` (``(n,)``) and ``z`` (``(n,)`` or ``(n, k)``) must hold integer category codes:
    float input raises ``TypeError`` instead of being cast.
    """
    x = _as_codes(x, None, "x", column=True)
    n = x.shape[0]
    y = _as_codes(y, n, "y", column=True)
    if z is None:
        strata = torch.zeros(n, dtype=torch.long)
    else:
        z = _as_codes(z, n, "z", column=False)
        strata = (
            torch.unique(z, dim=0, return_inverse=True)[1]
            if z.shape[1]
            else (torch.zeros(n, dtype=torch.long))
        )
    G, dof = 0.0, 0
    for s in torch.unique(strata):
        m = strata == s
        xs, ys = x[m], y[m]
        xl, xi = torch.unique(xs, return_inverse=True)
        yl, yi = torch.unique(ys, return_inverse=True)
        table = torch.zeros(len(xl), len(yl), dtype=torch.float64)
        table.index_put_((xi, yi), torch.ones_like(xi, dtype=torch.float64), accumulate=True)
        tot = table.sum()
        exp = table.sum(1, keepdim=True) * table.sum(0, keepdim=True) / tot
        nz = table > 0
        G += float(2 * (table[nz] * torch.log(table[nz] / exp[nz])).sum())
        dof += (len(xl) - 1) * (len(yl) - 1)
    if dof == 0:
        return 1.0, G
    p = float(
        torch.special.gammaincc(
            torch.tensor(dof / 2.0, dtype=torch.float64), torch.tensor(G / 2.0, dtype=torch.float64)
        )
    )
    return p, G
