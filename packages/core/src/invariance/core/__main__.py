"""``python -m invariance.core`` runs the umbrella command."""

from invariance.core.umbrella import main

raise SystemExit(main())
