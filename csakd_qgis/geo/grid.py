"""Pixel grids and the choice of the fusion's output and low-resolution grids.

A :class:`Grid` is a north-up raster geometry: CRS, affine transform, width
and height.  :func:`plan_grids` looks at the LR-HSI and the HR-MSI and picks

* the *output* grid: the HR-MSI's pixels over the overlap of both footprints
  (or, when the resolution ratio is not an integer, pixels of ``LR res /
  scale``), and
* the *LR* grid: the output grid made exactly ``scale`` times coarser, with the
  same origin.

Edge rule: the output grid is trimmed (right and bottom) to a multiple of the
scale, so every LR pixel covers exactly ``scale x scale`` output pixels and
``lr.width * scale == output.width``.  A partial LR pixel at the edge of the
overlap is dropped rather than padded, because it would have no complete
HR-MSI counterpart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple, cast

from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import calculate_default_transform, transform_bounds
from rasterio.windows import Window

from csakd_qgis.errors import GridError
from csakd_qgis.io.bands import RasterInfo

Bounds = Tuple[float, float, float, float]

#: Relative distance to an integer within which a resolution ratio counts as that integer.
RATIO_TOLERANCE = 0.02
#: Smallest overlap accepted, in LR pixels along each axis.
MIN_LR_PIXELS = 2
#: Tolerance, in pixels, when snapping coordinates to pixel edges.
_SNAP_EPS = 1e-6
#: Points per edge when transforming footprints between CRSs.
_DENSIFY = 21
#: Most a model's scale may make the HR-MSI finer than it is (output pixel / MSI pixel) before it is refused.
MAX_MSI_UPSAMPLING = 1.25


@dataclass(frozen=True)
class Grid:
    """North-up pixel grid: ``transform`` maps (col, row) of pixel corners to ``crs`` coordinates.

    Raises
    ------
    GridError
        When the transform is rotated or sheared, or not north-up
        (``transform.a > 0``, ``transform.e < 0``), or the size is not positive.
    """

    crs: CRS
    transform: Affine
    width: int
    height: int

    def __post_init__(self) -> None:
        t = self.transform
        if t.b != 0 or t.d != 0:
            raise GridError(
                f"rotated or sheared grid {tuple(t)[:6]} is not supported; warp the raster to a north-up "
                "grid first (e.g. 'Warp (reproject)' or gdalwarp)."
            )
        if not (t.a > 0 and t.e < 0):
            raise GridError(f"grid {tuple(t)[:6]} is not north-up (needs a > 0 and e < 0).")
        if self.width <= 0 or self.height <= 0:
            raise GridError(f"grid of {self.width} x {self.height} pixels is empty.")

    @property
    def res(self) -> Tuple[float, float]:
        """Pixel size ``(xres, yres)``, positive, in CRS units."""
        return (self.transform.a, -self.transform.e)

    @property
    def bounds(self) -> Bounds:
        """``(left, bottom, right, top)`` in CRS units."""
        return self.window_bounds(Window(0, 0, self.width, self.height))

    @property
    def shape(self) -> Tuple[int, int]:
        """``(height, width)`` in pixels."""
        return (self.height, self.width)

    def window_bounds(self, window: Window) -> Bounds:
        """``(left, bottom, right, top)`` of a pixel window of this grid (may reach outside it)."""
        t = self.transform
        left = t.c + window.col_off * t.a
        top = t.f + window.row_off * t.e
        return (left, top + window.height * t.e, left + window.width * t.a, top)

    def window_transform(self, window: Window) -> Affine:
        """Transform of the grid made of ``window``'s pixels."""
        return self.transform * Affine.translation(window.col_off, window.row_off)

    def coarsen(self, scale: int) -> Grid:
        """The grid of ``scale x scale`` blocks of this one, with the same origin.

        Partial blocks at the right and bottom edges are dropped (floor), so
        ``coarsen(s)`` of a grid whose size is a multiple of ``s`` covers
        exactly the same area.
        """
        if int(scale) != scale or scale < 1:
            raise GridError(f"scale must be a positive integer, got {scale}.")
        scale = int(scale)
        if self.width < scale or self.height < scale:
            raise GridError(f"grid of {self.width} x {self.height} pixels is smaller than one {scale}x block.")
        return Grid(self.crs, self.transform * Affine.scale(scale), self.width // scale, self.height // scale)


@dataclass(frozen=True)
class GridPlan:
    """The grids a fusion runs on.

    Attributes
    ----------
    output:
        High-resolution output grid (HR-MSI pixels or ``LR res / scale``).
    lr:
        ``output.coarsen(scale)``: the LR-HSI is presented on this grid.
    scale:
        Integer resolution ratio between ``lr`` and ``output``.
    notes:
        Human-readable sentences saying what was reprojected, resampled,
        trimmed or chosen and why.
    """

    output: Grid
    lr: Grid
    scale: int
    notes: Tuple[str, ...] = field(default=())


def _crs_text(crs: CRS) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_string()


def _require_crs(info: RasterInfo, role: str) -> CRS:
    if info.crs is None:
        raise GridError(
            f"{role} {info.path!r} has no coordinate reference system. Assign one first, e.g. with "
            f"QGIS 'Assign projection' or 'gdal_edit.py -a_srs EPSG:XXXX {info.path}'."
        )
    return info.crs


def _utm_for(lon: float, lat: float) -> CRS:
    """WGS 84 / UTM CRS of the zone containing ``(lon, lat)`` (pyproj's database)."""
    from pyproj.aoi import AreaOfInterest
    from pyproj.database import query_utm_crs_info

    found = query_utm_crs_info(datum_name="WGS 84", area_of_interest=AreaOfInterest(lon, lat, lon, lat))
    if not found:
        raise GridError(f"no UTM zone found for longitude {lon:.4f}, latitude {lat:.4f}.")
    return CRS.from_epsg(int(found[0].code))


def _footprint(info: RasterInfo, crs: CRS) -> Bounds:
    if info.crs == crs:
        return info.bounds
    return tuple(transform_bounds(info.crs, crs, *info.bounds, densify_pts=_DENSIFY))


def _resolution(info: RasterInfo, crs: CRS) -> float:
    """Mean pixel size of ``info`` in ``crs`` units (GDAL's suggested warp resolution)."""
    if info.crs == crs:
        xres, yres = info.res
    else:
        transform, _, _ = calculate_default_transform(info.crs, crs, info.width, info.height, *info.bounds)
        xres, yres = abs(transform.a), abs(transform.e)
    return math.sqrt(xres * yres)


def _intersection(a: Bounds, b: Bounds) -> Optional[Bounds]:
    left, bottom = max(a[0], b[0]), max(a[1], b[1])
    right, top = min(a[2], b[2]), min(a[3], b[3])
    return (left, bottom, right, top) if right > left and top > bottom else None


def _fmt_bounds(b: Bounds) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in b) + ")"


