"""``csakd quicklook``: a true-colour PNG of a hyperspectral raster."""

from __future__ import annotations

import argparse

from csakd_qgis.quality.quicklook import true_colour_png

NAME = "quicklook"
HELP = "Write a true-colour PNG (bands nearest 640/550/470 nm, 2-98 % stretch) of a raster."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the raster, the PNG and the size."""
    parser.add_argument("raster", help="hyperspectral raster (any GDAL format)")
    parser.add_argument("png", help="PNG file to write")
    parser.add_argument("--max-size", type=int, default=1024, help="long side of the PNG in pixels (default 1024)")


def run(args: argparse.Namespace) -> int:
    """Render and write the quicklook."""
    true_colour_png(args.raster, args.png, max_size=args.max_size)
    return 0
