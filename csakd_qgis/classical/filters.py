"""Separable resampling filters shared by the classical methods.

Grid convention (:mod:`csakd_qgis.simulation.degradation`): LR pixel ``i`` covers HR
pixels ``[i s, (i + 1) s)`` and its centre lies at HR coordinate
``(i + 0.5) s - 0.5``.

PSF-matched low-pass (:func:`blur_sample`)
    The HR image is correlated with the LR sensor's PSF and sampled at each
    LR pixel's centre, moved by ``offset``.  The PSF is a Gaussian of
    standard deviation ``sigma`` HR pixels, point-sampled on the HR grid and
    cut at the half-width of :func:`csakd_qgis.simulation.degradation.gaussian_psf`
    (``(k - 1) / 2`` with ``k = ceil(6 sigma) + 1`` made of the parity of
    the scale), so with a zero offset the taps are exactly that kernel's
    rows and a simulated LR-HSI is reproduced to rounding.  ``sigma = 0`` is
    the ``s x s`` box (block mean); with a fractional offset the box weights
    are the overlaps of each HR pixel with the shifted LR footprint.
    Weights falling outside the array (or on NaN) are dropped and the rest
    renormalised, as :func:`csakd_qgis.simulation.degradation.blur_decimate` does.
Offset
    ``offset = (dx, dy)`` in LR pixels is the misregistration of the LR-HSI
    with the sign of :func:`csakd_qgis.simulation.degradation.simulate_pair`'s
    ``shift``: the scene is moved ``dx`` LR pixels east and ``dy`` south
    before the LR sensor sees it, so LR pixel ``(i, j)`` samples the HR-MSI
    at ``((j + 0.5) s - 0.5 - dx s, (i + 0.5) s - 0.5 - dy s)`` (x, y).
Interpolation (:func:`upsample`)
    Integer-factor separable interpolation by one polyphase filter per
    output phase: HR pixel ``u = q s + r`` lies at LR coordinate
    ``q + (r + 0.5) / s - 0.5`` and gets ``sum_t K(phase - t) LR[q + t]``
    with the weights normalised to sum 1 and the LR edges replicated.
    Kernels (:data:`KERNELS`): ``"bicubic"`` is Keys' cubic with
    ``a = -0.75`` (PyTorch's ``bicubic``, reproduced to rounding),
    ``"keys"`` the same with ``a = -0.5`` (third-order accurate),
    ``"lanczos3"`` the 3-lobe Lanczos window.

All functions take and return torch tensors ``(N, C, H, W)`` and keep their
floating dtype.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from csakd_qgis.errors import InputError

Offset = Tuple[float, float]


def _cubic(a: float) -> Callable[[np.ndarray], np.ndarray]:
    """Keys' cubic convolution kernel with parameter ``a`` (support ``|x| < 2``)."""

    def kernel(x: np.ndarray) -> np.ndarray:
        x = np.abs(x)
        near = ((a + 2) * x - (a + 3)) * x * x + 1
        far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
        return np.where(x <= 1, near, np.where(x < 2, far, 0.0))

    return kernel


def _lanczos(lobes: int) -> Callable[[np.ndarray], np.ndarray]:
    """Lanczos window with ``lobes`` lobes (support ``|x| < lobes``)."""

    def kernel(x: np.ndarray) -> np.ndarray:
        return np.where(np.abs(x) < lobes, np.sinc(x) * np.sinc(x / lobes), 0.0)

    return kernel


#: Interpolation kernels: name -> (kernel function, support radius in LR pixels).
KERNELS: Dict[str, Tuple[Callable[[np.ndarray], np.ndarray], int]] = {
    "bicubic": (_cubic(-0.75), 2),
    "keys": (_cubic(-0.5), 2),
    "lanczos3": (_lanczos(3), 3),
}


def check_scale(scale: int) -> int:
    """``scale`` as an int; :class:`InputError` unless it is a positive integer."""
    if int(scale) != scale or scale < 1:
        raise InputError(f"the scale must be a positive integer, got {scale!r}")
    return int(scale)


