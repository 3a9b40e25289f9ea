"""invariance.control: invariant multi-agent reinforcement learning for Rayleigh-Benard convection."""
