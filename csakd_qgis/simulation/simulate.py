"""Simulated LR-HSI / HR-MSI pairs written as georeferenced rasters (``csakd simulate``, ``csakd:simulate``).

The whole reference is read into memory: the simulator is meant for
training- and test-size scenes (a few hundred to a few thousand pixels a
side), not for full acquisitions.  The LR grid has the reference's origin
and a pixel ``scale`` times larger; the reference is cropped at the bottom
and right to a multiple of the scale.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, cast

import numpy as np
from affine import Affine

from csakd_qgis.errors import InputError
from csakd_qgis.io.bands import BandInfo
from csakd_qgis.io.read import read_whole
from csakd_qgis.io.write import write_raster
from csakd_qgis.progress import SILENT, Reporter
from csakd_qgis.simulation.degradation import DEFAULT_MTF_NYQUIST, simulate_pair


def _optional(values: Sequence[Optional[float]]) -> Optional[Sequence[float]]:
    if any(v is None for v in values):
        return None
    return cast(Sequence[float], np.asarray(values, dtype=np.float64))


def simulate_rasters(reference: str, lr_out: str, msi_out: str, reference_out: Optional[str] = None, *,
                     sensor: str = "sentinel2", bands: Sequence[str] = ("B2", "B3", "B4", "B8"), scale: int = 4,
                     mtf: float = DEFAULT_MTF_NYQUIST, snr_db: Optional[float] = None,
                     shift: Tuple[float, float] = (0.0, 0.0), seed: int = 0, overwrite: bool = False,
                     reporter: Reporter = SILENT) -> Dict[str, object]:
    """Simulate the pair of a reference raster and write it.

    Parameters
    ----------
    reference:
        HR-HSI with band wavelengths (per-band metadata or ENVI header).
    lr_out, msi_out, reference_out:
        Destinations of the LR-HSI (float32, the reference's band metadata),
        the HR-MSI (float32, the sensor bands' centres) and, optionally, the
        reference cropped to a multiple of the scale.
    sensor, bands, scale, mtf, snr_db, shift, seed:
        See :func:`csakd_qgis.simulation.degradation.simulate_pair`; ``shift`` is the
        LR-HSI's misregistration in LR pixels (+x east, +y south).
    overwrite:
        Replace existing destinations.
    reporter:
        Progress and cancel.

    Returns
    -------
    dict
        Paths, shapes, the MSI bands and where their responses came from.
    """
    reporter.update(0.1, f"reading {reference}")
    info, data, _ = read_whole(reference, "the simulator")
    wavelengths = [b.wavelength_nm for b in info.bands]
    if any(w is None for w in wavelengths):
        raise InputError(f"{reference} has no wavelength for every band; the simulator needs them "
                         "(per-band 'wavelength' metadata or an ENVI header)")
    reporter.update(0.4, "simulating")
    pair = simulate_pair(data, cast(List[float], wavelengths), _optional([b.fwhm_nm for b in info.bands]),
                         [b.good for b in info.bands], sensor=sensor, bands=list(bands), scale=scale,
                         mtf_nyquist=mtf, snr_db=snr_db, shift=shift, seed=seed)
    reporter.update(0.8, "writing")
    sb = pair.sensor_bands
    msi_bands = [BandInfo(wavelength_nm=c, fwhm_nm=f, description=f"{sb.sensor} {n}")
                 for n, c, f in zip(sb.names, sb.centres_nm, sb.fwhm_nm)]
    nodata = info.nodata if info.nodata is not None and np.isfinite(info.nodata) else None
    common: Dict[str, Any] = dict(crs=info.crs, nodata=nodata, overwrite=overwrite)
    write_raster(lr_out, pair.lr_hsi, transform=info.transform * Affine.scale(scale), bands=info.bands, **common)
    write_raster(msi_out, pair.hr_msi, transform=info.transform, bands=msi_bands, **common)
    if reference_out is not None:
        write_raster(reference_out, pair.reference, transform=info.transform, bands=info.bands, **common)
    reporter.update(1.0, "done")
    return {
        "lr_hsi": lr_out, "hr_msi": msi_out, "reference": reference_out,
        "lr_shape": list(pair.lr_hsi.shape), "hr_shape": list(pair.reference.shape),
        "msi_bands": list(sb.names), "msi_centres_nm": list(sb.centres_nm), "srf_source": sb.source,
        "psf_size": int(pair.psf.shape[0]), "scale": pair.scale,
    }
