"""Motion side of UniMTS: the 22-joint skeleton and procedural activities, IMU synthesis by
physics, the rotation / placement augmentations, the ST-GCN encoder, the synthetic dataset and the
real BasicMotions recordings (optional extra ``aeon``, imported lazily)."""

from invariance.sequence.motion.basic_motions import (
    BASIC_MOTIONS_CLASSES,
    BASIC_MOTIONS_WRIST,
    basic_motions_texts,
    few_shot_indices,
    load_basic_motions_imu,
)
from invariance.sequence.motion.data import DESCRIPTIONS, descriptions, make_motion_dataset
from invariance.sequence.motion.imu import (
    GRAVITY,
    mask_joints,
    quaternion_to_matrix,
    random_rotation,
    rotate_joints,
    so3_log,
    synthesize_imu,
)
from invariance.sequence.motion.skeleton import (
    ACTIVITIES,
    EDGES,
    JOINT_NAMES,
    N_JOINTS,
    PARENTS,
    activity_motion,
    axis_angle,
    forward_kinematics,
)
from invariance.sequence.motion.stgcn import (
    STGCN,
    STGCNBlock,
    load_official_state_dict,
    spatial_partitions,
)

__all__ = [
    "BASIC_MOTIONS_CLASSES",
    "BASIC_MOTIONS_WRIST",
    "basic_motions_texts",
    "few_shot_indices",
    "load_basic_motions_imu",
    "DESCRIPTIONS",
    "descriptions",
    "make_motion_dataset",
    "GRAVITY",
    "mask_joints",
    "quaternion_to_matrix",
    "random_rotation",
    "rotate_joints",
    "so3_log",
    "synthesize_imu",
    "ACTIVITIES",
    "EDGES",
    "JOINT_NAMES",
    "N_JOINTS",
    "PARENTS",
    "activity_motion",
    "axis_angle",
    "forward_kinematics",
    "STGCN",
    "STGCNBlock",
    "load_official_state_dict",
    "spatial_partitions",
]
