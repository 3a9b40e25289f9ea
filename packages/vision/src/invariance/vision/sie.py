"""SIE: split invariant-equivariant self-supervised representations.

Paper: Garrido, Najman, LeCun, "Self-supervised learning of Split Invariant Equivariant
representations" (ICML 2023), arXiv 2302.10283. Official code:
https://github.com/facebookresearch/SIE (GPL-3.0; read, not copied; 3DIEBench data CC-BY-NC).

Mechanism. One encoder's representation is split into an *invariant* part (first
``dim - equi_dim`` dimensions) and an *equivariant* part (last ``equi_dim``). Two views ``x``, ``y``
of the same object differ by a known transformation ``z`` (here a rotation). Each part has its own
projector (Linear-BN-ReLU, Linear-BN-ReLU, Linear). The invariant embeddings are pulled together;
the equivariant embedding of ``x`` is mapped to that of ``y`` by a predictor whose weights are
generated from ``z`` by a **bias-free linear hypernetwork** ``W(z) = sum_k z_k A_k``
(:class:`LinearHyperPredictor`, on :class:`invariance.optim.HyperNet` with a frozen zero output
bias). Because ``W`` is linear in ``z`` with ``W(0) = 0``, the predictor cannot be the identity for
every ``z``, so the equivariant part cannot collapse to an invariant one. Loss
(:func:`sie_loss`, the official ``SIE.forward``):

    sim * MSE(x_inv, y_inv) + equi_factor * sim * MSE(W(z) x_eq, y_eq)
      + std * (v([x_inv, x_eq]) + v([y_inv, y_eq])) + std * v(W(z) x_eq)
      + cov * (c([x_inv, x_eq]) + c([y_inv, y_eq]))

with the VICReg variance ``v`` and covariance ``c`` (:mod:`invariance.vision.nn.vicreg`) on the
*concatenated* embeddings, so the two parts do not duplicate information. Defaults
10 / 0.45 / 10 / 1.

Tested properties (``tests/test_sie.py``):

* the predictor is linear in ``z`` (``P(x, a z1 + b z2) = a P(x, z1) + b P(x, z2)``,
  ``P(x, 0) = 0``, ``P(x, -z) = -P(x, z)``), checked as scaling equivariance with
  ``invariance.core.testing``;
  negative control: the same hypernetwork with a learnable output bias (MIP's theta0 term);
* relative transformations compose: ``z(t1 -> t3) = z(t2 -> t3) * z(t1 -> t2)`` (complex product in
  2-D; quaternions of ``R1^T R2`` equal scipy's, canonical ``w >= 0``);
* golden values: the official ``ParametrizedNet`` and the official ``SIE.forward`` loss terms;
* on trained models: the invariant part moves less than the equivariant part between views of
  one object (reported by ``reproduce``).

Deviations: a 4-layer CNN on 16x16 rotated coloured digits (``RotDigits``) instead of ResNet-18
on 3DIEBench (not reachable); ``z = (cos dtheta, sin dtheta)`` (2-D rotation) instead of a
quaternion (the quaternion helper is provided for the 3-D case); the hypernetwork's weights are
initialised with std ``1 / sqrt(equi_emb)`` per ``z`` unit so ``W(z)`` roughly preserves norms
(the official default ``nn.Linear`` init scales with ``1 / sqrt(4)``); no AMP/SyncBN.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from invariance.optim import HyperNet
from invariance.vision._checks import check_int, check_number, check_tensor
from invariance.vision.nn.vicreg import covariance_term, variance_term

__all__ = [
    "LinearHyperPredictor",
    "SIE",
    "VICRegModel",
    "conv_encoder",
    "projector",
    "sie_loss",
    "relative_rotation_2d",
    "relative_quaternion",
]


def relative_rotation_2d(theta1: Tensor, theta2: Tensor) -> Tensor:
    """``z = (cos(theta2 - theta1), sin(theta2 - theta1))``: the rotation from view 1 to view 2."""
    check_tensor(theta1, "theta1", dims=1)
    check_tensor(theta2, "theta2", dims=1)
    if theta1.shape != theta2.shape:
        raise ValueError("theta1 and theta2 must have the same shape")
    d = theta2 - theta1
    return torch.stack([torch.cos(d), torch.sin(d)], -1)


def _euler_xyz(a: Tensor) -> Tensor:
    """Rotation matrices of extrinsic x-y-z Euler angles (scipy's ``"xyz"``): R = Rz Ry Rx."""
    cx, cy, cz = torch.cos(a).unbind(-1)
    sx, sy, sz = torch.sin(a).unbind(-1)
    o, z = torch.ones_like(cx), torch.zeros_like(cx)
    rx = torch.stack([o, z, z, z, cx, -sx, z, sx, cx], -1).reshape(*a.shape[:-1], 3, 3)
    ry = torch.stack([cy, z, sy, z, o, z, -sy, z, cy], -1).reshape(*a.shape[:-1], 3, 3)
    rz = torch.stack([cz, -sz, z, sz, cz, z, z, z, o], -1).reshape(*a.shape[:-1], 3, 3)
    return rz @ ry @ rx


def _matrix_to_quaternion(r: Tensor) -> Tensor:
    """(..., 3, 3) rotation matrices -> (..., 4) quaternions (x, y, z, w), ``w >= 0``."""
    m = r
    t = torch.stack(
        [
            1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
            1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2],
            1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2],
            1 + m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2],
        ],
        -1,
    )
    k = t.argmax(-1)
    q = torch.stack(
        [
            torch.stack(
                [
                    t[..., 0],
                    m[..., 1, 0] + m[..., 0, 1],
                    m[..., 0, 2] + m[..., 2, 0],
                    m[..., 2, 1] - m[..., 1, 2],
                ],
                -1,
            ),
            torch.stack(
                [
                    m[..., 1, 0] + m[..., 0, 1],
                    t[..., 1],
                    m[..., 2, 1] + m[..., 1, 2],
                    m[..., 0, 2] - m[..., 2, 0],
                ],
                -1,
            ),
            torch.stack(
                [
                    m[..., 0, 2] + m[..., 2, 0],
                    m[..., 2, 1] + m[..., 1, 2],
                    t[..., 2],
                    m[..., 1, 0] - m[..., 0, 1],
                ],
                -1,
            ),
            torch.stack(
                [
                    m[..., 2, 1] - m[..., 1, 2],
                    m[..., 0, 2] - m[..., 2, 0],
                    m[..., 1, 0] - m[..., 0, 1],
                    t[..., 3],
                ],
                -1,
            ),
        ],
        -2,
    )
    q = torch.gather(q, -2, k[..., None, None].expand(*k.shape, 1, 4))[..., 0, :]
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., 3:] < 0, -q, q)


