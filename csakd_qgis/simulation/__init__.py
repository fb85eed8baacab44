"""Simulated pairs: sensor spectral responses and the spatial/spectral degradation model."""
