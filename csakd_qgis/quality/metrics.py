"""Quality metrics for fused hyperspectral images.

All images are ``(C, H, W)`` arrays (any float or integer dtype, computed in
float64) in the same physical units; ``valid`` is an optional ``(H, W)``
boolean mask (True = use the pixel).  Pixels that are non-finite in either
image are always excluded.  The exact formulas, units and conventions are
written out in ``docs/metrics.md``; the short version:

* PSNR (dB): per band ``10 log10(peak_b² / MSE_b)``, averaged over bands.
  ``peak="range"``: one peak for all bands, the given ``data_range`` or else
  the maximum of the reference over all bands; ``peak="band_max"``: the
  reference's own per-band maximum, as in the CSAKD paper's code.
* SAM (degrees): mean spectral angle over valid pixels where neither spectrum is zero.
* ERGAS: ``(100 / scale) sqrt(mean_b (RMSE_b / mean_b)²)`` with ``scale`` the
  LR/HR pixel-size ratio (4 for 30 m / 7.5 m) and ``mean_b`` the reference band mean.
* RMSE: over all bands and valid pixels, in data units.  (The paper's code
  rescales by ``max - min`` and then adds the minimum back, which is only the
  RMSE when the minimum is 0; this one is the plain RMSE.)
* SSIM: per band, 11 × 11 Gaussian window (sigma 1.5), ``K1 = 0.01``,
  ``K2 = 0.03``, ``L`` = ``data_range`` or the reference's max - min, Wang et
  al. (2004) weighted moments; averaged over valid pixels at least 5 pixels
  from the image border (all valid pixels if none is that far in).
* UIQI: Wang & Bovik's Q per band in non-overlapping 32 × 32 blocks, averaged.
* Q2n: Garzelli & Nencini's hypercomplex index in 32 × 32 blocks, bands padded
  with zero bands to a power of two.
* CC: mean per-band Pearson correlation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Optional, Tuple

import numpy as np
from scipy import ndimage

from csakd_qgis.errors import InputError
from csakd_qgis.simulation.degradation import blur_decimate, spectral_degrade

#: SSIM constants of Wang et al. (2004).
SSIM_K1, SSIM_K2, SSIM_SIGMA, SSIM_RADIUS = 0.01, 0.03, 1.5, 5

#: Block size (pixels) of UIQI and Q2n.
Q_BLOCK = 32


def _prepare(reference: np.ndarray, fused: np.ndarray,
             valid: Optional[np.ndarray]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float64 copies and the joint ``(H, W)`` mask of usable pixels."""
    ref = np.asarray(reference, dtype=np.float64)
    fus = np.asarray(fused, dtype=np.float64)
    if ref.ndim != 3 or ref.shape != fus.shape:
        raise InputError(f"the reference {ref.shape} and the fused image {fus.shape} must both be "
                         "(bands, rows, cols) of the same shape")
    mask = np.isfinite(ref).all(axis=0) & np.isfinite(fus).all(axis=0)
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != mask.shape:
            raise InputError(f"the valid mask {valid.shape} does not match the images {mask.shape}")
        mask &= valid
    if not mask.any():
        raise InputError("the images have no valid pixel in common (all nodata or masked)")
    return ref, fus, mask


