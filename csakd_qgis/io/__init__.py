"""Raster input and output: band metadata, windowed reads, atomic GeoTIFF writing."""