def check_sigma(sigma: float) -> float:
    """``sigma`` as a float; :class:`InputError` unless it is a finite number >= 0 (HR pixels)."""
    value = float(sigma)
    if not math.isfinite(value) or value < 0:
        raise InputError(f"the PSF sigma must be a finite number of HR pixels >= 0, got {sigma!r}")
    return value


def kernel_radius(kernel: str) -> int:
    """Support radius (LR pixels) of the interpolation ``kernel``; :class:`InputError` for unknown names."""
    if kernel not in KERNELS:
        raise InputError(f"unknown interpolation kernel {kernel!r}; use one of {', '.join(KERNELS)}")
    return KERNELS[kernel][1]


def psf_half_width(scale: int, sigma: float) -> float:
    """Half-width (HR pixels) of the PSF support: ``(k - 1) / 2`` of ``gaussian_psf``, ``s / 2`` for the box."""
    scale, sigma = check_scale(scale), check_sigma(sigma)
    if sigma == 0:
        return scale / 2.0
    k = int(np.ceil(6.0 * sigma)) + 1
    if k % 2 != scale % 2:
        k += 1
    return (k - 1) / 2.0


def psf_taps(scale: int, sigma: float, shift: float = 0.0) -> Tuple[int, np.ndarray]:
    """1-D low-pass taps: LR pixel ``i`` is ``sum_p taps[p] HR[i s + first + p]``.

    ``shift`` is the offset in LR pixels along the axis (see the module
    notes for its sign).  Returns ``(first, taps)``, taps float64 summing to 1.
    """
    scale, sigma = check_scale(scale), check_sigma(sigma)
    centre = (scale - 1) / 2.0 - float(shift) * scale
    half = psf_half_width(scale, sigma)
    first = math.floor(centre - half + 1e-9)
    last = math.ceil(centre + half - 1e-9)
    t = np.arange(first, last + 1, dtype=np.float64)
    if sigma == 0:
        lo, hi = centre - scale / 2.0, centre + scale / 2.0
        w = np.clip(np.minimum(t + 0.5, hi) - np.maximum(t - 0.5, lo), 0.0, None)
    else:
        w = np.exp(-0.5 * ((t - centre) / sigma) ** 2)
        w[np.abs(t - centre) > half + 1e-9] = 0.0
    keep = np.flatnonzero(w > 0)
    w = w[keep[0]:keep[-1] + 1]
    return first + int(keep[0]), w / w.sum()


def lowpass_reach(scale: int, sigma: float, offset: Offset = (0.0, 0.0)) -> Tuple[int, int]:
    """HR pixels the low-pass reads before an LR pixel's block and after it: ``(before, after)``, max over axes."""
    before = after = 0
    for shift in offset:
        first, taps = psf_taps(scale, sigma, shift)
        before = max(before, -first)
        after = max(after, first + taps.size - scale)
    return before, after


def _strided_axis(x: torch.Tensor, first: int, taps: np.ndarray, scale: int, axis: int) -> torch.Tensor:
    """``out[i] = sum_p taps[p] x[i s + first + p]`` along ``axis`` (2: rows, 3: cols) of ``(N, 1, H, W)``.

    Pixels outside the array count as zero.
    """
    size = x.shape[axis]
    n = size // scale
    lo = max(0, -first)
    hi = max(0, (n - 1) * scale + first + taps.size - size)
    pads = (0, 0, lo, hi) if axis == 2 else (lo, hi, 0, 0)
    xp = F.pad(x, pads)
    start = first + lo
    xp = xp.narrow(axis, start, (n - 1) * scale + taps.size)
    return _depthwise(F.conv2d, xp, taps, scale, axis)


