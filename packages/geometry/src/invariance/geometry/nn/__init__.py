"""Reusable layers and baseline backbones."""

from .baselines import PointNet, TrajectoryGNN, TrajectoryMLP, constant_velocity

__all__ = ["PointNet", "TrajectoryMLP", "TrajectoryGNN", "constant_velocity"]
