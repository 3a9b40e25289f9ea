"""invariance.graph: OOD graph data with ground truth, IGT (node- and virtual-node-level
intervention) with GREA/ERM-GIN baselines, and HEI (heterophily-guided environment inference).

Importing this package registers the methods ``igt``, ``igt_vn``, ``grea`` and ``hei`` and the
benches of the ``graph`` domain.
"""

from invariance.graph import bench as _bench  # noqa: F401  (registers the benches)
from invariance.graph import (
    data,
    nn,
    recipes,  # noqa: F401  (importing it registers the methods)
)
from invariance.graph.grea import GREA, GINClassifier
from invariance.graph.hei import HEI, EnvironmentInference, hei_penalty, local_similarity
from invariance.graph.igt import IGT
from invariance.graph.nn.rationale import rationale_auc

__version__ = "0.1.0"

__all__ = [
    "IGT",
    "HEI",
    "GREA",
    "GINClassifier",
    "EnvironmentInference",
    "hei_penalty",
    "local_similarity",
    "rationale_auc",
    "data",
    "nn",
    "recipes",
]