def _depthwise(conv: Callable[..., torch.Tensor], x: torch.Tensor, taps: np.ndarray, scale: int,
               axis: int) -> torch.Tensor:
    """``conv`` (``F.conv2d`` or its transpose) of each image of ``x (N, 1, H, W)`` with ``taps`` along ``axis``.

    The stride along ``axis`` is ``scale``.  The ``N`` images run as the channels of one depthwise (grouped)
    convolution: on a CPU about 8 times faster than as a batch of one-channel images.
    """
    n = x.shape[0]
    w = torch.as_tensor(taps, dtype=x.dtype, device=x.device)
    shape = (1, 1, taps.size, 1) if axis == 2 else (1, 1, 1, taps.size)
    stride = (scale, 1) if axis == 2 else (1, scale)
    out = conv(x.reshape(1, n, x.shape[2], x.shape[3]), w.reshape(shape).expand(n, -1, -1, -1), stride=stride,
               groups=n)
    return out.reshape(n, 1, out.shape[2], out.shape[3])


def _separable_sample(x: torch.Tensor, scale: int, sigma: float, offset: Offset) -> torch.Tensor:
    """PSF correlation and sampling of ``(N, 1, H, W)`` with zeros outside (no renormalisation)."""
    first_y, taps_y = psf_taps(scale, sigma, offset[1])
    first_x, taps_x = psf_taps(scale, sigma, offset[0])
    rows = _strided_axis(x, first_y, taps_y, scale, 2)
    return _strided_axis(rows, first_x, taps_x, scale, 3)


def _strided_axis_adjoint(y: torch.Tensor, first: int, taps: np.ndarray, scale: int, axis: int,
                          size: int) -> torch.Tensor:
    """Adjoint of :func:`_strided_axis`: ``out[i s + first + p] += taps[p] y[i]``, ``size`` HR pixels along ``axis``.

    Contributions falling outside ``[0, size)`` are dropped (the forward map reads zeros there).
    """
    full = _depthwise(F.conv_transpose2d, y, taps, scale, axis)  # HR positions first .. first + len - 1
    lo = first
    hi = size - (first + full.shape[axis])
    pads = (0, 0, lo, hi) if axis == 2 else (lo, hi, 0, 0)
    return F.pad(full, pads)  # negative pads crop


def sample_adjoint(low: torch.Tensor, scale: int, sigma: float, offset: Offset, size: Tuple[int, int]) -> torch.Tensor:
    """Adjoint of the PSF correlation and sampling: ``(N, 1, h, w)`` LR -> ``(N, 1, H, W)`` HR, ``size = (H, W)``.

    The transpose of :func:`blur_sample`'s linear map where its taps are all inside the array (no renormalisation).
    """
    first_y, taps_y = psf_taps(scale, sigma, offset[1])
    first_x, taps_x = psf_taps(scale, sigma, offset[0])
    cols = _strided_axis_adjoint(low, first_x, taps_x, scale, 3, size[1])
    return _strided_axis_adjoint(cols, first_y, taps_y, scale, 2, size[0])


