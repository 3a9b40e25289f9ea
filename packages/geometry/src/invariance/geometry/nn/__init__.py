"""Reusable layers and baseline backbones."""

from .baselines import (
    EGNNTrajectory,
    PointNet,
    PointNetSeg,
    TrajectoryGNN,
    TrajectoryMLP,
    constant_velocity,
)

__all__ = [
    "PointNet",
    "PointNetSeg",
    "TrajectoryMLP",
    "TrajectoryGNN",
    "EGNNTrajectory",
    "constant_velocity",
]
