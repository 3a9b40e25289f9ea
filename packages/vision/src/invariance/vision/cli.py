"""Console script ``invariance-vision`` (list / train / eval / check / reproduce / bench)."""

import invariance.vision  # noqa: F401  (registers the methods and benches)
from invariance.core.cli import build_cli

main = build_cli("vision")

if __name__ == "__main__":  # pragma: no cover
    main()