def blur_sample(hr: torch.Tensor, scale: int, sigma: float,
                offset: Offset = (0.0, 0.0)) -> Tuple[torch.Tensor, torch.Tensor]:
    """Blur ``(N, C, H, W)`` with the Gaussian PSF and sample it at the LR pixel centres.

    ``H`` and ``W`` must be multiples of ``scale``.  NaN pixels and pixels
    outside the array are missing: the weights of the present ones are
    renormalised.  Returns ``(low (N, C, H/s, W/s), complete (N, 1 or C,
    H/s, W/s) bool)``: ``complete`` is True where every PSF tap was present
    (per pixel when the input is NaN-free, else per band); ``low`` is NaN
    where no tap was.
    """
    scale = check_scale(scale)
    n, c, h, w = hr.shape
    if h % scale or w % scale:
        raise InputError(f"the HR size {h}x{w} is not a multiple of the scale {scale}")
    finite = torch.isfinite(hr)
    full = 1.0 - max(1e-9, 64 * torch.finfo(hr.dtype).eps)  # a complete footprint's weight, to rounding
    if bool(finite.all()):
        ones = torch.ones((1, 1, h, w), dtype=hr.dtype, device=hr.device)
        weight = _separable_sample(ones, scale, sigma, offset)
        num = _separable_sample(hr.reshape(n * c, 1, h, w), scale, sigma, offset).reshape(n, c, h // scale, -1)
        return num / weight, (weight > full).expand(n, 1, -1, -1)
    mask = finite.to(hr.dtype).reshape(n * c, 1, h, w)
    filled = torch.where(finite, hr, torch.zeros((), dtype=hr.dtype)).reshape(n * c, 1, h, w)
    weight = _separable_sample(mask, scale, sigma, offset).reshape(n, c, h // scale, -1)
    num = _separable_sample(filled, scale, sigma, offset).reshape(n, c, h // scale, -1)
    missing = torch.full((), float("nan"), dtype=hr.dtype)
    low = torch.where(weight > 1e-12, num / weight.clamp_min(1e-12), missing)
    return low, weight > full


def phase_taps(scale: int, kernel: str) -> np.ndarray:
    """``(scale, 2 R + 1)`` polyphase weights; row ``r`` weighs LR pixels ``q - R .. q + R`` for HR ``q s + r``."""
    scale = check_scale(scale)
    radius = kernel_radius(kernel)
    fn = KERNELS[kernel][0]
    phase = (np.arange(scale) + 0.5) / scale - 0.5
    t = np.arange(-radius, radius + 1)
    w = fn(phase[:, None] - t[None, :])
    return w / w.sum(axis=1, keepdims=True)


def _upsample_axis(x: torch.Tensor, weights: torch.Tensor, radius: int, axis: int) -> torch.Tensor:
    """Polyphase upsampling of ``(N, 1, h, w)`` along ``axis`` (2 rows, 3 cols), edges replicated."""
    scale = weights.shape[0]
    n, _, h, w = x.shape
    if axis == 2:
        xp = F.pad(x, (0, 0, radius, radius), mode="replicate")
        out = F.conv2d(xp, weights.reshape(scale, 1, -1, 1))          # (N, s, h, w)
        return out.permute(0, 2, 1, 3).reshape(n, 1, h * scale, w)
    xp = F.pad(x, (radius, radius, 0, 0), mode="replicate")
    out = F.conv2d(xp, weights.reshape(scale, 1, 1, -1))              # (N, s, h, w)
    return out.permute(0, 2, 3, 1).reshape(n, 1, h, w * scale)


def polyphase_upsample(lr: torch.Tensor, scale: int, kernel: str) -> torch.Tensor:
    """Interpolate ``(N, C, h, w)`` to ``(N, C, h s, w s)`` with the polyphase filters of ``kernel``."""
    scale = check_scale(scale)
    radius = kernel_radius(kernel)
    n, c, h, w = lr.shape
    weights = torch.as_tensor(phase_taps(scale, kernel), dtype=lr.dtype, device=lr.device)
    x = _upsample_axis(lr.reshape(n * c, 1, h, w), weights, radius, 2)
    x = _upsample_axis(x, weights, radius, 3)
    return x.reshape(n, c, h * scale, w * scale)


def upsample(lr: torch.Tensor, scale: int, kernel: str = "bicubic") -> torch.Tensor:
    """Interpolate ``(N, C, h, w)`` to ``(N, C, h s, w s)`` with ``kernel`` (see the module notes).

    ``"bicubic"`` runs PyTorch's own bicubic interpolation, which has the
    same weights as :func:`polyphase_upsample` and is about twice as fast.
    """
    scale = check_scale(scale)
    kernel_radius(kernel)
    if scale == 1:
        return lr
    if kernel == "bicubic":
        size = (lr.shape[-2] * scale, lr.shape[-1] * scale)
        return F.interpolate(lr, size=size, mode="bicubic", align_corners=False)
    return polyphase_upsample(lr, scale, kernel)


def glp_halo(scale: int, sigma: float, offset: Offset = (0.0, 0.0), kernel: str = "bicubic") -> int:
    """LR pixels of context per tile side that make a GLP tile equal the whole-image result.

    An output HR pixel in LR pixel ``i`` reads the interpolated LR-HSI and
    the interpolated low-pass of the MSI, i.e. LR pixels ``i - R .. i + R``
    (``R`` = :func:`kernel_radius`); the low-pass of LR pixel ``j`` reads
    HR pixels from ``j s - before`` to ``(j + 1) s - 1 + after``
    (:func:`lowpass_reach`).  The furthest HR pixel is thus
    ``R s + before`` HR pixels before the tile (or ``R s + after`` after it),
    and the halo is ``R + ceil(max(before, after) / s)``.
    """
    scale = check_scale(scale)
    before, after = lowpass_reach(scale, sigma, offset)
    return kernel_radius(kernel) + max(0, -(-max(before, after) // scale))


#: Fewest LR pixels with a complete PSF footprint before :func:`degrade_sample` also uses edge pixels.
MIN_COMPLETE_PIXELS = 64


def degrade_sample(lr: np.ndarray, msi_hr: np.ndarray, scale: int, sigma: float,
                   offset: Offset = (0.0, 0.0)) -> Tuple[np.ndarray, np.ndarray]:
    """The HR-MSI of a fit sample degraded onto the LR-HSI's grid, and the LR pixels a fit may use.

    This is the project's private PSF-matched "blur and sample" of a scene
    sample (to be unified with the estimation package's helper).

    Parameters
    ----------
    lr:
        ``(C, h, w)`` LR-HSI sample, NaN = invalid.
    msi_hr:
        ``(m, h s, w s)`` HR-MSI over the same footprint, NaN = invalid.
    scale, sigma, offset:
        Resolution ratio, PSF standard deviation (HR pixels) and offset (LR
        pixels), see the module notes.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``msi_lr (m, h, w)`` float64 and ``usable (h, w)`` bool: the PSF
        footprint holds no NaN MSI pixel and lies inside the sample.  When
        fewer than :data:`MIN_COMPLETE_PIXELS` pixels qualify, footprints cut
        by the sample's edge are accepted too (their weights renormalised,
        as the simulation does).
    """
    scale = check_scale(scale)
    lr = np.asarray(lr)
    msi = np.asarray(msi_hr, dtype=np.float64)
    if lr.ndim != 3 or msi.ndim != 3 or msi.shape[1:] != (lr.shape[1] * scale, lr.shape[2] * scale):
        raise InputError(f"the LR-HSI sample {lr.shape} and the HR-MSI sample {msi.shape} must be (bands, rows, "
                         f"cols) over one footprint, the MSI {scale} times larger in rows and columns")
    finite = np.isfinite(msi).all(axis=0)
    filled = np.where(finite, msi, 0.0)
    hr = torch.from_numpy(np.concatenate([filled, finite[None].astype(np.float64)]))[None]
    first_y, taps_y = psf_taps(scale, sigma, offset[1])
    first_x, taps_x = psf_taps(scale, sigma, offset[0])
    hr = hr.reshape(-1, 1, *hr.shape[-2:])
    summed = _strided_axis(_strided_axis(hr, first_y, taps_y, scale, 2), first_x, taps_x, scale, 3)[:, 0].numpy()
    inside = _strided_axis(_strided_axis(torch.ones_like(hr[:1]), first_y, taps_y, scale, 2),
                           first_x, taps_x, scale, 3)[0, 0].numpy()
    present = summed[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        low = summed[:-1] / present
    low[:, ~(present > 1e-12)] = np.nan
    no_nan = present > inside - 1e-9
    usable = no_nan & (inside > 1.0 - 1e-9)
    if usable.sum() < MIN_COMPLETE_PIXELS:
        usable = no_nan & (present > 1e-12)
    return low, usable
