"""The LR sensor's PSF width and sub-pixel offset, estimated from an LR-HSI / HR-MSI pair.

Conventions
-----------
Grids and the margin
    The LR-HSI is ``(C, h, w)``.  The HR-MSI is ``(m, h s + 2 M, w s + 2 M)``
    for the integer scale ``s``: the ground of the LR footprint plus a margin
    of ``M >= 0`` HR pixels on every side (the estimators infer ``M`` from the
    two shapes).  LR pixel ``i`` (per axis) covers HR pixels
    ``[M + i s, M + (i + 1) s)`` of the MSI array and its centre lies at HR
    coordinate ``M + (i + 0.5) s - 0.5``: the grid of
    :mod:`csakd_qgis.simulation.degradation`, moved in by the margin.  A margin of
    ``3 sigma + 1 + s |offset|`` HR pixels lets every LR pixel be blurred
    without reaching outside the MSI.
Offset
    ``(dx, dy)`` in LR pixels, ``+x`` east (columns), ``+y`` south (rows), as
    in :mod:`csakd_qgis.geo.shift`: the LR-HSI at LR pixel ``(col, row)`` sees
    the ground the MSI shows at ``(col - dx, row - dy)``, so LR column ``j``
    samples the MSI at HR column ``M + (j - dx + 0.5) s - 0.5`` (rows alike).
PSF
    A Gaussian with standard deviation ``sigma`` HR pixels, evaluated at the
    HR pixel centres around the (possibly fractional) sampling position and
    truncated to the HR pixels nearer than ``3 sigma + 1``: at zero offset
    these are the taps of :func:`csakd_qgis.simulation.degradation.gaussian_psf`, so
    :func:`blur_sample` then equals ``blur_decimate`` with that kernel.  For
    an even scale the centre lies between HR pixels and the taps sit at
    half-pixel positions.  ``sigma = 0`` is the box: the mean over the
    ``s × s`` HR pixels of the footprint, the two edge pixels weighted by
    their overlap when the offset is fractional.
Missing pixels
    HR pixels outside the MSI array carry no weight: the weights of the
    present pixels are renormalised (as ``blur_decimate`` does at borders).
    A sample to which a NaN MSI pixel contributes any weight is NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage, optimize

from csakd_qgis.errors import InputError
from csakd_qgis.estimation.common import as_image, good_bands
from csakd_qgis.estimation.noise import estimate_noise

#: Step (LR pixels) of the coarse grid of offsets searched before the refinement.
OFFSET_STEP = 0.25
#: Number of non-zero sigmas on the coarse grid (plus sigma = 0, the box).
SIGMA_STEPS = 24
#: Smallest Gaussian sigma (HR pixels) the refinement tries; below it the kernel is a single pixel.
MIN_GAUSSIAN_SIGMA = 0.05
#: Relative ridge penalty (fraction of the largest squared singular value of the centred LR-HSI).
RIDGE = 1e-6
#: The ridge penalty is at least the squared singular value of this rank fraction of the pixel count,
#: so a fit has at most about ``N / DOF_DIVISOR`` effective parameters and cannot explain noise.
DOF_DIVISOR = 5
#: The box is kept when its residual exceeds the best Gaussian's by less than this fraction of the
#: Gaussian's uncorrected residual (for ``s = 2`` a narrow Gaussian and the box are nearly the same kernel).
BOX_TOLERANCE = 0.01
#: The regression uses at most this many principal components of the LR-HSI (the cost of a candidate
#: is proportional to it; hyperspectral scenes are low-rank, see :func:`~.noise.estimate_subspace_rank`).
MAX_COMPONENTS = 64
#: Fewer usable LR pixels than this make the estimate unreliable.
MIN_PIXELS = 64
#: A best residual above this (fraction of the MSI variance unexplained) makes the estimate unreliable.
MAX_RESIDUAL = 0.1
#: The residual half an LR pixel away from the best offset must exceed the best one by this factor.
MIN_CONTRAST = 2.0


@dataclass(frozen=True)
class PsfEstimate:
    """Result of :func:`estimate_psf`.

    Attributes
    ----------
    sigma:
        Gaussian PSF standard deviation in HR pixels; 0 means the box.
    offset:
        ``(dx, dy)`` misregistration in LR pixels (+x east, +y south).
    residual:
        Mean over the MSI bands of the fraction of the blurred-sampled MSI
        band's variance that a ridge regression on the LR-HSI bands leaves
        unexplained, at the best ``(sigma, offset)`` (0 = perfect fit).
    contrast:
        Residual half an LR pixel away from the best offset divided by the
        best residual: how sharply the data pins the offset down.
    pixels:
        Number of LR pixels used in the fit.
    reliable:
        False when a message below says why the estimate should not be trusted.
    messages:
        Sentences for the user about the fit.
    """

    sigma: float
    offset: Tuple[float, float]
    residual: float
    contrast: float
    pixels: int
    reliable: bool
    messages: Tuple[str, ...]


def _check_scale(scale: int) -> int:
    if int(scale) != scale or scale < 1:
        raise InputError(f"the scale (resolution ratio) must be a positive integer, got {scale!r}")
    return int(scale)


def infer_margin(lr_shape: Sequence[int], msi_shape: Sequence[int], scale: int) -> int:
    """Margin ``M`` (HR pixels) from ``(C, h, w)`` and ``(m, h s + 2 M, w s + 2 M)``; :class:`InputError` otherwise."""
    scale = _check_scale(scale)
    h, w = lr_shape[-2:]
    extra = (msi_shape[-2] - h * scale, msi_shape[-1] - w * scale)
    if extra[0] != extra[1] or extra[0] < 0 or extra[0] % 2:
        raise InputError(f"the MSI ({msi_shape[-2]}x{msi_shape[-1]} px) must cover the LR-HSI ({h}x{w} px) at "
                         f"scale {scale} plus the same even number of HR pixels in both axes "
                         f"({h * scale}+2M x {w * scale}+2M)")
    return extra[0] // 2


def _taps(centre: float, scale: int, sigma: float) -> Tuple[int, np.ndarray]:
    """HR index of the first tap and the tap weights (sum 1) of a sample centred at HR coordinate ``centre``."""
    if sigma == 0:
        lo, hi = centre - scale / 2.0, centre + scale / 2.0
        index = np.arange(int(np.floor(lo + 0.5)), int(np.ceil(hi - 0.5)) + 1)
        weights = np.clip(np.minimum(index + 0.5, hi) - np.maximum(index - 0.5, lo), 0.0, None)
    else:
        reach = 3.0 * sigma + 1.0
        index = np.arange(int(np.floor(centre - reach)) + 1, int(np.ceil(centre + reach)))
        weights = np.exp(-0.5 * ((index - centre) / sigma) ** 2)
    return int(index[0]), weights / weights.sum()


def _sample_axis(x: np.ndarray, first: int, weights: np.ndarray, scale: int, count: int, axis: int) -> np.ndarray:
    """``out[i] = Σ_p weights[p] x[first + i scale + p]`` along ``axis``, zero outside ``x``."""
    length = x.shape[axis]
    last = first + (count - 1) * scale + weights.size - 1
    lo, hi = max(0, -first), max(0, last - length + 1)
    if lo or hi:
        pad = [(0, 0)] * x.ndim
        pad[axis] = (lo, hi)
        x = np.pad(x, pad)
    index = [slice(None)] * x.ndim
    out = np.zeros(1)
    for p, weight in enumerate(weights):
        start = first + lo + p
        index[axis] = slice(start, start + (count - 1) * scale + 1, scale)
        out = out + weight * x[tuple(index)]
    return out


def _inside_weight(first: int, weights: np.ndarray, scale: int, count: int, length: int) -> np.ndarray:
    """``(count,)`` sum of the weights of each sample's taps that fall inside ``[0, length)``."""
    index = first + scale * np.arange(count)[:, None] + np.arange(weights.size)[None, :]
    return np.where((index >= 0) & (index < length), weights, 0.0).sum(axis=1)


