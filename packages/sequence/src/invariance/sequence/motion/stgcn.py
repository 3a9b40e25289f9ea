"""ST-GCN on the 22-joint skeleton (the UniMTS IMU encoder), written from the ST-GCN paper (Yan,
Xiong, Lin, AAAI 2018) and UniMTS's ``model.py`` configuration: a spatial-configuration partition
(root / centripetal / centrifugal, max hop 1, column-normalised adjacency), an input BatchNorm over
joints x channels, blocks of graph convolution (a 1x1 conv to ``K x C`` channels contracted with
the ``K`` adjacency matrices times learnable edge-importance masks; evaluated joints-first: the
same linear map, faster on CPU when the input has fewer channels than ``K x C``, see
:meth:`STGCNBlock.graph_conv`) and a temporal convolution (BN, ReLU, conv ``(9, 1)``, BN,
dropout) with a residual, then global average pooling.

:func:`load_official_state_dict` maps a state_dict of the official ``ST_GCN_18`` onto
:class:`STGCN` (``st_gcn_networks.i`` -> ``blocks.i``); the parity test checks equal outputs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from invariance.sequence._checks import check_int, check_tensor
from invariance.sequence.motion.skeleton import EDGES, N_JOINTS

__all__ = ["hop_distance", "spatial_partitions", "STGCNBlock", "STGCN", "load_official_state_dict"]

#: ST-GCN-18 widths and temporal strides
STGCN18_CHANNELS = (64, 64, 64, 64, 128, 128, 128, 256, 256, 512)
STGCN18_STRIDES = (1, 1, 1, 1, 2, 1, 1, 2, 1, 1)


def hop_distance(n: int = N_JOINTS, edges=EDGES, max_hop: int = 1) -> Tensor:
    """Hop distances ``(n, n)`` up to ``max_hop`` (``inf`` beyond)."""
    adj = torch.eye(n, dtype=torch.float64)
    for i, j in edges:
        adj[i, j] = adj[j, i] = 1.0
    dist = torch.full((n, n), float("inf"), dtype=torch.float64)
    reach = torch.eye(n, dtype=torch.float64)
    dist[reach > 0] = 0
    for d in range(1, max_hop + 1):
        reach = (reach @ adj).clamp_max(1.0)
        dist[(reach > 0) & torch.isinf(dist)] = d
    return dist


def spatial_partitions(center: int = 0, max_hop: int = 1) -> Tensor:
    """The spatial-configuration adjacency ``(1 + 2 max_hop, V, V)``: for every hop, neighbours
    as close to ``center`` as the node (root), closer (centripetal) and farther (centrifugal);
    entries of the column-normalised adjacency ``A D^-1`` (hop 0 has the root part only)."""
    check_int("max_hop", max_hop, 1)
    hop = hop_distance(max_hop=max_hop)
    adj = (hop <= max_hop).double()
    norm = adj / adj.sum(0, keepdim=True)
    to_c = hop[:, center]
    out = []
    for h in range(max_hop + 1):
        on = hop == h
        # element [j, i]: node j relative to node i
        root = on & (to_c[:, None] == to_c[None, :])
        close = on & (to_c[:, None] > to_c[None, :])
        far = on & (to_c[:, None] < to_c[None, :])
        if h == 0:
            out.append(norm * root)
        else:
            out.append(norm * (root | close))
            out.append(norm * far)
    return torch.stack(out).float()


class STGCNBlock(nn.Module):
    """One spatial-temporal block: graph conv over ``K`` partitions, temporal conv, residual."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        K: int,
        *,
        t_kernel: int = 9,
        stride: int = 1,
        dropout: float = 0.0,
        residual: bool = True,
    ) -> None:
        super().__init__()
        if t_kernel % 2 != 1:
            raise ValueError(f"t_kernel must be odd, got {t_kernel}")
        self.K = K
        self.gcn = nn.Module()
        self.gcn.conv = nn.Conv2d(c_in, c_out * K, kernel_size=1)
        self.tcn = nn.Sequential(
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
            nn.Conv2d(c_out, c_out, (t_kernel, 1), (stride, 1), ((t_kernel - 1) // 2, 0)),
            nn.BatchNorm2d(c_out),
            nn.Dropout(dropout),
        )
        self.mode = "none" if not residual else "id" if (c_in == c_out and stride == 1) else "conv"
        if self.mode == "conv":
            self.residual = nn.Sequential(
                nn.Conv2d(c_in, c_out, kernel_size=1, stride=(stride, 1)), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: Tensor, A: Tensor) -> Tensor:
        res = 0 if self.mode == "none" else x if self.mode == "id" else self.residual(x)
        return torch.relu(self.tcn(self.graph_conv(x, A)) + res)

    def graph_conv(self, x: Tensor, A: Tensor) -> Tensor:
        """``sum_k (W_k x + b_k) A_k`` (the official 1x1 conv to ``K x C`` channels, then
        ``einsum('nkctv,kvw->nctw')``), evaluated in the cheaper order: the joints are
        contracted with ``A`` on the ``C_in`` input channels first (one GEMM), then the channels
        are mixed (one batched GEMM) and the bias enters through ``A``'s column sums. The two
        orders are the same linear map (equal to float rounding; the parity test checks it)."""
        n, ci, t, v = x.shape
        K, w = A.shape[0], A.shape[2]
        co = self.gcn.conv.out_channels // K
        xa = (x @ A.permute(1, 0, 2).reshape(v, K * w)).view(n, ci, t, K, w)
        xa = xa.permute(0, 3, 1, 2, 4).reshape(n, K * ci, t * w)
        W = self.gcn.conv.weight.view(K, co, ci).permute(1, 0, 2).reshape(co, K * ci)
        y = (W @ xa).view(n, co, t, w)
        if self.gcn.conv.bias is not None:
            y = y + (self.gcn.conv.bias.view(K, co).T @ A.sum(1))[:, None, :]
        return y


class STGCN(nn.Module):
    """ST-GCN encoder: ``(B, T, 22, C)`` sensor signals -> ``(B, channels[-1])`` features.

    Args:
        in_channels: channels per joint (3 = acc, 6 = acc + gyro).
        channels / strides: block widths and temporal strides (default: ST-GCN-18's).
        t_kernel: temporal kernel size (default: 9).
        edge_importance: learnable per-block masks on the adjacency (default: True).
        dropout: dropout inside the blocks after the first (default: 0).
    """

    def __init__(
        self,
        in_channels: int = 3,
        *,
        channels: tuple[int, ...] = STGCN18_CHANNELS,
        strides: tuple[int, ...] = STGCN18_STRIDES,
        t_kernel: int = 9,
        edge_importance: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_int("in_channels", in_channels, 1)
        check_int("t_kernel", t_kernel, 1)
        if len(channels) == 0 or len(channels) != len(strides):
            raise ValueError("channels and strides must be non-empty and of equal length")
        A = spatial_partitions()
        self.register_buffer("A", A)
        self.in_channels = in_channels
        self.data_bn = nn.BatchNorm1d(in_channels * N_JOINTS)
        blocks, c = [], in_channels
        for i, (co, s) in enumerate(zip(channels, strides)):
            blocks.append(
                STGCNBlock(
                    c, co, A.shape[0], t_kernel=t_kernel, stride=s,
                    dropout=0.0 if i == 0 else dropout, residual=i > 0,
                )
            )  # fmt: skip
            c = co
        self.blocks = nn.ModuleList(blocks)
        self.out_dim = c
        if edge_importance:
            self.edge_importance = nn.ParameterList(
                nn.Parameter(torch.ones_like(A)) for _ in self.blocks
            )
        else:
            self.edge_importance = None

    def forward(self, x: Tensor) -> Tensor:
        check_tensor("x", x, ndim=4, floating=True)
        if x.shape[2] != N_JOINTS or x.shape[3] != self.in_channels:
            raise ValueError(
                f"x must be (B, T, {N_JOINTS}, {self.in_channels}), got {tuple(x.shape)}"
            )
        B, T, V, C = x.shape
        h = self.data_bn(x.permute(0, 2, 3, 1).reshape(B, V * C, T))
        h = h.view(B, V, C, T).permute(0, 2, 3, 1)  # (B, C, T, V)
        for i, blk in enumerate(self.blocks):
            A = self.A if self.edge_importance is None else self.A * self.edge_importance[i]
            h = blk(h, A)
        return h.mean(dim=(2, 3))


def load_official_state_dict(model: STGCN, state: dict[str, Tensor]) -> None:
    """Load a state_dict of the official ``ST_GCN_18`` (UniMTS ``model.py``) into ``model``."""
    mapped = {}
    for k, v in state.items():
        k2 = k.replace("st_gcn_networks.", "blocks.")
        mapped[k2] = v
    model.load_state_dict(mapped)
