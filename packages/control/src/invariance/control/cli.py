"""Console script ``invariance-control`` (list/train/eval/check/reproduce/bench)."""

import invariance.control  # noqa: F401  (registers the methods and benches)
from invariance.core.cli import build_cli

main = build_cli("control")
