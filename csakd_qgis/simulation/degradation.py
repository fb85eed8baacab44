"""Degradation model: simulate an LR-HSI / HR-MSI pair from a hyperspectral reference.

Wald's protocol: a hyperspectral image taken as the *reference* (ground
truth) is degraded spatially (PSF blur, decimation by ``scale``) into the
LR-HSI and spectrally (the MSI sensor's response matrix) into the HR-MSI.
Networks are trained and methods compared on such pairs.

Conventions
-----------
Grid alignment
    LR pixel ``i`` covers HR pixels ``[i*s, (i+1)*s)`` (``s = scale``), so
    its centre lies at HR pixel coordinate ``(i + 0.5) s - 0.5``; the LR grid
    has the HR grid's origin and an ``s`` times larger pixel, as GDAL's
    ``average`` resampling of ``s × s`` blocks gives.  A PSF kernel of size
    ``k`` is therefore centred on that point: ``k`` must have the parity of
    ``s`` (an even ``s`` puts the centre between HR pixels).  Kernels are
    applied as a correlation: LR pixel ``i`` is
    ``Σ_j psf[j] HR[i s + (s - k)/2 + j]`` (per axis).
PSF
    A Gaussian with standard deviation ``sigma`` in HR pixels.  From the
    modulation transfer function at the LR Nyquist frequency
    ``f = 1 / (2 s)`` cycles per HR pixel, ``MTF(f) = exp(-2 π² σ² f²)`` so
    ``σ = (s / π) sqrt(-2 ln MTF)``.  The default ``MTF = 0.3`` is a typical
    value for spaceborne imagers (Aiazzi et al. use 0.2-0.35 in
    pansharpening protocols); ``s = 4`` gives ``σ ≈ 1.98`` HR pixels.
Borders and nodata
    Pixels outside the image and NaN pixels are *missing*: the PSF weights
    of the present pixels are renormalised (normalised convolution), so a
    constant stays the constant up to the border.  An LR pixel whose own
    ``s × s`` block holds any NaN HR pixel is NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union, cast

import numpy as np
from scipy import ndimage

from csakd_qgis.errors import InputError
from csakd_qgis.simulation.srf import SensorBands, sensor_bands, spectral_response_matrix

#: Default MTF of the LR sensor at its Nyquist frequency.
DEFAULT_MTF_NYQUIST = 0.3


def _check_scale(scale: int) -> int:
    if int(scale) != scale or scale < 1:
        raise InputError(f"the scale (resolution ratio) must be a positive integer, got {scale!r}")
    return int(scale)


def psf_sigma(scale: int, mtf_nyquist: float = DEFAULT_MTF_NYQUIST) -> float:
    """Gaussian PSF standard deviation (HR pixels) with the given MTF at the LR Nyquist frequency."""
    scale = _check_scale(scale)
    if not 0.0 < mtf_nyquist < 1.0:
        raise InputError(f"the MTF at Nyquist must lie strictly between 0 and 1, got {mtf_nyquist}")
    return float(scale / np.pi * np.sqrt(-2.0 * np.log(mtf_nyquist)))


def gaussian_psf(scale: int, mtf_nyquist: Optional[float] = None, sigma: Optional[float] = None) -> np.ndarray:
    """Normalised Gaussian PSF kernel ``(k, k)`` float64 for a resolution ratio ``scale``.

    Parameters
    ----------
    scale:
        Integer resolution ratio (LR pixel size / HR pixel size).
    mtf_nyquist:
        MTF at the LR Nyquist frequency (default :data:`DEFAULT_MTF_NYQUIST`);
        ignored when ``sigma`` is given.
    sigma:
        Standard deviation in HR pixels.  ``0`` gives the ``s × s`` box
        (plain block average).

    Returns
    -------
    numpy.ndarray
        Kernel summing to 1; ``k`` has the parity of ``scale`` and reaches at
        least 3 sigma from the centre.
    """
    scale = _check_scale(scale)
    if sigma is None:
        sigma = psf_sigma(scale, DEFAULT_MTF_NYQUIST if mtf_nyquist is None else mtf_nyquist)
    if not np.isfinite(sigma) or sigma < 0:
        raise InputError(f"the PSF sigma must be a non-negative number of HR pixels, got {sigma}")
    if sigma == 0:
        return np.full((scale, scale), 1.0 / scale**2)
    k = int(np.ceil(6.0 * sigma)) + 1
    if k % 2 != scale % 2:
        k += 1
    t = np.arange(k) - (k - 1) / 2.0
    g = np.exp(-0.5 * (t / sigma) ** 2)
    kernel = np.outer(g, g)
    return kernel / kernel.sum()


def _correlate_axis(x: np.ndarray, taps: np.ndarray, scale: int, offset: int, axis: int) -> np.ndarray:
    """``out[i] = Σ_p taps[p] x[i s + offset + p]`` along ``axis`` (-1 or -2), zero outside; length ``n // s``."""
    n = x.shape[axis] // scale
    lo = max(0, -offset)
    hi = max(0, (n - 1) * scale + offset + taps.size - x.shape[axis])
    pad = [(0, 0)] * x.ndim
    pad[axis] = (lo, hi)
    xp = np.pad(x, pad)
    start = offset + lo
    index = [slice(None)] * x.ndim
    out: Optional[np.ndarray] = None
    for p, t in enumerate(taps):
        index[axis] = slice(start + p, start + p + (n - 1) * scale + 1, scale)
        term = t * xp[tuple(index)]
        out = term if out is None else out + term
    return cast(np.ndarray, out)  # taps is never empty


