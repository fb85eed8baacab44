"""A QGIS layer style (``.qml``) beside an output: true colour with a 2-98 % cumulative-count stretch.

QGIS reads ``NAME.qml`` beside ``NAME.tif`` when it opens the raster, so the
fused image appears in true colour instead of as bands 1, 2, 3.  The file
is plain XML written here (the engine does not import ``qgis``).
"""

from __future__ import annotations

import os
from typing import Optional, Sequence, Tuple

import numpy as np

from csakd_qgis.io.bands import BandInfo
from csakd_qgis.io.read import open_raster

#: Red, green and blue centre wavelengths (nm) the bands nearest to are shown.
TRUE_COLOUR_NM = (640.0, 550.0, 470.0)

#: Cumulative-count stretch limits (fractions of the pixels).
STRETCH = (0.02, 0.98)

#: Longest side (pixels) of the decimated read the stretch is computed on.
STRETCH_SAMPLE = 512


def true_colour_bands(bands: Sequence[BandInfo]) -> Optional[Tuple[int, int, int]]:
    """1-based ``(red, green, blue)`` good bands nearest :data:`TRUE_COLOUR_NM`, or None without wavelengths."""
    known = [(i + 1, b.wavelength_nm) for i, b in enumerate(bands) if b.good and b.wavelength_nm is not None]
    if not known:
        return None
    red, green, blue = (min(known, key=lambda item: abs(item[1] - target))[0] for target in TRUE_COLOUR_NM)
    return red, green, blue


def _stretch(path: str, bands: Tuple[int, int, int]) -> Tuple[Tuple[float, float], ...]:
    """``(min, max)`` stored values of each band at the :data:`STRETCH` quantiles of a decimated read."""
    with open_raster(path) as ds:
        factor = max(1, -(-max(ds.width, ds.height) // STRETCH_SAMPLE))
        shape = (max(1, ds.height // factor), max(1, ds.width // factor))
        limits = []
        for band in bands:
            data = ds.read(band, out_shape=shape, masked=True).astype(np.float64).filled(np.nan)
            finite = data[np.isfinite(data)]
            low, high = np.quantile(finite, STRETCH) if finite.size else (0.0, 1.0)
            limits.append((float(low), float(high if high > low else low + 1.0)))
    return tuple(limits)


def _contrast(colour: str, low: float, high: float) -> str:
    return (f"      <{colour}ContrastEnhancement>\n"
            f"        <minValue>{low!r}</minValue>\n        <maxValue>{high!r}</maxValue>\n"
            "        <algorithm>StretchToMinimumMaximum</algorithm>\n"
            f"      </{colour}ContrastEnhancement>\n")


def write_true_colour_style(path: str, bands: Sequence[BandInfo]) -> Optional[str]:
    """Write ``<path without extension>.qml`` for the raster ``path``; returns its name, or None without wavelengths.

    Multiband colour renderer on :func:`true_colour_bands`, each stretched
    from its 2 % to its 98 % cumulative count (QGIS's "cumulative count
    cut", computed here on a decimated read of at most
    :data:`STRETCH_SAMPLE` pixels a side).
    """
    chosen = true_colour_bands(bands)
    if chosen is None:
        return None
    limits = _stretch(path, chosen)
    lower, upper = STRETCH
    qml = ("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
           '<qgis version="3.28" styleCategories="Symbology">\n'
           "  <pipe>\n"
           f'    <rasterrenderer type="multibandcolor" redBand="{chosen[0]}" greenBand="{chosen[1]}" '
           f'blueBand="{chosen[2]}" opacity="1" alphaBand="-1" nodataColor="">\n'
           "      <rasterTransparency/>\n"
           "      <minMaxOrigin>\n        <limits>CumulativeCut</limits>\n        <extent>WholeRaster</extent>\n"
           "        <statAccuracy>Estimated</statAccuracy>\n"
           f"        <cumulativeCutLower>{lower}</cumulativeCutLower>\n"
           f"        <cumulativeCutUpper>{upper}</cumulativeCutUpper>\n"
           "        <stdDevFactor>2</stdDevFactor>\n      </minMaxOrigin>\n"
           + "".join(_contrast(colour, *limit) for colour, limit in zip(("red", "green", "blue"), limits))
           + "    </rasterrenderer>\n  </pipe>\n</qgis>\n")
    style = os.path.splitext(path)[0] + ".qml"
    with open(style, "w", encoding="utf-8") as handle:
        handle.write(qml)
    return style


def style_note(path: str, bands: Sequence[BandInfo]) -> Optional[str]:
    """Write the true-colour style beside the output ``path`` and return the line for the run's notes.

    Calls :func:`write_true_colour_style`; a style that cannot be written
    (unreadable output, read-only folder) is reported in the line, never
    raised: the output itself is complete.  None when the bands have no
    wavelengths (no style, nothing to say).
    """
    try:
        style = write_true_colour_style(path, bands)
    except OSError as error:
        return f"no QGIS style written beside the output: {error}"
    return f"QGIS style (true colour, 2-98 % stretch): {style}" if style else None
