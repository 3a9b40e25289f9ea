r"""EqMotion: equivariant multi-agent motion prediction with invariant interaction reasoning.

Paper: Chenxin Xu, Robby T. Tan, Yuhong Tan, Siheng Chen, Yu Guang Wang, Xinchao Wang, Yanfeng
Wang, "EqMotion: Equivariant Multi-agent Motion Prediction with Invariant Interaction
Reasoning", CVPR 2023, arXiv:2303.10876. Official code: https://github.com/MediaBrain-SJTU/EqMotion
(MIT). Written from a reading of ``n_body_system/model_t.py`` and ``gcl_t.py`` (MIT, © 2023
MediaBrain-SJTU); no code copied.

Mechanism (past positions :math:`x\in\mathbb R^{B\times n\times T_p\times3}`, velocities
:math:`v=\Delta x`):

1. *Invariant pattern features*: :math:`h=[W_1\lVert v_t\rVert_t,\ W_2\theta_t]` with
   :math:`\theta_t` the angle between consecutive velocities.
2. *DCT*: subtract the scene centre :math:`\bar x` (mean over agents and time), apply the
   orthonormal DCT-II along time to :math:`x` and :math:`v`.
3. *Equivariant lift*: :math:`X=W_x(x-m)+m`, :math:`V=W_vv` (linear maps over the time axis to
   C channels, no bias; :math:`m` the mean over agents and channels).
4. *Invariant interaction reasoning*: from :math:`[h_i,h_j,\phi(\lVert X_i^c-X_j^c\rVert_c)]`
   (both X and V channels) an edge MLP, a node update and a category MLP give soft relation types
   :math:`c_{ij}=\mathrm{softmax}(\cdot/\tau)\in\Delta^{K-1}`, computed once and reused.
5. *Equivariant feature learning* (per layer): inner-agent attention
   :math:`X_i\leftarrow X_i+\phi_q(h_i)\odot(X_i-\mu)`; reasoned aggregation
   :math:`X_i\leftarrow X_i+\sum_j\phi_f(\sum_kc^k_{ij}\phi_k([h_i,h_j,\lVert X_i-X_j\rVert]))\odot(X_i-X_j)`;
   :math:`X\leftarrow X+W V`; an equivariant non-linearity (if :math:`\langle q,k\rangle<0`
   remove the component of :math:`q` along :math:`k`, with :math:`q=W_q(X-\mu)`,
   :math:`k=W_k(X-\mu)`); invariant update :math:`h_i\leftarrow h_i+\phi_h([h_i,\sum_{j\ne i}m_{ij}])`.
6. *Head*: :math:`W_o(X-\mu)+\mu` to :math:`T_f` DCT coefficients, inverse DCT, add :math:`\bar x`.

Loss: mean over agents and future frames of :math:`\lVert\hat y-y\rVert_2` (ADE); FDE is reported.

Tested properties (``tests/test_eqmotion.py``):
* E(3) equivariance of predictions (rotations, reflections, translations; velocities rotate),
  negative control: the same model with the equivariant non-linearity replaced by a coordinate-wise
  ReLU (``test_eqmotion_e3_equivariant_with_negative_control``).
* Relation categories invariant to E(3) and equivariant to agent permutation
  (``test_eqmotion_categories_invariant``); predictions permutation-equivariant
  (``test_eqmotion_agent_permutation``).
* Learning: beats constant velocity and a non-equivariant MLP on the charged n-body task
  (``test_eqmotion_learns_nbody``).

Deviations. Parameters that the official n-body model creates but never uses in its forward
pass (the last layer's edge/node MLPs, whose invariant update is discarded; ``coord_mlp`` with
gain 0.001 in the reasoning path; ``node_att_mlp``) are not created (golden parity with the
official forward pass is tested: ``test_eqmotion_matches_official_golden``). The official category MLP ends with an activation before the softmax;
we keep that. The n-body data are our own torch simulator (:mod:`invariance.geometry.data.nbody`),
fewer frames (past 10 / future 10 at 100-step spacing) and far fewer samples/epochs than the
paper (CPU budget).
"""  # noqa: E501

