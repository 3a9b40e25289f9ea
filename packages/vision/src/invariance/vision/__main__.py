"""``python -m invariance.vision ...``."""

from invariance.vision.cli import main

raise SystemExit(main())