def blur_sample(msi: np.ndarray, scale: int, sigma: float, offset: Tuple[float, float] = (0.0, 0.0),
                *, margin: int = 0) -> np.ndarray:
    """Blur the HR-MSI with the Gaussian PSF and sample it at the LR pixel centres moved by ``offset``.

    Parameters
    ----------
    msi:
        ``(m, h s + 2 margin, w s + 2 margin)`` HR image, any units, NaN = nodata.
    scale:
        Integer resolution ratio ``s``.
    sigma:
        Gaussian standard deviation in HR pixels; 0 = the ``s × s`` box.
    offset:
        ``(dx, dy)`` in LR pixels (+x east, +y south), the LR-HSI's
        misregistration as defined in the module notes.
    margin:
        HR pixels around the LR footprint on every side.

    Returns
    -------
    numpy.ndarray
        ``(m, h, w)`` float64 in the units of ``msi``: what the LR sensor
        would record in the MSI's bands (see the module notes for the kernel,
        borders and NaN).

    Raises
    ------
    InputError
        For a bad scale, sigma or margin, or a size that does not fit them.
    """
    scale = _check_scale(scale)
    x = as_image(msi, "the HR-MSI")
    if not np.isfinite(sigma) or sigma < 0:
        raise InputError(f"the PSF sigma must be a non-negative number of HR pixels, got {sigma}")
    if int(margin) != margin or margin < 0:
        raise InputError(f"the margin must be a non-negative whole number of HR pixels, got {margin!r}")
    _, height, width = x.shape
    inner = (height - 2 * margin, width - 2 * margin)
    if min(inner) < scale or inner[0] % scale or inner[1] % scale:
        raise InputError(f"the MSI ({height}x{width} px) minus a margin of {margin} px on each side must be a "
                         f"positive multiple of the scale {scale}")
    rows, cols = inner[0] // scale, inner[1] // scale
    dx, dy = float(offset[0]), float(offset[1])
    first_y, wy = _taps(margin + (0.5 - dy) * scale - 0.5, scale, sigma)
    first_x, wx = _taps(margin + (0.5 - dx) * scale - 0.5, scale, sigma)
    missing = ~np.isfinite(x)
    any_missing = bool(missing.any())

    def sample(image: np.ndarray) -> np.ndarray:
        return _sample_axis(_sample_axis(image, first_y, wy, scale, rows, -2), first_x, wx, scale, cols, -1)

    num = sample(np.where(missing, 0.0, x) if any_missing else x)
    den = np.outer(_inside_weight(first_y, wy, scale, rows, height), _inside_weight(first_x, wx, scale, cols, width))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    if any_missing:
        out[sample(missing.astype(np.float64)) > 1e-9 * den] = np.nan
    out[:, ~(den > 0)] = np.nan
    return out


