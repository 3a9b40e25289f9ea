"""Reusable layers: galaxy views/output layer, BSS transform, pyramid convolution / SEPC neck."""
