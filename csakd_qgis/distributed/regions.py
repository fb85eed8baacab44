"""Regions of the output that the distributed mode fuses apart, and where their files go.

A *region* is a rectangle of the output grid in HR pixels.  Regions
partition the output; their edges lie on multiples of ``lcm(scale,
block)``, so every edge is an LR pixel edge and a block edge of the output
GeoTIFF (each region file's blocks are the final output's blocks).  Only the
right and bottom regions are narrower, where the output ends.

Region files are named from their HR offsets (``region-ROW-COL.tif``) inside
a *staging folder* named from the output, so a task that runs again (a
worker died, Dask retried it) overwrites the same file instead of adding one.
"""

from __future__ import annotations

import math
import os
from typing import Tuple

from rasterio.windows import Window

from csakd_qgis.errors import InputError

#: Default side of a region in HR pixels (rounded up to a multiple of ``lcm(scale, block)``).
REGION_SIZE = 2048


def region_side(size: int, scale: int, block: int) -> int:
    """``size`` rounded up to a positive multiple of ``lcm(scale, block)`` (HR pixels)."""
    if size < 1 or scale < 1 or block < 1:
        raise InputError(f"region size ({size}), scale ({scale}) and block ({block}) must be >= 1 pixel")
    step = math.lcm(int(scale), int(block))
    return max(1, math.ceil(size / step)) * step


def plan_regions(width: int, height: int, *, scale: int, block: int,
                 size: int = REGION_SIZE) -> Tuple[Window, ...]:
    """Cut a ``width`` x ``height`` HR output into regions, row-major.

    Parameters
    ----------
    width, height:
        Output size in HR pixels (multiples of ``scale``).
    scale:
        HR/LR ratio; region edges are LR pixel edges.
    block:
        Side of the output GeoTIFF's blocks; region edges are block edges.
    size:
        Requested region side in HR pixels, rounded up by :func:`region_side`.

    Returns
    -------
    tuple of rasterio.windows.Window
        HR windows that partition the output.
    """
    side = region_side(size, scale, block)
    return tuple(Window(x, y, min(side, width - x), min(side, height - y))
                 for y in range(0, height, side) for x in range(0, width, side))


def region_file(folder: str, region: Window) -> str:
    """The file a region is written to inside ``folder`` (named from its HR offsets)."""
    return os.path.join(folder, f"region-{int(region.row_off):07d}-{int(region.col_off):07d}.tif")


def staging_folder(output: str) -> str:
    """Hidden folder beside ``output`` where its regions are written while the job runs."""
    folder, name = os.path.split(os.path.abspath(output))
    return os.path.join(folder, f".{name}.csakd-regions")


def regions_folder(output: str) -> str:
    """Folder beside a VRT ``output`` that keeps its region files (``NAME_regions``)."""
    root, _ext = os.path.splitext(os.path.abspath(output))
    return root + "_regions"
