"""PARD's conditioning layers and output decoders (official ``pard/parallel/conditioning.py`` and
``utils.edge_to_node`` / ``blockwise_node_aggregation``), channel-last, official module names.

Dense inputs: ``block_id`` (B, N) with -1 for padding, ``virtual`` (B, N) bool, ``block_size`` /
``block_degree`` (B, K) per block (0 = no block).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invariance.graph.generation.blocks import causal_block_mask
from invariance.graph.nn.ppgn_transformer import MLP


def spread_to_nodes(prop: Tensor, block_id: Tensor) -> Tensor:
    """``prop[b, block_id[b, i]]`` per node (0 on padding)."""
    idx = block_id.clamp(min=0)
    out = prop.gather(1, idx)
    return out * (block_id >= 0)


def edge_to_node(edge: Tensor, block_id: Tensor, virtual: Tensor, causal: bool = True) -> Tensor:
    """``[diag E_ii, mean over causal neighbours of (E_ij + E_ji)/2]`` per node (B, N, 2C)."""
    M = causal_block_mask(block_id, virtual)
    if not causal:
        M = M | M.transpose(-1, -2)
    Mf = M.unsqueeze(-1).to(edge.dtype)
    num = M.sum(-1, keepdim=True).to(edge.dtype)
    diag = torch.diagonal(edge, dim1=1, dim2=2).transpose(-1, -2)
    off = ((edge * Mf).sum(-2) + (edge.transpose(1, 2) * Mf).sum(-2)) / 2 / (num + 1e-10)
    return torch.cat([diag, off], -1) * (block_id >= 0).unsqueeze(-1)


class NodeEdgeEncoder(nn.Module):
    def __init__(self, num_node_features: int, num_edge_features: int, Dn: int, De: int) -> None:
        super().__init__()
        self.node_encoder = nn.Linear(num_node_features, Dn)
        self.edge_encoder = nn.Linear(num_edge_features, De)

    def forward(self, nodes: Tensor, edges: Tensor) -> tuple[Tensor, Tensor]:
        return self.node_encoder(nodes), self.edge_encoder(edges)


class BlockIDConditioning(nn.Module):
    """Absolute block-id embedding (index ``block_id + 1``; padding -1 -> 0)."""

    def __init__(self, channels: int, max_num_blocks: int) -> None:
        super().__init__()
        self.block_id_embedding = nn.Embedding(max_num_blocks + 1, channels)

    def forward(self, x: Tensor, block_id: Tensor) -> Tensor:
        if int(block_id.max()) + 1 >= self.block_id_embedding.num_embeddings:
            raise ValueError(
                f"block_id reaches {int(block_id.max())}, above the model's max_num_blocks"
            )
        return (x + self.block_id_embedding(block_id + 1)) * (block_id >= 0).unsqueeze(-1)


def block_id_conditioning(hidden: int, max_num_blocks: int, absolute: bool) -> nn.Module:
    """The absolute block-id embedding, or a parameter-free placeholder keeping the official
    module indices (``IdentityConditioning`` when ``use_absolute_blockid=False``)."""
    return BlockIDConditioning(hidden, max_num_blocks) if absolute else nn.Identity()


def condition_block_id(module: nn.Module, node: Tensor, block_id: Tensor) -> Tensor:
    return node if isinstance(module, nn.Identity) else module(node, block_id)


def edge_conditioning(edge_hidden: int, relative: bool) -> nn.ModuleList | None:
    """``edge_conditioner.0`` = the relative block-id edge encoding (official names), or None."""
    if not relative:
        return None
    return nn.ModuleList([RelativeBlockIDEdgeConditioning(edge_hidden, edge_hidden)])


class BlockDegreeConditioning(nn.Module):
    """Embedding of the node's block degree."""

    def __init__(self, channels: int, max_degree: int) -> None:
        super().__init__()
        self.block_degree_embedding = nn.Embedding(max_degree, channels)

    def forward(self, x: Tensor, block_id: Tensor, block_degree: Tensor) -> Tensor:
        deg = spread_to_nodes(block_degree, block_id)
        if int(deg.max()) >= self.block_degree_embedding.num_embeddings:
            raise ValueError(
                f"block_degree reaches {int(deg.max())}, above the model's max_block_degree"
            )
        return (x + self.block_degree_embedding(deg)) * (block_id >= 0).unsqueeze(-1)


