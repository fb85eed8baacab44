"""Sub-pixel misregistration between an LR-HSI and an HR-MSI by phase correlation.

The two images are compared at the LR resolution and in the MSI's bands:

* ``lr_proj`` ``(m, h, w)``: the LR-HSI projected onto the ``m`` MSI bands,
  either through a sensor's spectral response matrix ``(m, C)`` or through
  :func:`fit_band_mixing`, a non-negative least-squares fit that needs no
  metadata (robust to unknown sensors);
* ``msi_lr`` ``(m, h, w)``: the HR-MSI averaged over ``s x s`` blocks.

Sign convention: the shift ``(dx, dy)`` is in LR pixels, ``+x`` east
(columns) and ``+y`` south (rows), and says where the LR-HSI content sits
relative to the MSI: ``lr_proj(col, row) ~= msi_lr(col - dx, row - dy)``.
The corrected LR-HSI is read at ``(col + dx, row + dy)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
from scipy.optimize import nnls

from csakd_qgis.errors import InputError

#: Upsampling factor of the DFT refinement around the integer peak (precision 1/UPSAMPLE px).
UPSAMPLE = 50
#: A band's shift counts when its correlation peak is this many times the next-highest peak.
MIN_PEAK_RATIO = 2.0
#: Width (cycles per LR pixel) of the Gaussian weight on the normalised cross-power spectrum.
LOWPASS_SIGMA = 0.15
#: Peak ratios are capped here (an exact copy would give an unbounded ratio).
MAX_PEAK_RATIO = 1000.0
#: Smallest image side, in LR pixels, on which a shift is estimated.
MIN_SIZE = 8
#: Largest number of valid pixels used to fit the band mixing.
MAX_FIT_PIXELS = 4096


@dataclass(frozen=True)
class ShiftEstimate:
    """Result of :func:`estimate_shift`.

    Attributes
    ----------
    dx, dy:
        Median shift over the reliable bands, LR pixels (+x east, +y south);
        0 when no band is reliable.
    confidence:
        Median peak ratio (highest / next-highest correlation peak) of all
        bands; around 1 for unrelated images.
    reliable:
        True when at least half of the bands reach :data:`MIN_PEAK_RATIO`.
    per_band:
        ``(dx, dy, peak_ratio)`` of each band.
    message:
        One sentence for the user saying what was found.
    """

    dx: float
    dy: float
    confidence: float
    reliable: bool
    per_band: Tuple[Tuple[float, float, float], ...]
    message: str


def fit_band_mixing(hsi: np.ndarray, msi: np.ndarray, valid: Optional[np.ndarray] = None,
                    *, seed: int = 0) -> np.ndarray:
    """Fit each MSI band as a non-negative combination of HSI bands.

    Parameters
    ----------
    hsi:
        ``(C, h, w)`` LR-HSI, physical units; NaN allowed (bad bands are
        given weight 0 when they hold NaN at the sampled pixels).
    msi:
        ``(m, h, w)`` HR-MSI block-averaged to the same grid.
    valid:
        ``(h, w)`` bool, True where both are valid; None uses finite pixels.
    seed:
        Seed of the pixel subsample (at most :data:`MAX_FIT_PIXELS`).

    Returns
    -------
    numpy.ndarray
        ``(m, C)`` float64 non-negative weights with ``msi ~= weights @ hsi``.
    """
    if hsi.shape[1:] != msi.shape[1:]:
        raise InputError(f"LR-HSI sample {hsi.shape} and HR-MSI sample {msi.shape} differ in size.")
    ok = np.isfinite(msi).all(axis=0)
    if valid is not None:
        ok &= valid
    usable = np.isfinite(hsi[:, ok]).all(axis=1) if ok.any() else np.zeros(hsi.shape[0], bool)
    ok &= np.isfinite(hsi[usable]).all(axis=0)
    if ok.sum() < 2 * msi.shape[0] or not usable.any():
        raise InputError("too few valid pixels in the overlap to relate the LR-HSI bands to the HR-MSI bands.")
    index = np.flatnonzero(ok.ravel())
    if index.size > MAX_FIT_PIXELS:
        index = np.random.default_rng(seed).choice(index, MAX_FIT_PIXELS, replace=False)
    a = hsi[usable].reshape(int(usable.sum()), -1)[:, index].T.astype(np.float64)
    weights = np.zeros((msi.shape[0], hsi.shape[0]))
    for k in range(msi.shape[0]):
        b = msi[k].ravel()[index].astype(np.float64)
        weights[k, usable], _ = nnls(a, b)
    return weights


def _prepare(image: np.ndarray, valid: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Zero-mean, masked, Hann-windowed copy of one band."""
    mean = float(image[valid].mean())
    return np.where(valid, image - mean, 0.0) * window


def _lowpass(h: int, w: int) -> np.ndarray:
    """Gaussian frequency weight that damps the aliased, noisy high frequencies of block-averaged images."""
    fy, fx = np.fft.fftfreq(h, d=1.0)[:, None], np.fft.fftfreq(w, d=1.0)[None, :]
    return np.exp(-(fx**2 + fy**2) / (2 * LOWPASS_SIGMA**2))


