r"""GIN/GINE encoder with a virtual node (OGB ``gin-virtual`` style), plain PyG + torch.

Used as the encoder and as the separator backbone of IGT/GREA/ERM-GIN. Written from the
description of the OGB graph-property-prediction encoder (Hu et al., "Open Graph Benchmark",
arXiv 2005.00687) that GREA (``liugangcode/GREA``) uses; no code copied.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn import GINConv, GINEConv, global_add_pool
from torch_geometric.typing import OptTensor, PairTensor  # noqa: F401  (PyG reads propagate_type)

from invariance.graph._checks import (
    check_batchnorm_batch,
    check_edge_index,
    check_float_tensor,
    check_index_tensor,
    check_int,
    check_real,
)


class _WeightedGINConv(GINConv):
    """PyG ``GINConv`` whose messages can be scaled by a per-edge weight (``None``: plain GIN)."""

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor | None = None) -> Tensor:
        # propagate_type: (x: PairTensor, edge_weight: OptTensor)
        out = self.propagate(edge_index, x=(x, x), edge_weight=edge_weight, size=None)
        return self.nn(out + (1 + self.eps) * x)

    def message(self, x_j: Tensor, edge_weight: Tensor | None) -> Tensor:
        return x_j if edge_weight is None else x_j * edge_weight.view(-1, 1)


class _WeightedGINEConv(GINEConv):
    """PyG ``GINEConv`` whose messages can be scaled by a per-edge weight (``None``: plain GINE)."""

    def forward(
        self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, edge_weight: Tensor | None = None
    ) -> Tensor:
        # propagate_type: (x: PairTensor, edge_attr: Tensor, edge_weight: OptTensor)
        out = self.propagate(
            edge_index, x=(x, x), edge_attr=edge_attr, edge_weight=edge_weight, size=None
        )
        return self.nn(out + (1 + self.eps) * x)

    def message(self, x_j: Tensor, edge_attr: Tensor, edge_weight: Tensor | None) -> Tensor:
        m = super().message(x_j, edge_attr)
        return m if edge_weight is None else m * edge_weight.view(-1, 1)


def _mlp(i: int, h: int, o: int, dropout: float = 0.0, norm: str | None = "batch") -> nn.Sequential:
    """``Linear(i,h) -> [BatchNorm|LayerNorm] -> ReLU -> Dropout -> Linear(h,o)``."""
    layers: list[nn.Module] = [nn.Linear(i, h)]
    if norm == "batch":
        layers.append(nn.BatchNorm1d(h))
    elif norm == "layer":
        layers.append(nn.LayerNorm(h))
    layers += [nn.ReLU(), nn.Dropout(dropout), nn.Linear(h, o)]
    return nn.Sequential(*layers)


class GINVirtualNode(nn.Module):
    r"""GIN (or GINE with edge features) with a virtual node, residual connections and JK=last.

    .. math::
        h^{(l+1)} = \mathrm{drop}(\sigma(\mathrm{BN}(\mathrm{GIN}(h^{(l)} + v^{(l)}_{b}))))
        + h^{(l)}, \qquad v^{(l+1)} = v^{(l)} + \mathrm{MLP}(\textstyle\sum_{i\in G} h^{(l)}_i
        + v^{(l)})

    Args:
        in_channels (int): node feature size.
        hidden_channels (int): embedding size ``d``.
        num_layers (int): message-passing layers. (default: ``3``)
        edge_dim (int, optional): edge feature size; uses ``GINEConv`` when given.
            (default: ``None``)
        dropout (float): dropout after every layer. (default: ``0.0``)
        virtual_node (bool): add the virtual node. (default: ``True``)

    Shapes:
        ``x`` (N, in), ``edge_index`` (2, E), ``batch`` (N,), ``edge_attr`` (E, edge_dim),
        ``edge_weight`` (E,) optional message weights (rationale re-encoding) -> (N, d).

    Invariance:
        node-permutation *equivariant* (relabel ``edge_index``, permute ``x``/``batch``).
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        *,
        num_layers: int = 3,
        edge_dim: int | None = None,
        dropout: float = 0.0,
        virtual_node: bool = True,
    ) -> None:
        super().__init__()
        check_int("in_channels", in_channels, lo=1)
        check_int("hidden_channels", hidden_channels, lo=1)
        check_int("num_layers", num_layers, lo=1)
        if edge_dim is not None:
            check_int("edge_dim", edge_dim, lo=1)
        check_real("dropout", dropout, lo=0.0, hi=1.0, hi_open=True)
        d = hidden_channels
        self.in_channels, self.hidden_channels = in_channels, d
        self.num_layers, self.edge_dim, self.dropout = num_layers, edge_dim, dropout
        self.virtual_node = virtual_node
        self.lin_in = nn.Linear(in_channels, d)
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for _ in range(num_layers):
            mlp = _mlp(d, 2 * d, d)
            conv = (
                _WeightedGINEConv(mlp, edge_dim=edge_dim, train_eps=True)
                if edge_dim
                else _WeightedGINConv(mlp, train_eps=True)
            )
            self.convs.append(conv)
            self.norms.append(nn.BatchNorm1d(d))
        if virtual_node:
            self.vn_init = nn.Parameter(torch.zeros(1, d))
            self.vn_mlps = nn.ModuleList(_mlp(d, 2 * d, d) for _ in range(num_layers - 1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.lin_in.reset_parameters()
        for c, n in zip(self.convs, self.norms):
            c.reset_parameters()
            n.reset_parameters()
        if self.virtual_node:
            nn.init.zeros_(self.vn_init)
            for m in self.vn_mlps:
                for layer in m:
                    if hasattr(layer, "reset_parameters"):
                        layer.reset_parameters()

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        batch: Tensor,
        edge_attr: Tensor | None = None,
        edge_weight: Tensor | None = None,
    ) -> Tensor:
        check_float_tensor("x", x, ndim=2)
        if x.size(1) != self.in_channels:
            raise ValueError(f"x must have shape (N, {self.in_channels}), got {tuple(x.shape)}")
        check_edge_index(edge_index, x.size(0))
        check_index_tensor("batch", batch, ndim=1)
        if batch.shape != (x.size(0),):
            raise ValueError(f"batch must have shape ({x.size(0)},), got {tuple(batch.shape)}")
        if self.edge_dim and (
            edge_attr is None or edge_attr.shape != (edge_index.size(1), self.edge_dim)
        ):
            got = None if edge_attr is None else tuple(edge_attr.shape)
            raise ValueError(
                f"edge_attr must have shape ({edge_index.size(1)}, {self.edge_dim}), got {got}"
            )
        if edge_weight is not None and edge_weight.shape != (edge_index.size(1),):
            raise ValueError(
                f"edge_weight must have shape ({edge_index.size(1)},), "
                f"got {tuple(edge_weight.shape)}"
            )
        num_graphs = int(batch.max()) + 1 if batch.numel() else 0
        if self.training and x.size(0) < 2:
            raise ValueError(
                f"x holds {x.size(0)} node(s); BatchNorm over nodes needs at least 2 "
                f"per training batch (use model.eval() for inference)"
            )
        if self.virtual_node and self.num_layers > 1:
            check_batchnorm_batch(self.training, num_graphs)
        h = self.lin_in(x)
        vn = self.vn_init.expand(num_graphs, -1) if self.virtual_node else None
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            h_in = h + vn[batch] if vn is not None else h
            if self.edge_dim:
                out = conv(h_in, edge_index, edge_attr, edge_weight)
            else:
                out = conv(h_in, edge_index, edge_weight)
            out = norm(out)
            if i < self.num_layers - 1:
                out = torch.relu(out)
            out = nn.functional.dropout(out, self.dropout, self.training)
            if vn is not None and i < self.num_layers - 1:
                pooled = global_add_pool(h_in, batch, size=num_graphs) + vn
                vn = vn + nn.functional.dropout(
                    self.vn_mlps[i](pooled), self.dropout, self.training
                )
            h = out + h_in
        return h

    def extra_repr(self) -> str:
        return (
            f"in={self.in_channels}, hidden={self.hidden_channels}, layers={self.num_layers}, "
            f"edge_dim={self.edge_dim}, virtual_node={self.virtual_node}"
        )
