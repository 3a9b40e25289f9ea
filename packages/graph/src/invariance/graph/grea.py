r"""GREA and ERM-GIN: the baselines of IGT.

Paper: Gang Liu, Tong Zhao, Jiaxin Xu, Tengfei Luo, Meng Jiang, "Graph Rationalization with
Environment-based Augmentations", KDD 2022, arXiv 2206.02886. Official code:
``liugangcode/GREA`` (MIT; read for the encoder/separator/regulariser and the alternating schedule,
no code copied; golden values in ``tests/grea_golden.json`` were recorded by running it).

Mechanism. A separator (GIN + gate) gives a soft node mask :math:`m`; per graph
:math:`h_r = \sum_i m_i H_i` (rationale) and :math:`h_e = \sum_i (1-m_i) H_i` (environment).
The loss is :math:`\ell(\mathrm{pred}(h_r^i), y_i) + \mathrm{mean}_{i,j}\,
\ell(\mathrm{pred}(h_r^i + h_e^j), y_i) + \beta L_{reg}` over all :math:`B^2` (rationale,
environment) pairs, with GREA's size regulariser :math:`L_{reg} = \mathrm{mean}_G |\bar m_G -
\gamma|`. ERM-GIN (``GINClassifier``) is the same encoder with sum pooling and an MLP head.

Tested properties (``tests/test_grea.py``, ``tests/test_igt.py``): pooling, :math:`B^2` pairing,
regulariser and per-phase losses equal golden values from the official model; node-permutation
invariance of the pair logits (negative control: first-node readout).

Deviations: the gate and predictor MLPs use LayerNorm where GREA uses BatchNorm (shared BatchNorm
statistics over rationale and intervention vectors made eval-mode GREA collapse to chance); our
encoder is PyG GIN with a Linear input layer, not OGB's AtomEncoder/BondEncoder GIN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import global_add_pool

from invariance.graph._checks import check_int, check_real
from invariance.graph.nn.gin import GINVirtualNode, _mlp
from invariance.graph.nn.rationale import Rationalizer, _need_y, check_batch, size_regulariser

__all__ = ["GREA", "GINClassifier", "grea_loss"]


def grea_loss(
    h_r: Tensor,
    h_e: Tensor,
    m: Tensor,
    m_soft: Tensor,
    batch: Tensor,
    y: Tensor,
    predictor,
    gamma: float,
    *,
    criterion,
) -> dict[str, Tensor]:
    r"""GREA's loss terms from node embeddings and the node mask (pure function, for parity).

    :math:`h_r = \sum_i m_i H_i`, :math:`h_e = \sum_i (1-m_i) H_i` per graph;
    ``pred_rem = predictor(h_r)``, ``pred_rep[i*B + j] = predictor(h_r^i + h_e^j)`` with label
    :math:`y_i`; ``reg`` = :func:`size_regulariser` of the soft gate.

    Shapes: ``h_r``/``h_e`` (N, d), ``m``/``m_soft`` (N, 1), ``batch`` (N,), ``y`` (B,) or (B, T)
    -> dict with ``h_r``, ``h_e`` (B, d), ``pred_rem`` (B, C), ``pred_rep`` (B*B, C), scalars
    ``rationale``, ``intervention``, ``reg``.
    """
    hr = global_add_pool(m * h_r, batch)
    he = global_add_pool((1 - m) * h_e, batch)
    b = hr.size(0)
    pred_rem = predictor(hr)
    pred_rep = predictor((hr[:, None, :] + he[None, :, :]).reshape(b * b, -1))
    return {
        "h_r": hr,
        "h_e": he,
        "pred_rem": pred_rem,
        "pred_rep": pred_rep,
        "rationale": criterion(pred_rem, y),
        "intervention": criterion(pred_rep, y.repeat_interleave(b, dim=0)),
        "reg": size_regulariser(m_soft, batch, gamma),
    }


class GREA(Rationalizer):
    r"""GREA baseline: graph-level environment replacement (Liu et al., KDD 2022).

    Loss: :math:`\ell(\mathrm{pred}(h_r^i), y_i) + \mathrm{mean}_{i,j}\,\ell(\mathrm{pred}(h_r^i
    + h_e^j), y_i) + \beta L_{reg}` over all :math:`B^2` pairs.

    Invariance: graph outputs invariant to node permutations of each graph.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        hidden: int = 32,
        num_layers: int = 3,
        sep_layers: int = 2,
        edge_dim: int | None = None,
        dropout: float = 0.0,
        gamma: float = 0.4,
        beta: float = 1.0,
        virtual_node: bool = True,
        mask: str = "soft",
        reencode: bool = False,
    ) -> None:
        super().__init__(
            in_channels,
            num_classes,
            hidden=hidden,
            num_layers=num_layers,
            sep_layers=sep_layers,
            edge_dim=edge_dim,
            dropout=dropout,
            gamma=gamma,
            virtual_node=virtual_node,
            mask=mask,
            reencode=reencode,
        )
        self.beta = check_real("beta", beta, lo=0.0)

    def pair_logits(self, data) -> Tensor:
        """Logits of every (rationale i, environment j) pair, shape (B, B, C)."""
        h_r, h_e, m, _ = self._embed(data)
        hr = global_add_pool(m * h_r, data.batch)
        he = global_add_pool((1 - m) * h_e, data.batch)
        b = hr.size(0)
        pairs = (hr[:, None, :] + he[None, :, :]).reshape(b * b, -1)
        return self.predictor(pairs).reshape(b, b, -1)

    def loss(self, data, *, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        _need_y(data)
        h_r, h_e, m, m_soft = self._embed(data)
        y = data.y.reshape(-1)
        out = grea_loss(
            h_r, h_e, m, m_soft, data.batch, y, self.predictor, self.gamma, criterion=self._ce
        )
        rat, l_rat, l_int, reg = out["pred_rem"], out["rationale"], out["intervention"], out["reg"]
        acc = (rat.argmax(-1) == y).float().mean()
        return {
            "loss": l_rat + l_int + self.beta * reg,
            "rationale": l_rat.detach(),
            "intervention": l_int.detach(),
            "reg": reg.detach(),
            "acc": acc,
        }


class GINClassifier(nn.Module):
    """ERM-GIN baseline: GIN + virtual node, sum pooling, MLP head. Node-permutation invariant."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        hidden: int = 32,
        num_layers: int = 3,
        edge_dim: int | None = None,
        dropout: float = 0.0,
        virtual_node: bool = True,
    ) -> None:
        super().__init__()
        check_int("num_classes", num_classes, lo=2)
        self.num_classes = num_classes
        self.encoder = GINVirtualNode(
            in_channels,
            hidden,
            num_layers=num_layers,
            edge_dim=edge_dim,
            dropout=dropout,
            virtual_node=virtual_node,
        )
        self.predictor = _mlp(hidden, 2 * hidden, num_classes, dropout, norm="layer")

    def forward(self, data) -> Tensor:
        check_batch(data)
        h = self.encoder(data.x, data.edge_index, data.batch, getattr(data, "edge_attr", None))
        return self.predictor(global_add_pool(h, data.batch))

    def loss(self, data, *, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        _need_y(data)
        logits = self(data)
        y = data.y.reshape(-1)
        return {"loss": F.cross_entropy(logits, y), "acc": (logits.argmax(-1) == y).float().mean()}