def _nearest_scale(ratio: float, model_scales: Optional[Sequence[int]]) -> int:
    candidates = sorted({int(s) for s in model_scales}) if model_scales else [max(2, round(ratio))]
    return min(candidates, key=lambda s: (abs(ratio - s), s))


def _working_crs(lr: RasterInfo, msi: RasterInfo, notes: List[str]) -> CRS:
    lr_crs, msi_crs = _require_crs(lr, "LR-HSI"), _require_crs(msi, "HR-MSI")
    if msi_crs.is_projected:
        crs = msi_crs
    elif lr_crs.is_projected:
        crs = lr_crs
        notes.append(f"HR-MSI CRS {_crs_text(msi_crs)} is geographic: working in the LR-HSI CRS "
                     f"{_crs_text(lr_crs)}.")
    else:
        geo = CRS.from_epsg(4326)
        overlap = _intersection(_footprint(lr, geo), _footprint(msi, geo))
        if overlap is None:
            raise GridError(
                f"the footprints do not overlap: LR-HSI {lr.path!r} covers {_fmt_bounds(_footprint(lr, geo))}, "
                f"HR-MSI {msi.path!r} covers {_fmt_bounds(_footprint(msi, geo))} (EPSG:4326)."
            )
        crs = _utm_for((overlap[0] + overlap[2]) / 2, (overlap[1] + overlap[3]) / 2)
        notes.append(f"both inputs are in geographic CRSs: working in {_crs_text(crs)} "
                     "(UTM zone of the overlap centre).")
    if lr_crs != crs:
        notes.append(f"LR-HSI reprojected from {_crs_text(lr_crs)} to {_crs_text(crs)}.")
    if msi_crs != crs:
        notes.append(f"HR-MSI reprojected from {_crs_text(msi_crs)} to {_crs_text(crs)}.")
    return crs


