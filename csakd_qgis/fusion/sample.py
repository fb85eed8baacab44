"""The scene sample: a regular grid of LR windows read once per scene, for the radiometry and for fitting methods.

Every coefficient a fusion fits for the whole scene (robust levels, fill
values, GSA weights) comes from this sample, so every tile and every region
of the output uses the same ones and no seam can appear between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
from rasterio.windows import Window

from csakd_qgis.errors import InputError
from csakd_qgis.fusion.radiometry import Radiometry, robust_level
from csakd_qgis.fusion.tiling import read_mirrored
from csakd_qgis.geo.coregister import AlignedPair
from csakd_qgis.geo.grid import Grid, GridPlan

#: LR pixels per side of each sample window.
SAMPLE_SIZE = 32


#: Sample windows per axis.
SAMPLE_GRID = 4


def _axis_windows(size: int) -> List[Tuple[int, int]]:
    """``(start, length)`` of the sample windows along an axis of ``size`` LR pixels; they never overlap.

    :data:`SAMPLE_GRID` windows of :data:`SAMPLE_SIZE` pixels spread evenly
    when the axis holds them; a shorter axis is cut into
    ``ceil(size / SAMPLE_SIZE)`` windows that cover it.  Overlapping windows
    would count pixels twice, and the noise estimate divides by the pixel
    count (an Indian Pines strip of 8 x 36 LR pixels read 1024 pixels for
    288 distinct ones, and its noise came out 4 dB low).
    """
    if size >= SAMPLE_GRID * SAMPLE_SIZE:
        starts = np.linspace(0, size - SAMPLE_SIZE, SAMPLE_GRID).round().astype(int)
        return [(int(start), SAMPLE_SIZE) for start in starts]
    count = -(-size // SAMPLE_SIZE)
    edges = np.linspace(0, size, count + 1).round().astype(int)
    return [(int(a), int(b - a)) for a, b in zip(edges[:-1], edges[1:])]


def sample_windows(plan: GridPlan) -> List[Window]:
    """The sample's LR windows: a grid of at most :data:`SAMPLE_GRID` x :data:`SAMPLE_GRID`, none overlapping.

    Each window is at most :data:`SAMPLE_SIZE` pixels wide and high
    (:func:`_axis_windows`).
    """
    return [Window(x, y, w, h) for y, h in _axis_windows(plan.lr.height) for x, w in _axis_windows(plan.lr.width)]


#: LR pixels of context around each sample window in :attr:`SceneSample.mosaic_msi`: more than the PSF
#: estimate reaches (6 s + 1 HR pixels: 3 sigma at its largest sigma of 1.5 s, plus offsets up to 1 LR pixel,
#: :func:`csakd_qgis.estimation.psf.estimate_psf`).
MOSAIC_MARGIN = 7


@dataclass(frozen=True)
class SceneSample:
    """The scene sample (:func:`sample_windows`), for the radiometry and for fitting methods and the degradation.

    Attributes
    ----------
    lr, msi_lr:
        ``(C, 1, N)`` and ``(m, 1, N)`` float32 physical values of the
        sample's LR pixels: the LR-HSI, and the HR-MSI averaged over each LR
        pixel's footprint; NaN where either input is invalid.
    mosaic_lr, mosaic_msi:
        The windows side by side: ``(C, h + 2 M, n (w + 2 M))`` on the LR
        grid, each window framed by ``M`` = :data:`MOSAIC_MARGIN` LR pixels
        of NaN, and ``(m, (h + 2 M) s, n (w + 2 M) s)`` on the output grid,
        each window with ``M s`` output pixels of real context around it
        (mirrored at the raster's edges, as tile halos are).  So a PSF
        applied to the MSI mosaic sees what it would see in the scene, and
        pixels of two windows never mix.  NaN where the input is invalid.
    """

    lr: np.ndarray
    msi_lr: np.ndarray
    mosaic_lr: np.ndarray
    mosaic_msi: np.ndarray


def empty_bands(pair: AlignedPair) -> np.ndarray:
    """``(C,)`` bool: LR-HSI bands with no valid value in any sample window (each band judged on its own)."""
    counts = sum(pair.count_lr_valid(window) for window in sample_windows(pair.plan))
    return np.asarray(counts) == 0


def _side_by_side(parts: List[np.ndarray]) -> np.ndarray:
    """``(C, max h, sum w)``: ``parts`` ``(C, h, w)`` side by side, the shorter ones padded below with NaN."""
    height = max(p.shape[1] for p in parts)
    return np.concatenate([np.pad(p, ((0, 0), (0, height - p.shape[1]), (0, 0)), constant_values=np.nan)
                           for p in parts], axis=2)


def framed_mosaic(read: Callable[[Window], Tuple[np.ndarray, np.ndarray]], grid: Grid,
                  windows: Sequence[Window], scale: int) -> np.ndarray:
    """``(C, (h + 2 M) s, n (w + 2 M) s)``: the output-grid pixels of LR ``windows``, framed as in :class:`SceneSample`.

    ``read`` reads a window of ``grid`` (an output-grid raster: the HR-MSI,
    or a fused output) as ``(data, valid)``; outside the raster the frame is
    mirrored; invalid pixels are NaN.
    """
    m, parts = MOSAIC_MARGIN, []
    for window in windows:
        framed = Window((window.col_off - m) * scale, (window.row_off - m) * scale, (window.width + 2 * m) * scale,
                        (window.height + 2 * m) * scale)
        data, valid = read_mirrored(read, framed, grid.width, grid.height)
        parts.append(np.where(valid, data, np.nan))
    return _side_by_side(parts)


def sample_scene(pair: AlignedPair, windows: Optional[Sequence[Window]] = None) -> SceneSample:
    """Read the scene sample of ``pair`` (``windows``, default :func:`sample_windows`): see :class:`SceneSample`."""
    windows = sample_windows(pair.plan) if windows is None else windows
    m = MOSAIC_MARGIN
    lrs, msis, lr_tiles = [], [], []
    for window in windows:
        lr, lr_valid = pair.read_lr(window)
        msi, msi_valid = pair.read_msi_lr(window)
        valid = lr_valid & msi_valid
        lrs.append(np.where(valid, lr, np.nan).reshape(lr.shape[0], -1))
        msis.append(np.where(valid, msi, np.nan).reshape(msi.shape[0], -1))
        lr_tiles.append(np.pad(np.where(lr_valid, lr, np.nan), ((0, 0), (m, m), (m, m)), constant_values=np.nan))
    return SceneSample(lr=np.concatenate(lrs, axis=1)[:, None], msi_lr=np.concatenate(msis, axis=1)[:, None],
                       mosaic_lr=_side_by_side(lr_tiles),
                       mosaic_msi=framed_mosaic(pair.read_msi, pair.plan.output, windows, pair.plan.scale))


def measure_radiometry(lr: np.ndarray, msi: np.ndarray, empty: Sequence[int] = ()) -> Radiometry:
    """Robust levels and per-band fill values (mean of valid samples) from :attr:`SceneSample.lr`/``msi_lr``.

    A sample pixel counts where the HR-MSI is valid (:func:`sample_scene`
    sets both inputs to NaN where either is invalid); bad LR-HSI bands that
    hold no value there get a fill value of 0.  ``empty`` lists the bands
    (0-based) found without any value (:func:`empty_bands`): written as nodata.
    """
    valid = np.isfinite(msi).all(axis=0)
    if not valid.any():
        raise InputError("the LR-HSI and HR-MSI have no valid pixel in common in the sampled area; "
                         "check their nodata values and that they overlap")
    lr_px, msi_px = lr[:, valid], msi[:, valid]
    known = np.isfinite(lr_px)
    lr_fill = np.where(known, lr_px, 0.0).sum(axis=1) / np.maximum(known.sum(axis=1), 1)
    return Radiometry(robust_level(lr_px, name="LR-HSI"), robust_level(msi_px, name="HR-MSI"),
                      lr_fill.astype(np.float32), msi_px.mean(axis=1).astype(np.float32),
                      tuple(int(b) for b in empty))
