"""Argument checks for the graph package's public entry points (private): the shared checks of
``invariance.core.checks`` with the graph modules' signatures, plus the graph-specific ones
(``edge_index``, PyG mini-batches, BatchNorm batches).

Every check raises ``TypeError`` (wrong type or dtype) or ``ValueError`` (wrong shape, non-finite,
empty, out of range) with a message that starts with the argument's name. Tensor checks test the
dtype before the shape (a wrong-dtype tensor is a ``TypeError`` whatever its shape).
"""

from __future__ import annotations

from torch import Tensor

from invariance.core import checks as _c

__all__ = [
    "check_batchnorm_batch",
    "check_edge_index",
    "check_float_tensor",
    "check_graph_batch",
    "check_index_tensor",
    "check_int",
    "check_real",
]


def check_int(name: str, v, *, lo: int | None = None) -> int:
    """``v`` is an int (not bool) >= ``lo``; returns ``int(v)``."""
    return _c.check_int(name, v, lo)


def check_real(
    name: str,
    v,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
) -> float:
    """``v`` is a finite real number (not bool) between ``lo`` and ``hi`` (each end open where
    asked); returns ``float(v)``."""
    return _c.check_float(name, v, lo, hi, lo_open=lo_open, hi_open=hi_open)


def check_float_tensor(name: str, t, *, ndim: int | None = None, nonempty: bool = True) -> Tensor:
    """A floating tensor with ``ndim`` dimensions, finite, and (``nonempty``) with elements."""
    _c.check_tensor(name, t, floating=True, finite=False, nonempty=False)
    return _c.check_tensor(name, t, ndim=ndim, nonempty=nonempty)


def check_index_tensor(name: str, t, *, ndim: int) -> Tensor:
    """An integer (not bool) tensor with ``ndim`` dimensions."""
    _c.check_tensor(name, t, integer=True, finite=False, nonempty=False)
    return _c.check_tensor(name, t, ndim=ndim, finite=False, nonempty=False)


def check_edge_index(edge_index, num_nodes: int, name: str = "edge_index") -> Tensor:
    """A ``(2, E)`` integer tensor of node ids in ``[0, num_nodes)``."""
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
