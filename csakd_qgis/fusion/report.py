"""What a fusion did: :class:`FuseReport`.

Grid, scale, shift, tiles, device, method, timings and notes, for the CLI's
JSON, the QGIS algorithm's outputs and the HTML run report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple

from csakd_qgis.geo.grid import Grid


@dataclass(frozen=True)
class FuseReport:
    """What :func:`fuse` did.

    ``shift`` is the LR-HSI's measured offset relative to the MSI in LR
    pixels ``(dx, dy)``, +x east, +y south (0, 0 when not estimated or not
    reliable); ``shift_corrected`` says whether it was applied.
    ``grid`` is the output grid.  ``method`` is the method used
    (``student``, ``teacher``, ``bicubic``, ``gsa``, ``glp`` or
    ``subspace``; ``auto`` resolves to one of them and says why in
    ``notes``); ``model`` the checkpoint name (empty for the others).
    ``batch_size`` is the one used at the end (after out-of-memory
    halving); ``streams`` the batches predicted at once
    (:func:`csakd_qgis.devices.compute_streams`).  ``timings`` are seconds
    per stage (``read``, ``infer``, ``blend``, ``write`` overlap in time;
    ``total`` is wall-clock).
    ``degradation`` is the degradation estimated from the pair
    (:meth:`csakd_qgis.estimation.Degradation.to_dict`: PSF ``sigma`` in HR
    pixels, residual ``offset`` in LR pixels, spectral response, noise per
    band, subspace rank), ``empty_bands`` the LR-HSI bands (1-based) found
    without any value and written as nodata, ``guard`` what the output
    guard measured (:class:`csakd_qgis.quality.guard.GuardReport`; empty
    when it was off).
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
    degradation: Dict[str, Any] = field(default_factory=dict)
    empty_bands: Tuple[int, ...] = ()
    guard: Dict[str, Any] = field(default_factory=dict)
    tiles_carried: int = 0
    streams: int = 1

    def to_dict(self) -> Dict[str, object]:
        """JSON-ready dict."""
        data = dict(self.__dict__)
        grid = self.grid
        data["grid"] = {"crs_wkt": grid.crs.to_wkt() if grid.crs else "", "transform": list(grid.transform)[:6],
                        "width": grid.width, "height": grid.height}
        data["shift"], data["notes"] = list(self.shift), list(self.notes)
        data["empty_bands"] = list(self.empty_bands)
        return data

    def summary_lines(self) -> List[str]:
        """One human-readable line each: grid and CRS, scale, shift, tiles, device, timings, notes."""
        crs = self.grid.crs
        crs_text = "no CRS" if crs is None else (f"EPSG:{crs.to_epsg()}" if crs.to_epsg() else crs.to_string())
        res = self.grid.transform.a
        t = self.timings
        model = f" ({self.model})" if self.model else ""
        lines = [
            f"output {self.output}: {self.grid.width} x {self.grid.height} pixels of {res:.6g} in {crs_text}",
            f"scale {self.scale} (each LR-HSI pixel -> {self.scale} x {self.scale} output pixels)",
            f"shift: {self.shift_message}" + (" Corrected." if self.shift_corrected else ""),
            f"tiles: {self.tiles_total} of {self.tile_size} LR px (halo {self.halo}), {self.tiles_skipped} "
            f"empty, {self.tiles_recomputed} recomputed and {self.tiles_carried} carried across column-block "
            "seams",
            f"method {self.method}{model} on {self.device}, batch size {self.batch_size}"
            + (f", {self.streams} batches at once" if self.streams > 1 else ""),
            *self._degradation_lines(),
            f"time {t['total']:.1f} s (read {t['read']:.1f}, infer {t['infer']:.1f}, blend {t['blend']:.1f}, "
            f"write {t['write']:.1f} s; stages overlap)",
        ]
        return lines + [f"note: {note}" for note in self.notes]

    def _degradation_lines(self) -> List[str]:
        """The estimated degradation in one line, and the empty bands."""
        d = self.degradation
        lines = []
        if "sigma" in d:
            snr = d.get("snr_lr_db")
            rank = f", subspace rank {d['subspace_rank']}" if "subspace_rank" in d else ""
            lines.append(f"degradation from the pair: PSF sigma {d['sigma']:.2f} output px, residual offset "
                         f"({d['offset'][0]:.3f}, {d['offset'][1]:.3f}) LR px"
                         + (f", LR-HSI SNR {snr:.1f} dB" if snr is not None else "") + rank
                         + ("" if d.get("reliable", True) else " (not reliable)"))
        if self.empty_bands:
            lines.append(f"empty LR-HSI bands written as nodata: {', '.join(map(str, self.empty_bands))}")
        return lines