def relative_quaternion(euler1: Tensor, euler2: Tensor) -> Tensor:
    """Canonical quaternion (x, y, z, w), ``w >= 0``, of ``R1^-1 R2`` for extrinsic ``"xyz"``
    Euler angles (N, 3): SIE's transformation latent on 3DIEBench."""
    check_tensor(euler1, "euler1", dims=2)
    check_tensor(euler2, "euler2", dims=2)
    if euler1.shape != euler2.shape or euler1.shape[-1] != 3:
        raise ValueError("euler1 and euler2 must both have shape (N, 3)")
    r = _euler_xyz(euler1.double()).transpose(-1, -2) @ _euler_xyz(euler2.double())
    return _matrix_to_quaternion(r).to(euler1.dtype)


class LinearHyperPredictor(nn.Module):
    """SIE's predictor: ``P(x, z) = W(z) x`` with ``W(z)`` (dim x dim, row-major out x in)
    generated by a bias-free linear hypernetwork from ``z`` (cond_dim,).

    Built on :class:`invariance.optim.HyperNet` (plain, ``mip=False``, no hidden layer) over a
    bias-free ``nn.Linear(dim, dim)``; the hypernetwork's output bias (MIP's ``theta0``) is
    frozen at zero unless ``theta0=True`` (a negative control: then ``P(x, 0) != 0``).
    ``forward(x (B, dim), z (B, cond_dim)) -> (B, dim)``.
    """

    def __init__(
        self,
        dim: int,
        cond_dim: int,
        *,
        theta0: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        check_int(dim, "dim")
        check_int(cond_dim, "cond_dim")
        self.dim, self.cond_dim = dim, cond_dim
        self.hyper = HyperNet(
            nn.Linear(dim, dim, bias=False),
            cond_dim=cond_dim,
            hidden_sizes=(),
            mip=False,
            generator=generator,
        )
        with torch.no_grad():
            w = self.hyper.output.weight
            w.copy_(torch.randn(w.shape, generator=generator) / math.sqrt(dim * cond_dim))
            if theta0:
                self.hyper.output.bias.copy_(
                    torch.randn(self.hyper.output.bias.shape, generator=generator) / math.sqrt(dim)
                )
        self.hyper.output.bias.requires_grad_(theta0)

    def weight(self, z: Tensor) -> Tensor:
        """``W(z)``: (cond_dim,) -> (dim, dim) or (B, cond_dim) -> (B, dim, dim)."""
        return self.hyper.predict(z)["weight"]

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        check_tensor(x, "x", dims=2, expected="(B, dim) embeddings")
        check_tensor(z, "z", dims=2, expected="(B, cond_dim) transformations")
        if x.shape[1] != self.dim or z.shape[1] != self.cond_dim or x.shape[0] != z.shape[0]:
            raise ValueError(
                f"x must be (B, {self.dim}) and z (B, {self.cond_dim}) with the same B, got "
                f"{tuple(x.shape)} and {tuple(z.shape)}"
            )
        return torch.einsum("boi,bi->bo", self.weight(z), x)


def conv_encoder(width: int = 32) -> nn.Sequential:
    """4 conv layers (channels w, 2w, 4w, 4w; strides 2, 2, 2, 1; BN + ReLU) and global average
    pooling: (B, 3, H, W) -> (B, 4w)."""
    check_int(width, "width")
    chans = [3, width, 2 * width, 4 * width, 4 * width]
    layers: list[nn.Module] = []
    for i, s in enumerate((2, 2, 2, 1)):
        layers += [
            nn.Conv2d(chans[i], chans[i + 1], 3, stride=s, padding=1, bias=False),
            nn.BatchNorm2d(chans[i + 1]),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())


def projector(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """VICReg/SIE projector: Linear-BN-ReLU, Linear-BN-ReLU, Linear without bias."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, out_dim, bias=False),
    )


def sie_loss(
    x_inv: Tensor,
    x_eq: Tensor,
    y_inv: Tensor,
    y_eq: Tensor,
    y_eq_pred: Tensor,
    *,
    sim: float = 10.0,
    equi_factor: float = 0.45,
    std: float = 10.0,
    cov: float = 1.0,
) -> dict[str, Tensor]:
    """The SIE objective on projected embeddings (all (B, D_part)); returns the terms and
    ``loss`` (see the module docstring)."""
    for t, n in ((x_inv, "x_inv"), (x_eq, "x_eq"), (y_inv, "y_inv"), (y_eq, "y_eq")):
        check_tensor(t, n, dims=2)
    check_tensor(y_eq_pred, "y_eq_pred", dims=2)
    if x_inv.shape != y_inv.shape or x_eq.shape != y_eq.shape or y_eq_pred.shape != y_eq.shape:
        raise ValueError("x_inv/y_inv and x_eq/y_eq/y_eq_pred must have matching shapes")
    for v, n in ((sim, "sim"), (equi_factor, "equi_factor"), (std, "std"), (cov, "cov")):
        check_number(v, n, lo=0.0)
    inv = torch.nn.functional.mse_loss(x_inv, y_inv)
    equi = torch.nn.functional.mse_loss(y_eq_pred, y_eq)
    x, y = torch.cat([x_inv, x_eq], 1), torch.cat([y_inv, y_eq], 1)
    var = variance_term(x) + variance_term(y)
    pred_var = variance_term(y_eq_pred)
    cv = covariance_term(x) + covariance_term(y)
    loss = sim * inv + equi_factor * sim * equi + std * var + std * pred_var + cov * cv
    return {
        "loss": loss,
        "inv": inv,
        "equi": equi,
        "var": var,
        "pred_var": pred_var,
        "cov": cv,
    }


class SIE(nn.Module):
    """Encoder with a split representation, two projectors and the hypernetwork predictor.

    Args:
        width: encoder width (representation ``4 * width``).
        equi_dim: size of the equivariant part (the last dimensions).
        hidden: projector width of the whole representation; each part gets its share.
        cond_dim: size of the transformation ``z`` (2 for a planar rotation, 4 for a quaternion).
        sim, equi_factor, std, cov: loss weights (official 10 / 0.45 / 10 / 1).
    """

    def __init__(
        self,
        width: int = 32,
        equi_dim: int | None = None,
        hidden: int = 256,
        cond_dim: int = 2,
        *,
        sim: float = 10.0,
        equi_factor: float = 0.45,
        std: float = 10.0,
        cov: float = 1.0,
    ) -> None:
        super().__init__()
        check_int(width, "width")
        check_int(hidden, "hidden", lo=2)
        self.encoder = conv_encoder(width)
        self.dim = 4 * width
        self.equi_dim = self.dim // 2 if equi_dim is None else check_int(equi_dim, "equi_dim")
        if not 0 < self.equi_dim < self.dim:
            raise ValueError(f"equi_dim must be in (0, {self.dim}), got {self.equi_dim}")
        self.inv_dim = self.dim - self.equi_dim
        h_inv = max(1, round(hidden * self.inv_dim / self.dim))
        h_eq = max(1, round(hidden * self.equi_dim / self.dim))
        self.projector_inv = projector(self.inv_dim, h_inv, h_inv)
        self.projector_eq = projector(self.equi_dim, h_eq, h_eq)
        self.predictor = LinearHyperPredictor(h_eq, cond_dim)
        self.weights = {"sim": sim, "equi_factor": equi_factor, "std": std, "cov": cov}

    def represent(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(invariant, equivariant) parts of the representation of (B, 3, H, W) images."""
        check_tensor(x, "x", dims=4, expected="(B, 3, H, W) images")
        h = self.encoder(x)
        return h[:, : self.inv_dim], h[:, self.inv_dim :]

    def forward(self, x: Tensor, y: Tensor, z: Tensor) -> dict[str, Tensor]:
        """The SIE loss terms for views ``x``, ``y`` (B, 3, H, W) related by ``z`` (B, cond)."""
        check_tensor(y, "y", dims=4, expected="(B, 3, H, W) images")
        xi, xe = self.represent(x)
        yi, ye = self.represent(y)
        xi, yi = self.projector_inv(xi), self.projector_inv(yi)
        xe, ye = self.projector_eq(xe), self.projector_eq(ye)
        return sie_loss(xi, xe, yi, ye, self.predictor(xe, z), **self.weights)


class VICRegModel(nn.Module):
    """The baseline: the same encoder, one projector, the VICReg loss with SIE's weights
    (invariance ``sim``, variance ``std``, covariance ``cov``)."""

    def __init__(
        self,
        width: int = 32,
        hidden: int = 256,
        *,
        sim: float = 10.0,
        std: float = 10.0,
        cov: float = 1.0,
    ) -> None:
        super().__init__()
        self.encoder = conv_encoder(width)
        self.dim = 4 * width
        self.projector = projector(self.dim, hidden, hidden)
        self.weights = {"sim": sim, "std": std, "cov": cov}

    def represent(self, x: Tensor) -> tuple[Tensor, Tensor]:
        check_tensor(x, "x", dims=4, expected="(B, 3, H, W) images")
        h = self.encoder(x)
        return h, h[:, :0]

    def forward(self, x: Tensor, y: Tensor, z: Tensor | None = None) -> dict[str, Tensor]:
        check_tensor(y, "y", dims=4, expected="(B, 3, H, W) images")
        a, b = self.projector(self.represent(x)[0]), self.projector(self.represent(y)[0])
        inv = torch.nn.functional.mse_loss(a, b)
        var = variance_term(a) + variance_term(b)
        cv = covariance_term(a) + covariance_term(b)
        w = self.weights
        return {
            "loss": w["sim"] * inv + w["std"] * var + w["cov"] * cv,
            "inv": inv,
            "var": var,
            "cov": cv,
        }
