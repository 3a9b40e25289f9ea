"""Console script ``invariance-graph`` (list/train/eval/check/reproduce/bench)."""

import invariance.graph  # noqa: F401  (registers the methods)
from invariance.core.cli import build_cli

main = build_cli("graph")
