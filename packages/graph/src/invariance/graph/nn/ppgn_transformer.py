"""PARD's higher-order graph transformer (official ``pard/parallel/network.py``), channel-last.

Per layer: a transformer block on nodes with edge-biased attention (GRIT-like: ``S_ij = Xq_i +
Xk_j``, ``E' = SiLU(Ek + SiLU(S) * Eq + S)``, per-head logits ``Linear(E')`` masked by the causal
block mask, node update ``sum_j a_ij (V_j + Ev_ij)``, edge update ``E += Linear(E')``, FFN), then a
PPGN block on edges whose matrix product is restricted causally,
``out_ij = sum_k x1_ik x2_kj [M_ik or M_jk]`` (as ``x1c @ x2 + x1 @ x2c - x1c @ x2c``). Pre-norm,
masked LayerNorm or masked BatchNorm. The official 1x1 convolutions on channel-first tensors are
``nn.Linear`` on channel-last tensors here (same parameters: ``(out, in, 1, 1) -> (out, in)``;
module names follow the official ones so state dicts map one to one).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invariance.graph._checks import check_float_tensor


class MaskedNorm(nn.Module):
    """LayerNorm (``"ln"``: per element, then zero outside ``mask``), BatchNorm over the masked
    elements (``"bn"``) or identity (``"none"``), on the last (channel) dimension."""

    def __init__(self, dim: int, norm: str = "ln") -> None:
        super().__init__()
        if norm not in ("ln", "bn", "none"):
            raise ValueError(f"norm must be 'ln', 'bn' or 'none', got {norm!r}")
        self.kind = norm
        if norm == "ln":
            self.ln = nn.LayerNorm(dim)
        elif norm == "bn":
            self.bn = nn.BatchNorm1d(dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if self.kind == "ln":
            x = self.ln(x)
            return x if mask is None else x * mask.unsqueeze(-1)
        if self.kind == "bn":
            if mask is None:
                return self.bn(x.reshape(-1, x.size(-1))).view(x.shape)
            out = x.clone()
            out[mask] = self.bn(x[mask])
            return out
        return x


class MLP(nn.Module):
    """``Linear -> (masked norm) -> SiLU -> Linear``."""

    def __init__(self, idim: int, odim: int, hdim: int | None = None, norm: str = "none") -> None:
        super().__init__()
        hdim = hdim or odim
        self.linear1 = nn.Linear(idim, hdim)
        self.linear2 = nn.Linear(hdim, odim)
        self.norm = MaskedNorm(hdim, norm)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.linear2(F.silu(self.norm(self.linear1(x), mask)))


class PPGNBlock(nn.Module):
    """Causal PPGN block on edges ``(B, N, N, C)`` + FFN (pre-norm)."""

    def __init__(
        self, channel: int, norm: str = "ln", add_transpose: bool = True, prenorm: bool = True
    ):
        super().__init__()
        self.add_transpose, self.prenorm = add_transpose, prenorm
        f = 2 if add_transpose else 1
        self.norm1 = MaskedNorm(channel, norm)
        self.norm2 = MaskedNorm(channel, norm)
        self.mlp1 = MLP(f * channel, channel, channel)
        self.mlp2 = MLP(channel, channel, channel)
        self.linear = nn.Linear(channel, channel)
        self.mlp3 = MLP(channel, channel, 2 * channel)

    def forward(self, x: Tensor, mask: Tensor, causal: Tensor | None = None) -> Tensor:
        m = mask.unsqueeze(-1)
        xin = self.norm1(x, mask)
        x1 = torch.cat([xin, xin.transpose(1, 2)], -1) if self.add_transpose else xin
        x1 = (F.silu(self.mlp1(x1)) * m).permute(0, 3, 1, 2)  # B C N N for the matmuls
        x2 = (F.silu(self.mlp2(xin)) * m).permute(0, 3, 1, 2)
        if causal is None:
            prod = x1 @ x2
        else:
            c = causal.unsqueeze(1).to(x1.dtype)
            x1c, x2c = x1 * c, x2 * c.transpose(-1, -2)
            prod = x1c @ x2 + x1 @ x2c - x1c @ x2c
        x = self.linear(prod.permute(0, 2, 3, 1)) * m + (x if self.prenorm else xin)
        xin = self.norm2(x, mask)
        return self.mlp3(xin, mask) * m + (x if self.prenorm else xin)


class TransformerBlock(nn.Module):
    """Edge-biased attention on nodes with edge updates (pre-norm) + node FFN."""

    def __init__(
        self,
        node_channel: int,
        edge_channel: int,
        n_head: int,
        norm: str = "ln",
        prenorm: bool = True,
    ):
        super().__init__()
        if node_channel % n_head:
            raise ValueError(f"n_head={n_head} must divide node_channel={node_channel}")
        Dn, De = node_channel, edge_channel
        self.node_norm1, self.edge_norm = MaskedNorm(Dn, norm), MaskedNorm(De, norm)
        self.node_norm2 = MaskedNorm(Dn, norm)
        self.qk_node, self.qk_edge = nn.Linear(Dn, 2 * De), nn.Linear(De, 2 * De)
        self.v_node, self.v_edge = nn.Linear(Dn, Dn), nn.Linear(De, Dn)
        self.o_node, self.o_edge = nn.Linear(Dn, Dn), nn.Linear(De, De)
        self.att_linear = nn.Linear(De, n_head)
        self.mlp = MLP(Dn, Dn, 2 * Dn)
        self.n_head, self.prenorm = n_head, prenorm

    def forward(self, X: Tensor, E: Tensor, edge_mask: Tensor, causal: Tensor | None = None):
        node_mask = edge_mask.any(-1)
        nm, em = node_mask.unsqueeze(-1), edge_mask.unsqueeze(-1)
        Xn = self.node_norm1(X, node_mask)
        Xq, Xk = self.qk_node(Xn).chunk(2, -1)
        En = self.edge_norm(E, edge_mask)
        Eq, Ek = self.qk_edge(En).chunk(2, -1)
        S = Xq.unsqueeze(2) + Xk.unsqueeze(1)  # S_ij = Xq_i + Xk_j
        E_new = F.silu(Ek + F.silu(S) * Eq + S) * em
        E = (E if self.prenorm else En) + self.o_edge(E_new) * em
        att = self.att_linear(E_new).permute(0, 3, 1, 2)  # B H N N
        allowed = (edge_mask if causal is None else causal).unsqueeze(1)
        att = torch.softmax(att.masked_fill(~allowed, float("-inf")), -1).nan_to_num()
        B, N, _ = X.shape
        H = self.n_head
        Xv = (self.v_node(Xn) * nm).view(B, N, H, -1).transpose(1, 2)  # B H N d
        Ev = (self.v_edge(E_new) * em).view(B, N, N, H, -1).permute(0, 3, 1, 2, 4)  # B H N N d
        X_new = att @ Xv + (att.unsqueeze(-1) * Ev).sum(-2)
        X_new = self.o_node(X_new.transpose(1, 2).reshape(B, N, -1)) * nm
        X = (X if self.prenorm else Xn) + X_new
        Xn = self.node_norm2(X, node_mask)
        return (X if self.prenorm else Xn) + self.mlp(Xn) * nm, E


class PPGNTransformerBlock(nn.Module):
    def __init__(
        self, node_channel, edge_channel, n_head, norm="ln", add_transpose=True, prenorm=True
    ):
        super().__init__()
        self.ppgn = PPGNBlock(edge_channel, norm, add_transpose, prenorm)
        self.transformer = TransformerBlock(node_channel, edge_channel, n_head, norm, prenorm)

    def forward(self, X, E, edge_mask, causal):
        X, E = self.transformer(X, E, edge_mask, causal)
        return X, self.ppgn(E, edge_mask, causal)


class PPGNTransformer(nn.Module):
    """``num_layers`` transformer + PPGN blocks and masked-norm + MLP output heads.

    ``forward(X (B, N, Dn), E (B, N, N, De), edge_mask (B, N, N), causal (B, N, N) or None)``."""

    def __init__(
        self,
        node_channel: int,
        edge_channel: int,
        num_layers: int,
        n_head: int,
        norm: str = "ln",
        add_transpose: bool = True,
        prenorm: bool = True,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            PPGNTransformerBlock(node_channel, edge_channel, n_head, norm, add_transpose, prenorm)
            for _ in range(num_layers)
        )
        self.node_norm, self.edge_norm = (
            MaskedNorm(node_channel, norm),
            MaskedNorm(edge_channel, norm),
        )
        self.node_mlp, self.edge_mlp = (
            MLP(node_channel, node_channel),
            MLP(edge_channel, edge_channel),
        )

    def forward(self, X: Tensor, E: Tensor, edge_mask: Tensor, causal: Tensor | None = None):
        check_float_tensor("X", X, ndim=3)
        check_float_tensor("E", E, ndim=4)
        B, N = X.shape[:2]
        if E.shape[:3] != (B, N, N):
            raise ValueError(
                f"E must have shape ({B}, {N}, {N}, C) to match X, got {tuple(E.shape)}"
            )
        for name, m in (("edge_mask", edge_mask), ("causal", causal)):
            if m is None and name == "causal":
                continue
            if not isinstance(m, Tensor) or m.dtype != torch.bool:
                raise TypeError(f"{name} must be a bool tensor")
            if m.shape != (B, N, N):
                raise ValueError(f"{name} must have shape ({B}, {N}, {N}), got {tuple(m.shape)}")
        if causal is not None:
            edge_mask = edge_mask & (causal | causal.transpose(-1, -2))
        node_mask = edge_mask.any(-1)
        X, E = X * node_mask.unsqueeze(-1), E * edge_mask.unsqueeze(-1)
        for block in self.blocks:
            X, E = block(X, E, edge_mask, causal)
        X = self.node_mlp(self.node_norm(X, node_mask)) * node_mask.unsqueeze(-1)
        E = self.edge_mlp(self.edge_norm(E, edge_mask)) * edge_mask.unsqueeze(-1)
        return X, E