def _anchor(info: RasterInfo, crs: CRS, res: float) -> Optional[Tuple[float, float]]:
    """Pixel-edge origin of ``info`` when its north-up pixels in ``crs`` have size ``res``."""
    t = info.transform
    if info.crs != crs or t.b != 0 or t.d != 0 or t.a <= 0 or t.e >= 0:
        return None
    if abs(t.a - res) > _SNAP_EPS * res or abs(-t.e - res) > _SNAP_EPS * res:
        return None
    return (t.c, t.f)


def _snap_up(value: float, origin: float, step: float) -> float:
    return origin + math.ceil((value - origin) / step - _SNAP_EPS) * step


def _snap_down(value: float, origin: float, step: float) -> float:
    return origin + math.floor((value - origin) / step + _SNAP_EPS) * step


def _scale_and_resolution(lr_res: float, msi_res: float, unit: str, scale: Optional[int],
                          resolution: Optional[float], model_scales: Optional[Sequence[int]],
                          notes: List[str]) -> Tuple[int, float]:
    """``(scale, output resolution)`` for :func:`plan_grids` (its ``scale``, ``resolution``, ``model_scales``).

    Appends to ``notes`` what was chosen and resampled; raises :class:`GridError` as :func:`plan_grids` says.
    """
    ratio = lr_res / msi_res
    if scale is not None:
        if int(scale) != scale or scale < 2:
            raise GridError(f"scale must be an integer of at least 2, got {scale}.")
        scale = int(scale)
        if model_scales and scale not in model_scales:
            raise GridError(f"scale {scale} is not supported by the model (supports {sorted(model_scales)}).")
    if resolution is not None:
        if not resolution > 0:
            raise GridError(f"output resolution must be positive, got {resolution}.")
        out_res = float(resolution)
        if scale is None:
            scale = _nearest_scale(lr_res / out_res, model_scales)
        notes.append(f"output resolution {out_res:.6g} {unit} as requested, scale {scale}.")
    else:
        nearest = round(ratio)
        integer_ratio = abs(ratio - nearest) <= RATIO_TOLERANCE * nearest
        if scale is None:
            scale = nearest if integer_ratio and (not model_scales or nearest in model_scales) \
                else _nearest_scale(ratio, model_scales)
            if model_scales and scale > MAX_MSI_UPSAMPLING * ratio:
                raise GridError(
                    f"the resolution ratio of the inputs is {ratio:.3g} (LR-HSI {lr_res:.4g} {unit}, HR-MSI "
                    f"{msi_res:.4g} {unit}), but the model fuses at scale {', '.join(map(str, sorted(model_scales)))}"
                    f" only: the HR-MSI would have to be resampled to {lr_res / scale:.4g} {unit}, {scale / ratio:.2g}"
                    f" times finer than it is. Use a model trained for scale {max(2, round(ratio))} ('csakd train "
                    "--scene LR_HSI.tif HR_MSI.tif'), or the bicubic or gsa method, which fuse at any integer scale."
                )
        if integer_ratio and scale == nearest:
            out_res = msi_res
        else:
            out_res = lr_res / scale
            notes.append(f"resolution ratio {lr_res:.6g} / {msi_res:.6g} {unit} = {ratio:.3f}; using scale "
                         f"{scale}: HR-MSI resampled to {out_res:.6g} {unit}.")
    return scale, out_res


def _overlap(lr_info: RasterInfo, msi_info: RasterInfo, crs: CRS, extent: Optional[Bounds]) -> Bounds:
    """The overlap of the two footprints in ``crs``, limited to ``extent``; :class:`GridError` when empty."""
    lr_box, msi_box = _footprint(lr_info, crs), _footprint(msi_info, crs)
    overlap = _intersection(lr_box, msi_box)
    if overlap is None:
        raise GridError(
            f"the footprints do not overlap: LR-HSI {lr_info.path!r} covers {_fmt_bounds(lr_box)}, "
            f"HR-MSI {msi_info.path!r} covers {_fmt_bounds(msi_box)} ({_crs_text(crs)})."
        )
    if extent is not None:
        limited = _intersection(overlap, cast(Bounds, tuple(extent)))
        if limited is None:
            raise GridError(f"extent {_fmt_bounds(extent)} lies outside the overlap of the inputs "
                            f"{_fmt_bounds(overlap)} ({_crs_text(crs)}).")
        overlap = limited
    return overlap


