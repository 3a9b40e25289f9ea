"""``python -m invariance.graph ...``."""

from invariance.graph.cli import main

if __name__ == "__main__":
    main()
