"""Plain (non-invariant) backbones used as baselines and as Frame Averaging / TinvNN backbones.

* :class:`PointNet` (Qi et al., CVPR 2017, without the T-Nets): shared per-point MLP, max pool,
  MLP head. Permutation-invariant, *not* rotation-invariant (it reads raw coordinates).
* :class:`PointNetSeg`: the per-point PointNet head (point feature ++ pooled global feature ->
  MLP), e.g. for normal estimation.
* :class:`TrajectoryMLP`: per-agent MLP on centred past positions -> future positions (the
  non-equivariant n-body baseline).
* :class:`TrajectoryGNN`: fully connected message passing on raw (centred) coordinates, a
  permutation-equivariant but not rotation-equivariant n-body baseline.
* :class:`EGNNTrajectory`: an E(n)-equivariant baseline built from the peer library
  ``egnn-pytorch`` (lucidrains, MIT; Satorras et al., *E(n) Equivariant Graph Neural Networks*,
  ICML 2021): EGNN layers on the last positions with invariant speed features, then per future
  step ``x_T + a_k(h) v_T + b_k(h) (x_L - x_T)``. Optional: needs ``egnn-pytorch``.
* :func:`constant_velocity`: the physics-free baseline (extrapolate the last velocity).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..ops._checks import check_int, check_points, check_tensor

__all__ = [
    "PointNet",
    "PointNetSeg",
    "TrajectoryMLP",
    "TrajectoryGNN",
    "EGNNTrajectory",
    "constant_velocity",
]


def _mlp(sizes: list[int], *, last_act: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2 or last_act:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class PointNet(nn.Module):
    """PointNet classifier (no T-Nets).

    Args:
        num_classes (int): output size. in_channels (int): per-point input size (default 3).
        hidden (int): width of the per-point MLP (default 64). global_dim (int): pooled width
            (default 128).

    Shapes:
        pos (B, N, in_channels) -> logits (B, num_classes).

    Invariance: point permutation only.
    """

    def __init__(
        self, *, num_classes: int, in_channels: int = 3, hidden: int = 64, global_dim: int = 128
    ) -> None:
        super().__init__()
        check_int(num_classes, "num_classes", 1)
        check_int(in_channels, "in_channels", 1)
        check_int(hidden, "hidden", 1)
        check_int(global_dim, "global_dim", 1)
        self.num_classes, self.in_channels = num_classes, in_channels
        self.point_mlp = _mlp([in_channels, hidden, hidden, global_dim], last_act=True)
        self.head = _mlp([global_dim, hidden, num_classes])

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                m.reset_parameters()

    def forward(self, pos: Tensor) -> Tensor:
        _check_cloud(pos, self.in_channels)
        return self.head(self.point_mlp(pos).max(dim=1).values)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, in_channels={self.in_channels}"


class PointNetSeg(nn.Module):
    """Per-point PointNet (no T-Nets): ``[f_i, max_j f_j] -> MLP -> out_channels`` per point.

    Args:
        out_channels (int): per-point output size. in_channels (int): input size (default 3).
        hidden (int): per-point width (default 64). global_dim (int): pooled width (default 128).

    Shapes:
        pos (B, N, in_channels) -> (B, N, out_channels).

    Invariance: point permutation equivariance only.
    """

    def __init__(
        self, *, out_channels: int, in_channels: int = 3, hidden: int = 64, global_dim: int = 128
    ) -> None:
        super().__init__()
        check_int(out_channels, "out_channels", 1)
        check_int(in_channels, "in_channels", 1)
        check_int(hidden, "hidden", 1)
        check_int(global_dim, "global_dim", 1)
        self.out_channels, self.in_channels = out_channels, in_channels
        self.local = _mlp([in_channels, hidden, hidden], last_act=True)
        self.glob = _mlp([hidden, global_dim], last_act=True)
        self.head = _mlp([hidden + global_dim, hidden, out_channels])

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                m.reset_parameters()

    def forward(self, pos: Tensor) -> Tensor:
        _check_cloud(pos, self.in_channels)
        f = self.local(pos)
        g = self.glob(f).max(dim=1, keepdim=True).values.expand(-1, f.shape[1], -1)
        return self.head(torch.cat([f, g], dim=-1))

    def extra_repr(self) -> str:
        return f"out_channels={self.out_channels}, in_channels={self.in_channels}"


def _check_cloud(pos: Tensor, channels: int) -> None:
    check_points(pos, "pos", dim=channels)
    if pos.dim() != 3:
        raise ValueError(f"pos must be batched (B, N, {channels}), got {tuple(pos.shape)}")


def _check_traj(loc: Tensor, vel: Tensor | None = None, past: int | None = None) -> None:
    check_tensor(loc, "loc", ndim=4, last=3)
    if past is not None and loc.shape[2] != past:
        raise ValueError(f"loc must have past={past} frames, got shape {tuple(loc.shape)}")
    if vel is not None:
        check_tensor(vel, "vel", ndim=4, last=3)
        if vel.shape != loc.shape:
            raise ValueError(
                f"vel {tuple(vel.shape)} must have the shape of loc {tuple(loc.shape)}"
            )


def constant_velocity(loc: Tensor, future: int) -> Tensor:
    """Extrapolate the last displacement: (B, n, T_p, 3) -> (B, n, future, 3)."""
    _check_traj(loc)
    check_int(future, "future", 1)
    if loc.shape[2] < 2:
        raise ValueError(f"loc needs at least 2 past frames, got shape {tuple(loc.shape)}")
    v = loc[:, :, -1:] - loc[:, :, -2:-1]
    steps = torch.arange(1, future + 1, dtype=loc.dtype, device=loc.device).view(1, 1, -1, 1)
    return loc[:, :, -1:] + steps * v


class TrajectoryMLP(nn.Module):
    """Per-agent MLP on scene-centred past positions (non-equivariant baseline).

    Shapes: loc (B, n, past, 3) -> (B, n, future, 3). Equivariance: translations and agent
    permutations only (the MLP reads raw centred coordinates).
    """

    def __init__(self, *, past: int, future: int, hidden: int = 128) -> None:
        super().__init__()
        check_int(past, "past", 1)
        check_int(future, "future", 1)
        check_int(hidden, "hidden", 1)
        self.past, self.future = past, future
        self.net = _mlp([3 * past, hidden, hidden, 3 * future])

    def forward(self, loc: Tensor, vel: Tensor | None = None) -> Tensor:
        _check_traj(loc, vel, self.past)
        c = loc.mean(dim=(1, 2), keepdim=True)
        B, n = loc.shape[:2]
        out = self.net((loc - c).reshape(B, n, -1)).reshape(B, n, self.future, 3)
        return out + loc[:, :, -1:]


class TrajectoryGNN(nn.Module):
    """Fully connected message passing on raw centred coordinates (non-equivariant baseline).

    Node input: flattened centred past positions and velocities; messages are MLPs of
    ``[h_i, h_j, x_i - x_j (raw, last frame)]``; summed over j != i; two rounds; MLP decoder to the
    future displacement from the last position.
    Equivariance: translations and agent permutations, not rotations.
    """

    def __init__(self, *, past: int, future: int, hidden: int = 64, layers: int = 2) -> None:
        super().__init__()
        check_int(past, "past", 1)
        check_int(future, "future", 1)
        check_int(hidden, "hidden", 1)
        check_int(layers, "layers", 1)
        self.past, self.future = past, future
        self.enc = _mlp([6 * past, hidden, hidden])
        self.msgs = nn.ModuleList(_mlp([2 * hidden + 3, hidden, hidden]) for _ in range(layers))
        self.upds = nn.ModuleList(_mlp([2 * hidden, hidden, hidden]) for _ in range(layers))
        self.dec = _mlp([hidden, hidden, 3 * future])

    def forward(self, loc: Tensor, vel: Tensor) -> Tensor:
        _check_traj(loc, vel, self.past)
        B, n = loc.shape[:2]
        c = loc.mean(dim=(1, 2), keepdim=True)
        h = self.enc(torch.cat([(loc - c).reshape(B, n, -1), vel.reshape(B, n, -1)], -1))
        rel = loc[:, :, None, -1] - loc[:, None, :, -1]  # (B, n, n, 3)
        mask = (1 - torch.eye(n, dtype=loc.dtype, device=loc.device)).view(1, n, n, 1)
        for msg, upd in zip(self.msgs, self.upds):
            m = msg(
                torch.cat(
                    [h[:, :, None].expand(-1, -1, n, -1), h[:, None].expand(-1, n, -1, -1), rel], -1
                )
            )
            h = h + upd(torch.cat([h, (m * mask).sum(2)], -1))
        return loc[:, :, -1:] + self.dec(h).reshape(B, n, self.future, 3)


class EGNNTrajectory(nn.Module):
    """E(3)-equivariant n-body baseline from ``egnn-pytorch``'s ``EGNN`` layers.

    Node features: an MLP of the invariant speeds ``|v_t|`` over the past frames; coordinates:
    the last positions ``x_T``; ``layers`` fully connected EGNN layers give ``(h, x_L)``; then
    ``pred_k = x_T + a_k(h) v_T + b_k(h) (x_L - x_T)`` for k = 1..future with invariant
    scalars ``a, b`` from a linear head. Charges are not given (as for the other baselines).

    Args:
        past (int), future (int): frames in and out. hidden (int): node width (default 64).
        layers (int): EGNN layers (default 3). m_dim (int): EGNN message width (default 32).

    Shapes: loc, vel (B, n, past, 3) -> (B, n, future, 3).
    Invariance: E(3)-equivariant (rotations, reflections, translations) and agent-permutation
    equivariant (tested in ``tests/test_eqmotion.py::test_egnn_baseline_equivariant``).

    Raises:
        ImportError: when ``egnn-pytorch`` is not installed.
    """

    def __init__(
        self, *, past: int, future: int, hidden: int = 64, layers: int = 3, m_dim: int = 32
    ) -> None:
        super().__init__()
        try:
            from egnn_pytorch import EGNN  # type: ignore[import-not-found]
        except ImportError as e:  # pragma: no cover - exercised only without the peer
            raise ImportError(
                "EGNNTrajectory needs the optional peer library egnn-pytorch "
                "(pip install egnn-pytorch)"
            ) from e
        self.past, self.future = past, future
        self.enc = _mlp([past, hidden, hidden])
        self.layers = nn.ModuleList(EGNN(dim=hidden, m_dim=m_dim) for _ in range(layers))
        self.head = nn.Linear(hidden, 2 * future)

    def forward(self, loc: Tensor, vel: Tensor) -> Tensor:
        _check_traj(loc)
        B, n = loc.shape[:2]
        h = self.enc(vel.norm(dim=-1))
        x0 = loc[:, :, -1]
        x = x0
        for layer in self.layers:
            h, x = layer(h, x)
        ab = self.head(h).view(B, n, 2, self.future, 1)
        return (
            x0.unsqueeze(2)
            + ab[:, :, 0] * vel[:, :, -1:].expand(-1, -1, self.future, -1)
            + ab[:, :, 1] * (x - x0).unsqueeze(2)
        )
