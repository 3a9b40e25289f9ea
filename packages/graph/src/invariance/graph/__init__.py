"""invariance.graph: OOD graph data with ground truth, IGT (node- and virtual-node-level
intervention) with GREA/ERM-GIN baselines, HEI (heterophily-guided environment inference) and PARD
(permutation-invariant autoregressive diffusion for graph generation, with the generation toolkit
:mod:`invariance.graph.generation`).

Importing this package registers the methods ``igt``, ``igt_vn``, ``grea``, ``hei`` and ``pard``
and the benches of the ``graph`` domain.
"""

from invariance.graph import bench as _bench  # noqa: F401  (registers the benches)
from invariance.graph import (
    data,
    generation,
    nn,
    recipes,  # noqa: F401  (importing it registers the methods)
)
from invariance.graph.grea import GREA, GINClassifier
from invariance.graph.hei import HEI, EnvironmentInference, hei_penalty, local_similarity
from invariance.graph.igt import IGT
from invariance.graph.nn.rationale import rationale_auc
from invariance.graph.pard import PARD

__version__ = "0.1.0"

__all__ = [
    "IGT",
    "HEI",
    "GREA",
    "PARD",
    "GINClassifier",
    "EnvironmentInference",
    "hei_penalty",
    "local_similarity",
    "rationale_auc",
    "data",
    "generation",
    "nn",
    "recipes",
]
