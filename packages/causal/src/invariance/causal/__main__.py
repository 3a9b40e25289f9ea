"""``python -m invariance.causal ...``."""

from invariance.causal.cli import main

if __name__ == "__main__":
    main()
