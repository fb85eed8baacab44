"""What a fusion did: :class:`FuseReport`.

Grid, scale, shift, tiles, device, method, timings and notes, for the CLI's
JSON, the QGIS algorithm's outputs and the HTML run report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import rasterio


@dataclass(frozen=True)
class Grid:
    """An output grid: CRS as WKT (empty when the inputs have none), affine transform, size in pixels."""

    crs_wkt: str
    transform: Tuple[float, ...]
    width: int
    height: int


@dataclass(frozen=True)
class FuseReport:
    """What :func:`fuse` did.

    ``shift`` is the LR-HSI's measured offset relative to the MSI in LR
    pixels ``(dx, dy)``, +x east, +y south (0, 0 when not estimated or not
    reliable); ``shift_corrected`` says whether it was applied.
    ``method`` is ``student``, ``teacher``, ``bicubic`` or ``gsa``; ``model``
    the checkpoint name (empty for bicubic/GSA).  ``batch_size`` is the one
    used at the end (after out-of-memory halving).  ``timings`` are seconds
    per stage (``read``, ``infer``, ``blend``, ``write`` overlap in time;
    ``total`` is wall-clock).
    """

    output: str
    grid: Grid
    scale: int
    shift: Tuple[float, float]
    shift_corrected: bool
    shift_reliable: bool
    shift_message: str
    tiles_total: int
    tiles_skipped: int
    tiles_recomputed: int
    tile_size: int
    halo: int
    batch_size: int
    device: str
    method: str
    model: str
    timings: Dict[str, float]
    notes: Tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> Dict[str, object]:
        """JSON-ready dict."""
        data = dict(self.__dict__)
        data["grid"] = dict(self.grid.__dict__)
        data["shift"], data["notes"] = list(self.shift), list(self.notes)
        return data

    def summary_lines(self) -> List[str]:
        """One human-readable line each: grid and CRS, scale, shift, tiles, device, timings, notes."""
        crs = rasterio.crs.CRS.from_wkt(self.grid.crs_wkt) if self.grid.crs_wkt else None
        crs_text = "no CRS" if crs is None else (f"EPSG:{crs.to_epsg()}" if crs.to_epsg() else crs.to_string())
        res = self.grid.transform[0]
        t = self.timings
        model = f" ({self.model})" if self.model else ""
        lines = [
            f"output {self.output}: {self.grid.width} x {self.grid.height} pixels of {res:.6g} in {crs_text}",
            f"scale {self.scale} (each LR-HSI pixel -> {self.scale} x {self.scale} output pixels)",
            f"shift: {self.shift_message}" + (" Corrected." if self.shift_corrected else ""),
            f"tiles: {self.tiles_total} of {self.tile_size} LR px (halo {self.halo}), {self.tiles_skipped} "
            f"empty, {self.tiles_recomputed} recomputed at column-block seams",
            f"method {self.method}{model} on {self.device}, batch size {self.batch_size}",
            f"time {t['total']:.1f} s (read {t['read']:.1f}, infer {t['infer']:.1f}, blend {t['blend']:.1f}, "
            f"write {t['write']:.1f} s; stages overlap)",
        ]
        return lines + [f"note: {note}" for note in self.notes]
