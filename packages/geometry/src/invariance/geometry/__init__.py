"""invariance.geometry (methods land here)."""
