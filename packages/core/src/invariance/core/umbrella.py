"""The umbrella ``invariance`` console script (see :func:`invariance.core.cli.umbrella_main`)."""

from __future__ import annotations

from invariance.core.cli import umbrella_main

__all__ = ["main"]


def main() -> int:
    return umbrella_main()


if __name__ == "__main__":
    raise SystemExit(main())
