"""Per-band noise level and signal-subspace rank of an image, from the data alone.

Noise
-----
``estimate_noise`` returns the standard deviation of the white noise of
each band, in the units of the image.

* Spectral regression (many bands, HySime's noise step): each band is
  regressed on the other good bands over the valid pixels; the residual
  variance, divided by the residual degrees of freedom, is the noise
  variance.  With ``N`` pixels and ``C`` good bands it regresses on all
  others when ``N >= 3 C`` (through the inverse covariance:
  ``1 / (Σ⁻¹)_bb`` is band ``b``'s residual variance), otherwise on the
  :data:`NEIGHBOURS` nearest good bands on each side.
* Spatial differences (few bands, e.g. an MSI): the image is filtered with
  the 3 × 3 Laplacian ``[[1, -2, 1], [-2, 4, -2], [1, -2, 1]]``, which
  cancels planes and leaves white noise with 6 times its standard
  deviation; a median absolute deviation ignores the edges.  Texture at
  the pixel scale counts as noise, so this is an upper bound on textured
  scenes.

Rank
----
``estimate_subspace_rank`` whitens the bands by the noise level and counts
the eigenvalues ``λ`` of the whitened covariance (noise alone gives
eigenvalues near 1) that are signal, both:

* above the largest eigenvalue pure noise reaches with ``N`` samples in
  ``C`` dimensions, the Marchenko-Pastur edge ``(1 + sqrt(C / N))²``, times
  ``1 + EDGE_MARGIN``; this keeps the count stable with few pixels, where
  HySime's unregularised criterion swings;
* above 2, i.e. the direction carries more signal than noise (HySime's
  criterion: projecting onto it lowers the mean squared error);

and clamps the count to ``[min_rank, max_rank]``.
"""

from __future__ import annotations

from typing import Optional, Sequence, cast

import numpy as np
from scipy import ndimage

from csakd_qgis.errors import InputError
from csakd_qgis.estimation.common import as_image, good_bands, pixel_matrix

#: Spectral regression needs at least this many good bands; fewer use spatial differences.
MIN_SPECTRAL_BANDS = 8
#: Good bands on each side a band is regressed on when the pixels are too few for all of them.
NEIGHBOURS = 10
#: Pixels needed per regressor to regress on all other bands at once.
PIXELS_PER_BAND = 3
#: Relative margin above the Marchenko-Pastur edge for an eigenvalue to count as signal.
EDGE_MARGIN = 0.2
#: Noise standard deviations are floored at this fraction of the band's standard deviation
#: (a noise-free band would otherwise get infinite weight after whitening).
NOISE_FLOOR = 1e-6

_LAPLACIAN = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])
#: Median absolute deviation of a unit normal variable.
_MAD_NORMAL = 0.6744897501960817


def _spatial_noise(x: np.ndarray) -> np.ndarray:
    """``(C,)`` noise standard deviation of each band from the median absolute Laplacian."""
    out = np.full(x.shape[0], np.nan)
    for b, band in enumerate(x):
        filtered = ndimage.correlate(np.nan_to_num(band), _LAPLACIAN, mode="constant")[1:-1, 1:-1]
        finite = ndimage.minimum_filter(np.isfinite(band), size=3, mode="constant")[1:-1, 1:-1]
        values = filtered[finite]
        if values.size:
            out[b] = np.median(np.abs(values - np.median(values))) / _MAD_NORMAL / 6.0
    return out


