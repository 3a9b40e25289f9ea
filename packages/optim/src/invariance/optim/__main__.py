"""``python -m invariance.optim ...``."""

import sys

from invariance.optim.cli import main

if __name__ == "__main__":
    sys.exit(main())
