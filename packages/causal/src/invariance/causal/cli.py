"""Console script ``invariance-causal`` (list / train / eval / check / reproduce / bench)."""

import invariance.causal  # noqa: F401  (fills the registry)
from invariance.core.cli import build_cli

main = build_cli("causal")
