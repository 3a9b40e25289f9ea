r"""The geometric transformer used for superpoint (coarse) matching by GeoTransformer, RoITr and
PARE-Net: rotation-invariant self-attention with a geometric structure embedding, and cross
attention between the two clouds.

* Geometric structure embedding (GeoTransformer, Qin et al. 2022): for nodes ``i, j``,
  ``r_ij = W_d s(rho_ij / sigma_d) + max_{l in kNN_k(i)} W_a s(theta_ijl * 180 / (pi sigma_a))``,
  with ``rho_ij`` the distance, ``theta_ijl`` the angle between ``p_l - p_i`` and ``p_j - p_i``,
  and ``s`` the sinusoidal embedding with frequencies ``10000^(-2k/d)``, *interleaved*
  ``[sin w0 x, cos w0 x, sin w1 x, ...]``. Invariant to rigid motions of the node positions.
* Self layer with relative positions: logits ``(q_i . k_j + q_i . W_p r_ij) / sqrt(d_h)``, values
  ``v_j``, then Linear, residual, LayerNorm and a feed-forward block. With ``position_state``
  (RoITr) it also returns ``pi_i = sum_{j != i} softmax_{j != i}(same logits) W_u r_ij`` (the
  diagonal masked), passed through Linear, LayerNorm and its own feed-forward block.
* Cross layer: multi-head attention with queries ``x_i (+ pi_i)``, keys ``y_j (+ pi'_j)`` and
  values ``y_j``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["sinusoidal_embedding", "GeometricStructureEmbedding", "GeometricTransformer"]


def sinusoidal_embedding(x: Tensor, dim: int) -> Tensor:
    """``(...)`` -> ``(..., dim)`` interleaved ``[sin w0 x, cos w0 x, sin w1 x, cos w1 x, ...]``."""
    if dim < 2 or dim % 2:
        raise ValueError(f"dim must be an even int >= 2, got {dim}")
    k = torch.arange(dim // 2, dtype=x.dtype, device=x.device)
    w = torch.exp(-math.log(10000.0) * 2 * k / dim)
    a = x.unsqueeze(-1) * w
    return torch.stack([a.sin(), a.cos()], dim=-1).flatten(-2)


class GeometricStructureEmbedding(nn.Module):
    """``(N, 3)`` node positions -> ``(N, N, d)`` rigid-motion-invariant pair embeddings."""

    def __init__(
        self, dim: int, *, sigma_d: float = 0.2, sigma_a: float = 15.0, angle_k: int = 3
    ) -> None:
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"dim must be an even int >= 2, got {dim}")
        if not (sigma_d > 0 and sigma_a > 0):
            raise ValueError(f"sigma_d and sigma_a must be > 0, got {sigma_d}, {sigma_a}")
        if not isinstance(angle_k, int) or angle_k < 1:
            raise ValueError(f"angle_k must be an int >= 1, got {angle_k!r}")
        self.dim, self.sigma_d, self.sigma_a, self.angle_k = dim, sigma_d, sigma_a, angle_k
        self.proj_d = nn.Linear(dim, dim)
        self.proj_a = nn.Linear(dim, dim)

    def forward(self, pos: Tensor) -> Tensor:
        if pos.dim() != 2 or pos.shape[-1] != 3 or pos.shape[0] < 2:
            raise ValueError(f"pos must be (N >= 2, 3), got {tuple(pos.shape)}")
        if not torch.isfinite(pos).all():
            raise ValueError("pos contains NaN or Inf values")
        n = pos.shape[0]
        diff = pos[None, :, :] - pos[:, None, :]  # (i, j): p_j - p_i
        rho = diff.norm(dim=-1)
        emb = self.proj_d(sinusoidal_embedding(rho / self.sigma_d, self.dim))
        k = min(self.angle_k, n - 1)
        nbr = rho.masked_fill(torch.eye(n, dtype=torch.bool, device=pos.device), float("inf"))
        idx = nbr.topk(k, dim=-1, largest=False).indices  # (i, k)
        ref = diff[torch.arange(n)[:, None], idx]  # (i, k, 3): p_l - p_i
        cross = torch.linalg.cross(ref[:, None, :, :], diff[:, :, None, :], dim=-1).norm(dim=-1)
        dot = (ref[:, None, :, :] * diff[:, :, None, :]).sum(-1)
        theta = torch.atan2(cross, dot)  # (i, j, k)
        ang = self.proj_a(sinusoidal_embedding(theta * 180 / (math.pi * self.sigma_a), self.dim))
        return emb + ang.max(dim=2).values


def _ffn(d: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d, 2 * d), nn.ReLU(), nn.Linear(2 * d, d))


class _SelfLayer(nn.Module):
    def __init__(self, d: int, heads: int, position_state: bool) -> None:
        super().__init__()
        self.h, self.dh = heads, d // heads
        self.q, self.k, self.v, self.p = (nn.Linear(d, d) for _ in range(4))
        self.out, self.norm, self.ffn, self.norm2 = (
            nn.Linear(d, d),
            nn.LayerNorm(d),
            _ffn(d),
            nn.LayerNorm(d),
        )
        self.position_state = position_state
        if position_state:
            self.u = nn.Linear(d, d)
            self.pout, self.pnorm = nn.Linear(d, d), nn.LayerNorm(d)
            self.pffn, self.pnorm2 = _ffn(d), nn.LayerNorm(d)

    def forward(self, x: Tensor, r: Tensor) -> tuple[Tensor, Tensor | None]:
        n, d = x.shape
        q = self.q(x).view(n, self.h, self.dh)
        k = self.k(x).view(n, self.h, self.dh)
        v = self.v(x).view(n, self.h, self.dh)
        p = self.p(r).view(n, n, self.h, self.dh)
        logits = torch.einsum("ihc,jhc->hij", q, k) + torch.einsum("ihc,ijhc->hij", q, p)
        logits = logits / math.sqrt(self.dh)
        a = logits.softmax(dim=-1)
        y = torch.einsum("hij,jhc->ihc", a, v).reshape(n, d)
        y = self.norm(x + self.out(y))
        y = self.norm2(y + self.ffn(y))
        if not self.position_state:
            return y, None
        eye = torch.eye(n, dtype=torch.bool, device=x.device)
        a_ex = logits.masked_fill(eye, float("-inf")).softmax(dim=-1)
        u = self.u(r).view(n, n, self.h, self.dh)
        ps = torch.einsum("hij,ijhc->ihc", a_ex, u).reshape(n, d)
        ps = self.pnorm(self.pout(ps))
        ps = self.pnorm2(ps + self.pffn(ps))
        return y, ps


class _CrossLayer(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.norm, self.ffn, self.norm2 = nn.LayerNorm(d), _ffn(d), nn.LayerNorm(d)

    def forward(self, x: Tensor, y: Tensor, px: Tensor | None, py: Tensor | None) -> Tensor:
        q = x if px is None else x + px
        k = y if py is None else y + py
        out, _ = self.attn(q[None], k[None], y[None], need_weights=False)
        z = self.norm(x + out[0])
        return self.norm2(z + self.ffn(z))


class GeometricTransformer(nn.Module):
    """``blocks`` pairs of (self, cross) layers over the superpoints of two clouds.

    Args:
        in_dim: input feature size; dim: model width (divisible by ``heads``).
        blocks: number of (self, cross) pairs (default: ``2``).
        position_state: RoITr's position state (self-excluded) fed to the cross layers.
        sigma_d, sigma_a, angle_k: the structure embedding's scales.

    ``forward(pos_x (N, 3), feat_x (N, in_dim), pos_y (M, 3), feat_y (M, in_dim))`` ->
    L2-normalised ``(N, dim)``, ``(M, dim)``: invariant to a rigid motion of either cloud.
    """

    def __init__(
        self,
        in_dim: int,
        dim: int = 64,
        *,
        heads: int = 4,
        blocks: int = 2,
        position_state: bool = False,
        sigma_d: float = 0.2,
        sigma_a: float = 15.0,
        angle_k: int = 3,
    ) -> None:
        super().__init__()
        for name, v in (("in_dim", in_dim), ("dim", dim), ("heads", heads), ("blocks", blocks)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.embed = GeometricStructureEmbedding(
            dim, sigma_d=sigma_d, sigma_a=sigma_a, angle_k=angle_k
        )
        self.inp = nn.Linear(in_dim, dim)
        self.selfs = nn.ModuleList(_SelfLayer(dim, heads, position_state) for _ in range(blocks))
        self.crosses = nn.ModuleList(_CrossLayer(dim, heads) for _ in range(blocks))
        self.outp = nn.Linear(dim, dim)
        self.in_dim = in_dim

    def forward(self, pos_x: Tensor, feat_x: Tensor, pos_y: Tensor, feat_y: Tensor):
        for name, f, p in (("feat_x", feat_x, pos_x), ("feat_y", feat_y, pos_y)):
            if f.dim() != 2 or f.shape[-1] != self.in_dim or f.shape[0] != p.shape[0]:
                raise ValueError(
                    f"{name} must be (N, {self.in_dim}) with one row per position, got "
                    f"{tuple(f.shape)}"
                )
        rx, ry = self.embed(pos_x), self.embed(pos_y)
        x, y = self.inp(feat_x), self.inp(feat_y)
        for s, c in zip(self.selfs, self.crosses):
            x, px = s(x, rx)
            y, py = s(y, ry)
            x, y = c(x, y, px, py), c(y, x, py, px)
        return (
            nn.functional.normalize(self.outp(x), dim=-1),
            nn.functional.normalize(self.outp(y), dim=-1),
        )
