"""invariance.vision (methods land here)."""
