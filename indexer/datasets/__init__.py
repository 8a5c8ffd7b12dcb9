"""Synthetic data sets photoseek generates itself (the shapes world)."""
