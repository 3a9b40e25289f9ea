"""Single-cell RNA-seq data with known batches: a Splatter-like simulator and the shipped PBMC set.

* :func:`make_scrna_counts`: our own Splatter-like count simulator (Zappia et al. 2017 describe
  Splatter; no code used). Gene means ``~ Gamma(0.6, rate 0.3)``; per cell type, a fraction
  ``de_prob`` of genes get a log-normal differential-expression factor (up or down); per batch,
  every gene gets a multiplicative log-normal factor; library sizes are log-normal; counts are
  ``Poisson(Gamma(mean, BCV))``; optional logistic dropout. Ground truth: cell type, batch and
  each cell's *batch-free* mean (its counterfactual profile without the batch factor).
* :func:`load_pbmc68k_reduced`: the 700-cell x 765-gene PBMC set that ships inside the scanpy
  wheel (``scanpy/datasets/10x_pbmc68k_reduced.h5ad``), read with h5py only (no scanpy import,
  no download) plus known pseudo-batches: cells are split into ``n_batches`` donors and each
  donor gets a gene-wise affine distortion ``x (1 + gamma_bg) + beta_bg``.

Both return ``x`` (cells x genes, float32, min-max scaled per gene as in the official
``"scaling": "min_max"`` configs), ``batch`` (long), ``cell_type`` (long) and ``n_batches``,
``n_types``.
"""

from __future__ import annotations

import importlib.util
import os

import torch
from torch import Tensor

from invariance.causal._checks import (
    check_float,
    check_float_tensor,
    check_int,
    check_number,
    check_seed,
)

__all__ = ["load_pbmc68k_reduced", "make_scrna_counts", "min_max_scale", "pbmc68k_path"]


def min_max_scale(x: Tensor, eps: float = 1e-8) -> Tensor:
    """Per-gene min-max scaling to ``[0, 1]``: ``(cells, genes) -> (cells, genes)``."""
    check_float_tensor("x", x, dims=(2,))
    check_number("eps", eps, strict=True)
    lo = x.min(dim=0, keepdim=True).values
    hi = x.max(dim=0, keepdim=True).values
    return (x - lo) / (hi - lo).clamp_min(eps)


def make_scrna_counts(
    n_cells: int = 600,
    n_genes: int = 50,
    *,
    n_batches: int = 4,
    n_types: int = 4,
    de_prob: float = 0.2,
    de_loc: float = 1.0,
    de_scale: float = 0.4,
    batch_loc: float = 0.1,
    batch_scale: float = 0.5,
    lib_loc: float = 8.0,
    lib_scale: float = 0.2,
    bcv: float = 0.1,
    dropout_mid: float | None = None,
    seed: int = 0,
) -> dict:
    """Simulate a counts matrix with known batches and cell types (Splatter-like).

    Args:
        n_cells, n_genes (int): matrix size (defaults: 600, 50).
        n_batches, n_types (int): numbers of batches and cell types (defaults: 4, 4).
        de_prob (float): fraction of DE genes per type (default: 0.2).
        de_loc, de_scale (float): log-normal DE factor parameters (defaults: 1.0, 0.4).
        batch_loc, batch_scale (float): log-normal batch factor parameters (defaults: 0.1, 0.5).
        lib_loc, lib_scale (float): log-normal library size parameters (defaults: 8.0, 0.2).
        bcv (float): biological coefficient of variation (default: 0.1).
        dropout_mid (float, optional): midpoint (log mean) of the logistic dropout; None = off.
        seed (int): seed (default: 0).

    Returns a dict with ``counts`` (float32 counts), ``x`` (min-max scaled ``log1p`` of
    library-normalised counts), ``batch``, ``cell_type``, ``true_mean`` (the batch-free mean of
    each cell, same normalisation as ``counts``), ``n_batches`` and ``n_types``.
    """
    for name, v, lo in (
        ("n_cells", n_cells, 4),
        ("n_genes", n_genes, 2),
        ("n_batches", n_batches, 1),
        ("n_types", n_types, 1),
    ):
        if not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    check_float("de_prob", de_prob, 0.0, 1.0)
    for name, v in (("de_loc", de_loc), ("batch_loc", batch_loc), ("lib_loc", lib_loc)):
        check_float(name, v)
    for name, v in (("de_scale", de_scale), ("batch_scale", batch_scale), ("lib_scale", lib_scale)):
        check_number(name, v)
    check_number("bcv", bcv, strict=True)  # the Gamma shape is 1 / bcv^2
    if dropout_mid is not None:
        check_float("dropout_mid", dropout_mid)
    g = torch.Generator().manual_seed(check_seed(seed))
    f64 = torch.float64
    base = _gamma(torch.full((n_genes,), 0.6, dtype=f64), g) / 0.3
    de = torch.ones(n_types, n_genes, dtype=f64)
    is_de = torch.rand(n_types, n_genes, generator=g) < de_prob
    fac = torch.exp(de_loc + de_scale * torch.randn(n_types, n_genes, generator=g, dtype=f64))
    down = torch.rand(n_types, n_genes, generator=g) < 0.5
    fac = torch.where(down, 1.0 / fac, fac)
    de = torch.where(is_de, fac, de)
    bfac = torch.exp(
        batch_loc + batch_scale * torch.randn(n_batches, n_genes, generator=g, dtype=f64)
    )
    batch = torch.randint(0, n_batches, (n_cells,), generator=g)
    ctype = torch.randint(0, n_types, (n_cells,), generator=g)
    lib = torch.exp(lib_loc + lib_scale * torch.randn(n_cells, generator=g, dtype=f64))
    clean = base * de[ctype]
    clean = clean / clean.sum(1, keepdim=True) * lib[:, None]
    mean = base * de[ctype] * bfac[batch]
    mean = mean / mean.sum(1, keepdim=True) * lib[:, None]
    shape = torch.full_like(mean, 1.0 / bcv**2)
    lam = _gamma(shape, g) * mean * bcv**2
    counts = torch.poisson(lam, generator=g)
    if dropout_mid is not None:
        p_drop = torch.sigmoid(-(torch.log(mean) - dropout_mid))
        counts = torch.where(torch.rand(mean.shape, generator=g, dtype=f64) < p_drop, 0.0, counts)
    norm = torch.log1p(counts / counts.sum(1, keepdim=True).clamp_min(1.0) * 1e4)
    return {
        "counts": counts.float(),
        "x": min_max_scale(norm).float(),
        "batch": batch,
        "cell_type": ctype,
        "true_mean": clean.float(),
        "n_batches": n_batches,
        "n_types": n_types,
    }


