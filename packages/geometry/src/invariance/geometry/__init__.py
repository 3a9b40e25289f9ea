"""invariance.geometry: point-cloud ops and procedural data, Frame Averaging (classification and
normal estimation), TinvNN, EqMotion, RISurConv.

Importing the package imports every method module, so the registry is populated
(``invariance.core.list_methods("geometry")``).
"""

from . import benches as _benches  # noqa: F401  (registers the benches)
from . import data, ops
from .eqmotion import EqMotion, EqMotionConfig, eqmotion_loss
from .fa_normals import FANormalsConfig
from .frame_averaging import FrameAveraging, FrameAveragingConfig
from .nn.baselines import (
    EGNNTrajectory,
    PointNet,
    PointNetSeg,
    TrajectoryGNN,
    TrajectoryMLP,
    constant_velocity,
)
from .risurconv import RISurConvConfig, RISurConvNet, RISurConvSA, risp_features
from .tinvnn import TinvNN, TinvNNConfig, tinvnn_coordinates, tinvnn_from_distances

__all__ = [
    "ops",
    "data",
    "FrameAveraging",
    "FrameAveragingConfig",
    "FANormalsConfig",
    "TinvNN",
    "TinvNNConfig",
    "tinvnn_coordinates",
    "tinvnn_from_distances",
    "EqMotion",
    "EqMotionConfig",
    "eqmotion_loss",
    "RISurConvNet",
    "RISurConvSA",
    "RISurConvConfig",
    "risp_features",
    "PointNet",
    "PointNetSeg",
    "EGNNTrajectory",
    "TrajectoryMLP",
    "TrajectoryGNN",
    "constant_velocity",
]
