"""Training data: normalised training and validation scenes, built from arrays or read from rasters.

:class:`TrainingData` is made

* by :meth:`TrainingData.from_reference`: a reference HR-HSI degraded once by
  :func:`~csakd_qgis.simulation.degradation.simulate_pair` (sensor SRF, PSF, scale);
* by :meth:`TrainingData.from_scene`: a real LR-HSI / HR-MSI pair by Wald's
  protocol (:mod:`csakd_qgis.training.scene_adaptive`);
* from files by :func:`reference_data` and :func:`scene_data` (used by
  ``csakd train`` and the ``csakd:train`` Processing algorithm).  Rasters
  are read whole (:func:`csakd_qgis.io.read.read_whole`): this is meant
  for training-size scenes.

The bottom ``val_fraction`` of each scene's rows is held out for validation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple, cast

import numpy as np
from rasterio.windows import Window

from csakd_qgis.errors import InputError
from csakd_qgis.fusion.radiometry import robust_level
from csakd_qgis.io.bands import RasterInfo
from csakd_qgis.io.read import open_raster, read_exclusion, read_whole
from csakd_qgis.models.card import MsiInfo, SpectralBands
from csakd_qgis.training.patches import Scene, fill_empty_bands

# ----------------------------------------------------------------------------- from arrays


def _split_rows(scene: Scene, val_fraction: float) -> Tuple[Scene, Optional[Scene]]:
    """Hold out the bottom ``val_fraction`` of the LR rows (and the HR rows under them)."""
    h = scene.lr.shape[1]
    n_val = int(round(h * val_fraction))
    if val_fraction <= 0 or n_val == 0:
        return scene, None
    if n_val >= h:
        raise InputError(f"val_fraction {val_fraction} leaves no training rows")
    s, cut = scene.scale, h - n_val

    def part(lo: int, hi: int) -> Scene:
        return Scene(scene.lr[:, lo:hi], scene.msi[:, lo * s:hi * s], scene.ref[:, lo * s:hi * s],
                     scene.valid[lo * s:hi * s], s)

    return part(0, cut), part(cut, h)


@dataclass(frozen=True)
class TrainingData:
    """Normalised training and validation scenes plus the metadata that goes into the card."""

    train: Tuple[Scene, ...]
    val: Tuple[Scene, ...]
    lr_bands: SpectralBands
    msi: MsiInfo
    scale: int
    protocol: str
    name: str = ""

    @property
    def bands(self) -> int:
        """Number of HSI bands C."""
        return self.train[0].lr.shape[0]

    @property
    def msi_bands(self) -> int:
        """Number of MSI bands m."""
        return self.train[0].msi.shape[0]

    @classmethod
    def from_reference(cls, reference: np.ndarray, wavelengths_nm: Sequence[float],
                       fwhm_nm: Optional[Sequence[float]] = None, good: Optional[Sequence[bool]] = None, *,
                       sensor: str = "sentinel2", bands: Sequence[str] = ("B2", "B3", "B4", "B8"),
                       scale: int = 4, val_fraction: float = 0.2, valid: Optional[np.ndarray] = None,
                       snr_db: Optional[float] = None, seed: int = 0, name: str = "") -> TrainingData:
        """Simulate the LR-HSI / HR-MSI pair of a reference once and split it.

        Parameters
        ----------
        reference:
            ``(C, H, W)`` HR-HSI in physical units, NaN = nodata (cropped to multiples of ``scale``).
        wavelengths_nm, fwhm_nm, good:
            ``(C,)`` band centres (nm), FWHMs (nm) and good-band flags.
        sensor, bands:
            The MSI to simulate (see :func:`csakd_qgis.simulation.srf.sensor_bands`).
        scale:
            Integer LR/HR pixel-size ratio.
        val_fraction:
            Fraction of rows (bottom) held out for validation; 0 = none.
        valid:
            Optional ``(H, W)`` mask, True = valid.
        snr_db, seed:
            Noise added by the simulator, and its seed.
        name:
            Name of the data for the model card.
        """
        from csakd_qgis.simulation.degradation import simulate_pair

        ref = fill_empty_bands(reference)
        if valid is not None:
            ref[:, ~np.asarray(valid, dtype=bool)] = np.nan
        pair = simulate_pair(ref, wavelengths_nm, fwhm_nm, good, sensor=sensor, bands=bands, scale=scale,
                             snr_db=snr_db, seed=seed)
        lr_level = robust_level(pair.lr_hsi, name="simulated LR-HSI")
        msi_level = robust_level(pair.hr_msi, name="simulated HR-MSI")
        s = pair.scale
        ok = np.isfinite(pair.reference).all(axis=0) & np.isfinite(pair.hr_msi).all(axis=0)
        ok &= np.kron(np.isfinite(pair.lr_hsi).all(axis=0), np.ones((s, s), dtype=bool))
        scene = Scene(np.nan_to_num(pair.lr_hsi / lr_level).astype(np.float32),
                      np.nan_to_num(pair.hr_msi / msi_level).astype(np.float32),
                      np.nan_to_num(pair.reference / lr_level).astype(np.float32), ok, s)
        train, val = _split_rows(scene, val_fraction)
        sb = pair.sensor_bands
        return cls((train,), (val,) if val is not None else (),
                   SpectralBands(tuple(float(w) for w in wavelengths_nm),
                                 tuple(float(f) for f in fwhm_nm) if fwhm_nm is not None else (),
                                 tuple(bool(g) for g in good) if good is not None else ()),
                   MsiInfo(sb.sensor, tuple(sb.names), tuple(sb.centres_nm)), s, "simulation", name)

    @classmethod
    def from_scene(cls, lr_hsi: np.ndarray, hr_msi: np.ndarray, scale: int, *,
                   lr_bands: SpectralBands, msi: MsiInfo, lr_valid: Optional[np.ndarray] = None,
                   msi_valid: Optional[np.ndarray] = None, val_fraction: float = 0.2,
                   name: str = "") -> TrainingData:
        """Scene-adaptive data from a real pair by Wald's protocol (see :mod:`csakd_qgis.training.scene_adaptive`).

        ``lr_hsi`` is ``(C, h, w)``, ``hr_msi`` ``(m, h*s, w*s)``, physical units, NaN = nodata.
        """
        from csakd_qgis.training.scene_adaptive import wald_scene

        scene = wald_scene(lr_hsi, hr_msi, scale, lr_valid=lr_valid, msi_valid=msi_valid)
        train, val = _split_rows(scene, val_fraction)
        return cls((train,), (val,) if val is not None else (), lr_bands, msi, int(scale), "wald", name)


def fit_patch(requested: int, data: TrainingData) -> int:
    """HR patch side actually used: the largest multiple of the scale not above ``requested`` nor any scene side.

    Raises :class:`~csakd_qgis.errors.InputError` when a scene is smaller than
    two LR pixels of patch.
    """
    s = data.scale
    smallest = min(min(sc.hr_shape) for sc in data.train)
    patch = min(requested, smallest) // s * s
    if patch < 2 * s:
        raise InputError(f"the training scenes ({smallest} HR pixels on their short side) are too small for "
                         f"patches of at least {2 * s} pixels at scale {s}; use a larger scene")
    return patch


# ----------------------------------------------------------------------------- from rasters


def _bands(info: RasterInfo) -> SpectralBands:
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
        ref, cast(Tuple[float, ...], spectral.wavelengths_nm), cast(Tuple[float, ...], spectral.fwhm_nm) or None,
        spectral.good or None, sensor=sensor,
        bands=[b.strip() for b in bands], scale=scale, val_fraction=val_fraction, valid=valid, seed=seed,
        name=Path(path).name)


def _unmasked(valid: np.ndarray, masks: Sequence[str], path: str) -> np.ndarray:
    """``valid`` without the pixels any of ``masks`` (rasters of its shape, nonzero = exclude) marks."""
    for mask in masks:
        with open_raster(mask) as ds:
            if (ds.height, ds.width) != valid.shape:
                raise InputError(f"mask {mask} is {ds.width} x {ds.height} pixels, {path} "
                                 f"{valid.shape[1]} x {valid.shape[0]}: a mask must be on its raster's grid")
            valid = valid & ~read_exclusion(ds, Window(0, 0, ds.width, ds.height))
    return valid


def scene_data(lr_path: str, msi_path: str, *, scale: Optional[int] = None,
               val_fraction: float = 0.2, lr_masks: Sequence[str] = (),
               msi_masks: Sequence[str] = ()) -> TrainingData:
    """Scene-adaptive data (Wald's protocol) from a real, co-registered LR-HSI / HR-MSI pair.

    Pixels the masks mark (nonzero; rasters on each input's grid) are
    invalid, so left out of training and validation.
    """
    lr_info, lr, lr_valid = read_whole(lr_path, "training")
    msi_info, msi, msi_valid = read_whole(msi_path, "training")
    lr_valid, msi_valid = _unmasked(lr_valid, lr_masks, lr_path), _unmasked(msi_valid, msi_masks, msi_path)
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
