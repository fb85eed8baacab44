"""Product readers: downloaded satellite products -> rasters GDAL opens with full band metadata.

:func:`resolve_input` is the one entry point.  It recognises a product from
its path (folder and file names, at most one folder listing or a peek at an
XML file's start) and hands it to that product's reader, which writes a VRT
(or, where a VRT cannot express the layout, a GeoTIFF) and a mask into the
cache folder (:func:`~csakd_qgis.products.common.cache_folder`).  Anything
else, an ordinary raster, comes back unchanged after one ``stat``.

Readers (one module each): EnMAP L2A, Sentinel-2 L2A, Landsat 8/9
Collection 2 Level-2, PRISMA L2D, EMIT L2A.  ``docs/inputs.md`` says what
each reads.
"""

from __future__ import annotations

import os
from typing import Callable, Optional, Sequence, Tuple

from csakd_qgis.products import emit, enmap, landsat, prisma, sentinel2
from csakd_qgis.products.common import ResolvedInput, default_cache_root

__all__ = ["ResolvedInput", "default_cache_root", "detect", "resolve_input", "READERS"]

#: ``(product name, matches(path, is_dir), resolve(path, cache_dir))`` in the order they are tried.
READERS: Sequence[Tuple[str, Callable[[str, bool], bool], Callable[..., ResolvedInput]]] = (
    (enmap.NAME, enmap.matches, enmap.resolve),
    (sentinel2.NAME, sentinel2.matches, sentinel2.resolve),
    (landsat.NAME, landsat.matches, landsat.resolve),
    (prisma.NAME, prisma.matches, prisma.resolve),
    (emit.NAME, emit.matches, emit.resolve),
)

#: Bytes of an unnamed ``.xml`` file read to tell which product's metadata it is.
_XML_PEEK = 4096

#: Text near the start of a metadata XML -> the product module it belongs to.
_XML_MARKERS = (("<level_X", enmap), ("Level-2A_User_Product", sentinel2), ("LANDSAT_METADATA_FILE", landsat))


def detect(path: str) -> str:
    """Product name of ``path`` (see :data:`READERS`), or ``""`` for anything else.

    Reads nothing of an ordinary raster: a ``stat``, and for folders one
    listing; only a ``.xml`` file whose name says nothing has its first
    :data:`_XML_PEEK` bytes read.
    """
    is_dir = os.path.isdir(path)
    for name, matches, _ in READERS:
        if matches(path, is_dir):
            return name
    if not is_dir and path.lower().endswith(".xml") and os.path.isfile(path):
        with open(path, "rb") as handle:
            head = handle.read(_XML_PEEK).decode("utf-8", errors="replace")
        for marker, module in _XML_MARKERS:
            if marker in head:
                return module.NAME
    return ""


def resolve_input(path: str, cache_dir: Optional[str] = None) -> ResolvedInput:
    """Make ``path`` ready for GDAL: a product becomes a VRT/GeoTIFF with band metadata and a mask.

    Parameters
    ----------
    path:
        A product as downloaded (folder, metadata file, archive; see
        ``docs/inputs.md``) or any raster GDAL opens.
    cache_dir:
        Folder for the files written for products; None uses
        :func:`~csakd_qgis.products.common.default_cache_root`.

    Returns
    -------
    ResolvedInput
        For an ordinary raster ``ResolvedInput(path)`` with the path
        unchanged, no mask and no log.

    Raises
    ------
    InputError
        When a recognised product lacks a file it needs (the message names
        it and says what to pass).
    """
    path = os.fspath(path)
    product = detect(path)
    if not product:
        return ResolvedInput(path=path)
    resolve = next(reader for name, _, reader in READERS if name == product)
    return resolve(path, cache_dir)