def sinusoidal(t: Tensor, channels: int, max_positions: float = 10000.0) -> Tensor:
    """``[cos(t f), sin(t f)]`` with ``f_k = max_positions^(-k / (channels/2))`` (t as float)."""
    half = channels // 2
    freqs = (1.0 / max_positions) ** (
        torch.arange(
            half, dtype=t.dtype if t.is_floating_point() else torch.float32, device=t.device
        )
        / half
    )
    x = t.to(freqs.dtype).unsqueeze(-1) * freqs
    return torch.cat([x.cos(), x.sin()], -1)


class TimestepConditioning(nn.Module):
    """Sinusoidal step embedding (halves swapped: ``[sin, cos]``) -> Linear -> SiLU -> Linear."""

    def __init__(self, temb_channels: int, channels: int) -> None:
        super().__init__()
        self.temb_channels = temb_channels
        self.layer1 = nn.Linear(temb_channels, channels)
        self.layer2 = nn.Linear(channels, channels)

    def forward(self, x: Tensor, block_id: Tensor, timestep: Tensor) -> Tensor:
        temb = sinusoidal(timestep.to(x.dtype), self.temb_channels)
        temb = temb.reshape(*temb.shape[:-1], 2, -1).flip(-2).reshape(temb.shape)
        temb = self.layer2(F.silu(self.layer1(temb)))
        return (x + temb.unsqueeze(1)) * (block_id >= 0).unsqueeze(-1)