class _Objective:
    """Residual of the ridge regression of the blurred-sampled MSI on the LR-HSI, as a function of the PSF.

    The LR-HSI pixels are fixed, so its SVD is computed once; each candidate
    then costs one blur and one ``(m, N) @ (N, r)`` product.  White MSI
    noise of variance ``noise_var`` (HR pixels) leaves about
    ``noise_var · Σ w² · (N - 1 - dof)`` in the residual (``w``: the
    kernel's weights, ``dof``: the regression's effective parameters);
    that expected noise energy is subtracted, as a wider kernel averages
    more noise away and would otherwise be favoured.
    """

    def __init__(self, hsi: np.ndarray, msi: np.ndarray, scale: int, margin: int, used: np.ndarray) -> None:
        self.msi, self.scale, self.margin, self.used = msi, scale, margin, used
        pixels = hsi[:, used].T
        pixels = pixels - pixels.mean(axis=0)
        u, d, _ = np.linalg.svd(pixels, full_matrices=False)
        penalty = RIDGE * d[0] ** 2 if d.size else 0.0
        limit = pixels.shape[0] // DOF_DIVISOR
        if limit < d.size:
            penalty = max(penalty, d[limit] ** 2)
        fraction = d**2 / (d**2 + penalty) if penalty > 0 else np.ones_like(d)
        keep = (fraction > 1e-9) & (np.arange(d.size) < MAX_COMPONENTS)
        self.u = np.ascontiguousarray(u[:, keep])
        self.explained = 2.0 * fraction[keep] - fraction[keep] ** 2
        self.left = max(pixels.shape[0] - 1.0 - float(self.explained.sum()), 1.0)
        self.noise_var = np.zeros(msi.shape[0])

    def parts(self, sigma: float, offset: Tuple[float, float]) -> Tuple[np.ndarray, np.ndarray, float]:
        """``(m,)`` unexplained and total energy of each band, and the residual noise energy per unit variance."""
        target = blur_sample(self.msi, self.scale, sigma, offset, margin=self.margin)[:, self.used]
        target -= target.mean(axis=1, keepdims=True)
        total = (target**2).sum(axis=1)
        unexplained = total - (target @ self.u) ** 2 @ self.explained
        energy = 1.0
        for shift in (offset[1], offset[0]):
            weights = _taps(self.margin + (0.5 - shift) * self.scale - 0.5, self.scale, sigma)[1]
            energy *= float((weights**2).sum())
        return unexplained, total, energy * self.left

    def bands(self, sigma: float, offset: Tuple[float, float], corrected: bool = True) -> np.ndarray:
        """``(m,)`` fraction of each MSI band's variance left unexplained (NaN for a constant band).

        ``corrected``: less the expected MSI noise energy (class notes).
        """
        unexplained, total, unit = self.parts(sigma, offset)
        if corrected:
            unexplained = unexplained - self.noise_var * unit
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, unexplained / total, np.nan)

    def noise_bound(self, sigma: float, offset: Tuple[float, float]) -> np.ndarray:
        """``(m,)`` largest MSI noise variance the residual at this candidate leaves room for."""
        unexplained, _, unit = self.parts(sigma, offset)
        return np.clip(unexplained, 0.0, None) / unit

    def __call__(self, sigma: float, offset: Tuple[float, float], corrected: bool = True) -> float:
        return float(np.nanmean(self.bands(sigma, offset, corrected)))


