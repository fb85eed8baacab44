"""Scene-adaptive training pairs by Wald's protocol.

With only a real LR-HSI ``(C, h, w)`` and HR-MSI ``(m, h*s, w*s)`` there is
no HR-HSI to learn from.  Wald's protocol degrades both inputs once more by
the scale ``s`` (the same PSF blur and decimation the simulator uses, see
:mod:`csakd_qgis.simulation.degradation`):

* LR-HSI ``(C, h, w)``  -> ``(C, h/s, w/s)``, the new LR input;
* HR-MSI ``(m, h*s, w*s)`` -> ``(m, h, w)``, the new HR input, on the LR-HSI's grid;
* the original LR-HSI ``(C, h, w)`` is the target.

A network trained to map the degraded pair to the original LR-HSI is then
applied at full resolution (the LR-HSI and HR-MSI themselves), assuming the
relation between the scales is the same one level up (scale invariance).
Sizes are cropped at the bottom and right to multiples of ``s`` (LR-HSI) and
``s*s`` (HR-MSI).  NaN pixels are missing in the blur (normalised
convolution) and invalid in the target mask.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from csakd_qgis.errors import InputError
from csakd_qgis.fusion.radiometry import robust_level
from csakd_qgis.simulation.degradation import blur_decimate, gaussian_psf
from csakd_qgis.training.patches import Scene, fill_empty_bands


def wald_scene(lr_hsi: np.ndarray, hr_msi: np.ndarray, scale: int, *,
               lr_valid: Optional[np.ndarray] = None, msi_valid: Optional[np.ndarray] = None,
               mtf_nyquist: Optional[float] = None) -> Scene:
    """Build the normalised training scene of Wald's protocol from a real pair.

    Parameters
    ----------
    lr_hsi:
        ``(C, h, w)`` LR-HSI in physical units, NaN = nodata.
    hr_msi:
        ``(m, h*s, w*s)`` HR-MSI on the same footprint, NaN = nodata.
    scale:
        Integer ratio ``s`` of LR to HR pixel size.
    lr_valid, msi_valid:
        Optional ``(h, w)`` / ``(h*s, w*s)`` validity masks (True = valid).
    mtf_nyquist:
        PSF of the extra degradation (see :func:`csakd_qgis.simulation.degradation.gaussian_psf`).

    Returns
    -------
    Scene
        ``lr (C, h/s, w/s)``, ``msi (m, h, w)``, ``ref (C, h, w)`` divided by
        their robust levels (the target by the LR-HSI's level, as at
        inference), with ``valid (h, w)``.
    """
    lr = fill_empty_bands(lr_hsi)
    msi = np.array(hr_msi, dtype=np.float64)
    s = int(scale)
    c, h, w = lr.shape
    if msi.ndim != 3 or msi.shape[1:] != (h * s, w * s):
        raise InputError(
            f"the HR-MSI ({msi.shape[1] if msi.ndim == 3 else '?'}x{msi.shape[-1]} pixels) must be exactly "
            f"{s} times the LR-HSI ({h}x{w}) on the same footprint; co-register them first (csakd coregister)"
        )
    if lr_valid is not None:
        lr[:, ~np.asarray(lr_valid, dtype=bool)] = np.nan
    if msi_valid is not None:
        msi[:, ~np.asarray(msi_valid, dtype=bool)] = np.nan
    h2, w2 = h // s * s, w // s * s
    if h2 < s or w2 < s:
        raise InputError(f"the LR-HSI ({h}x{w} pixels) is too small for scene-adaptive training at scale {s}")
    lr, msi = lr[:, :h2, :w2], msi[:, :h2 * s, :w2 * s]
    psf = gaussian_psf(s, mtf_nyquist)
    lr_low = blur_decimate(lr, s, psf)
    msi_low = blur_decimate(msi, s, psf)
    valid = np.isfinite(lr).all(axis=0) & np.isfinite(msi_low).all(axis=0)
    valid &= np.kron(np.isfinite(lr_low).all(axis=0), np.ones((s, s), dtype=bool))
    lr_level = robust_level(lr, name="LR-HSI")
    msi_level = robust_level(msi_low, name="HR-MSI")
    return Scene(
        lr=np.nan_to_num(lr_low / lr_level).astype(np.float32),
        msi=np.nan_to_num(msi_low / msi_level).astype(np.float32),
        ref=np.nan_to_num(lr / lr_level).astype(np.float32),
        valid=valid,
        scale=s,
    )
