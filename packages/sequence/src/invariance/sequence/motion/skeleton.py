"""The 22-joint skeleton of UniMTS (the joint order of its ST-GCN graph), forward kinematics and
procedural activities: each activity is a parametric kinematic program (joint-angle sinusoids at a
cadence, plus a root trajectory) with random speed, amplitude, phase, heading and body-size jitter.

Joints (parent in brackets), numbered as UniMTS's joint-assignment figure (its ``data.py`` puts a
right-arm device at 21, a left-arm one at 17, a right-leg one at 6): 0 pelvis; left leg 1 hip [0],
2 knee, 3 ankle, 4 foot; right leg 5 hip [0], 6 knee, 7 ankle, 8 foot; spine 9 [0], 10, 11 chest,
12 neck, 13 head; left arm 14 collar [11], 15 shoulder, 16 elbow, 17 wrist; right arm 18 collar
[11], 19 shoulder, 20 elbow, 21 wrist. World frame (right-handed): z up; at heading 0 the body
faces -y, +x is its left; walking and running move the root towards the body's front. Metres,
seconds.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from invariance.sequence._checks import check_float

__all__ = [
    "N_JOINTS",
    "PARENTS",
    "EDGES",
    "JOINT_NAMES",
    "OFFSETS",
    "ACTIVITIES",
    "axis_angle",
    "forward_kinematics",
    "activity_motion",
]

N_JOINTS = 22
PARENTS = (-1, 0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 12, 11, 14, 15, 16, 11, 18, 19, 20)
#: (child, parent) pairs: the bones (the official ST-GCN graph's neighbour links)
EDGES = tuple((j, p) for j, p in enumerate(PARENTS) if p >= 0)
JOINT_NAMES = (
    "pelvis", "l_hip", "l_knee", "l_ankle", "l_foot", "r_hip", "r_knee", "r_ankle", "r_foot",
    "spine1", "spine2", "chest", "neck", "head", "l_collar", "l_shoulder", "l_elbow", "l_wrist",
    "r_collar", "r_shoulder", "r_elbow", "r_wrist",
)  # fmt: skip
#: rest offsets of each joint from its parent (metres, parent frame); the arms hang down
OFFSETS = torch.tensor(
    [
        [0.0, 0.0, 0.0],
        [0.09, 0.0, -0.06], [0.0, 0.0, -0.42], [0.0, 0.0, -0.40], [0.0, -0.13, -0.06],
        [-0.09, 0.0, -0.06], [0.0, 0.0, -0.42], [0.0, 0.0, -0.40], [0.0, -0.13, -0.06],
        [0.0, 0.0, 0.12], [0.0, 0.0, 0.13], [0.0, 0.0, 0.13], [0.0, 0.0, 0.15], [0.0, 0.0, 0.12],
        [0.07, 0.0, 0.10], [0.12, 0.0, 0.0], [0.0, 0.0, -0.28], [0.0, 0.0, -0.25],
        [-0.07, 0.0, 0.10], [-0.12, 0.0, 0.0], [0.0, 0.0, -0.28], [0.0, 0.0, -0.25],
    ],
    dtype=torch.float64,
)  # fmt: skip
#: the activities the procedural generator knows
ACTIVITIES = ("walk", "run", "jump", "squat", "wave", "punch", "stand", "cycle")
PELVIS_HEIGHT = 0.95


def axis_angle(axis: str, angle: Tensor) -> Tensor:
    """Rotation matrices ``(..., 3, 3)`` about ``"x"``, ``"y"`` or ``"z"`` by ``angle`` (rad)."""
    c, s = torch.cos(angle), torch.sin(angle)
    o, z = torch.ones_like(angle), torch.zeros_like(angle)
    if axis == "x":
        rows = [[o, z, z], [z, c, -s], [z, s, c]]
    elif axis == "y":
        rows = [[c, z, s], [z, o, z], [-s, z, c]]
    elif axis == "z":
        rows = [[c, -s, z], [s, c, z], [z, z, o]]
    else:
        raise ValueError(f"axis must be 'x', 'y' or 'z', got {axis!r}")
    return torch.stack([torch.stack(r, -1) for r in rows], -2)


def forward_kinematics(
    local_rot: Tensor, root_pos: Tensor, offsets: Tensor = OFFSETS
) -> tuple[Tensor, Tensor]:
    """Global joint positions ``(T, 22, 3)`` and orientations ``(T, 22, 3, 3)`` from local
    rotations ``(T, 22, 3, 3)`` (joint frame relative to its parent's; the root's is global) and
    the root trajectory ``(T, 3)``: ``R_j = R_parent R_local_j``, ``p_j = p_parent + R_parent
    offset_j``."""
    if local_rot.dim() != 4 or local_rot.shape[1:] != (N_JOINTS, 3, 3):
        raise ValueError(f"local_rot must be (T, 22, 3, 3), got {tuple(local_rot.shape)}")
    if root_pos.shape != (local_rot.shape[0], 3):
        raise ValueError(f"root_pos must be (T, 3), got {tuple(root_pos.shape)}")
    rots: list[Tensor] = [local_rot[:, 0]]
    pos: list[Tensor] = [root_pos]
    for j in range(1, N_JOINTS):
        p = PARENTS[j]
        rots.append(rots[p] @ local_rot[:, j])
        pos.append(pos[p] + (rots[p] @ offsets[j].to(local_rot)))
    return torch.stack(pos, 1), torch.stack(rots, 1)


def _u(g: torch.Generator, a: float, b: float) -> float:
    return a + (b - a) * float(torch.rand((), generator=g, dtype=torch.float64))


def activity_motion(
    activity: str,
    seconds: float = 3.2,
    fs: float = 100.0,
    *,
    generator: torch.Generator | None = None,
    jitter: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """One clip of ``activity`` sampled at ``fs`` Hz: joint positions ``(T, 22, 3)`` and
    orientations ``(T, 22, 3, 3)`` (float64). ``jitter`` scales the random variation of cadence,
    amplitudes, phase, heading, turning rate and body size (0 = the canonical program)."""
    if activity not in ACTIVITIES:
        raise ValueError(f"activity must be one of {ACTIVITIES}, got {activity!r}")
    check_float("seconds", seconds, 0.1, 60.0)
    check_float("fs", fs, 10.0, 1000.0)
    check_float("jitter", jitter, 0.0, 2.0)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    n = int(round(seconds * fs))
    t = torch.arange(n, dtype=torch.float64) / fs

    def j(a: float, b: float) -> float:  # jittered factor around 1
        return 1.0 + jitter * _u(g, a, b)

    size = j(-0.12, 0.12)
    amp = j(-0.2, 0.2)
    phase0 = jitter * _u(g, 0, 2 * math.pi)
    heading = jitter * _u(g, -math.pi, math.pi)
    turn = jitter * _u(g, -0.3, 0.3)  # rad/s
    rx = torch.zeros(n, N_JOINTS, dtype=torch.float64)  # flexion about x (pitch)
    ry = torch.zeros(n, N_JOINTS, dtype=torch.float64)  # about y (roll / abduction)
    rz = torch.zeros(n, N_JOINTS, dtype=torch.float64)  # about z (twist)
    speed = 0.0
    z = torch.zeros(n, dtype=torch.float64)
    d2r = math.pi / 180
    sway = 0.02 * torch.sin(2 * math.pi * 0.3 * t + phase0)

    def ph(f: float) -> Tensor:
        return 2 * math.pi * f * t + phase0

    if activity in ("walk", "run"):
        run = activity == "run"
        f = (1.4 if run else 0.9) * j(-0.15, 0.15)
        a_hip, a_knee, a_arm = (40, 70, 35) if run else (25, 45, 20)
        for hip, knee, sh, elb, s in ((1, 2, 15, 16, 1.0), (5, 6, 19, 20, -1.0)):
            rx[:, hip] = -s * amp * a_hip * d2r * torch.sin(ph(f))
            rx[:, knee] = amp * a_knee * d2r * (0.5 + 0.5 * torch.sin(ph(f) + s * math.pi / 2))
            rx[:, sh] = s * amp * a_arm * d2r * torch.sin(ph(f))
            rx[:, elb] = -(80 if run else 15) * d2r
        rx[:, 9] = -(12 if run else 3) * d2r
        speed = (3.0 if run else 1.2) * j(-0.15, 0.15)
        z = (0.05 if run else 0.02) * torch.sin(2 * ph(f))
    elif activity == "jump":
        f = 1.0 * j(-0.15, 0.15)
        up = 0.5 - 0.5 * torch.cos(ph(f))  # 0 = crouched on the ground, 1 = top of the hop
        z = 0.25 * amp * up**2
        crouch = (1 - up) * 50 * d2r * amp
        for hip, knee in ((1, 2), (5, 6)):
            rx[:, hip], rx[:, knee] = -crouch, 2 * crouch
        for sh in (15, 19):
            rx[:, sh] = -150 * d2r * amp * up
    elif activity == "squat":
        f = 0.4 * j(-0.15, 0.15)
        depth = amp * (0.5 - 0.5 * torch.cos(ph(f)))
        z = -0.35 * depth
        for hip, knee, ank in ((1, 2, 3), (5, 6, 7)):
            rx[:, hip], rx[:, knee], rx[:, ank] = (
                -90 * d2r * depth,
                110 * d2r * depth,
                -20 * d2r * depth,
            )
        for sh in (15, 19):
            rx[:, sh] = -80 * d2r * depth
    elif activity == "wave":
        f = 1.8 * j(-0.15, 0.15)
        ry[:, 19] = 150 * d2r  # the right arm up and out (-x), the forearm swings side to side
        ry[:, 20] = amp * 35 * d2r * torch.sin(ph(f))
        z = sway * 0.2
    elif activity == "punch":
        f = 1.2 * j(-0.15, 0.15)
        for sh, elb, s in ((15, 16, 1.0), (19, 20, -1.0)):
            ext = (0.5 + 0.5 * torch.sin(ph(f) + (0 if s > 0 else math.pi))) * amp
            rx[:, sh] = -(40 + 50 * ext) * d2r
            rx[:, elb] = -(110 - 100 * ext) * d2r
        rz[:, 9] = 20 * d2r * torch.sin(ph(f)) * amp
    elif activity == "stand":
        rx[:, 9] = 0.04 * torch.sin(ph(0.25))
        rx[:, 12] = 0.1 * torch.sin(ph(0.15))
        z = sway * 0.1
    elif activity == "cycle":
        f = 1.1 * j(-0.15, 0.15)
        z = torch.full((n,), -0.45, dtype=torch.float64)
        for hip, knee, s in ((1, 2, 0.0), (5, 6, math.pi)):
            rx[:, hip] = -(60 + 25 * amp * torch.sin(ph(f) + s)) * d2r
            rx[:, knee] = (80 + 30 * amp * torch.sin(ph(f) + s + math.pi / 2)) * d2r
        for sh in (15, 19):
            rx[:, sh] = -45 * d2r
    yaw = heading + turn * t
    local = axis_angle("x", rx) @ axis_angle("y", ry) @ axis_angle("z", rz)
    local[:, 0] = axis_angle("z", yaw) @ local[:, 0]
    fwd = torch.stack([torch.sin(yaw), -torch.cos(yaw), torch.zeros_like(yaw)], 1)  # R_z(yaw) (-y)
    root = torch.cumsum(fwd * speed / fs, 0)
    root[:, 2] = PELVIS_HEIGHT * size + z
    root[:, :2] += sway[:, None] * torch.tensor([1.0, 0.0], dtype=torch.float64)
    return forward_kinematics(local, root, OFFSETS * size)