def _band_pixels(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``(C, N)`` values of the masked pixels."""
    return x[:, mask]


def psnr_per_band(reference: np.ndarray, fused: np.ndarray, valid: Optional[np.ndarray] = None,
                  peak: str = "range", data_range: Optional[float] = None) -> np.ndarray:
    """``(C,)`` PSNR of each band in dB (``inf`` for a band without error); see :func:`psnr`."""
    ref, fus, mask = _prepare(reference, fused, valid)
    r, f = _band_pixels(ref, mask), _band_pixels(fus, mask)
    mse = np.mean((r - f) ** 2, axis=1)
    if peak == "range":
        top = np.full(r.shape[0], float(data_range) if data_range is not None else r.max())
    elif peak == "band_max":
        top = r.max(axis=1)
    else:
        raise InputError(f"unknown PSNR peak convention {peak!r}; use 'range' or 'band_max'")
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(top**2 / mse)


def psnr(reference: np.ndarray, fused: np.ndarray, valid: Optional[np.ndarray] = None,
         peak: str = "range", data_range: Optional[float] = None) -> float:
    """Mean over bands of the per-band PSNR in dB (``inf`` for a band without error)."""
    return float(np.mean(psnr_per_band(reference, fused, valid, peak, data_range)))


def sam(reference: np.ndarray, fused: np.ndarray, valid: Optional[np.ndarray] = None) -> float:
    """Mean spectral angle in degrees over valid pixels whose spectra are both non-zero."""
    ref, fus, mask = _prepare(reference, fused, valid)
    r, f = _band_pixels(ref, mask), _band_pixels(fus, mask)
    nr, nf = np.linalg.norm(r, axis=0), np.linalg.norm(f, axis=0)
    ok = (nr > 0) & (nf > 0)
    if not ok.any():
        raise InputError("every valid pixel has an all-zero spectrum; the spectral angle is undefined")
    chord = np.linalg.norm(r[:, ok] / nr[ok] - f[:, ok] / nf[ok], axis=0)
    # 2 arcsin(chord / 2) is the angle, accurate near 0 where arccos(cos) is not
    return float(np.degrees(np.mean(2.0 * np.arcsin(np.clip(chord / 2.0, 0.0, 1.0)))))


def rmse(reference: np.ndarray, fused: np.ndarray, valid: Optional[np.ndarray] = None) -> float:
    """Root mean square error over all bands and valid pixels, in data units."""
    ref, fus, mask = _prepare(reference, fused, valid)
    return float(np.sqrt(np.mean((_band_pixels(ref, mask) - _band_pixels(fus, mask)) ** 2)))


def ergas(reference: np.ndarray, fused: np.ndarray, valid: Optional[np.ndarray] = None,
          scale: float = 4.0) -> float:
    """ERGAS: ``(100 / scale) sqrt(mean_b (RMSE_b / mean_b)²)``; ``scale`` = LR / HR pixel size."""
    if not scale > 0:
        raise InputError(f"the ERGAS resolution ratio must be positive, got {scale}")
    ref, fus, mask = _prepare(reference, fused, valid)
    r, f = _band_pixels(ref, mask), _band_pixels(fus, mask)
    band_rmse = np.sqrt(np.mean((r - f) ** 2, axis=1))
    return float(100.0 / scale * np.sqrt(np.mean((band_rmse / r.mean(axis=1)) ** 2)))


def cc(reference: np.ndarray, fused: np.ndarray, valid: Optional[np.ndarray] = None) -> float:
    """Mean per-band Pearson correlation (bands constant in either image are skipped)."""
    ref, fus, mask = _prepare(reference, fused, valid)
    r, f = _band_pixels(ref, mask), _band_pixels(fus, mask)
    r = r - r.mean(axis=1, keepdims=True)
    f = f - f.mean(axis=1, keepdims=True)
    den = np.sqrt(np.sum(r * r, axis=1) * np.sum(f * f, axis=1))
    ok = den > 0
    if not ok.any():
        raise InputError("every band is constant; the correlation coefficient is undefined")
    return float(np.mean(np.sum(r * f, axis=1)[ok] / den[ok]))


def ssim(reference: np.ndarray, fused: np.ndarray, valid: Optional[np.ndarray] = None,
         data_range: Optional[float] = None) -> float:
    """Mean over bands of the Gaussian-window SSIM (see the module notes for the conventions).

    Local moments use only valid pixels (normalised convolution: the Gaussian
    weights of the valid pixels in the window are renormalised), so nodata
    does not leak into its neighbours' statistics.
    """
    ref, fus, mask = _prepare(reference, fused, valid)
    if data_range is None:
        r = _band_pixels(ref, mask)
        data_range = float(r.max() - r.min())
    if not data_range > 0:
        raise InputError("SSIM needs a positive data range; the reference is constant, give data_range")
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    w = mask.astype(np.float64)

    def smooth(a: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(a, (0, SSIM_SIGMA, SSIM_SIGMA), mode="constant",
                                       truncate=SSIM_RADIUS / SSIM_SIGMA)

    norm = smooth(w[None])
    norm[norm == 0] = np.inf
    x, y = np.where(mask, ref, 0.0), np.where(mask, fus, 0.0)
    mx, my = smooth(x * w) / norm, smooth(y * w) / norm
    vx = smooth(x * x * w) / norm - mx**2
    vy = smooth(y * y * w) / norm - my**2
    cxy = smooth(x * y * w) / norm - mx * my
    smap = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    inner = np.zeros_like(mask)
    p = SSIM_RADIUS
    inner[p:-p, p:-p] = mask[p:-p, p:-p]
    use = inner if inner.any() else mask
    return float(np.mean(smap[:, use]))


def _blocks(x: np.ndarray, mask: np.ndarray, block: int) -> Tuple[np.ndarray, np.ndarray]:
    """Split ``(C, H, W)`` into non-overlapping blocks.

    Returns values ``(nb, C, block²)`` (invalid pixels zeroed) and weights
    ``(nb, block²)`` (1 valid, 0 invalid or padding); blocks with fewer than
    two valid pixels are dropped.
    """
    c, h, w = x.shape
    ph, pw = -h % block, -w % block
    xp = np.pad(np.where(mask, x, 0.0), ((0, 0), (0, ph), (0, pw)))
    mp = np.pad(mask, ((0, ph), (0, pw)))
    nby, nbx = xp.shape[1] // block, xp.shape[2] // block
    xb = xp.reshape(c, nby, block, nbx, block).transpose(1, 3, 0, 2, 4).reshape(nby * nbx, c, block * block)
    wb = mp.reshape(nby, block, nbx, block).transpose(0, 2, 1, 3).reshape(nby * nbx, block * block)
    keep = wb.sum(axis=1) >= 2
    return xb[keep], wb[keep].astype(np.float64)


def _q_index(mu_a: np.ndarray, mu_b: np.ndarray, var_a: np.ndarray, var_b: np.ndarray,
             cov: np.ndarray) -> np.ndarray:
    """Wang & Bovik's Q from moments (broadcasting); 1 for matching constant blocks."""
    m_den = mu_a**2 + mu_b**2
    s_den = var_a + var_b
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_term = np.where(m_den > 0, 2 * mu_a * mu_b / m_den, 1.0)
        struct_term = np.where(s_den > 0, 2 * cov / s_den, 1.0)
    return mean_term * struct_term


def _block_moments(a: np.ndarray, b: np.ndarray, mask: np.ndarray, block: int, cross: bool):
    """Weighted block means, variances and covariances of the bands of ``a`` and ``b``.

    With ``cross`` the covariance is ``(nb, Ca, Cb)`` between all band pairs,
    else ``(nb, C)`` between matching bands.
    """
    ab, wb = _blocks(a, mask, block)
    bb, _ = _blocks(b, mask, block)
    if ab.shape[0] == 0:
        raise InputError(f"no {block}x{block} block holds two valid pixels")
    n = wb.sum(axis=1)
    mu_a = np.einsum("ncp,np->nc", ab, wb) / n[:, None]
    mu_b = np.einsum("ncp,np->nc", bb, wb) / n[:, None]
    da = (ab - mu_a[..., None]) * wb[:, None]
    db = (bb - mu_b[..., None]) * wb[:, None]
    var_a = np.einsum("ncp,ncp->nc", da, da) / n[:, None]
    var_b = np.einsum("ncp,ncp->nc", db, db) / n[:, None]
    if cross:
        cov = np.einsum("ncp,ndp->ncd", da, db) / n[:, None, None]
    else:
        cov = np.einsum("ncp,ncp->nc", da, db) / n[:, None]
    return mu_a, mu_b, var_a, var_b, cov


def q_matrix(a: np.ndarray, b: np.ndarray, valid: np.ndarray, block: int = Q_BLOCK) -> np.ndarray:
    """Block-averaged UIQI between every band of ``a`` ``(Ca, H, W)`` and every band of ``b``: ``(Ca, Cb)``."""
    mu_a, mu_b, var_a, var_b, cov = _block_moments(a, b, valid, block, cross=True)
    q = _q_index(mu_a[:, :, None], mu_b[:, None, :], var_a[:, :, None], var_b[:, None, :], cov)
    return q.mean(axis=0)


def uiqi(reference: np.ndarray, fused: np.ndarray, valid: Optional[np.ndarray] = None,
         block: int = Q_BLOCK) -> float:
    """Universal image quality index, per band in ``block × block`` blocks, averaged."""
    ref, fus, mask = _prepare(reference, fused, valid)
    mu_a, mu_b, var_a, var_b, cov = _block_moments(ref, fus, mask, block, cross=False)
    return float(np.mean(_q_index(mu_a, mu_b, var_a, var_b, cov)))


def cayley_dickson_signs(dim: int) -> np.ndarray:
    """Signs ``S`` ``(dim, dim)`` of the hypercomplex basis products: ``e_i e_j = S[i, j] e_(i XOR j)``.

    Built with the Cayley-Dickson doubling ``(a1, a2)(b1, b2) = (a1 b1 - b2* a2, b2 a1 + a2 b1*)``,
    which gives the complex numbers for ``dim = 2`` and the quaternions for ``dim = 4``
    (``e1 = i``, ``e2 = j``, ``e3 = k``).  ``dim`` is a power of two.
    """
    s = np.ones((1, 1))
    while s.shape[0] < dim:
        conj = -np.ones(s.shape[0])
        conj[0] = 1.0
        s = np.block([[s, s.T], [s * conj[None, :], -s.T * conj[None, :]]])
    return s


def _hypercomplex_product_table(dim: int) -> Tuple[np.ndarray, np.ndarray]:
    """Index ``J[k, i] = i XOR k`` and coefficients ``T[k, i]`` with ``(z v*)_k = Σ_i T[k, i] z_i v_J[k, i]``."""
    s = cayley_dickson_signs(dim)
    conj = -np.ones(dim)
    conj[0] = 1.0
    i = np.arange(dim)[None, :]
    j = i ^ np.arange(dim)[:, None]
    return j, s[i, j] * conj[j]


def q2n(reference: np.ndarray, fused: np.ndarray, valid: Optional[np.ndarray] = None,
        block: int = Q_BLOCK) -> float:
    """Garzelli & Nencini's Q2n, block-averaged modulus of the hypercomplex quality index.

    Bands are padded with zero bands to ``2^n``.  In every block each band of
    both images is normalised by the reference block band's mean and standard
    deviation (``(x - mu) / sigma + 1``, only the shift where sigma is 0), as in
    the usual reference implementation; then
    ``q = 2 |σ_zv| / (σ_z² + σ_v²) · 2 |μ_z| |μ_v| / (|μ_z|² + |μ_v|²)`` with the
    hypercomplex covariance ``σ_zv = E[z v*] - μ_z μ_v*`` (unbiased estimates).
    """
    ref, fus, mask = _prepare(reference, fused, valid)
    c = ref.shape[0]
    dim = 1 << max(0, int(np.ceil(np.log2(c))))
    if dim > c:
        zeros = np.zeros((dim - c,) + ref.shape[1:])
        ref, fus = np.concatenate([ref, zeros]), np.concatenate([fus, zeros])
    zb, wb = _blocks(ref, mask, block)
    vb, _ = _blocks(fus, mask, block)
    if zb.shape[0] == 0:
        raise InputError(f"no {block}x{block} block holds two valid pixels")
    n = wb.sum(axis=1)
    mu = np.einsum("ncp,np->nc", zb, wb) / n[:, None]
    sd = np.sqrt(np.einsum("ncp,np->nc", (zb - mu[..., None]) ** 2, wb) / (n[:, None] - 1))
    sd_safe = np.where(sd > 0, sd, 1.0)[..., None]
    z = ((zb - mu[..., None]) / sd_safe + 1.0) * wb[:, None]
    v = ((vb - mu[..., None]) / sd_safe + 1.0) * wb[:, None]
    mz = z.sum(axis=2) / n[:, None]
    mv = v.sum(axis=2) / n[:, None]
    dz = (z - mz[..., None]) * wb[:, None]
    dv = (v - mv[..., None]) * wb[:, None]
    cov = np.einsum("nip,njp->nij", dz, dv) / (n - 1)[:, None, None]
    var_sum = (np.einsum("nip,nip->n", dz, dz) + np.einsum("nip,nip->n", dv, dv)) / (n - 1)
    jj, coef = _hypercomplex_product_table(dim)
    ii = np.broadcast_to(np.arange(dim)[None, :], jj.shape)
    sigma_zv = np.sum(cov[:, ii, jj] * coef[None], axis=2)
    mod_mz, mod_mv = np.linalg.norm(mz, axis=1), np.linalg.norm(mv, axis=1)
    mean_term = 2 * mod_mz * mod_mv / (mod_mz**2 + mod_mv**2)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.where(var_sum > 0, 2 * np.linalg.norm(sigma_zv, axis=1) / var_sum, 1.0) * mean_term
    return float(np.mean(q))


@dataclass(frozen=True)
class MetricsReport:
    """Full-reference quality of a fused image (see the module notes for conventions).

    ``psnr`` in dB, ``sam`` in degrees, ``rmse`` in data units; ``ergas``,
    ``ssim``, ``uiqi``, ``q2n`` and ``cc`` are unitless.  ``peak`` and
    ``scale`` record the conventions used, ``valid_pixels`` the pixel count.
    """

    psnr: float
    sam: float
    ergas: float
    rmse: float
    ssim: float
    uiqi: float
    q2n: float
    cc: float
    peak: str
    scale: float
    valid_pixels: int

    def to_dict(self) -> Dict[str, object]:
        """Plain ``dict`` for JSON."""
        return asdict(self)


def evaluate(reference: np.ndarray, fused: np.ndarray, valid: Optional[np.ndarray] = None,
             scale: float = 4.0, peak: str = "range", data_range: Optional[float] = None) -> MetricsReport:
    """All full-reference metrics of ``fused`` against ``reference`` (both ``(C, H, W)``).

    ``scale`` is the LR/HR resolution ratio (for ERGAS), ``peak`` the PSNR
    convention, ``data_range`` the PSNR peak (``peak="range"``) and SSIM ``L``.
    """
    ref, fus, mask = _prepare(reference, fused, valid)
    return MetricsReport(
        psnr=psnr(ref, fus, mask, peak, data_range),
        sam=sam(ref, fus, mask),
        ergas=ergas(ref, fus, mask, scale),
        rmse=rmse(ref, fus, mask),
        ssim=ssim(ref, fus, mask, data_range),
        uiqi=uiqi(ref, fus, mask),
        q2n=q2n(ref, fus, mask),
        cc=cc(ref, fus, mask),
        peak=peak,
        scale=float(scale),
        valid_pixels=int(mask.sum()),
    )


@dataclass(frozen=True)
class ConsistencyReport:
    """No-reference quality: the fused image degraded back, compared with both inputs.

    ``psnr_lr``/``sam_lr``: fused blurred and decimated vs the LR-HSI;
    ``psnr_msi``/``sam_msi``: fused through the SRF vs the HR-MSI (PSNR with
    ``peak="range"`` and the input's maximum); ``d_lambda``, ``d_s`` and
    ``qnr = (1 - d_lambda)(1 - d_s)`` as described in :func:`consistency`.
    """

    psnr_lr: float
    sam_lr: float
    psnr_msi: float
    sam_msi: float
    d_lambda: float
    d_s: float
    qnr: float

    def to_dict(self) -> Dict[str, object]:
        """Plain ``dict`` for JSON."""
        return asdict(self)


def consistency(fused: np.ndarray, lr_hsi: np.ndarray, hr_msi: np.ndarray, srf_matrix: np.ndarray,
                psf: np.ndarray, scale: int, block: int = Q_BLOCK) -> ConsistencyReport:
    """No-reference consistency of ``fused`` ``(C, H, W)`` with its inputs.

    Parameters
    ----------
    fused:
        ``(C, H, W)`` fused image, NaN = nodata.
    lr_hsi:
        ``(C, H/s, W/s)`` LR hyperspectral input.
    hr_msi:
        ``(m, H, W)`` HR multispectral input.
    srf_matrix:
        ``(m, C)`` spectral response matrix.
    psf:
        ``(k, k)`` PSF kernel (see :func:`csakd_qgis.simulation.degradation.blur_decimate`).
    scale:
        Integer resolution ratio.
    block:
        UIQI block size at HR; ``block // scale`` (at least 2) at LR.

    Notes
    -----
    QNR adapted to a multispectral guide (p = q = 1):
    ``D_lambda = mean_{i≠j} |Q(F_i, F_j) - Q(L_i, L_j)|`` over HSI band pairs
    and ``D_s = mean_{i,l} |Q(F_i, M_l) - Q(L_i, M^L_l)|`` over HSI band ``i``
    and MSI band ``l``, where ``F`` is the fused image, ``L`` the LR-HSI,
    ``M`` the MSI and ``M^L`` the MSI blurred and decimated with the same PSF.
    """
    fus = np.asarray(fused, dtype=np.float64)
    lr = np.asarray(lr_hsi, dtype=np.float64)
    msi = np.asarray(hr_msi, dtype=np.float64)
    if fus.ndim != 3 or lr.ndim != 3 or msi.ndim != 3:
        raise InputError("fused, LR-HSI and HR-MSI must all be (bands, rows, cols)")
    if lr.shape[0] != fus.shape[0] or lr.shape[1:] != (fus.shape[1] // scale, fus.shape[2] // scale):
        raise InputError(f"the LR-HSI {lr.shape} does not match the fused image {fus.shape} at scale {scale}")
    if msi.shape[1:] != fus.shape[1:]:
        raise InputError(f"the HR-MSI {msi.shape} does not cover the fused image's grid {fus.shape}")
    fus_lr = blur_decimate(fus, scale, psf)
    fus_msi = spectral_degrade(fus, srf_matrix)
    msi_lr = blur_decimate(msi, scale, psf)
    lr_ok = np.isfinite(lr).all(axis=0) & np.isfinite(fus_lr).all(axis=0) & np.isfinite(msi_lr).all(axis=0)
    hr_ok = np.isfinite(fus).all(axis=0) & np.isfinite(msi).all(axis=0)
    lr_block = max(2, block // scale)
    c = fus.shape[0]
    off = ~np.eye(c, dtype=bool)
    q_f = q_matrix(fus, fus, hr_ok, block)
    q_l = q_matrix(lr, lr, lr_ok, lr_block)
    d_lambda = float(np.mean(np.abs(q_f - q_l)[off])) if c > 1 else 0.0
    d_s = float(np.mean(np.abs(q_matrix(fus, msi, hr_ok, block) - q_matrix(lr, msi_lr, lr_ok, lr_block))))
    return ConsistencyReport(
        psnr_lr=psnr(lr, fus_lr, lr_ok, "range", float(np.nanmax(lr))),
        sam_lr=sam(lr, fus_lr, lr_ok),
        psnr_msi=psnr(msi, fus_msi, hr_ok, "range", float(np.nanmax(msi))),
        sam_msi=sam(msi, fus_msi, hr_ok),
        d_lambda=d_lambda,
        d_s=d_s,
        qnr=(1.0 - d_lambda) * (1.0 - d_s),
    )