def _crop_centre(lr: np.ndarray, msi: np.ndarray, scale: int, margin: int,
                 max_pixels: int) -> Tuple[np.ndarray, np.ndarray, int]:
    """A central LR window of at most ``max_pixels`` pixels, its MSI with as much margin as available."""
    _, h, w = lr.shape
    if h * w <= max_pixels:
        return lr, msi, margin
    rows = max(1, min(h, int(round(np.sqrt(max_pixels * h / w)))))
    cols = max(1, min(w, max_pixels // rows))
    r0, c0 = (h - rows) // 2, (w - cols) // 2
    extra = min(r0, c0, h - r0 - rows, w - c0 - cols)
    hr = msi[:, (r0 - extra) * scale:(r0 + rows + extra) * scale + 2 * margin,
             (c0 - extra) * scale:(c0 + cols + extra) * scale + 2 * margin]
    return lr[:, r0:r0 + rows, c0:c0 + cols], hr, margin + extra * scale


def _usable_pixels(lr: np.ndarray, msi: np.ndarray, scale: int, margin: int, reach: float, max_offset: float,
                   messages: list) -> np.ndarray:
    """``(h, w)`` mask of the LR pixels to fit: finite, no NaN MSI pixel within reach, away from the MSI border.

    When the margin leaves fewer than :data:`MIN_PIXELS` pixels away from
    the border, pixels nearer are used (with a message), except the
    ``ceil(max_offset)`` outermost rows and columns, whose offset box could
    lie wholly outside the MSI.
    """
    _, h, w = lr.shape
    used = np.isfinite(lr).all(axis=0)
    nan_hr = ~np.isfinite(msi).all(axis=0)
    if nan_hr.any():
        size = 2 * int(np.ceil(reach)) + 1
        grown = ndimage.maximum_filter(nan_hr, size=size, mode="constant", cval=False)
        inner = grown[margin:margin + h * scale, margin:margin + w * scale]
        used &= ~inner.reshape(h, scale, w, scale).any(axis=(1, 3))
    border = max(0, int(np.ceil((reach - margin - scale / 2.0) / scale)))
    interior = np.zeros_like(used)
    interior[border:h - border, border:w - border] = True
    if (used & interior).sum() >= MIN_PIXELS:
        return used & interior
    messages.append(f"the MSI margin ({margin} HR px) is narrower than the blur's reach ({reach:.1f} HR px): "
                    f"border pixels were used; pass an MSI with a margin of at least {int(np.ceil(reach))} px")
    border = min(border, int(np.ceil(max_offset)))
    interior[:] = False
    interior[border:h - border, border:w - border] = True
    return used & interior


def estimate_psf(lr: np.ndarray, msi: np.ndarray, scale: int, *, good: Optional[Sequence[bool]] = None,
                 sigma_max: Optional[float] = None, max_offset: float = 1.0,
                 max_pixels: int = 4096) -> PsfEstimate:
    """Estimate the LR sensor's Gaussian PSF width and sub-pixel offset relative to the HR-MSI.

    For each candidate ``(sigma, offset)`` the MSI is blurred and sampled
    (:func:`blur_sample`) and each of its bands is regressed on the LR-HSI
    bands by ridge regression (with intercept; the penalty keeps the fit to
    about ``N / 5`` effective parameters, so more bands than pixels is
    fine).  The candidate leaving the smallest unexplained variance wins.
    Search: offsets on a grid of :data:`OFFSET_STEP` LR px at
    ``sigma = s / 2``; Gaussian sigmas on a grid of :data:`SIGMA_STEPS`
    values up to ``sigma_max`` at that offset; then Nelder-Mead over
    ``(sigma, dx, dy)`` from the best of them and over ``(dx, dy)`` for
    the box (``sigma = 0``), keeping the box unless the Gaussian is better by more than
    :data:`BOX_TOLERANCE`.  From the sigma grid on, the residual is
    corrected for the MSI's noise (estimated by spatial differences,
    capped by what the residuals leave room for, so a noise-free pair is
    not corrected).

    Parameters
    ----------
    lr:
        ``(C, h, w)`` LR-HSI, any units, NaN = invalid pixel.
    msi:
        ``(m, h s + 2 M, w s + 2 M)`` HR-MSI over the same ground plus a
        margin of ``M`` HR pixels (module notes), NaN = invalid.
    scale:
        Integer resolution ratio ``s``.
    good:
        ``(C,)`` booleans, False = bad band (ignored); default: the bands
        finite on at least half of the pixels.
    sigma_max:
        Largest sigma searched, HR pixels (default ``1.5 s``).
    max_offset:
        Largest ``|dx|`` and ``|dy|`` searched, LR pixels.
    max_pixels:
        A central window of at most this many LR pixels is used.

    Returns
    -------
    PsfEstimate
        Flagged unreliable (with a message) for fewer than
        :data:`MIN_PIXELS` usable pixels, a residual above
        :data:`MAX_RESIDUAL`, a flat scene (contrast under
        :data:`MIN_CONTRAST`) or an estimate on the search bounds.

    Raises
    ------
    InputError
        For inconsistent shapes, bad parameters, or no usable pixel.
    """
    scale = _check_scale(scale)
    hsi = as_image(lr, "the LR-HSI")
    hr = as_image(msi, "the HR-MSI")
    margin = infer_margin(hsi.shape, hr.shape, scale)
    sigma_max = 1.5 * scale if sigma_max is None else float(sigma_max)
    if not (np.isfinite(sigma_max) and sigma_max > MIN_GAUSSIAN_SIGMA):
        raise InputError(f"sigma_max must be a number of HR pixels above {MIN_GAUSSIAN_SIGMA}, got {sigma_max}")
    if not (np.isfinite(max_offset) and max_offset >= 0):
        raise InputError(f"max_offset must be a non-negative number of LR pixels, got {max_offset}")
    hsi = hsi[good_bands(hsi, good)]
    hsi, hr, margin = _crop_centre(hsi, hr, scale, margin, int(max_pixels))
    messages: list = []
    reach = 3.0 * sigma_max + 1.0 + scale * (max_offset + 0.5)
    used = _usable_pixels(hsi, hr, scale, margin, reach, max_offset, messages)
    count = int(used.sum())
    if count < 3:
        raise InputError(f"only {count} LR pixels are valid in both images: at least 3 are needed "
                         f"({MIN_PIXELS} for a reliable estimate)")
    objective = _Objective(hsi, hr, scale, margin, used)

    steps = np.arange(-max_offset, max_offset + 1e-9, OFFSET_STEP) if max_offset > 0 else np.zeros(1)
    start_sigma = min(0.5 * scale, sigma_max)
    grid = [(objective(start_sigma, (dx, dy)), dx, dy) for dy in steps for dx in steps]
    _, dx0, dy0 = min(grid)
    sigmas = np.linspace(sigma_max / SIGMA_STEPS, sigma_max, SIGMA_STEPS)
    bound = np.min([objective.noise_bound(s, (dx0, dy0)) for s in sigmas], axis=0)
    objective.noise_var = np.minimum(np.nan_to_num(estimate_noise(hr, method="spatial")) ** 2, bound)
    sigma0 = min((objective(s, (dx0, dy0)), s) for s in sigmas)[1]
    box_bounds = [(-max_offset, max_offset)] * 2
    options = {"xatol": 1e-3, "fatol": 1e-12, "maxiter": 400}
    gauss = optimize.minimize(lambda p: objective(p[0], (p[1], p[2])), np.array([sigma0, dx0, dy0]),
                              method="Nelder-Mead", bounds=[(MIN_GAUSSIAN_SIGMA, sigma_max)] + box_bounds,
                              options=dict(options, initial_simplex=_simplex([sigma0, dx0, dy0],
                                                                             [sigma_max / SIGMA_STEPS, 0.1, 0.1])))
    box = optimize.minimize(lambda p: objective(0.0, (p[0], p[1])), np.array([dx0, dy0]), method="Nelder-Mead",
                            bounds=box_bounds, options=dict(options, initial_simplex=_simplex([dx0, dy0], [0.1, 0.1])))
    if box.fun - gauss.fun <= BOX_TOLERANCE * objective(gauss.x[0], (gauss.x[1], gauss.x[2]), corrected=False):
        sigma, dx, dy = 0.0, float(box.x[0]), float(box.x[1])
    else:
        sigma, dx, dy = float(gauss.x[0]), float(gauss.x[1]), float(gauss.x[2])
    residual = objective(sigma, (dx, dy), corrected=False)
    away = np.mean([objective(sigma, (dx + a, dy + b), corrected=False)
                    for a, b in ((0.5, 0), (-0.5, 0), (0, 0.5), (0, -0.5))])
    contrast = float(away / residual) if residual > 0 else float("inf")
    reliable = _judge(count, residual, contrast, sigma, (dx, dy), sigma_max, max_offset, messages)
    return PsfEstimate(sigma, (dx, dy), residual, contrast, count, reliable, tuple(messages))


def _simplex(centre: Sequence[float], steps: Sequence[float]) -> np.ndarray:
    """Nelder-Mead start: ``centre`` and one vertex moved by ``steps[k]`` along each axis ``k``."""
    vertices = np.tile(np.asarray(centre, dtype=np.float64), (len(centre) + 1, 1))
    vertices[1:] += np.diag(steps)
    return vertices


def _judge(count: int, residual: float, contrast: float, sigma: float, offset: Tuple[float, float],
           sigma_max: float, max_offset: float, messages: list) -> bool:
    """Append a message for each reason to distrust the estimate; True when there is none."""
    before = len(messages)
    if count < MIN_PIXELS:
        messages.append(f"only {count} LR pixels could be used (at least {MIN_PIXELS} are needed for a reliable PSF)")
    if not residual <= MAX_RESIDUAL:
        messages.append(f"the LR-HSI explains only {100 * (1 - residual):.0f} % of the MSI's variance: the images may "
                        f"show different scenes or dates, or the PSF is not Gaussian")
    if contrast < MIN_CONTRAST:
        messages.append(f"the scene is too flat to locate the PSF: moving it half an LR pixel raises the residual "
                        f"only {contrast:.2f}-fold")
    if sigma > 0.98 * sigma_max or max(abs(offset[0]), abs(offset[1])) > max_offset - 0.02:
        messages.append(f"the estimate (sigma {sigma:.2f} HR px, offset {offset[0]:+.2f}, {offset[1]:+.2f} LR px) "
                        f"lies on the search bounds; widen sigma_max or max_offset")
    return len(messages) == before
