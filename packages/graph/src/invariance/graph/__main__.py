"""``python -m invariance.graph ...``."""

import sys

from invariance.graph.cli import main

if __name__ == "__main__":
    sys.exit(main())
