"""Quality: metrics, evaluation of rasters, HTML reports and quicklooks."""
