"""``python -m invariance.geometry ...``."""

from invariance.geometry.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
