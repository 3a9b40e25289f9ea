r"""Shared pieces of the graph rationalisers (IGT, GREA): the soft/hard node mask, GREA's size
regulariser, the rationale ROC-AUC and the encoder + augmenter + predictor base model.

The base model follows GREA (Liu et al., KDD 2022, arXiv 2206.02886, ``liugangcode/GREA``, read for
the shared encoder/separator/regulariser; no code copied): a GIN encoder gives node embeddings
:math:`H`, a separate GIN + gate MLP gives a soft rationale mask
:math:`m_i = \sigma(\mathrm{gate}_i)`, and the predictor reads :math:`\sum_i m_i H_i` per graph.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import global_add_pool
from torch_geometric.utils import to_dense_batch

from invariance.graph._checks import (
    check_float_tensor,
    check_graph_batch,
    check_index_tensor,
    check_int,
    check_real,
)
from invariance.graph.nn.gin import GINVirtualNode, _mlp

__all__ = ["Rationalizer", "size_regulariser", "topk_mask", "rationale_auc", "check_batch"]


def _check_mask_batch(mask: Tensor, batch: Tensor) -> None:
    check_float_tensor("mask", mask)
    if mask.dim() not in (1, 2) or (mask.dim() == 2 and mask.size(1) != 1):
        raise ValueError(f"mask must have shape (N,) or (N, 1), got {tuple(mask.shape)}")
    check_index_tensor("batch", batch, ndim=1)
    if batch.numel() != mask.size(0):
        raise ValueError(
            f"batch must have one entry per mask entry ({mask.size(0)}), got {batch.numel()}"
        )


def size_regulariser(mask: Tensor, batch: Tensor, gamma: float) -> Tensor:
    r"""GREA's :math:`\mathrm{mean}_G |r_G/(r_G+e_G) - \gamma|` with ``r = sum m``, ``e = sum 1-m``.

    Shapes: ``mask`` (N,) or (N, 1) in (0, 1), ``batch`` (N,) -> scalar.
    """
    _check_mask_batch(mask, batch)
    check_real("gamma", gamma, lo=0.0, hi=1.0)
    m = mask.reshape(-1)
    ones = torch.ones_like(m)
    r = global_add_pool(m[:, None], batch).squeeze(1)
    n = global_add_pool(ones[:, None], batch).squeeze(1)
    return (r / n - gamma).abs().mean()


def topk_mask(mask: Tensor, batch: Tensor, ratio: float) -> Tensor:
    r"""Hard top-:math:`\lceil \mathrm{ratio}\cdot n_G \rceil` mask per graph, straight-through.

    The forward value is exactly 0/1 (the ``k`` highest scores of each graph); the backward pass is
    the identity on ``mask`` (straight-through estimator), so the gate keeps learning.

    Shapes: ``mask`` (N, 1) in (0, 1), ``batch`` (N,) -> (N, 1).
    """
    _check_mask_batch(mask, batch)
    check_real("ratio", ratio, lo=0.0, hi=1.0, lo_open=True)
    md, valid = to_dense_batch(mask.reshape(-1), batch, fill_value=float("-inf"))
    k = torch.ceil(ratio * valid.sum(1).to(mask.dtype)).clamp(min=1).long()
    order = md.argsort(dim=1, descending=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(md.size(1), device=md.device).expand_as(order))
    hard = ((rank < k[:, None]) & valid)[valid].to(mask.dtype).reshape(mask.shape)
    return hard + (mask - mask.detach())


def rationale_auc(scores: Tensor, truth: Tensor) -> float:
    """ROC-AUC of ``scores`` against boolean ``truth`` (rank statistic, ties averaged)."""
    check_float_tensor("scores", scores, ndim=1)
    if truth.dtype != torch.bool:
        check_index_tensor("truth", truth, ndim=1)
    if truth.shape != scores.shape:
        raise ValueError(
            f"truth must have the shape of scores {tuple(scores.shape)}, got {tuple(truth.shape)}"
        )
    s = scores.detach().reshape(-1).double().cpu()
    t = truth.reshape(-1).bool().cpu()
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = torch.argsort(s)
    ranks = torch.empty_like(s)
    ranks[order] = torch.arange(1, len(s) + 1, dtype=torch.float64)
    # average ranks of ties
    uniq, inv = torch.unique(s, return_inverse=True)
    sums = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inv, ranks)
    cnts = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inv, torch.ones_like(ranks))
    ranks = (sums / cnts)[inv]
    return float((ranks[t].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _need_y(data) -> None:
    if getattr(data, "y", None) is None:
        raise TypeError("data needs graph labels 'y' for the loss")


def check_batch(data) -> int:
    """Validate a PyG mini-batch (``x``, ``edge_index``, ``batch``, optional ``y``); return the
    number of graphs."""
    return check_graph_batch(data)


class Rationalizer(nn.Module):
    """Shared encoder + augmenter (separator GNN + gate) + predictor."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        hidden: int,
        num_layers: int,
        sep_layers: int,
        edge_dim: int | None,
        dropout: float,
        gamma: float,
        virtual_node: bool = True,
        mask: str = "soft",
        reencode: bool = False,
    ) -> None:
        super().__init__()
        check_int("in_channels", in_channels, lo=1)
        check_int("num_classes", num_classes, lo=2)
        check_int("hidden", hidden, lo=1)
        check_int("num_layers", num_layers, lo=1)
        check_int("sep_layers", sep_layers, lo=1)
        check_real("dropout", dropout, lo=0.0, hi=1.0, hi_open=True)
        check_real("gamma", gamma, lo=0.0, hi=1.0, lo_open=True, hi_open=True)
        if mask not in ("soft", "hard"):
            raise ValueError(f"mask must be 'soft' or 'hard', got {mask!r}")
        self.mask, self.reencode = mask, reencode
        self.in_channels, self.num_classes, self.hidden = in_channels, num_classes, hidden
        self.gamma, self.dropout = gamma, dropout
        self.encoder = GINVirtualNode(
            in_channels,
            hidden,
            num_layers=num_layers,
            edge_dim=edge_dim,
            dropout=dropout,
            virtual_node=virtual_node,
        )
        self.separator = GINVirtualNode(
            in_channels,
            hidden,
            num_layers=sep_layers,
            edge_dim=edge_dim,
            dropout=dropout,
            virtual_node=virtual_node,
        )
        self.gate = _mlp(hidden, 2 * hidden, 1, dropout, norm="layer")
        self.predictor = _mlp(hidden, 2 * hidden, num_classes, dropout, norm="layer")

    def _embed(self, data) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """``(H_r, H_e, m, m_soft)``: node embeddings for the rationale and the environment side
        (the same tensor unless ``reencode``), the mask used (hard top-k if ``mask="hard"``) and the
        soft gate, both (N, 1); masks are ``None`` for IGT-VN (its augmenter gates virtual nodes).
        """
        check_batch(data)
        ea = getattr(data, "edge_attr", None)
        if self.separator is None:  # IGT-VN: the augmenter works on virtual nodes
            h = self.encoder(data.x, data.edge_index, data.batch, ea)
            return h, h, None, None
        s = self.separator(data.x, data.edge_index, data.batch, ea)
        m_soft = torch.sigmoid(self.gate(s))
        m = topk_mask(m_soft, data.batch, self.gamma) if self.mask == "hard" else m_soft
        if not self.reencode:
            h = self.encoder(data.x, data.edge_index, data.batch, ea)
            return h, h, m, m_soft
        src, dst = data.edge_index
        w_r = (m[src] * m[dst]).reshape(-1)
        w_e = ((1 - m[src]) * (1 - m[dst])).reshape(-1)
        h_r = self.encoder(data.x, data.edge_index, data.batch, ea, edge_weight=w_r)
        h_e = self.encoder(data.x, data.edge_index, data.batch, ea, edge_weight=w_e)
        return h_r, h_e, m, m_soft

    def encode(self, data) -> tuple[Tensor, Tensor]:
        """Rationale-side node embeddings ``H`` (N, d) and the node mask ``m`` (N, 1) in use."""
        h_r, _, m, _ = self._embed(data)
        return h_r, m

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """GREA's optimiser split: ``separator`` (augmenter + gate) and ``predictor`` (encoder +
        predictor); IGT adds ``intervener``."""
        sep = [*self.gate.parameters()]
        if self.separator is not None:
            sep += [*self.separator.parameters()]
        pool = getattr(self, "pool", None)
        if pool is not None:
            sep += [*pool.parameters()]
        pred = [*self.encoder.parameters(), *self.predictor.parameters()]
        return {"separator": sep, "predictor": pred}

    def _ce(self, logits: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(logits, y.reshape(-1))

    def forward(self, data) -> Tensor:
        """Inference path: rationale logits ``pred(sum_i m_i H_i)``, shape (B, C)."""
        h, m = self.encode(data)
        return self.predictor(global_add_pool(m * h, data.batch))

    def node_scores(self, data) -> Tensor:
        """Rationale score per node (the soft gate; the hard mask is its top-k), shape (N,)."""
        return self._embed(data)[3].squeeze(-1)
