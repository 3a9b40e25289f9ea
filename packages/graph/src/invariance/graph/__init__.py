"""invariance.graph (methods land here)."""
