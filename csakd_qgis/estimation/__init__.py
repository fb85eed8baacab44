"""The degradation linking an LR-HSI to an HR-MSI, estimated from the pair alone (no reference image).

:func:`estimate_degradation` runs, in order:

1. :func:`~.psf.estimate_psf`: the LR sensor's Gaussian PSF width (HR
   pixels) and sub-pixel offset (LR pixels) relative to the MSI;
2. :func:`~.noise.estimate_noise`: the per-band noise of both images;
3. :func:`~.spectral.estimate_srf`: the spectral response matrix, fitted
   on the MSI blurred and sampled with the PSF of step 1
   (:func:`~.psf.blur_sample`), corrected for the LR-HSI noise of step 2;
4. :func:`~.noise.estimate_subspace_rank`: the LR-HSI's signal-subspace
   dimension.

Shapes, grids and sign conventions are those of :mod:`.psf`: ``lr`` is
``(C, h, w)``, ``msi`` is ``(m, h s + 2 M, w s + 2 M)`` with a margin of
``M`` HR pixels around the LR footprint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from csakd_qgis.estimation.noise import estimate_noise, estimate_subspace_rank
from csakd_qgis.estimation.psf import PsfEstimate, blur_sample, estimate_psf, infer_margin
from csakd_qgis.estimation.spectral import SrfEstimate, estimate_srf, relabelled_bands, reproduce_msi

__all__ = [
    "Degradation",
    "PsfEstimate",
    "SrfEstimate",
    "blur_sample",
    "estimate_degradation",
    "estimate_noise",
    "estimate_psf",
    "estimate_srf",
    "estimate_subspace_rank",
    "infer_margin",
    "relabelled_bands",
    "reproduce_msi",
]


@dataclass(frozen=True)
class Degradation:
    """The degradation estimated by :func:`estimate_degradation`.

    Attributes
    ----------
    scale:
        Integer resolution ratio the estimate is for.
    sigma:
        Gaussian PSF standard deviation of the LR sensor relative to the
        MSI, in HR pixels; 0 = the ``s × s`` box.
    offset:
        ``(dx, dy)`` misregistration in LR pixels (+x east, +y south, the
        convention of :mod:`csakd_qgis.geo.shift`).
    residual:
        Fraction of the blurred-sampled MSI's variance the LR-HSI leaves
        unexplained at the best PSF (mean over MSI bands; 0 = perfect).
    srf:
        ``(m, C)`` spectral response, rows sum to 1, 0 on bad bands.
    srf_gain, srf_bias:
        ``(m,)``: MSI ≈ ``srf_gain * (srf @ HSI) + srf_bias`` (MSI units).
    noise_lr, noise_msi:
        ``(C,)`` and ``(m,)`` noise standard deviations in each image's
        units (NaN for bad bands).
    rank:
        Signal-subspace dimension of the LR-HSI.
    reliable:
        False when a message says why the PSF estimate should not be trusted.
    messages:
        Sentences for the user.
    """

    scale: int
    sigma: float
    offset: Tuple[float, float]
    residual: float
    srf: np.ndarray
    srf_gain: np.ndarray
    srf_bias: np.ndarray
    noise_lr: np.ndarray
    noise_msi: np.ndarray
    rank: int
    reliable: bool
    messages: Tuple[str, ...]

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON-ready dict (lists for arrays, None for NaN)."""

        def plain(value: Any) -> Any:
            if isinstance(value, np.ndarray):
                return [plain(v) for v in value.tolist()]
            if isinstance(value, (list, tuple)):
                return [plain(v) for v in value]
            if isinstance(value, float) and not np.isfinite(value):
                return None
            return value

        return {name: plain(getattr(self, name)) for name in self.__dataclass_fields__}


def estimate_degradation(lr: np.ndarray, msi: np.ndarray, scale: int, *, good: Optional[Sequence[bool]] = None,
                         srf_prior: Optional[np.ndarray] = None,
                         wavelengths_nm: Optional[Sequence[float]] = None) -> Degradation:
    """Estimate PSF, offset, spectral response, noise and rank from an LR-HSI / HR-MSI pair.

    Parameters
    ----------
    lr:
        ``(C, h, w)`` LR-HSI, NaN = invalid.
    msi:
        ``(m, h s + 2 M, w s + 2 M)`` HR-MSI over the LR footprint plus a
        margin of ``M`` HR pixels (:mod:`.psf`), NaN = invalid.
    scale:
        Integer resolution ratio ``s``.
    good:
        ``(C,)`` booleans, False = bad band; default: bands finite on at
        least half of the pixels.
    srf_prior:
        ``(m, C)`` known spectral response (e.g. from
        :func:`csakd_qgis.simulation.srf.spectral_response_matrix`), the anchor of the
        SRF fit; the data's departure from it is reported in ``messages``.
    wavelengths_nm:
        ``(C,)`` band centres (nm) for the SRF smoothness and centroids.

    Returns
    -------
    Degradation

    Raises
    ------
    InputError
        For inconsistent shapes or no usable pixel.
    """
    psf = estimate_psf(lr, msi, scale, good=good)
    hsi = np.asarray(lr, dtype=np.float64)
    margin = infer_margin(hsi.shape, np.shape(msi), scale)
    sampled = blur_sample(msi, scale, psf.sigma, psf.offset, margin=margin)
    noise_lr = estimate_noise(hsi, good=good)
    noise_msi = estimate_noise(msi, method="spatial")
    used = np.isfinite(noise_lr)
    srf = estimate_srf(hsi, sampled, good=used, wavelengths_nm=wavelengths_nm, prior=srf_prior, noise_std=noise_lr)
    rank = estimate_subspace_rank(hsi, noise_lr, good=used)
    messages = list(psf.messages)
    if srf.prior_distance is not None:
        moved = ", ".join(f"band {k + 1}: {d:.2f}" for k, d in enumerate(srf.prior_distance))
        messages.append(f"the data moved the prior spectral response by (half L1 distance, 0-1) {moved}")
    return Degradation(int(scale), psf.sigma, psf.offset, psf.residual, srf.srf, srf.gain, srf.bias,
                       noise_lr, noise_msi, rank, psf.reliable, tuple(messages))
