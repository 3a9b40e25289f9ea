"""invariance.optim (methods land here)."""