def plan_grids(
    lr_info: RasterInfo,
    msi_info: RasterInfo,
    *,
    scale: Optional[int] = None,
    resolution: Optional[float] = None,
    extent: Optional[Bounds] = None,
    model_scales: Optional[Sequence[int]] = None,
) -> GridPlan:
    """Choose the output and LR grids for fusing ``lr_info`` with ``msi_info``.

    Parameters
    ----------
    lr_info, msi_info:
        The LR-HSI and HR-MSI rasters (see :func:`~csakd_qgis.io.read.read_info`).
    scale:
        Integer resolution ratio to use; None derives it from the rasters.
    resolution:
        Output pixel size in the working CRS's units; None uses the HR-MSI's
        (or ``LR res / scale`` when the ratio is not an integer).
    extent:
        ``(left, bottom, right, top)`` in the working CRS to restrict the
        output to; None uses the whole overlap.
    model_scales:
        Scales the model supports; a derived scale is the nearest of them.

    Returns
    -------
    GridPlan
        Grids in the working CRS: the HR-MSI CRS when projected, else the
        LR-HSI CRS when projected, else the UTM zone of the overlap centre.

    Raises
    ------
    GridError
        Missing CRS, footprints that do not overlap, an LR-HSI finer than
        the HR-MSI, a scale the model does not support (asked for, or derived
        when the nearest model scale would make the HR-MSI more than
        :data:`MAX_MSI_UPSAMPLING` times finer), or an overlap smaller than
        :data:`MIN_LR_PIXELS` LR pixels.
    """
    notes: List[str] = []
    crs = _working_crs(lr_info, msi_info, notes)
    unit = crs.linear_units or "units"
    lr_res, msi_res = _resolution(lr_info, crs), _resolution(msi_info, crs)
    ratio = lr_res / msi_res
    if ratio < 1.0 + RATIO_TOLERANCE:
        raise GridError(
            f"the LR-HSI {lr_info.path!r} ({lr_res:.4g} {unit} pixels) is not coarser than the HR-MSI "
            f"{msi_info.path!r} ({msi_res:.4g} {unit}); did you swap the two inputs?"
        )
    scale, out_res = _scale_and_resolution(lr_res, msi_res, unit, scale, resolution, model_scales, notes)
    lr_grid_res = out_res * scale
    if abs(lr_grid_res - lr_res) > RATIO_TOLERANCE * lr_res:
        notes.append(f"LR-HSI resampled from {lr_res:.6g} to {lr_grid_res:.6g} {unit}.")

    overlap = _overlap(lr_info, msi_info, crs, extent)

    anchor = _anchor(msi_info, crs, out_res) or _anchor(lr_info, crs, lr_grid_res)
    origin = anchor if anchor is not None else (0.0, 0.0)
    left, top = _snap_up(overlap[0], origin[0], out_res), _snap_down(overlap[3], origin[1], out_res)
    right, bottom = _snap_down(overlap[2], origin[0], out_res), _snap_up(overlap[1], origin[1], out_res)
    lr_cols = int(math.floor((right - left) / lr_grid_res + _SNAP_EPS))
    lr_rows = int(math.floor((top - bottom) / lr_grid_res + _SNAP_EPS))
    if lr_cols < MIN_LR_PIXELS or lr_rows < MIN_LR_PIXELS:
        raise GridError(
            f"the inputs overlap on only {_fmt_bounds(overlap)} ({_crs_text(crs)}): {max(lr_cols, 0)} x "
            f"{max(lr_rows, 0)} LR pixels of {lr_grid_res:.6g} {unit}, fewer than {MIN_LR_PIXELS} x "
            f"{MIN_LR_PIXELS}. Check that the two rasters show the same area."
        )
    output = Grid(crs, Affine(out_res, 0.0, left, 0.0, -out_res, top), lr_cols * scale, lr_rows * scale)
    return GridPlan(output=output, lr=output.coarsen(scale), scale=scale, notes=tuple(notes))
