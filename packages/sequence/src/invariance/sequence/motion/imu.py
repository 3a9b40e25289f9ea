"""IMU synthesis by physics, and the UniMTS sensor augmentations.

:func:`synthesize_imu`: a sensor rigidly attached to each joint reads, in its own frame,
``acc = R^T (p'' + g z)`` (specific force, m/s^2; ``g = 9.81``) and ``gyro = vee(R^T R')``
(rad/s), with ``p''`` and ``R'`` from central differences of the sampled trajectory (the angular
rate from the SO(3) log of ``R(t-dt)^T R(t+dt)``, exact for a constant rate). The output is
low-pass averaged and decimated to the model's rate (20 Hz in UniMTS).

:func:`random_rotation` draws rotations as UniMTS does (a normalised Gaussian quaternion, uniform
on SO(3)); :func:`rotate_joints` applies an independent rotation to every joint's acc and gyro
3-vectors (all time steps); :func:`mask_joints` keeps ``k ~ U{1..5}`` random joints (the others
zero) to mimic arbitrary device placement.
"""

from __future__ import annotations

import torch
from torch import Tensor

from invariance.sequence._checks import check_float, check_int, check_tensor
from invariance.sequence.motion.skeleton import N_JOINTS

__all__ = [
    "GRAVITY",
    "so3_log",
    "synthesize_imu",
    "quaternion_to_matrix",
    "random_rotation",
    "rotate_joints",
    "mask_joints",
]

GRAVITY = 9.81


def so3_log(R: Tensor) -> Tensor:
    """Rotation vectors ``(..., 3)`` of rotation matrices ``(..., 3, 3)`` (angles below pi)."""
    tr = R.diagonal(dim1=-2, dim2=-1).sum(-1)
    cos = ((tr - 1) / 2).clamp(-1.0, 1.0)
    theta = torch.arccos(cos)
    w = torch.stack(
        [R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1
    )
    s = torch.sin(theta)
    scale = torch.where(s.abs() > 1e-8, theta / (2 * s.clamp_min(1e-12)), 0.5 + theta**2 / 12)
    return w * scale.unsqueeze(-1)


def synthesize_imu(pos: Tensor, rot: Tensor, fs: float, *, decimate: int = 1) -> Tensor:
    """Accelerometer + gyroscope of a sensor at every joint: ``(T', J, 6)`` = (acc xyz, gyro xyz)
    in each sensor's frame, from positions ``(T, J, 3)`` and orientations ``(T, J, 3, 3)``
    sampled at ``fs`` Hz. The two end samples (no central difference) are dropped, then blocks of
    ``decimate`` samples are averaged (``T' = (T - 2) // decimate``)."""
    check_tensor("pos", pos, ndim=3, floating=True)
    check_tensor("rot", rot, ndim=4, floating=True)
    if pos.shape[-1] != 3 or rot.shape[:2] != pos.shape[:2] or rot.shape[-2:] != (3, 3):
        raise ValueError(
            f"pos must be (T, J, 3) and rot (T, J, 3, 3), got {tuple(pos.shape)} and "
            f"{tuple(rot.shape)}"
        )
    check_float("fs", fs, 0.0, lo_open=True)
    check_int("decimate", decimate, 1)
    if pos.shape[0] < 2 + decimate:
        raise ValueError(f"pos needs at least {2 + decimate} time steps, got {pos.shape[0]}")
    dt = 1.0 / fs
    dtype = torch.promote_types(pos.dtype, rot.dtype)
    pos, rot = pos.to(dtype), rot.to(dtype)
    acc_w = (pos[2:] - 2 * pos[1:-1] + pos[:-2]) / dt**2
    acc_w = acc_w + torch.tensor([0.0, 0.0, GRAVITY], dtype=pos.dtype)
    R = rot[1:-1]
    acc = (R.transpose(-1, -2) @ acc_w.unsqueeze(-1)).squeeze(-1)
    gyro = so3_log(rot[:-2].transpose(-1, -2) @ rot[2:]) / (2 * dt)
    out = torch.cat([acc, gyro], -1)
    if decimate > 1:
        n = out.shape[0] // decimate
        out = out[: n * decimate].reshape(n, decimate, *out.shape[1:]).mean(1)
    return out


def quaternion_to_matrix(q: Tensor) -> Tensor:
    """Rotation matrices ``(..., 3, 3)`` of unit quaternions ``(..., 4)`` (w, x, y, z)."""
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            torch.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            torch.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def random_rotation(*shape: int, generator: torch.Generator | None = None) -> Tensor:
    """Uniform random rotations ``(*shape, 3, 3)``: a normalised Gaussian quaternion (UniMTS)."""
    q = torch.randn(*shape, 4, generator=generator, dtype=torch.float64)
    return quaternion_to_matrix(q / q.norm(dim=-1, keepdim=True))


def _check_imu(x: Tensor) -> Tensor:
    check_tensor("x", x, ndim=4, floating=True)
    if x.shape[2] != N_JOINTS:
        raise ValueError(f"x must have {N_JOINTS} joints in dim 2, got {x.shape[2]}")
    if x.shape[3] not in (3, 6):
        raise ValueError(f"x must have 3 (acc) or 6 (acc + gyro) channels, got {x.shape[3]}")
    return x


def rotate_joints(x: Tensor, R: Tensor | None = None, *, generator=None) -> Tensor:
    """Rotate every joint's acc (and gyro) 3-vectors of ``x`` ``(B, T, 22, 3|6)`` by ``R``
    ``(B, 22, 3, 3)`` (one rotation per sample and joint, all time steps; default: random)."""
    _check_imu(x)
    B = x.shape[0]
    if R is None:
        R = random_rotation(B, N_JOINTS, generator=generator)
    else:
        check_tensor("R", R, ndim=4, floating=True)
        if R.shape != (B, N_JOINTS, 3, 3):
            raise ValueError(f"R must be ({B}, {N_JOINTS}, 3, 3), got {tuple(R.shape)}")
    R = R.to(x.dtype)
    parts = x.unflatten(-1, (-1, 3))  # (B, T, J, 1|2, 3)
    out = torch.einsum("bjxy,btjcy->btjcx", R, parts)
    return out.flatten(-2)


def mask_joints(
    x: Tensor, *, max_joints: int = 5, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Keep ``k ~ U{1..max_joints}`` random joints per sample of ``x`` ``(B, T, 22, C)`` (others
    zeroed); returns the masked input and the ``(B, 22)`` mask."""
    _check_imu(x)
    check_int("max_joints", max_joints, 1, N_JOINTS)
    B = x.shape[0]
    k = torch.randint(1, max_joints + 1, (B,), generator=generator)
    order = torch.rand(B, N_JOINTS, generator=generator).argsort(1)
    keep = (torch.arange(N_JOINTS)[None, :] < k[:, None]).to(x.dtype)  # the first k of order
    mask = torch.zeros(B, N_JOINTS, dtype=x.dtype).scatter_(1, order, keep)
    return x * mask[:, None, :, None], mask
