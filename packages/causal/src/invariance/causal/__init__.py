"""invariance.causal (methods land here)."""
