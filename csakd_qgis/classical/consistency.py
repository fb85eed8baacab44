"""Back-projection of a fused image onto the LR-HSI it must reproduce, in the LR-HSI's signal subspace.

A classical fusion ``z0`` (PSF-matched GSA, say) blurred by the LR sensor's PSF
and sampled on the LR grid (``D``, :func:`csakd_qgis.classical.filters.blur_sample`)
does not give back the LR-HSI ``y``: the bicubic upsampling is not ``D``'s
inverse, and the injected MSI detail is not free of low frequencies.
:class:`LrConsistency` corrects the coefficients of ``z0`` in the subspace
``mu + W b`` (``W`` ``(C_good, k)`` orthonormal, spanning
:class:`~csakd_qgis.classical.subspace.Subspace`'s directions) by the
minimiser of

    ``sum_c ||D z_c - y_c||^2 / n_c  +  sum_j ||b_j - b0_j||^2 / tau_j^2``

with ``n_c`` the LR noise variance of band ``c`` and ``tau_j^2`` the variance
of the base's error in direction ``j`` per HR pixel.  ``W`` is rotated so that
``W^T N^-1 W = diag(lambda)``; then every direction is its own problem and the
solution is a fixed linear filter:

    ``b_j = b0_j + D^T h_j * (yb_j - D b0_j)``,  ``h_j = (g + 1 / (lambda_j tau_j^2))^-1``

where ``yb_j`` is the noise-weighted projection of the LR-HSI on direction
``j`` (noise variance ``1 / lambda_j``), ``g = D D^T`` the PSF's
autocorrelation sampled on the LR grid, and ``h_j`` its regularised inverse,
computed by FFT and cut where it falls below :data:`KERNEL_TOLERANCE` of its
peak (it decays geometrically).  ``tau_j^2`` is estimated on the scene sample
from the residual itself (a Wiener rule, no tuned constant):
``mean (yb_j - D b0_j)^2 = 1 / lambda_j + tau_j^2 sum(PSF^2)``; a direction
whose residual the noise explains gets no correction.

The base already agrees with the HR-MSI, which the LR-HSI cannot see at full
resolution, so the correction is kept out of what the MSI sees: at every HR
pixel it is projected onto the null space of ``A = a W`` ``(m, k)``, where
``a`` ``(m, C)`` regresses the PSF-blurred MSI on the LR-HSI (GSA's intensity
weights, :class:`~csakd_qgis.classical.baselines.GSA`).  Without that the
correction degraded the bands the MSI covers (the bundled sample through the
engine: -0.09 dB against the plain projection; with it +0.23 dB).

Everything is a convolution of bounded support, so the result depends on a
bounded neighbourhood (:attr:`LrConsistency.halo`) and tiles need no seam
handling.  The output lies in the subspace, as
:class:`~csakd_qgis.classical.subspace.SubspaceFusion`'s projection does; bad
bands pass unchanged.  Measured in ``docs/benchmarks.md`` ("Classical methods").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict

import numpy as np
import torch
import torch.nn.functional as F

from csakd_qgis.classical.baselines import GSA
from csakd_qgis.classical.filters import Offset, blur_sample, degrade_sample, lowpass_reach, psf_taps, sample_adjoint
from csakd_qgis.fusion.tiling import reflect_pad

if TYPE_CHECKING:  # subspace.py imports this module
    from csakd_qgis.classical.subspace import Subspace

#: An inverse kernel is cut where its magnitude falls below this fraction of its peak.
KERNEL_TOLERANCE = 1e-4
#: Largest inverse-kernel radius (LR pixels); reached only when a direction is nearly unregularised.
MAX_KERNEL_RADIUS = 12
#: Smallest regulariser ``1 / (lambda tau^2)`` as a fraction of ``g``'s gain at zero frequency: no frequency is
#: amplified more than ``1 / MIN_REGULARISER`` times the mean.  Measured (``bench/classical.py`` scenes, true PSF):
#: 0.1 against 0.01 changed the gain on the 144 x 144 and 63 x 63 scenes by -0.05 to +0.07 dB and lost 0.2-0.6 dB
#: less on the 30 x 30 tiles, whose edges (mirrored here, renormalised in the simulation) dominate.
MIN_REGULARISER = 0.1
#: Fewest sample LR pixels with a complete neighbourhood for the residual statistics; fewer: no correction.
MIN_RESIDUAL_PIXELS = 64
#: FFT grid (LR pixels) on which the inverse kernels are computed.
_FFT_SIZE = 128


def lr_autocorrelation(scale: int, sigma: float, shift: float = 0.0) -> np.ndarray:
    """1-D ``g[i] = sum_p t[p] t[p + i s]`` of the PSF taps ``t`` along one axis; odd length, centred, float64."""
    _, taps = psf_taps(scale, sigma, shift)
    reach = (taps.size - 1) // scale
    g = np.array([float(np.dot(taps[max(0, -i * scale):taps.size - max(0, i * scale)],
                               taps[max(0, i * scale):taps.size - max(0, -i * scale)]))
                  for i in range(-reach, reach + 1)])
    return g


def inverse_kernel(g_y: np.ndarray, g_x: np.ndarray, regulariser: float) -> np.ndarray:
    """``(g_y g_x^T + r delta)^-1`` on the LR grid, cut to its support: ``(K, K)``, ``K`` odd, float64.

    ``r`` is ``regulariser``, at least :data:`MIN_REGULARISER` times ``g``'s sum;
    ``inf``: the zero kernel ``(1, 1)`` (no correction).
    """
    if not math.isfinite(regulariser):
        return np.zeros((1, 1))
    n = _FFT_SIZE
    gy, gx = np.zeros(n), np.zeros(n)
    for g, out in ((g_y, gy), (g_x, gx)):
        r = g.size // 2
        out[np.arange(-r, r + 1) % n] = g
    spectrum = np.real(np.fft.fft(gy))[:, None] * np.real(np.fft.fft(gx))[None, :]
    floor = MIN_REGULARISER * float(g_y.sum() * g_x.sum())
    h = np.fft.fftshift(np.real(np.fft.ifft2(1.0 / (spectrum + max(regulariser, floor)))))
    c = n // 2
    big = np.argwhere(np.abs(h) > KERNEL_TOLERANCE * np.abs(h).max())
    radius = min(int(np.abs(big - c).max()), MAX_KERNEL_RADIUS)
    return h[c - radius:c + radius + 1, c - radius:c + radius + 1]


def _median_filled(x: np.ndarray) -> np.ndarray:
    """``(C, h, w)`` with each band's NaN replaced by the band's median (0 for an all-NaN band)."""
    out = np.array(x, dtype=np.float64)
    for band in out:
        bad = ~np.isfinite(band)
        if bad.any():
            band[bad] = np.median(band[~bad]) if (~bad).any() else 0.0
    return out


def _complete(lr: np.ndarray, msi: np.ndarray, scale: int, reach: int) -> np.ndarray:
    """``(h, w)`` bool: LR pixels whose ``reach``-pixel neighbourhood lies inside and is finite in both images.

    ``lr`` holds the good bands only.
    """
    h, w = lr.shape[1:]
    finite = np.isfinite(lr).all(axis=0) & np.isfinite(msi).all(axis=0).reshape(h, scale, w, scale).all(axis=(1, 3))
    bad = F.pad(torch.from_numpy((~finite).astype(np.float64))[None, None], (reach,) * 4, value=1.0)
    spread = F.max_pool2d(bad, 2 * reach + 1, stride=1)[0, 0].numpy() > 0
    return ~spread


#: Side (LR pixels) of the blocks of the sample the base runs on when the residual is measured: bounds the fit's
#: memory (a 224-band block of 32 + 2 x 4 LR pixels at scale 3 is 13 MB in float32).
_BLOCK = 32


#: A fused method as coordinates: ``(lr (B, C, h, w), msi (B, m, h s, w s), basis (C_good, k), mean (C_good,))``
#: tensors and arrays in, ``basis^T (fused[good] - mean)`` ``(B, k, h s, w s)`` out, a tensor of ``lr``'s dtype.
Coordinates = Callable[[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray], torch.Tensor]


def _residual_power(mean: np.ndarray, basis: np.ndarray, lr_weights: np.ndarray,
                    base: Coordinates, lr: np.ndarray, msi: np.ndarray,
                    good: np.ndarray, inside: np.ndarray, reach: int, scale: int, sigma: float,
                    offset: Offset) -> np.ndarray:
    """``(k,)`` mean over the ``inside`` LR pixels of ``(yb_j - D b0_j)^2``: the base's residual per direction.

    ``lr`` ``(C, h, w)`` and ``msi`` ``(m, h s, w s)`` are NaN-free; the base (as coordinates in ``basis``)
    runs in float32 (as in the engine's tiles) on blocks of :data:`_BLOCK` LR pixels framed by ``reach`` pixels
    (its halo and the PSF's reach), so the sample's full-resolution cube is never held at once.
    """
    h, w = lr.shape[1:]
    total = np.zeros(basis.shape[1])
    count = 0
    mu = torch.as_tensor(mean, dtype=torch.float32)[:, None, None]
    yb = torch.einsum("ck,chw->khw", torch.as_tensor(lr_weights, dtype=torch.float32),
                      torch.as_tensor(lr[good], dtype=torch.float32) - mu)
    for top in range(0, h, _BLOCK):
        for left in range(0, w, _BLOCK):
            rows, cols = slice(top, min(top + _BLOCK, h)), slice(left, min(left + _BLOCK, w))
            mask = torch.as_tensor(inside[rows, cols])
            if not bool(mask.any()):
                continue
            r0, r1 = max(top - reach, 0), min(rows.stop + reach, h)
            c0, c1 = max(left - reach, 0), min(cols.stop + reach, w)
            b0 = base(torch.as_tensor(lr[None, :, r0:r1, c0:c1], dtype=torch.float32),
                      torch.as_tensor(msi[None, :, r0 * scale:r1 * scale, c0 * scale:c1 * scale], dtype=torch.float32),
                      basis, mean)[0]
            low = blur_sample(b0[None], scale, sigma, offset)[0][0]
            low = low[:, top - r0:rows.stop - r0, left - c0:cols.stop - c0]
            total += ((yb[:, rows, cols] - low)[:, mask].double() ** 2).sum(dim=1).numpy()
            count += int(mask.sum())
    return total / count


@dataclass(frozen=True)
class LrConsistency:
    """The back-projection of the module notes; build with :meth:`fit`.

    Attributes
    ----------
    good:
        ``(C,)`` bool, the bands corrected (the subspace's).
    mean:
        ``(C_good,)`` the subspace's mean spectrum.
    basis:
        ``(C_good, k)`` orthonormal ``W``, rotated to diagonalise the noise weights.
    lr_weights:
        ``(C_good, k)`` ``N^-1 W diag(1 / lambda)``: ``yb = lr_weights^T (y - mean)``.
    kernels:
        ``(k, K, K)`` the inverse kernels ``h_j`` on the LR grid, zero-padded to a common size.
    keep_msi:
        ``(k, k)`` projector applied to each HR pixel's correction: it removes the part the MSI would see.
    scale, sigma, offset:
        Resolution ratio, PSF standard deviation (HR pixels), LR-HSI offset (LR pixels), as the inner method's.
    """

    good: np.ndarray
    mean: np.ndarray
    basis: np.ndarray
    lr_weights: np.ndarray
    kernels: np.ndarray
    keep_msi: np.ndarray
    scale: int
    sigma: float
    offset: Offset

    @classmethod
    def fit(cls, subspace: Subspace, base: Coordinates, base_halo: int,
            lr_sample: np.ndarray, msi_sample_hr: np.ndarray, noise_std: np.ndarray, scale: int, sigma: float,
            offset: Offset = (0.0, 0.0)) -> LrConsistency:
        """Fit on the scene sample.

        Parameters
        ----------
        subspace:
            The fitted :class:`~csakd_qgis.classical.subspace.Subspace`.
        base, base_halo:
            The fused method as :data:`Coordinates` and its halo (LR pixels), run on the sample to measure its
            residual.
        lr_sample, msi_sample_hr:
            ``(C, h, w)`` and ``(m, h s, w s)`` sample, NaN = invalid (the engine's mosaics).
        noise_std:
            ``(C,)`` LR noise standard deviation per band, in the sample's units (NaN for bad bands).
        scale, sigma, offset:
            The degradation the inner method was fitted with.

        With the noise unknown in every band, or fewer than :data:`MIN_RESIDUAL_PIXELS` sample pixels with
        the context for the residual, no direction is corrected (:attr:`active` is False).
        """
        good = subspace.good
        lr = np.asarray(lr_sample, dtype=np.float64)
        msi = np.asarray(msi_sample_hr, dtype=np.float64)
        noise = np.asarray(noise_std, dtype=np.float64)[good] ** 2
        usable = np.isfinite(noise) & (noise > 0)
        known = bool(usable.any())  # unknown noise: no correction (the rotation below is then arbitrary)
        noise = np.where(usable, noise, np.median(noise[usable]) if known else 1.0)
        precision = np.linalg.eigh(subspace.basis.T @ (subspace.basis / noise[:, None]))
        lam, rotation = np.maximum(precision[0], 1e-300), precision[1]
        basis = subspace.basis @ rotation
        lr_weights = basis / noise[:, None] / lam[None, :]

        # the residual at an LR pixel needs the base over the PSF's footprint, and the base its own halo; the
        # sample is mirrored at its edges (as the engine's tiles are) and pixels near a NaN are left out
        reach = base_halo + math.ceil(max(lowpass_reach(scale, sigma, offset)) / scale)
        lr = reflect_pad(lr, ((reach, reach), (reach, reach)))
        msi = reflect_pad(msi, ((reach * scale, reach * scale), (reach * scale, reach * scale)))
        inside = _complete(lr[good], msi, scale, reach)
        inside[:reach] = inside[-reach:] = False  # the mirrored frame is context only
        inside[:, :reach] = inside[:, -reach:] = False
        k = basis.shape[1]
        regularisers = np.full(k, np.inf)
        if known and inside.sum() >= MIN_RESIDUAL_PIXELS:
            square = _residual_power(subspace.mean, basis, lr_weights, base, _median_filled(lr), _median_filled(msi),
                                     good, inside, reach, scale, sigma, offset)
            psf_energy = float(np.prod([np.sum(psf_taps(scale, sigma, s)[1] ** 2) for s in offset]))
            tau2 = (square - 1.0 / lam) / psf_energy
            regularisers = np.where(tau2 > 0, 1.0 / (lam * np.maximum(tau2, 1e-300)), np.inf)
        g_y, g_x = lr_autocorrelation(scale, sigma, offset[1]), lr_autocorrelation(scale, sigma, offset[0])
        inverses = [inverse_kernel(g_y, g_x, float(m)) for m in regularisers]
        size = max(h.shape[0] for h in inverses)
        kernels = np.zeros((k, size, size))
        for j, h in enumerate(inverses):
            pad = (size - h.shape[0]) // 2
            kernels[j, pad:pad + h.shape[0], pad:pad + h.shape[0]] = h
        # what the MSI sees of the subspace: the MSI regressed on the LR-HSI (GSA's intensity weights)
        msi_lr, usable = degrade_sample(lr_sample, msi_sample_hr, scale, sigma, offset)
        msi_lr[:, ~usable] = np.nan
        seen = GSA.fit(np.asarray(lr_sample, dtype=np.float64), msi_lr, list(good)).weights[:, good] @ basis
        keep = np.eye(k) - seen.T @ np.linalg.pinv(seen @ seen.T) @ seen
        return cls(good.copy(), subspace.mean.copy(), basis, lr_weights, kernels, keep, int(scale), float(sigma),
                   (float(offset[0]), float(offset[1])))

    @property
    def active(self) -> bool:
        """False when no direction is corrected (the result is then the plain subspace projection)."""
        return bool(np.any(self.kernels != 0))

    @property
    def halo(self) -> int:
        """LR context per tile side the correction adds to the inner method's halo."""
        reach_hr = max(lowpass_reach(self.scale, self.sigma, self.offset))
        return 2 * (math.ceil(reach_hr / self.scale) + 1) + self.kernels.shape[-1] // 2

    def correct(self, coords: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
        """Corrected ``coords (B, k, h s, w s)``: a fused image's coordinates ``basis^T (z - mean)`` in :attr:`basis`.

        ``lr (B, C, h, w)`` is the LR-HSI (all bands), a tensor of ``coords``' dtype and device.  Valid ``halo``
        LR pixels inside the batch's edges (the engine crops the halo).
        """
        n, k, hh, ww = coords.shape
        dt, dev = coords.dtype, coords.device
        idx = torch.as_tensor(np.flatnonzero(self.good), device=dev)
        mu = torch.as_tensor(self.mean, dtype=dt, device=dev)[:, None, None]
        weights = torch.as_tensor(self.lr_weights, dtype=dt, device=dev)
        yb = torch.einsum("ck,nchw->nkhw", weights, lr.index_select(1, idx) - mu)
        residual = yb - blur_sample(coords, self.scale, self.sigma, self.offset)[0]
        h = torch.as_tensor(self.kernels, dtype=dt, device=dev)[:, None]
        q = F.conv2d(residual, h, padding=h.shape[-1] // 2, groups=k)
        step = sample_adjoint(q.reshape(n * k, 1, q.shape[-2], q.shape[-1]), self.scale, self.sigma, self.offset,
                              (hh, ww)).reshape(n, k, hh, ww)
        return coords + torch.einsum("jk,nkhw->njhw", torch.as_tensor(self.keep_msi, dtype=dt, device=dev), step)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready ``dict``, inverse of :meth:`from_dict`."""
        return {"good": self.good.tolist(), "mean": self.mean.tolist(), "basis": self.basis.tolist(),
                "lr_weights": self.lr_weights.tolist(), "kernels": self.kernels.tolist(),
                "keep_msi": self.keep_msi.tolist(), "scale": self.scale,
                "sigma": self.sigma, "offset": list(self.offset)}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> LrConsistency:
        """Rebuild from :meth:`to_dict` output."""
        off = d["offset"]
        return cls(np.asarray(d["good"], dtype=bool), np.asarray(d["mean"], dtype=np.float64),
                   np.asarray(d["basis"], dtype=np.float64), np.asarray(d["lr_weights"], dtype=np.float64),
                   np.asarray(d["kernels"], dtype=np.float64), np.asarray(d["keep_msi"], dtype=np.float64),
                   int(d["scale"]), float(d["sigma"]),
                   (float(off[0]), float(off[1])))