from __future__ import annotations

import importlib
import math
from typing import Any

import torch
from torch import Tensor, nn

from .ops._checks import check_int, check_real, check_tensor

__all__ = ["EqMotion", "eqmotion_loss", "dct_matrix", "ade_fde"]


def dct_matrix(n: int, *, dtype: torch.dtype = torch.float64, device: Any = None) -> Tensor:
    """Orthonormal DCT-II matrix (n, n): ``D[k, i] = w_k cos(pi (i + 1/2) k / n)``."""
    k = torch.arange(n, dtype=dtype, device=device).unsqueeze(1)
    i = torch.arange(n, dtype=dtype, device=device).unsqueeze(0)
    w = torch.full((n, 1), math.sqrt(2.0 / n), dtype=dtype, device=device)
    w[0] = math.sqrt(1.0 / n)
    return w * torch.cos(math.pi * (i + 0.5) * k / n)


def _mlp(sizes: list[int], act: type[nn.Module], *, last_act: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), act()]
    return nn.Sequential(*(layers if last_act else layers[:-1]))


def _ch(lin: nn.Linear, X: Tensor) -> Tensor:
    """Apply a Linear over the channel axis of X (B, n, C, 3)."""
    return lin(X.transpose(-1, -2)).transpose(-1, -2)


def _pairs(h: Tensor) -> tuple[Tensor, Tensor]:
    n = h.shape[1]
    return h.unsqueeze(2).expand(-1, -1, n, -1), h.unsqueeze(1).expand(-1, n, -1, -1)


class _FeatureLearningLayer(nn.Module):
    """One equivariant feature learning layer (attention, reasoned aggregation, VN non-linearity)."""  # noqa: E501

    def __init__(
        self,
        hidden: int,
        channels: int,
        categories: int,
        act: type[nn.Module],
        nonlinearity: str,
        update_h: bool = True,
    ) -> None:
        super().__init__()
        H, C = hidden, channels
        self.nonlinearity, self.update_h = nonlinearity, update_h
        if update_h:  # the last layer's invariant update is never read (dead in the official code)
            self.edge_mlp = _mlp([2 * H + C, H, H], act, last_act=True)
        self.category_mlps = nn.ModuleList(
            _mlp([2 * H + C, H, C], act, last_act=True) for _ in range(categories)
        )
        self.factor_mlp = _mlp([C, C, C], act, last_act=True)
        if update_h:
            self.node_mlp = _mlp([2 * H, H, H], act, last_act=False)
        self.att_mlp = _mlp([H, C], act, last_act=True)
        self.coord_vel = nn.Linear(C, C, bias=False)
        self.layer_q = nn.Linear(C, C, bias=False)
        self.layer_k = nn.Linear(C, C, bias=False)

    def forward(self, h: Tensor, X: Tensor, V: Tensor, category: Tensor) -> tuple[Tensor, Tensor]:
        n = X.shape[1]
        hi, hj = _pairs(h)
        diff = X.unsqueeze(2) - X.unsqueeze(1)  # (B, n, n, C, 3): X_i - X_j
        edge_in = torch.cat([hi, hj, diff.norm(dim=-1)], -1)
        # inner-agent attention
        X = X + self.att_mlp(h).unsqueeze(-1) * (X - X.mean(dim=(1, 2), keepdim=True))
        # reasoned aggregation (sum over all j; the j = i term has zero difference)
        fac = sum(
            category[..., k : k + 1] * mlp(edge_in) for k, mlp in enumerate(self.category_mlps)
        )
        fac = self.factor_mlp(fac)
        X = X + (fac.unsqueeze(-1) * diff).sum(2)
        X = X + _ch(self.coord_vel, V)
        # equivariant non-linearity
        mu = X.mean(dim=(1, 2), keepdim=True)
        if self.nonlinearity == "vn":
            q, k = _ch(self.layer_q, X - mu), _ch(self.layer_k, X - mu)
            dot = (q * k).sum(-1, keepdim=True)
            proj = q - dot / ((k * k).sum(-1, keepdim=True) + 1e-4) * k
            X = torch.where(dot >= 0, q, proj) + mu
        else:  # "relu": a broken, coordinate-wise variant (negative control only)
            X = torch.relu(_ch(self.layer_q, X - mu)) + mu
        if self.update_h:
            m = self.edge_mlp(edge_in)
            mask = 1.0 - torch.eye(n, dtype=h.dtype, device=h.device).view(1, n, n, 1)
            h = h + self.node_mlp(torch.cat([h, (m * mask).sum(2)], -1))
        return h, X


