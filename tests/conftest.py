"""Shared fixtures: small georeferenced rasters and the location of the real test data.

``geotiff`` writes GeoTIFFs with plain rasterio (not the engine's writer), so
tests of the engine's reader compare against an independent writer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import pytest
import rasterio
from affine import Affine

#: Default georeferencing: 30 m UTM 33N pixels near Potsdam.
UTM33_30M = Affine(30.0, 0.0, 366000.0, 0.0, -30.0, 5810000.0)

#: Real sensor data shared by the project (read-only); absent on a user's machine.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """Folder of the real test data; skips the test when it is not there."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA


def write_geotiff(
    path: Path,
    data: np.ndarray,
    *,
    crs: Optional[str] = "EPSG:32633",
    transform: Affine = UTM33_30M,
    nodata: Optional[float] = None,
    band_tags: Sequence[Dict[str, str]] = (),
    dataset_tags: Optional[Dict[str, str]] = None,
    scales: Optional[Sequence[float]] = None,
    offsets: Optional[Sequence[float]] = None,
    descriptions: Sequence[str] = (),
) -> Path:
    """Write ``data`` ``(C, H, W)`` as a GeoTIFF with plain rasterio and return ``path``.

    ``crs=None`` writes a raster without georeferencing.  ``band_tags`` holds
    one dict of default-domain items per band.
    """
    data = np.asarray(data)
    count, height, width = data.shape
    profile = dict(driver="GTiff", width=width, height=height, count=count, dtype=data.dtype.name,
                   nodata=nodata)
    if crs is not None:
        profile.update(crs=crs, transform=transform)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
        for i, tags in enumerate(band_tags, start=1):
            ds.update_tags(i, **tags)
        for i, text in enumerate(descriptions, start=1):
            ds.set_band_description(i, text)
        if dataset_tags:
            ds.update_tags(**dataset_tags)
        if scales is not None:
            ds.scales = tuple(scales)
        if offsets is not None:
            ds.offsets = tuple(offsets)
    return path


@pytest.fixture
def geotiff(tmp_path: Path) -> Callable[..., Path]:
    """Factory ``geotiff(name, data, **kwargs)`` writing into ``tmp_path`` (see ``write_geotiff``)."""

    def make(name: str, data: np.ndarray, **kwargs) -> Path:
        return write_geotiff(tmp_path / name, data, **kwargs)

    return make


def textured_scene(height: int, width: int, bands: int, seed: int = 0) -> np.ndarray:
    """Smooth random texture ``float32 (bands, height, width)`` in ``[0.05, 0.65]``.

    Band ``k`` mixes two fields with weights that vary smoothly over ``k``,
    so bands are correlated like a spectrum but not identical.
    """
    rng = np.random.default_rng(seed)
    fields = []
    for _ in range(2):
        noise = rng.standard_normal((height, width))
        spectrum = np.fft.fft2(noise)
        fy = np.fft.fftfreq(height)[:, None]
        fx = np.fft.fftfreq(width)[None, :]
        spectrum *= np.exp(-((fx**2 + fy**2) / (2 * 0.08**2)))
        field = np.real(np.fft.ifft2(spectrum))
        fields.append((field - field.min()) / (np.ptp(field) + 1e-12))
    weights = np.linspace(0.0, 1.0, bands)[:, None, None]
    cube = 0.05 + 0.6 * (weights * fields[0] + (1 - weights) * fields[1])
    return cube.astype(np.float32)


@pytest.fixture
def texture() -> Callable[..., np.ndarray]:
    """The ``textured_scene(height, width, bands, seed=0)`` generator."""
    return textured_scene
