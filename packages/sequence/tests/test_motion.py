"""Motion side of UniMTS: IMU physics (static sensor, constant yaw rate, pure translation),
forward kinematics, the per-joint rotation augmentation (SO(3), norms and dot products kept,
uniform), joint masking, the skeleton graph's spatial partition, the synthetic dataset."""

import math

import pytest
import torch

from invariance.core.testing import assert_invariant, assert_not_invariant
from invariance.sequence.motion import (
    ACTIVITIES,
    GRAVITY,
    N_JOINTS,
    PARENTS,
    activity_motion,
    axis_angle,
    descriptions,
    make_motion_dataset,
    mask_joints,
    random_rotation,
    rotate_joints,
    spatial_partitions,
    synthesize_imu,
)
from invariance.sequence.motion.skeleton import OFFSETS
from invariance.sequence.recipes.unimts import PerJointSO3

FS = 100.0


def _traj(pos_fn, rot_fn, n=50):
    t = torch.arange(n, dtype=torch.float64) / FS
    return pos_fn(t)[:, None, :], rot_fn(t)[:, None]


def test_imu_static_sensor():
    R0 = random_rotation(generator=torch.Generator().manual_seed(0))
    pos, rot = _traj(lambda t: torch.zeros(len(t), 3) + 0.3, lambda t: R0.expand(len(t), 3, 3))
    imu = synthesize_imu(pos, rot, FS)
    acc, gyro = imu[..., :3], imu[..., 3:]
    assert torch.allclose(acc.norm(dim=-1), torch.full(acc.shape[:-1], GRAVITY, dtype=acc.dtype))
    assert torch.allclose(acc[0, 0], R0.T @ torch.tensor([0, 0, GRAVITY], dtype=torch.float64))
    assert gyro.abs().max() < 1e-12


@pytest.mark.parametrize("w", [0.7, -2.5])
def test_imu_constant_yaw_rate(w):
    R0 = random_rotation(generator=torch.Generator().manual_seed(1))
    pos, rot = _traj(lambda t: torch.zeros(len(t), 3), lambda t: axis_angle("z", w * t) @ R0)
    gyro = synthesize_imu(pos, rot, FS)[..., 3:]
    expect = R0.T @ torch.tensor([0.0, 0.0, w], dtype=torch.float64)  # in the sensor frame
    assert torch.allclose(gyro, expect.expand_as(gyro), atol=1e-9)
    # with the sensor aligned to the world frame it reads (0, 0, w)
    pos, rot = _traj(lambda t: torch.zeros(len(t), 3), lambda t: axis_angle("z", w * t))
    gyro = synthesize_imu(pos, rot, FS)[..., 3:]
    assert torch.allclose(gyro[0, 0], torch.tensor([0.0, 0.0, w], dtype=torch.float64), atol=1e-9)


def test_imu_pure_translation():
    a = torch.tensor([1.5, -0.4, 2.0], dtype=torch.float64)
    R0 = random_rotation(generator=torch.Generator().manual_seed(2))
    pos, rot = _traj(
        lambda t: 0.5 * a * t[:, None] ** 2 + torch.tensor([0.1, 0.2, 1.0], dtype=torch.float64),
        lambda t: R0.expand(len(t), 3, 3),
    )
    imu = synthesize_imu(pos, rot, FS)
    expect = R0.T @ (a + torch.tensor([0.0, 0.0, GRAVITY], dtype=torch.float64))
    assert torch.allclose(imu[..., :3], expect.expand_as(imu[..., :3]), atol=1e-8)
    assert imu[..., 3:].abs().max() < 1e-12


def test_forward_kinematics_keeps_bone_lengths():
    pos, rot = activity_motion("run", generator=torch.Generator().manual_seed(0), jitter=0.0)
    for j, p in enumerate(PARENTS):
        if p < 0:
            continue
        L = (pos[:, j] - pos[:, p]).norm(dim=-1)
        assert torch.allclose(L, OFFSETS[j].norm().expand_as(L), atol=1e-12)
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(rot.transpose(-1, -2) @ rot, eye.expand_as(rot), atol=1e-12)


def test_rotation_augmentation_so3_norms_dots_uniform():
    g = torch.Generator().manual_seed(0)
    R = random_rotation(4, N_JOINTS, generator=g)
    eye = torch.eye(3, dtype=torch.float64)
    assert (R.transpose(-1, -2) @ R - eye).abs().max() < 1e-6
    assert torch.allclose(torch.linalg.det(R), torch.ones(4, N_JOINTS, dtype=torch.float64))
    x = torch.randn(4, 30, N_JOINTS, 6, generator=g, dtype=torch.float64)
    y = rotate_joints(x, R)
    for a, b in (
        (slice(0, 3), slice(0, 3)),
        (slice(3, 6), slice(3, 6)),
        (slice(0, 3), slice(3, 6)),
    ):
        assert (
            (y[..., a] * y[..., b]).sum(-1) - (x[..., a] * x[..., b]).sum(-1)
        ).abs().max() < 1e-5
    assert not torch.allclose(x, y)
    # uniform on SO(3): E[R] = 0
    many = random_rotation(20000, generator=g)
    assert many.mean(0).abs().max() < 0.03