def _refine(cross: np.ndarray, peak: Tuple[int, int]) -> Tuple[float, float]:
    """Sub-pixel peak of ``ifft2(cross)`` by a DFT upsampled around ``peak`` (Guizar-Sicairos 2008)."""
    h, w = cross.shape
    offsets = np.arange(-1.5, 1.5 + 0.5 / UPSAMPLE, 1.0 / UPSAMPLE)
    rows, cols = peak[0] + offsets, peak[1] + offsets
    ky, kx = np.fft.fftfreq(h, d=1.0), np.fft.fftfreq(w, d=1.0)
    left = np.exp(2j * np.pi * rows[:, None] * ky[None, :])
    right = np.exp(2j * np.pi * kx[:, None] * cols[None, :])
    surface = np.real(left @ cross @ right)
    r, c = np.unravel_index(int(np.argmax(surface)), surface.shape)
    return float(rows[r]), float(cols[c])


def _band_shift(lr: np.ndarray, msi: np.ndarray, valid: np.ndarray, window: np.ndarray) -> Tuple[float, float, float]:
    h, w = lr.shape
    f_lr = np.fft.fft2(_prepare(lr, valid, window))
    f_msi = np.fft.fft2(_prepare(msi, valid, window))
    cross = f_lr * np.conj(f_msi)
    cross /= np.maximum(np.abs(cross), 1e-12 * np.abs(cross).max() + 1e-30)
    # the peak ratio is measured on the sharp, whitened surface; the sub-pixel
    # position on the low-passed one, whose smooth peak the DFT samples well
    surface = np.real(np.fft.ifft2(cross))
    peak = np.unravel_index(int(np.argmax(surface)), surface.shape)
    top = surface[peak]
    masked = surface.copy()
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            masked[(peak[0] + dr) % h, (peak[1] + dc) % w] = -np.inf
    ratio = float(min(top / max(masked.max(), 1e-12), MAX_PEAK_RATIO))
    row, col = _refine(cross * _lowpass(h, w), (int(peak[0]), int(peak[1])))
    # wrap to the signed range (-size/2, size/2]
    row = row - h if row > h / 2 else row
    col = col - w if col > w / 2 else col
    return col, row, ratio


def estimate_shift(lr_proj: np.ndarray, msi_lr: np.ndarray, valid: Optional[np.ndarray] = None) -> ShiftEstimate:
    """Estimate the sub-pixel shift of ``lr_proj`` relative to ``msi_lr``.

    Parameters
    ----------
    lr_proj:
        ``(m, h, w)`` LR-HSI projected onto the MSI bands, any units.
    msi_lr:
        ``(m, h, w)`` HR-MSI block-averaged to the LR grid.
    valid:
        ``(h, w)`` bool, True where both are valid; None uses finite pixels.

    Returns
    -------
    ShiftEstimate
        Per band: phase correlation (zero-mean, Hann-windowed, normalised
        cross-power spectrum), integer peak refined by an upsampled DFT; the
        bands are combined by the median of the reliable ones.

    Raises
    ------
    InputError
        When the images differ in shape, are smaller than :data:`MIN_SIZE`
        or have too few valid pixels.
    """
    lr_proj, msi_lr = np.asarray(lr_proj, np.float64), np.asarray(msi_lr, np.float64)
    if lr_proj.shape != msi_lr.shape or lr_proj.ndim != 3:
        raise InputError(f"shift estimation needs two (m, h, w) arrays of one shape, got {lr_proj.shape} "
                         f"and {msi_lr.shape}.")
    m, h, w = lr_proj.shape
    if min(h, w) < MIN_SIZE:
        raise InputError(f"the overlap ({w} x {h} LR pixels) is too small to estimate a shift (needs "
                         f"{MIN_SIZE} x {MIN_SIZE}).")
    ok = np.isfinite(lr_proj).all(axis=0) & np.isfinite(msi_lr).all(axis=0)
    if valid is not None:
        ok &= valid
    if ok.mean() < 0.25:
        raise InputError(f"only {ok.mean():.0%} of the overlap is valid in both images; cannot estimate a shift.")
    window = np.outer(np.hanning(h), np.hanning(w))
    per_band = tuple(_band_shift(np.where(ok, lr_proj[k], 0.0), np.where(ok, msi_lr[k], 0.0), ok, window)
                     for k in range(m))
    ratios = np.array([b[2] for b in per_band])
    good = ratios >= MIN_PEAK_RATIO
    confidence = float(np.median(ratios))
    reliable = bool(good.sum() * 2 >= m)
    if reliable:
        dx = float(np.median([b[0] for b, g in zip(per_band, good) if g]))
        dy = float(np.median([b[1] for b, g in zip(per_band, good) if g]))
        message = (f"LR-HSI shifted by dx = {dx:+.2f}, dy = {dy:+.2f} LR pixels relative to the HR-MSI "
                   f"(peak ratio {confidence:.1f}).")
    else:
        dx = dy = 0.0
        message = (f"correlation between the LR-HSI and the HR-MSI is too weak (peak ratio {confidence:.1f} < "
                   f"{MIN_PEAK_RATIO}); no shift correction applied.")
    return ShiftEstimate(dx, dy, confidence, reliable, per_band, message)