def _spectral_noise(pixels: np.ndarray) -> np.ndarray:
    """``(C,)`` residual standard deviation of each column regressed on the others (see the module notes)."""
    count, bands = pixels.shape
    centred = pixels - pixels.mean(axis=0)
    if count >= PIXELS_PER_BAND * bands:
        covariance = centred.T @ centred
        precision_diag = np.diag(np.linalg.pinv(covariance, hermitian=True))
        with np.errstate(divide="ignore"):
            rss = 1.0 / precision_diag
        return np.sqrt(np.clip(rss, 0.0, None) / (count - bands))
    out = np.empty(bands)
    reach = min(NEIGHBOURS, max(1, (count - 2) // (2 * PIXELS_PER_BAND)))
    for b in range(bands):
        others = [k for k in range(max(0, b - reach), min(bands, b + reach + 1)) if k != b]
        design = centred[:, others]
        coef, *_ = np.linalg.lstsq(design, centred[:, b], rcond=None)
        band_rss = float(((centred[:, b] - design @ coef) ** 2).sum())
        out[b] = np.sqrt(band_rss / max(count - len(others) - 1, 1))
    return out


def estimate_noise(image: np.ndarray, *, good: Optional[Sequence[bool]] = None, method: str = "auto") -> np.ndarray:
    """Per-band white-noise standard deviation of ``image``, in its units.

    Parameters
    ----------
    image:
        ``(C, h, w)`` image, NaN = invalid.
    good:
        ``(C,)`` booleans, False = bad band (NaN in the result); default:
        the bands finite on at least half of the pixels.
    method:
        ``"spectral"``, ``"spatial"`` or ``"auto"`` (spectral with at least
        :data:`MIN_SPECTRAL_BANDS` good bands and 8 valid pixels, else
        spatial); see the module notes.

    Returns
    -------
    numpy.ndarray
        ``(C,)`` float64, NaN for bad bands.

    Raises
    ------
    InputError
        For an unknown method or too few valid pixels.
    """
    x = as_image(image, "the image")
    if method not in ("auto", "spectral", "spatial"):
        raise InputError(f"the noise method must be 'auto', 'spectral' or 'spatial', got {method!r}")
    mask = good_bands(x, good)
    pixels, _ = pixel_matrix(x, mask)
    if method == "auto":
        enough = mask.sum() >= MIN_SPECTRAL_BANDS and pixels.shape[0] >= 2 * PIXELS_PER_BAND + 2
        method = "spectral" if enough else "spatial"
    out = np.full(x.shape[0], np.nan)
    if method == "spectral":
        if pixels.shape[0] < 2 * PIXELS_PER_BAND + 2 or mask.sum() < 2:
            raise InputError(f"{pixels.shape[0]} valid pixels and {int(mask.sum())} good bands are too few "
                             f"for the spectral noise estimate")
        out[mask] = _spectral_noise(pixels)
    else:
        if min(x.shape[1:]) < 3:
            raise InputError(f"the spatial noise estimate needs at least 3x3 pixels, got {x.shape[1]}x{x.shape[2]}")
        out[mask] = _spatial_noise(x[mask])
    return out


def estimate_subspace_rank(image: np.ndarray, noise_std: Optional[np.ndarray] = None, *,
                           good: Optional[Sequence[bool]] = None, min_rank: int = 1,
                           max_rank: int = 30) -> int:
    """Dimension of the signal subspace of ``image`` (rule in the module notes).

    Parameters
    ----------
    image:
        ``(C, h, w)`` image, NaN = invalid.
    noise_std:
        ``(C,)`` noise standard deviation per band, image units (default:
        :func:`estimate_noise`).
    good:
        ``(C,)`` booleans, False = bad band (ignored).
    min_rank, max_rank:
        Bounds of the result; ``max_rank`` is also capped at the number of
        good bands.

    Returns
    -------
    int
        Number of principal directions that carry signal, in ``[min_rank, max_rank]``.

    Raises
    ------
    InputError
        For bad bounds, a noise vector of the wrong length, or fewer than 2 valid pixels.
    """
    x = as_image(image, "the image")
    if not 1 <= min_rank <= max_rank:
        raise InputError(f"the rank bounds must satisfy 1 <= min_rank <= max_rank, got {min_rank}, {max_rank}")
    mask = good_bands(x, good)
    pixels, _ = pixel_matrix(x, mask)
    count, bands = pixels.shape
    if count < 2:
        raise InputError(f"only {count} valid pixels: the rank needs at least 2")
    flags = cast(Sequence[bool], mask)  # the (C,) boolean array serves as the flags
    sigma = estimate_noise(x, good=flags) if noise_std is None else np.asarray(noise_std, dtype=np.float64)
    if sigma.shape != (x.shape[0],):
        raise InputError(f"the noise vector must have {x.shape[0]} entries, got shape {sigma.shape}")
    centred = pixels - pixels.mean(axis=0)
    spread = centred.std(axis=0)
    sigma = np.maximum(np.nan_to_num(sigma[mask]), NOISE_FLOOR * np.maximum(spread, 1e-300))
    whitened = centred / sigma
    eigen = np.linalg.svd(whitened, compute_uv=False) ** 2 / (count - 1)
    edge = (1.0 + np.sqrt(bands / count)) ** 2 * (1.0 + EDGE_MARGIN)
    rank = int(np.sum(eigen > max(edge, 2.0)))
    return int(np.clip(rank, min_rank, min(max_rank, bands)))
