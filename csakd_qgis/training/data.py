"""Training data from rasters: a reference to simulate from, or a real pair (scene-adaptive).

Used by ``csakd train`` and the ``csakd:train`` Processing algorithm.
Rasters are read whole (:func:`csakd_qgis.io.read.read_whole`): this is
meant for training-size scenes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from csakd_qgis.errors import InputError
from csakd_qgis.io.read import read_whole
from csakd_qgis.models.card import MsiInfo, SpectralBands
from csakd_qgis.training.train import TrainingData


def _bands(info) -> SpectralBands:
    fwhm = tuple(b.fwhm_nm for b in info.bands)
    return SpectralBands(tuple(b.wavelength_nm for b in info.bands),
                         fwhm if all(f is not None for f in fwhm) else (), tuple(b.good for b in info.bands))


def reference_data(path: str, *, sensor: str, bands: Sequence[str], scale: int, val_fraction: float = 0.2,
                   seed: int = 0) -> TrainingData:
    """Supervised data: the reference HR-HSI at ``path`` degraded by the simulator (sensor bands, scale)."""
    info, ref, valid = read_whole(path, "training")
    spectral = _bands(info)
    if any(w is None for w in spectral.wavelengths_nm):
        raise InputError(f"{path} lacks band wavelengths; the MSI cannot be simulated without them")
    return TrainingData.from_reference(
        ref, spectral.wavelengths_nm, spectral.fwhm_nm or None, spectral.good or None, sensor=sensor,
        bands=[b.strip() for b in bands], scale=scale, val_fraction=val_fraction, valid=valid, seed=seed,
        name=Path(path).name)


def scene_data(lr_path: str, msi_path: str, *, scale: Optional[int] = None,
               val_fraction: float = 0.2) -> TrainingData:
    """Scene-adaptive data (Wald's protocol) from a real, co-registered LR-HSI / HR-MSI pair."""
    lr_info, lr, lr_valid = read_whole(lr_path, "training")
    msi_info, msi, msi_valid = read_whole(msi_path, "training")
    ratio = lr_info.res[0] / msi_info.res[0]
    scale = scale or int(round(ratio))
    if abs(ratio - scale) > 0.01 * scale or (lr_info.width * scale, lr_info.height * scale) != (
            msi_info.width, msi_info.height) or lr_info.crs != msi_info.crs:
        raise InputError(f"{lr_path} and {msi_path} are not on aligned grids {scale} times apart (pixel size "
                         f"ratio {ratio:.3f}); co-register them first (csakd coregister / csakd:coregister) and "
                         "clip the HR-MSI to the same extent")
    msi_meta = MsiInfo(None, tuple(b.description or f"B{i + 1}" for i, b in enumerate(msi_info.bands)),
                       tuple(b.wavelength_nm for b in msi_info.bands))
    return TrainingData.from_scene(lr, msi, scale, lr_bands=_bands(lr_info), msi=msi_meta,
                                   lr_valid=lr_valid, msi_valid=msi_valid, val_fraction=val_fraction,
                                   name=f"{Path(lr_path).name} + {Path(msi_path).name}")
