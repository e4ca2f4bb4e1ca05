"""Benchmark helpers run from the repository (not installed with the package)."""
