"""Within-graph node permutations of a PyG mini-batch, as actions for invariance.core.testing."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch

from invariance.core.groups import permute_nodes, relabel_edge_index


def within_graph(perm: Tensor, batch: Tensor) -> Tensor:
    """Turn a random permutation of all N nodes into one that keeps every node in its graph.

    Stable-sorting ``perm`` by the graph id of its entries keeps the (sorted) ``batch`` vector
    unchanged and leaves a uniformly random order inside each graph.
    """
    order = torch.sort(batch[perm.to(batch.device)], stable=True).indices
    return perm.to(batch.device)[order]


def graph_actions(batch: Tensor) -> tuple[Callable, Callable]:
    """``(act_nodes, act_edge_index)`` callables ``(g, x) -> x`` for the checker."""
    return (
        lambda g, x: permute_nodes(x, within_graph(g, batch)),
        lambda g, e: relabel_edge_index(e, within_graph(g, batch)),
    )


class GraphFn(nn.Module):
    """Wrap ``fn(model, batch)`` as a module on tensors, so the checker can cast it to float64."""

    def __init__(self, model: nn.Module, fn: Callable, num_graphs: int) -> None:
        super().__init__()
        self.model, self.fn, self.num_graphs = model, fn, num_graphs

    def forward(
        self, x: Tensor, edge_index: Tensor, batch: Tensor, edge_attr: Tensor | None = None
    ):
        b = Batch(x=x, edge_index=edge_index, batch=batch, edge_attr=edge_attr)
        return self.fn(self.model, b)


def graph_inputs(b: Batch) -> dict:
    """The tensor inputs of :class:`GraphFn` for a PyG batch."""
    out = {"x": b.x, "edge_index": b.edge_index, "batch": b.batch}
    if getattr(b, "edge_attr", None) is not None:
        out["edge_attr"] = b.edge_attr
    return out


def graph_act_in(b: Batch) -> dict:
    """Within-graph permutation action on :func:`graph_inputs` (edge features keep their order)."""
    an, ae = graph_actions(b.batch)
    out = {"x": an, "edge_index": ae, "batch": None}
    if getattr(b, "edge_attr", None) is not None:
        out["edge_attr"] = None
    return out
