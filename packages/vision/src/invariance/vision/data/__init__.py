"""Procedural data with ground truth: galaxies (+ simulated votes), digit styles, digit scenes."""
