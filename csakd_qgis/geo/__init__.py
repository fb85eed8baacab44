"""Geometry of the inputs: output and LR grids, co-registration, sub-pixel shift estimation."""