class EqMotion(nn.Module):
    """EqMotion predictor (Xu et al., CVPR 2023).

    Args:
        past (int): past frames T_p. future (int): predicted frames T_f.
        hidden (int): invariant feature width H, even (default 64).
        channels (int): equivariant channels C (default 64).
        layers (int): feature learning layers (default 4).
        categories (int): relation types K (default 2). tau (float): softmax temperature (default 1).
        nonlinearity (str): ``"vn"`` (paper) or ``"relu"`` (a deliberately non-equivariant
            variant used as negative control) (default ``"vn"``).

    Shapes:
        loc (B, n, T_p, 3), vel (B, n, T_p, 3) (optional: finite differences of ``loc``)
        -> prediction (B, n, T_f, 3); with ``return_category`` also (B, n, n, K).

    Invariance: prediction E(3)-equivariant (``loc -> loc Qᵀ + t``, ``vel -> vel Qᵀ``) and
    agent-permutation-equivariant; relation categories E(3)-invariant.
    """  # noqa: E501

    def __init__(
        self,
        *,
        past: int,
        future: int,
        hidden: int = 64,
        channels: int = 64,
        layers: int = 4,
        categories: int = 2,
        tau: float = 1.0,
        nonlinearity: str = "vn",
    ) -> None:
        super().__init__()
        check_int(past, "past", 2)
        check_int(future, "future", 1)
        check_int(hidden, "hidden", 2)
        if hidden % 2:
            raise ValueError(f"hidden must be an even int >= 2, got {hidden}")
        check_int(channels, "channels", 1)
        check_int(layers, "layers", 1)
        check_int(categories, "categories", 1)
        check_real(tau, "tau", 0.0, lo_open=True)
        if nonlinearity not in ("vn", "relu"):
            raise ValueError(f"nonlinearity must be 'vn' or 'relu', got {nonlinearity!r}")
        H, C, act = hidden, channels, nn.SiLU
        self.past, self.future, self.hidden, self.channels = past, future, hidden, channels
        self.categories, self.tau = categories, tau
        self.embed_speed = nn.Linear(past, H // 2)
        self.embed_angle = nn.Linear(past, H // 2)
        self.coord_trans = nn.Linear(past, C, bias=False)
        self.vel_trans = nn.Linear(past, C, bias=False)
        self.rel_coord_mlp = _mlp([2 * C, H, 2 * C], act, last_act=True)
        self.rel_edge_mlp = _mlp([2 * H + 2 * C, H, H], act, last_act=True)
        self.rel_node_mlp = _mlp([2 * H, H, H], act, last_act=True)
        self.rel_category_mlp = _mlp([2 * H + 2 * C, H, categories], act, last_act=True)
        self.layers = nn.ModuleList(
            _FeatureLearningLayer(H, C, categories, act, nonlinearity, update_h=i < layers - 1)
            for i in range(layers)
        )
        self.head = nn.Linear(C, future, bias=False)

    def reset_parameters(self) -> None:
        for mod in self.modules():
            if isinstance(mod, nn.Linear):
                mod.reset_parameters()

    def extra_repr(self) -> str:
        return f"past={self.past}, future={self.future}, hidden={self.hidden}, channels={self.channels}, categories={self.categories}"  # noqa: E501

    def _categories(self, h: Tensor, XV: Tensor) -> Tensor:
        n = h.shape[1]
        dist = self.rel_coord_mlp((XV.unsqueeze(2) - XV.unsqueeze(1)).norm(dim=-1))
        hi, hj = _pairs(h)
        e = self.rel_edge_mlp(torch.cat([hi, hj, dist], -1))
        mask = 1.0 - torch.eye(n, dtype=h.dtype, device=h.device).view(1, n, n, 1)
        node = self.rel_node_mlp(torch.cat([h, (e * mask).sum(2)], -1))
        ni, nj = _pairs(node)
        return torch.softmax(
            self.rel_category_mlp(torch.cat([ni, nj, dist], -1)) / self.tau, dim=-1
        )

    def forward(self, loc: Tensor, vel: Tensor | None = None, *, return_category: bool = False):
        if (
            not isinstance(loc, Tensor)
            or loc.dim() != 4
            or loc.shape[-1] != 3
            or loc.shape[2] != self.past
        ):
            raise ValueError(
                f"loc must be (B, agents, past={self.past}, 3), got {tuple(getattr(loc, 'shape', ()))}"  # noqa: E501
            )
        if loc.shape[1] < 2:
            raise ValueError(f"need at least 2 agents, got {loc.shape[1]}")
        if not loc.is_floating_point():
            raise TypeError(f"loc must be a floating tensor, got dtype {loc.dtype}")
        if not torch.isfinite(loc).all():
            raise ValueError("loc contains NaN or Inf values")
        if vel is not None:
            if not isinstance(vel, Tensor) or not vel.is_floating_point():
                raise TypeError(f"vel must be a floating tensor, got {getattr(vel, 'dtype', vel)}")
            if not torch.isfinite(vel).all():
                raise ValueError("vel contains NaN or Inf values")
        if vel is None:
            vel = torch.zeros_like(loc)
            vel[:, :, 1:] = loc[:, :, 1:] - loc[:, :, :-1]
            vel[:, :, 0] = vel[:, :, 1]
        elif vel.shape != loc.shape:
            raise ValueError(
                f"vel must have the shape of loc {tuple(loc.shape)}, got {tuple(vel.shape)}"
            )
        eps = 1e-6
        prev = torch.cat([vel[:, :, :1], vel[:, :, :-1]], 2)
        speed = vel.norm(dim=-1)
        cos = (prev * vel).sum(-1) / ((prev.norm(dim=-1) + eps) * (speed + eps))
        angle = torch.acos(cos.clamp(-1, 1))
        h = torch.cat([self.embed_speed(speed), self.embed_angle(angle)], -1)

        center = loc.mean(dim=(1, 2), keepdim=True)
        D = dct_matrix(self.past, dtype=loc.dtype, device=loc.device)  # built in the input dtype
        x = D @ (loc - center)
        v = D @ vel
        m = x.mean(dim=(1, 2), keepdim=True)
        X = _ch(self.coord_trans, x - m) + m
        V = _ch(self.vel_trans, v)
        category = self._categories(h, torch.cat([X, V], 2))
        for layer in self.layers:
            h, X = layer(h, X, V, category)
        mu = X.mean(dim=(1, 2), keepdim=True)
        out = _ch(self.head, X - mu) + mu
        out = dct_matrix(self.future, dtype=loc.dtype, device=loc.device).T @ out + center
        return (out, category) if return_category else out


# ----------------------------------------------------------------------------- loss and metrics


def ade_fde(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Average and final displacement errors of (B, n, T, 3) trajectories."""
    check_tensor(pred, "pred", ndim=4, last=3)
    check_tensor(target, "target", ndim=4, last=3)
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    err = (pred - target).norm(dim=-1)
    return err.mean(), err[:, :, -1].mean()


def eqmotion_loss(pred: Tensor, target: Tensor) -> dict[str, Tensor]:
    """The official loss: mean Euclidean error over agents and frames (= ADE); FDE logged."""
    ade, fde = ade_fde(pred, target)
    return {"loss": ade, "ade": ade.detach(), "fde": fde.detach()}


def __getattr__(name: str) -> object:
    """Config and recipe names moved to ``recipes.eqmotion``; still importable here."""
    if name in {"EqMotionConfig", "EqMotionRecipe"}:
        return getattr(importlib.import_module("invariance.geometry.recipes.eqmotion"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
