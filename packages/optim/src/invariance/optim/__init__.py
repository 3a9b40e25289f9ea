"""invariance.optim: optimizers, losses and parametrizations that respect invariances.

* :class:`AdamP`, :class:`SGDP` (Heo et al., ICLR 2021) and :func:`create_optimizer`;
* :func:`z_loss`, :class:`ZLoss` and :class:`FactoredSphericalOutput` (de Brébisson & Vincent, 2016;
  Vincent et al., NIPS 2015);
* :class:`HyperNet` with Magnitude Invariant Parametrizations (Gonzalez Ortiz et al., ICLR 2024).

Importing this package loads torch and invariance.core only; it registers the recipes ``adamp``,
``sgdp``, ``zloss`` and ``mip`` and the benches ``adamp`` and ``zloss``.
"""

from invariance.optim import bench as _bench  # noqa: F401  (registers the benches)
from invariance.optim import recipes as _recipes  # noqa: F401  (registers the methods)
from invariance.optim.adamp import SGDP, AdamP, project_radial
from invariance.optim.factory import create_optimizer, list_optimizers
from invariance.optim.mip import HyperNet, encode_cos_sin
from invariance.optim.recipes.adamp import AdamPConfig, SGDPConfig
from invariance.optim.recipes.mip import MIPConfig
from invariance.optim.recipes.zloss import ZLossConfig
from invariance.optim.zloss import (
    FactoredSphericalOutput,
    ZLoss,
    spherical_mse_loss,
    taylor_softmax_loss,
    z_loss,
)

__version__ = "0.1.0"

__all__ = [
    "AdamP",
    "SGDP",
    "create_optimizer",
    "list_optimizers",
    "project_radial",
    "ZLoss",
    "z_loss",
    "spherical_mse_loss",
    "taylor_softmax_loss",
    "FactoredSphericalOutput",
    "HyperNet",
    "encode_cos_sin",
    "AdamPConfig",
    "SGDPConfig",
    "ZLossConfig",
    "MIPConfig",
]