def _strided_correlate(x: np.ndarray, kernel: np.ndarray, scale: int, offset: int) -> np.ndarray:
    """``out[..., i, j] = Σ_pq kernel[p, q] x[..., i s + offset + p, j s + offset + q]``, zero outside.

    The kernel is split into separable terms (its singular value
    decomposition; one term for a Gaussian or a box), each applied as two
    1-D passes.  Output ``(..., H / s, W / s)``.
    """
    u, sv, vt = np.linalg.svd(kernel)
    out = np.zeros(x.shape[:-2] + (x.shape[-2] // scale, x.shape[-1] // scale))
    for r in np.flatnonzero(sv > 1e-12 * sv[0]):
        rows = _correlate_axis(x, u[:, r] * sv[r], scale, offset, -2)
        out += _correlate_axis(rows, vt[r], scale, offset, -1)
    return out


def blur_decimate(hsi: np.ndarray, scale: int, psf: np.ndarray) -> np.ndarray:
    """Blur with ``psf`` and keep one pixel per ``scale × scale`` block.

    Parameters
    ----------
    hsi:
        ``(C, H, W)`` float array, NaN = nodata; ``H`` and ``W`` multiples of ``scale``.
    scale:
        Integer resolution ratio.
    psf:
        ``(k, k)`` kernel with ``k`` of the parity of ``scale`` (see the module notes).

    Returns
    -------
    numpy.ndarray
        ``(C, H // scale, W // scale)`` float64, aligned as described in the module notes.
    """
    scale = _check_scale(scale)
    x = np.asarray(hsi, dtype=np.float64)
    if x.ndim != 3:
        raise InputError(f"expected a (bands, rows, cols) image, got shape {x.shape}")
    _, h, w = x.shape
    if h % scale or w % scale:
        raise InputError(f"image size {h}x{w} is not a multiple of the scale {scale}; crop it first")
    kernel = np.asarray(psf, dtype=np.float64)
    k = kernel.shape[0]
    if kernel.ndim != 2 or kernel.shape[1] != k or k % 2 != scale % 2:
        raise InputError(f"the PSF must be square with a size of the parity of the scale {scale}, "
                         f"got {kernel.shape}")
    valid = np.isfinite(x)
    offset = (scale - k) // 2
    num = _strided_correlate(np.where(valid, x, 0.0), kernel, scale, offset)
    den = _strided_correlate(valid.astype(np.float64), kernel, scale, offset)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    block_ok = valid.reshape(x.shape[0], h // scale, scale, w // scale, scale).all(axis=(2, 4))
    out[~block_ok | ~(den > 0)] = np.nan
    return out


def add_noise(x: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Add white Gaussian noise with a per-band signal-to-noise ratio.

    The noise standard deviation of band ``b`` is
    ``sqrt(mean(x_b²) / 10^(snr_db / 10))`` over the band's finite pixels
    (signal power = mean square).  ``x`` is ``(C, H, W)``; NaN stays NaN (an all-NaN band,
    e.g. a bad band, stays all NaN).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3:
        raise InputError(f"expected a (bands, rows, cols) image, got shape {x.shape}")
    finite = np.isfinite(x)
    count = finite.sum(axis=(1, 2))
    power = np.sum(np.where(finite, x, 0.0) ** 2, axis=(1, 2)) / np.maximum(count, 1)
    sigma = np.sqrt(power / 10.0 ** (snr_db / 10.0))
    return x + rng.standard_normal(x.shape) * sigma[:, None, None]


def shift_image(x: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Shift ``(C, H, W)`` content by ``dx`` pixels east (+x) and ``dy`` pixels south (+y).

    ``out[y, x] = in[y - dy, x - dx]``, interpolated with cubic splines;
    pixels shifted in from outside the image take the nearest edge value.
    Output pixels that draw on NaN (or outside-of-image NaN) input become NaN.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3:
        raise InputError(f"expected a (bands, rows, cols) image, got shape {x.shape}")
    if dx == 0 and dy == 0:
        return x.copy()
    valid = np.isfinite(x)
    filled = np.where(valid, x, 0.0)
    out = np.empty_like(x)
    for b in range(x.shape[0]):
        out[b] = ndimage.shift(filled[b], (dy, dx), order=3, mode="nearest")
    if not valid.all():
        moved = np.stack([ndimage.shift(v.astype(np.float64), (dy, dx), order=1, mode="nearest")
                          for v in valid])
        out[moved < 1.0 - 1e-6] = np.nan
    return out


@dataclass(frozen=True)
class SimulatedPair:
    """A simulated training / evaluation pair (all arrays float64, NaN = nodata).

    Attributes
    ----------
    lr_hsi:
        ``(C, H/s, W/s)`` LR hyperspectral image.
    hr_msi:
        ``(m, H, W)`` HR multispectral image.
    srf:
        ``(m, C)`` spectral response matrix used (rows sum to 1).
    psf:
        ``(k, k)`` PSF kernel used.
    reference:
        ``(C, H, W)`` reference cropped to a multiple of the scale (top-left kept).
    scale:
        Integer resolution ratio.
    sensor_bands:
        The MSI band responses, for metadata (names, centre wavelengths).
    """

    lr_hsi: np.ndarray
    hr_msi: np.ndarray
    srf: np.ndarray
    psf: np.ndarray
    reference: np.ndarray
    scale: int
    sensor_bands: SensorBands


def crop_to_scale(x: np.ndarray, scale: int) -> np.ndarray:
    """Crop ``(C, H, W)`` at the bottom and right to multiples of ``scale``."""
    scale = _check_scale(scale)
    h, w = x.shape[-2] // scale * scale, x.shape[-1] // scale * scale
    if h == 0 or w == 0:
        raise InputError(f"the image ({x.shape[-2]}x{x.shape[-1]} pixels) is smaller than the scale {scale}")
    return x[..., :h, :w]


def spectral_degrade(hsi: np.ndarray, srf: np.ndarray) -> np.ndarray:
    """Apply the response matrix: ``(C, H, W)`` -> ``(m, H, W)``; bands with zero weight are skipped."""
    used = np.any(srf != 0, axis=0)
    return np.einsum("mc,chw->mhw", srf[:, used], np.asarray(hsi, dtype=np.float64)[used])


def simulate_pair(reference: np.ndarray, wavelengths_nm: Sequence[float], fwhm_nm: Optional[Sequence[float]],
                  good: Optional[Sequence[bool]] = None, *, sensor: Union[str, SensorBands] = "sentinel2",
                  bands: Sequence[str] = ("B2", "B3", "B4", "B8"), scale: int = 4,
                  mtf_nyquist: Optional[float] = None, sigma: Optional[float] = None,
                  snr_db: Optional[float] = None, shift: Tuple[float, float] = (0.0, 0.0),
                  seed: Optional[int] = None) -> SimulatedPair:
    """Simulate an LR-HSI / HR-MSI pair from a reference hyperspectral image.

    Parameters
    ----------
    reference:
        ``(C, H, W)`` float image in physical units, NaN = nodata.
    wavelengths_nm, fwhm_nm, good:
        ``(C,)`` band centres (nm), FWHMs (nm, or None) and good-band flags.
    sensor, bands:
        MSI sensor and band names (see :func:`csakd_qgis.simulation.srf.sensor_bands`).
    scale:
        Integer resolution ratio.
    mtf_nyquist, sigma:
        PSF by its MTF at Nyquist or directly by its sigma (HR pixels).
    snr_db:
        Per-band SNR of white noise added to both images (None: no noise).
    shift:
        ``(dx, dy)`` misregistration of the LR-HSI in LR pixels (+x east,
        +y south): the scene is shifted by ``(dx s, dy s)`` HR pixels before
        the spatial degradation, the HR-MSI stays on the reference grid.
    seed:
        Seed of the noise generator.
    """
    scale = _check_scale(scale)
    ref = np.asarray(reference, dtype=np.float64)
    if ref.ndim != 3:
        raise InputError(f"the reference must be (bands, rows, cols), got shape {ref.shape}")
    ref = crop_to_scale(ref, scale)
    sb = sensor if isinstance(sensor, SensorBands) else sensor_bands(sensor, bands)
    srf = spectral_response_matrix(wavelengths_nm, fwhm_nm, sb, good=good)
    if srf.shape[1] != ref.shape[0]:
        raise InputError(f"the reference has {ref.shape[0]} bands but {srf.shape[1]} wavelengths were given")
    psf = gaussian_psf(scale, mtf_nyquist, sigma)
    msi = spectral_degrade(ref, srf)
    shifted = shift_image(ref, shift[0] * scale, shift[1] * scale)
    lr = blur_decimate(shifted, scale, psf)
    if snr_db is not None:
        rng = np.random.default_rng(seed)
        lr = add_noise(lr, snr_db, rng)
        msi = add_noise(msi, snr_db, rng)
    return SimulatedPair(lr, msi, srf, psf, ref, scale, sb)
