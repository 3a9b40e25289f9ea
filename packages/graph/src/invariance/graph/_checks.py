"""Argument checks shared by the graph package's public entry points.

Every check raises ``TypeError`` (wrong type or dtype) or ``ValueError`` (wrong shape, non-finite,
empty, out of range) with a message that starts with the argument's name.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor


def check_int(name: str, v, *, lo: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if lo is not None and v < lo:
        raise ValueError(f"{name} must be >= {lo}, got {v}")
    return int(v)


def check_real(
    name: str,
    v,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(v).__name__}")
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {v}")
    if hi is not None and (v > hi or (hi_open and v == hi)):
        raise ValueError(f"{name} must be {'<' if hi_open else '<='} {hi}, got {v}")
    return v


def check_float_tensor(name: str, t, *, ndim: int | None = None, nonempty: bool = True) -> Tensor:
    """A floating tensor with ``ndim`` dimensions, finite, and (``nonempty``) with elements."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got {t.dtype}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    if nonempty and t.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t.detach()).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return t


def check_index_tensor(name: str, t, *, ndim: int) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got {t.dtype}")
    if t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    return t


def check_edge_index(edge_index, num_nodes: int, name: str = "edge_index") -> Tensor:
    check_index_tensor(name, edge_index, ndim=2)
    if edge_index.size(0) != 2:
        raise ValueError(f"{name} must have shape (2, E), got {tuple(edge_index.shape)}")
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= num_nodes):
        raise ValueError(
            f"{name} refers to nodes outside [0, {num_nodes}) "
            f"(min {int(edge_index.min())}, max {int(edge_index.max())})"
        )
    return edge_index


def check_graph_batch(data) -> int:
    """Validate a PyG mini-batch of graphs (``x``, ``edge_index``, ``batch``, optional ``y``);
    return the number of graphs."""
    for k in ("x", "edge_index", "batch"):
        if getattr(data, k, None) is None:
            raise TypeError(
                f"expected a PyG Batch with '{k}', got {type(data).__name__} without it"
            )
    x = check_float_tensor("x", data.x, ndim=2)
    check_edge_index(data.edge_index, x.size(0))
    batch = check_index_tensor("batch", data.batch, ndim=1)
    if batch.numel() != x.size(0):
        raise ValueError(
            f"batch must have one entry per node of x ({x.size(0)}), got {batch.numel()}"
        )
    if int(batch.min()) < 0:
        raise ValueError("batch must hold non-negative graph ids")
    num_graphs = int(batch.max()) + 1
    y = getattr(data, "y", None)
    if y is not None:
        check_index_tensor("y", y, ndim=y.dim() if y.dim() in (1, 2) else 1)
        if y.dim() == 2 and y.size(1) != 1:
            raise ValueError(
                f"y must have shape ({num_graphs},) or ({num_graphs}, 1), got {tuple(y.shape)}"
            )
        if y.numel() != num_graphs:
            raise ValueError(
                f"y must have one label per graph ({num_graphs}), got shape {tuple(y.shape)}"
            )
    return num_graphs


def check_batchnorm_batch(training: bool, num_graphs: int) -> None:
    """BatchNorm over graphs needs two graphs per training batch."""
    if training and num_graphs < 2:
        raise ValueError(
            f"batch holds {num_graphs} graph(s); BatchNorm over graphs needs at least 2 per "
            f"training batch (use model.eval() for a single graph, or a larger batch)"
        )
