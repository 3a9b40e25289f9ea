"""Console script ``invariance-geometry`` (list/train/eval/check/reproduce/bench)."""

import invariance.geometry  # noqa: F401  (populates the registry)
from invariance.core.cli import build_cli

main = build_cli("geometry")
