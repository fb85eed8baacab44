"""Put the region files of a scene together: a VRT, optionally copied into one GeoTIFF or COG.

The VRT (:func:`write_vrt`) places each region file at its HR offset
(``SimpleSource``: regions partition the output, so no source overlaps
another) and copies, from the first region file, everything
:class:`~csakd_qgis.io.write.RasterWriter` wrote there: CRS, transform,
nodata, per-band scale/offset, descriptions and ``wavelength``/``fwhm``/
``bbl`` items, and the dataset's default and ENVI metadata.  The output
grid's transform is the first region's, moved to the output's corner.

:func:`copy_to_geotiff` streams the VRT into a
:class:`~csakd_qgis.io.write.RasterWriter` made by the scene's plan, in
block-aligned strips of stored values, so the GeoTIFF has the same
creation options and metadata as the single-process :func:`~csakd_qgis.fusion.engine.fuse`
writes, and is published atomically.  That copy reads every pixel on the
client; the VRT alone does not.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from csakd_qgis.errors import RasterWriteError
from csakd_qgis.fusion.plan import FusionPlan
from csakd_qgis.io.write import partial_path

#: GDAL data type names of the stored types an output may have.
GDAL_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
              "int32": "Int32", "float32": "Float32", "float64": "Float64"}


def _metadata(parent: ET.Element, tags: Dict[str, str], domain: Optional[str] = None) -> None:
    if not tags:
        return
    node = ET.SubElement(parent, "Metadata", {"domain": domain} if domain else {})
    for key, value in tags.items():
        ET.SubElement(node, "MDI", key=key).text = value


def _number(value: float) -> str:
    return "nan" if math.isnan(value) else repr(float(value))


def write_vrt(path: str, width: int, height: int, regions: Sequence[Tuple[Window, str]]) -> None:
    """Write a VRT of ``width`` x ``height`` HR pixels from region files, atomically.

    Parameters
    ----------
    path:
        The VRT file; written to a temporary name and renamed.
    width, height:
        Output size in pixels.
    regions:
        ``(HR window, file)`` pairs partitioning the output; files are
        referenced relative to the VRT's folder.

    Raises
    ------
    RasterWriteError
        No regions, or a region file cannot be read.
    """
    if not regions:
        raise RasterWriteError(f"cannot write {path!r}: no region files to assemble")
    first_window, first_file = regions[0]
    try:
        ds = rasterio.open(first_file)
    except rasterio.errors.RasterioIOError as error:
        raise RasterWriteError(f"cannot assemble {path!r}: region file {first_file!r} unreadable: {error}") from error
    with ds:
        transform = ds.transform * Affine.translation(-first_window.col_off, -first_window.row_off)
        root = ET.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(height))
        if ds.crs is not None:
            ET.SubElement(root, "SRS", dataAxisToSRSAxisMapping="1,2").text = ds.crs.to_wkt()
        ET.SubElement(root, "GeoTransform").text = ", ".join(repr(v) for v in transform.to_gdal())
        _metadata(root, ds.tags())
        _metadata(root, ds.tags(ns="ENVI"), "ENVI")
        block_h, block_w = ds.block_shapes[0]
        dtype = ds.dtypes[0]
        folder = os.path.dirname(os.path.abspath(path))
        for band in range(1, ds.count + 1):
            node = ET.SubElement(root, "VRTRasterBand", dataType=GDAL_TYPES[dtype], band=str(band),
                                 blockXSize=str(block_w), blockYSize=str(block_h))
            if ds.descriptions[band - 1]:
                ET.SubElement(node, "Description").text = ds.descriptions[band - 1]
            _metadata(node, ds.tags(band))
            if ds.nodata is not None:
                ET.SubElement(node, "NoDataValue").text = _number(ds.nodata)
            ET.SubElement(node, "Offset").text = repr(float(ds.offsets[band - 1]))
            ET.SubElement(node, "Scale").text = repr(float(ds.scales[band - 1]))
            for window, name in regions:
                source = ET.SubElement(node, "SimpleSource")
                ET.SubElement(source, "SourceFilename", relativeToVRT="1").text = os.path.relpath(name, folder)
                ET.SubElement(source, "SourceBand").text = str(band)
                ET.SubElement(source, "SourceProperties", RasterXSize=str(int(window.width)),
                              RasterYSize=str(int(window.height)), DataType=GDAL_TYPES[dtype],
                              BlockXSize=str(block_w), BlockYSize=str(block_h))
                size: Dict[str, Any] = {"xSize": str(int(window.width)), "ySize": str(int(window.height))}
                ET.SubElement(source, "SrcRect", xOff="0", yOff="0", **size)
                ET.SubElement(source, "DstRect", xOff=str(int(window.col_off)), yOff=str(int(window.row_off)),
                              **size)
    ET.indent(root)
    temp = partial_path(path, ".vrt")
    try:
        ET.ElementTree(root).write(temp, encoding="utf-8", xml_declaration=False)
        os.replace(temp, path)
    except OSError as error:
        if os.path.exists(temp):
            os.remove(temp)
        raise RasterWriteError(f"cannot write {path!r}: {error}") from error


def copy_to_geotiff(vrt: str, output: str, plan: FusionPlan, *, compress: Optional[str], blocksize: int,
                    block_width: int, cog: bool, overwrite: bool) -> None:
    """Copy a scene's VRT into one GeoTIFF (or COG) written by the plan's writer, strip by strip.

    Strips are ``blocksize`` rows by ``block_width`` columns (rounded down to
    whole blocks): whole blocks of stored values, so memory stays at one strip.
    """
    grid = plan.grids.output
    width = max(blocksize, block_width // blocksize * blocksize)
    with rasterio.open(vrt) as source, plan.writer(output, compress=compress, blocksize=blocksize, cog=cog,
                                                   overwrite=overwrite) as writer:
        for row in range(0, grid.height, blocksize):
            for col in range(0, grid.width, width):
                window = Window(col, row, min(width, grid.width - col), min(blocksize, grid.height - row))
                writer.write_stored(np.asarray(source.read(window=window)), window)
