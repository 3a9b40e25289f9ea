"""invariance.geometry: point-cloud ops and procedural data, Frame Averaging (classification and
normal estimation), TinvNN, EqMotion, RISurConv, the affine-equivariant group ResNet
(GL+(2)/SL(2)), and a registration toolkit with the RoITr and PARE-Net matchers.

Importing the package imports every method module and then :mod:`invariance.geometry.recipes`,
which registers every recipe (``invariance.core.list_methods("geometry")``).
"""

from . import benches as _benches  # noqa: F401  (registers the benches)
from . import (
    data,
    lie,
    ops,
    recipes,  # registers every recipe (each imports its method module)
    registration,
)
from .affine_gresnet import AffineGResNet
from .eqmotion import EqMotion, eqmotion_loss
from .fa_normals import normal_error, real_mesh_normals
from .frame_averaging import FrameAveraging
from .nn.baselines import (
    EGNNTrajectory,
    PointNet,
    PointNetSeg,
    TrajectoryGNN,
    TrajectoryMLP,
    constant_velocity,
)
from .pare_net import PARENet
from .recipes.eqmotion import EqMotionConfig
from .recipes.fa_normals import FANormalsConfig
from .recipes.frame_averaging import FrameAveragingConfig
from .recipes.risurconv import RISurConvConfig
from .recipes.tinvnn import TinvNNConfig
from .risurconv import RISurConvNet, RISurConvSA, risp_features
from .roitr import RoITr
from .tinvnn import TinvNN, tinvnn_coordinates, tinvnn_from_distances

__all__ = [
    "ops",
    "data",
    "recipes",
    "lie",
    "registration",
    "AffineGResNet",
    "RoITr",
    "PARENet",
    "FrameAveraging",
    "FrameAveragingConfig",
    "FANormalsConfig",
    "normal_error",
    "real_mesh_normals",
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