def _gamma(shape: Tensor, g: torch.Generator) -> Tensor:
    """Gamma(shape, 1) samples through ``g`` (Marsaglia-Tsang with the shape+1 boost)."""
    boost = shape < 1
    a = torch.where(boost, shape + 1.0, shape)
    d = a - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    out = torch.empty_like(a)
    todo = torch.ones_like(a, dtype=torch.bool)
    while bool(todo.any()):
        z = torch.randn(a.shape, generator=g, dtype=a.dtype)
        u = torch.rand(a.shape, generator=g, dtype=a.dtype)
        v = (1 + c * z) ** 3
        ok = (v > 0) & (
            torch.log(u.clamp_min(1e-300))
            < 0.5 * z**2 + d - d * v + d * torch.log(v.clamp_min(1e-300))
        )
        take = todo & ok
        out = torch.where(take, d * v, out)
        todo = todo & ~ok
    u = torch.rand(a.shape, generator=g, dtype=a.dtype)
    return torch.where(boost, out * u.pow(1.0 / shape), out)


def pbmc68k_path() -> str | None:
    """Path of ``10x_pbmc68k_reduced.h5ad`` inside an installed scanpy wheel, or None.

    Located with ``importlib.util.find_spec`` so scanpy itself is never imported.
    """
    spec = importlib.util.find_spec("scanpy")
    if spec is None or spec.origin is None:
        return None
    path = os.path.join(os.path.dirname(spec.origin), "datasets", "10x_pbmc68k_reduced.h5ad")
    return path if os.path.exists(path) else None


def load_pbmc68k_reduced(
    n_batches: int = 3, *, effect_scale: float = 0.3, seed: int = 0, path: str | None = None
) -> dict:
    """Read the shipped PBMC68k-reduced set (log-normalised ``raw.X``) and add pseudo-batches.

    Cells are assigned uniformly at random to ``n_batches`` pseudo-donors; donor ``b`` transforms
    gene ``g`` as ``x (1 + gamma_bg) + beta_bg`` with ``gamma ~ N(0, effect_scale^2)`` and
    ``beta ~ N(0, (effect_scale * mean_g)^2)``, clipped at 0. Labels: ``bulk_labels`` (10 types).

    Raises:
        FileNotFoundError: when scanpy (extra ``invariance-causal[pbmc]``) is not installed.
    """
    import h5py  # local import: only this loader needs it

    check_int("n_batches", n_batches, 1)
    check_number("effect_scale", effect_scale)
    seed = check_seed(seed)
    path = path or pbmc68k_path()
    if path is None:
        raise FileNotFoundError(
            "10x_pbmc68k_reduced.h5ad not found: install the extra `invariance-causal[pbmc]` "
            "(scanpy ships the file); nothing is downloaded"
        )
    with h5py.File(path, "r") as f:
        grp = f["raw.X"]
        n, m = (int(v) for v in grp.attrs["h5sparse_shape"])
        data = torch.as_tensor(grp["data"][:], dtype=torch.float32)
        indices = torch.as_tensor(grp["indices"][:].astype("int64"))
        indptr = torch.as_tensor(grp["indptr"][:].astype("int64"))
        labels = torch.as_tensor(f["obs"]["bulk_labels"][:].astype("int64"))
        names = [s.decode() for s in f["uns"]["bulk_labels_categories"][:]]
    rows = torch.repeat_interleave(torch.arange(n), indptr[1:] - indptr[:-1])
    x = torch.zeros(n, m, dtype=torch.float32)
    x[rows, indices] = data
    g = torch.Generator().manual_seed(seed)
    batch = torch.randint(0, n_batches, (n,), generator=g)
    gam = effect_scale * torch.randn(n_batches, m, generator=g)
    beta = effect_scale * x.mean(0, keepdim=True) * torch.randn(n_batches, m, generator=g)
    xb = (x * (1 + gam[batch]) + beta[batch]).clamp_min(0.0)
    return {
        "x": min_max_scale(xb),
        "x_clean": min_max_scale(x),
        "batch": batch,
        "cell_type": labels,
        "cell_type_names": names,
        "n_batches": n_batches,
        "n_types": len(names),
    }
