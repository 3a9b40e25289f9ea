"""invariance.sequence (methods land here)."""
