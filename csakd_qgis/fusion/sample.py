"""The scene sample: a regular grid of LR windows read once per scene, for the radiometry and for fitting methods.

Every coefficient a fusion fits for the whole scene (robust levels, fill
values, GSA weights) comes from this sample, so every tile and every region
of the output uses the same ones and no seam can appear between them.
"""

from __future__ import annotations

from typing import List, Tuple

import numpy as np
from rasterio.windows import Window

from csakd_qgis.errors import InputError
from csakd_qgis.fusion.radiometry import Radiometry, robust_level
from csakd_qgis.geo.coregister import AlignedPair
from csakd_qgis.geo.grid import GridPlan

#: LR pixels per side of each sample window.
SAMPLE_SIZE = 32


#: Sample windows per axis.
SAMPLE_GRID = 4


def sample_windows(plan: GridPlan) -> List[Window]:
    """A regular :data:`SAMPLE_GRID` x :data:`SAMPLE_GRID` grid of LR windows, at most :data:`SAMPLE_SIZE` wide."""
    width, height = plan.lr.width, plan.lr.height
    size_x, size_y = min(SAMPLE_SIZE, width), min(SAMPLE_SIZE, height)
    xs = np.unique(np.linspace(0, width - size_x, SAMPLE_GRID).round().astype(int))
    ys = np.unique(np.linspace(0, height - size_y, SAMPLE_GRID).round().astype(int))
    return [Window(int(x), int(y), size_x, size_y) for y in ys for x in xs]


def sample_scene(pair: AlignedPair) -> Tuple[np.ndarray, np.ndarray]:
    """Pixel sample of the scene on the LR grid (:func:`sample_windows`).

    Returns
    -------
    lr : ``(C, 1, N)`` float32 physical LR-HSI values, NaN where either input is invalid
    msi : ``(m, 1, N)`` float32 HR-MSI averaged over each LR pixel's footprint, NaN likewise
    """
    lrs, msis = [], []
    for window in sample_windows(pair.plan):
        lr, lr_valid = pair.read_lr(window)
        msi, msi_valid = pair.read_msi_lr(window)
        valid = lr_valid & msi_valid
        lrs.append(np.where(valid, lr, np.nan).reshape(lr.shape[0], -1))
        msis.append(np.where(valid, msi, np.nan).reshape(msi.shape[0], -1))
    return np.concatenate(lrs, axis=1)[:, None], np.concatenate(msis, axis=1)[:, None]


def measure_radiometry(lr: np.ndarray, msi: np.ndarray) -> Radiometry:
    """Robust levels and per-band fill values (mean of valid samples) from :func:`sample_scene`.

    A sample pixel counts where the HR-MSI is valid (:func:`sample_scene`
    sets both inputs to NaN where either is invalid); bad LR-HSI bands that
    hold no value there get a fill value of 0.
    """
    valid = np.isfinite(msi).all(axis=0)
    if not valid.any():
        raise InputError("the LR-HSI and HR-MSI have no valid pixel in common in the sampled area; "
                         "check their nodata values and that they overlap")
    lr_px, msi_px = lr[:, valid], msi[:, valid]
    known = np.isfinite(lr_px)
    lr_fill = np.where(known, lr_px, 0.0).sum(axis=1) / np.maximum(known.sum(axis=1), 1)
    return Radiometry(robust_level(lr_px, name="LR-HSI"), robust_level(msi_px, name="HR-MSI"),
                      lr_fill.astype(np.float32), msi_px.mean(axis=1).astype(np.float32))