def test_rotation_check_with_negative_control():
    x = torch.randn(3, 10, N_JOINTS, 3, dtype=torch.float64)
    grp = PerJointSO3()
    assert_invariant(lambda v: v.norm(dim=-1), x, grp, "imu", dtype=None)
    assert_not_invariant(lambda v: v, x, grp, "imu", dtype=None)


def test_mask_joints_keeps_one_to_five():
    x = torch.randn(64, 10, N_JOINTS, 3) + 5
    y, mask = mask_joints(x, generator=torch.Generator().manual_seed(0))
    k = mask.sum(1)
    assert k.min() >= 1 and k.max() <= 5 and len(set(k.tolist())) > 2
    kept = (y.abs().sum((1, 3)) > 0).float()
    assert torch.equal(kept, mask)


def test_spatial_partition_matches_official_graph():
    A = spatial_partitions()
    assert A.shape == (3, N_JOINTS, N_JOINTS)
    assert torch.allclose(A.sum((1, 2)), torch.tensor([7.95, 12.05, 2.0]), atol=1e-5)
    # columns of root + centripetal + centrifugal sum to 1 (column-normalised adjacency)
    assert torch.allclose(A.sum(0).sum(0), torch.ones(N_JOINTS), atol=1e-6)


def test_skeleton_sides_and_walking_direction_follow_the_official_numbering():
    """UniMTS's joint figure: 1-4 left leg, 5-8 right leg, 14-17 left arm, 18-21 right arm (its
    loader puts a right-arm device on 21); walking moves the root towards the body's front."""
    from invariance.sequence.motion import JOINT_NAMES

    assert JOINT_NAMES[21] == "r_wrist" and JOINT_NAMES[17] == "l_wrist"
    assert JOINT_NAMES[1] == "l_hip" and JOINT_NAMES[6] == "r_knee"
    pos, rot = activity_motion("walk", seconds=2.0, generator=torch.Generator().manual_seed(3))
    R0 = rot[:, 0]  # pelvis frame: the body faces its -y axis, +x is its left
    front = (R0 @ torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64))[0]
    left = (R0 @ torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))[0]
    step = pos[-1, 0] - pos[0, 0]
    assert step[:2] @ front[:2] > 0.8 * step[:2].norm()
    for j in (1, 17):  # left hip, left wrist
        assert (pos[0, j] - pos[0, 0]) @ left > 0.05
    for j in (5, 21):
        assert (pos[0, j] - pos[0, 0]) @ left < -0.05
    toe = pos[0, 4] - pos[0, 3]  # the left foot points to the front
    assert toe @ front > 0.02


def test_motion_dataset_shapes_and_classes_differ():
    d = make_motion_dataset(3, seed=0)
    assert d["x"].shape == (3 * len(ACTIVITIES), 64, N_JOINTS, 3)
    assert torch.isfinite(d["x"]).all()
    wrist = d["x"][:, :, 21].std(1).mean(-1).view(len(ACTIVITIES), 3).mean(1)
    assert wrist.max() > 5 * wrist.min()  # activities move the wrist very differently
    # gravity dominates a standing person's sensors
    stand = d["x"][ACTIVITIES.index("stand") * 3]
    assert (stand.norm(dim=-1).mean() - GRAVITY).abs() < 0.5
    assert len(descriptions("walk", "train")) == 4 and len(descriptions("walk", "test")) == 2
    assert not set(descriptions("run", "train")) & set(descriptions("run", "test"))


def test_motion_bad_inputs():
    with pytest.raises(ValueError, match="activity"):
        activity_motion("fly")
    with pytest.raises(ValueError, match="x"):
        rotate_joints(torch.full((1, 5, N_JOINTS, 3), math.nan))
    with pytest.raises(ValueError, match="joints"):
        rotate_joints(torch.randn(1, 5, 21, 3))
    with pytest.raises(ValueError, match="pos"):
        synthesize_imu(torch.full((10, 2, 3), math.nan), torch.eye(3).expand(10, 2, 3, 3), FS)
    with pytest.raises(ValueError, match="R"):
        rotate_joints(torch.randn(1, 5, N_JOINTS, 3), torch.randn(1, 3, 3, 3))
