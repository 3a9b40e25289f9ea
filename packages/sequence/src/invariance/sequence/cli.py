"""Console script ``invariance-sequence`` (list / train / eval / check / reproduce / bench)."""

import invariance.sequence  # noqa: F401  (fills the registry)
from invariance.core.cli import build_cli

main = build_cli("sequence")