class RelativeBlockIDEdgeConditioning(nn.Module):
    """Relative block-id edge encoding (official option ``use_relative_blockid``): on every pair
    ``r_ij = 1 / (|b_i - b_j| + 1)`` in (0, 1], sinusoidal embedding (``hidden`` channels, max
    position 10, ``[cos, sin]``) -> Linear(2 De) -> SiLU -> Linear(De), added to the edge states on
    the pairs of the (symmetric) causal mask. It tells the network how many blocks apart two nodes
    are without the absolute block index."""

    def __init__(self, hidden: int, edge_channels: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.layer1 = nn.Linear(hidden, 2 * edge_channels)
        self.layer2 = nn.Linear(2 * edge_channels, edge_channels)

    def forward(self, edge: Tensor, block_id: Tensor, virtual: Tensor) -> Tensor:
        rel = (block_id.unsqueeze(1) - block_id.unsqueeze(2)).abs().to(edge.dtype)
        enc = sinusoidal(1.0 / (rel + 1.0), self.hidden, max_positions=10.0)
        enc = self.layer2(F.silu(self.layer1(enc)))
        M = causal_block_mask(block_id, virtual)
        return edge + enc * (M | M.transpose(-1, -2)).unsqueeze(-1)


class NodeEdgeCombiner(nn.Module):
    """``E'_ij = SiLU(n1_j + n2_i + e_ij + SiLU(W1 n) * SiLU(W2 e))``."""

    def __init__(self, node_channels: int, edge_channels: int, out_channels: int) -> None:
        super().__init__()
        self.node_layer1 = nn.Linear(node_channels, 2 * out_channels)
        self.edge_layer1 = nn.Linear(edge_channels, out_channels)
        self.fuse_layer1 = nn.Linear(out_channels, out_channels)
        self.fuse_layer2 = nn.Linear(out_channels, out_channels)

    def forward(self, nodes: Tensor, edges: Tensor) -> Tensor:
        e = self.edge_layer1(edges)
        n1, n2 = self.node_layer1(nodes).chunk(2, -1)
        n = n1.unsqueeze(1) + n2.unsqueeze(2)
        return F.silu(n + e + F.silu(self.fuse_layer1(n)) * F.silu(self.fuse_layer2(e)))


class MonotonicLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.rand(in_channels, out_channels))
        self.bias = nn.Parameter(torch.rand(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.weight.abs() + self.bias


class MonotonicMLP(nn.Module):
    """Monotone increasing ``phi: R -> (0, 1)`` (non-negative weights, SiLU, sigmoid)."""

    def __init__(self, channels: int = 128, num_layers: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            MonotonicLayer(channels if i else 1, 1 if i == num_layers - 1 else channels)
            for i in range(num_layers)
        )

    def forward(self, t: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            t = layer(t)
            t = torch.sigmoid(t) if i == len(self.layers) - 1 else F.silu(t)
        return t


class VirtualBlockOutDecoder(nn.Module):
    """Node / edge logits: edge->node aggregation, node MLP, pairwise edge update (symmetrised),
    masked-norm MLP heads; with ``Tmax > 0`` the input residual ``+ phi(1 - t/Tmax) * x_t``."""

    def __init__(
        self,
        Dn: int,
        De: int,
        num_node_classes: int,
        num_edge_classes: int,
        norm: str = "ln",
        Tmax: int = 0,
    ) -> None:
        super().__init__()
        self.node_transform = nn.Sequential(nn.Linear(2 * De + Dn, Dn), nn.SiLU())
        self.edge_transforom = NodeEdgeCombiner(Dn, De, 2 * De)  # (sic) official name
        self.node_out = MLP(Dn, num_node_classes, Dn, norm)
        self.edge_out = MLP(2 * De, num_edge_classes, De, norm)
        self.Tmax = Tmax
        if Tmax > 0:
            self.phi_node, self.phi_edge = MonotonicMLP(128, 2), MonotonicMLP(128, 2)

    def forward(self, node, edge, nodes_in, edges_in, block_id, virtual, timestep):
        node_mask = block_id >= 0
        M = causal_block_mask(block_id, virtual)
        edge_mask = M | M.transpose(-1, -2)
        node = node * node_mask.unsqueeze(-1)
        edge = edge * edge_mask.unsqueeze(-1)
        x = edge_to_node(edge, block_id, virtual)
        node = self.node_transform(torch.cat([x, node], -1)) * node_mask.unsqueeze(-1)
        edge = self.edge_transforom(node, edge)
        edge = (edge + edge.transpose(1, 2)) * edge_mask.unsqueeze(-1)
        node_logit = self.node_out(node, node_mask)
        edge_logit = self.edge_out(edge, edge_mask)
        if self.Tmax > 0:
            B = node_logit.size(0)
            tt = (timestep.to(node_logit.dtype) / self.Tmax).view(B, 1, 1)
            node_logit = node_logit + self.phi_node(1 - tt) * nodes_in
            edge_logit = edge_logit + self.phi_edge(1 - tt).unsqueeze(-1) * edges_in
        return node_logit, edge_logit


class BlockOutDecoder(nn.Module):
    """Block-size model heads: per-block representation = cumulative sum of node states of blocks
    ``<= k``; heads for the next block's size (class 0 = stop), its degree (given the size's
    embedding) and the first block's degree from the first block's size."""

    def __init__(
        self, Dn: int, De: int, max_block_size: int, max_block_degree: int, norm: str = "ln"
    ):
        super().__init__()
        self.transform = nn.Sequential(nn.Linear(2 * De + Dn, Dn), nn.SiLU())
        self.block_size_out = MLP(Dn, max_block_size, Dn, norm)
        self.block_degree_out = MLP(Dn, max_block_degree, Dn, norm)
        self.init_block_degree_out = MLP(Dn, max_block_degree, Dn, norm)
        self.block_size_encoder = nn.Embedding(max_block_size, Dn)

    def first_degree(self, first_size: Tensor) -> Tensor:
        return self.init_block_degree_out(self.block_size_encoder(first_size))

    def block_representation(self, node, edge, block_id, virtual) -> Tensor:
        """(B, K, Dn): sum of node states of real blocks ``<= k``."""
        node_mask = block_id >= 0
        x = self.transform(torch.cat([edge_to_node(edge, block_id, virtual), node], -1))
        x = x * (node_mask & ~virtual).unsqueeze(-1)
        K = int(block_id.max()) + 1
        onehot = F.one_hot(block_id.clamp(min=0), K).to(x.dtype) * (node_mask & ~virtual).unsqueeze(
            -1
        )
        return (onehot.transpose(1, 2) @ x).cumsum(1)

    def forward(self, rep: Tensor, block_mask: Tensor, next_size: Tensor) -> tuple[Tensor, Tensor]:
        size_logit = self.block_size_out(rep, block_mask)
        deg_logit = self.block_degree_out(rep + self.block_size_encoder(next_size), block_mask)
        return size_logit, deg_logit
