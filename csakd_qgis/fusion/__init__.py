"""The tiled fusion engine: planning, radiometry, tiling, the reader/compute/writer pipeline, methods."""
