"""Classical fusion baselines: bicubic interpolation and multiband GSA.

Both follow the grid convention of :mod:`csakd_qgis.simulation.degradation`: LR pixel
``i`` covers HR pixels ``[i s, (i + 1) s)``, so its centre is at HR pixel
coordinate ``(i + 0.5) s - 0.5``.

GSA with a multispectral guide
------------------------------
Gram-Schmidt Adaptive (Aiazzi et al., 2007) sharpens the upsampled
low-resolution bands with the detail ``P - I`` of a panchromatic image ``P``,
where the intensity ``I`` is a linear combination of the upsampled bands with
weights regressed, at low resolution, against the degraded pan, and each band
receives the detail with its own injection gain.  Here the guide has ``m``
bands, so :class:`GSA` generalises it band-wise:

1. one intensity per MSI band ``l``: ``I_l = Σ_c a_lc HSI_c + b_l``, with the
   weights fitted at LR by ridge regression of ``MSI^L_l`` (the MSI blurred
   and decimated to the LR grid) on the good LR-HSI bands;
2. injection gains ``G`` ``(C, m)``: the multivariate regression, at LR, of
   each HSI band on the ``m`` intensities, i.e. ``G = Cov(HSI, I) Cov(I, I)^-1``;
3. ``fused = HSI_up + G (MSI - I(HSI_up))``.

When the HSI bands are exact linear combinations of the MSI bands (and the
MSI's low-pass is linear in the LR-HSI) this recovers them exactly.  The
estimator is split into :meth:`GSA.fit` (global coefficients, once per
scene) and :meth:`GSA.apply` (per tile), so tiles share one set of
coefficients and no seams appear between them.  Unlike the single-band
original, there is no histogram matching of the guide: the regression
intercepts already put ``I_l`` on the MSI's radiometric scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Union, overload

import numpy as np
import torch
import torch.nn.functional as F

from csakd_qgis.errors import InputError
from csakd_qgis.simulation.degradation import blur_decimate, gaussian_psf

ArrayLike = Union[np.ndarray, torch.Tensor]

#: Ridge strength relative to the mean eigenvalue of the regressors' covariance.
DEFAULT_RIDGE = 1e-6


@overload
def bicubic_upsample(lr: np.ndarray, scale: int) -> np.ndarray: ...


@overload
def bicubic_upsample(lr: torch.Tensor, scale: int) -> torch.Tensor: ...


def bicubic_upsample(lr: ArrayLike, scale: int) -> ArrayLike:
    """Bicubic upsampling by an integer ``scale`` on the shared grid convention.

    Parameters
    ----------
    lr:
        ``(C, h, w)`` or ``(B, C, h, w)`` numpy array or torch tensor.
    scale:
        Integer resolution ratio.

    Returns
    -------
    numpy.ndarray or torch.Tensor
        ``(..., h * scale, w * scale)``, of the input's kind (numpy in -> float64
        numpy out; a tensor keeps its floating dtype).  Uses PyTorch's bicubic
        kernel (``a = -0.75``, ``align_corners=False``, whose sample points are
        exactly ``(i + 0.5) s - 0.5``) with edge replication; NaN spreads to the
        16 neighbours it touches.
    """
    if int(scale) != scale or scale < 1:
        raise InputError(f"the scale must be a positive integer, got {scale!r}")
    scale = int(scale)
    is_numpy = not isinstance(lr, torch.Tensor)
    t = lr if isinstance(lr, torch.Tensor) else torch.from_numpy(np.asarray(lr, dtype=np.float64))
    if t.ndim not in (3, 4):
        raise InputError(f"expected (bands, rows, cols) or (batch, bands, rows, cols), got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        t = t.float()
    batched = t.ndim == 4
    x = t if batched else t[None]
    out = F.interpolate(x, size=(x.shape[-2] * scale, x.shape[-1] * scale), mode="bicubic",
                        align_corners=False)
    out = out if batched else out[0]
    return out.numpy() if is_numpy else out


def _ridge(x: np.ndarray, y: np.ndarray, ridge: float) -> np.ndarray:
    """Slopes ``B`` ``(p, q)`` minimising ``|Xc B - Yc|² + λ|B|²`` for centred ``x (N, p)``, ``y (N, q)``."""
    cov = x.T @ x
    lam = ridge * np.trace(cov) / max(cov.shape[0], 1)
    return np.linalg.solve(cov + lam * np.eye(cov.shape[0]), x.T @ y)


@dataclass(frozen=True)
class GSA:
    """Fitted multiband GSA coefficients (see the module notes).

    Attributes
    ----------
    weights:
        ``(m, C)`` intensity weights ``a_lc`` (zero for bad bands).
    offsets:
        ``(m,)`` intensity intercepts ``b_l`` in MSI units.
    gains:
        ``(C, m)`` injection gains (zero rows for bad bands).
    """

    weights: np.ndarray
    offsets: np.ndarray
    gains: np.ndarray

    @classmethod
    def fit(cls, lr_hsi: np.ndarray, msi_lr: np.ndarray, good: Optional[Sequence[bool]] = None,
            ridge: float = DEFAULT_RIDGE) -> GSA:
        """Estimate the coefficients at low resolution.

        Parameters
        ----------
        lr_hsi:
            ``(C, h, w)`` LR hyperspectral image, NaN = nodata.
        msi_lr:
            ``(m, h, w)`` HR-MSI degraded to the LR grid (e.g. with
            :func:`csakd_qgis.simulation.degradation.blur_decimate` and the LR sensor's PSF).
        good:
            ``(C,)`` flags; bad bands neither build the intensity nor receive detail.
        ridge:
            Ridge strength relative to the mean regressor variance.
        """
        hsi = np.asarray(lr_hsi, dtype=np.float64)
        msi = np.asarray(msi_lr, dtype=np.float64)
        if hsi.ndim != 3 or msi.ndim != 3 or hsi.shape[1:] != msi.shape[1:]:
            raise InputError(f"the LR-HSI {hsi.shape} and the degraded MSI {msi.shape} must be "
                             "(bands, rows, cols) on the same LR grid")
        c, m = hsi.shape[0], msi.shape[0]
        ok = np.ones(c, bool) if good is None else np.asarray(good, dtype=bool).ravel()
        if ok.size != c or not ok.any():
            raise InputError(f"give one good-band flag per HSI band ({c}), at least one True")
        h = hsi[ok].reshape(int(ok.sum()), -1).T
        g = msi.reshape(m, -1).T
        rows = np.isfinite(h).all(axis=1) & np.isfinite(g).all(axis=1)
        if rows.sum() < m + 2:
            raise InputError(f"only {int(rows.sum())} LR pixels are valid in both images; GSA needs "
                             "more overlap between the LR-HSI and the MSI")
        h, g = h[rows], g[rows]
        h_mean, g_mean = h.mean(axis=0), g.mean(axis=0)
        hc, gc = h - h_mean, g - g_mean
        a = _ridge(hc, gc, ridge)                       # (C_good, m)
        intensity = hc @ a                              # centred I at LR, (N, m)
        gains_good = _ridge(intensity, hc, 1e-9).T      # (C_good, m)
        weights = np.zeros((m, c))
        weights[:, ok] = a.T
        gains = np.zeros((c, m))
        gains[ok] = gains_good
        return cls(weights, g_mean - h_mean @ a, gains)

    @overload
    def apply(self, lr_up: np.ndarray, msi: ArrayLike) -> np.ndarray: ...

    @overload
    def apply(self, lr_up: torch.Tensor, msi: ArrayLike) -> torch.Tensor: ...

    def apply(self, lr_up: ArrayLike, msi: ArrayLike) -> ArrayLike:
        """Sharpen ``lr_up`` ``(C, H, W)`` or ``(B, C, H, W)`` with ``msi`` ``(m, H, W)`` or ``(B, m, H, W)``.

        Inputs may be numpy arrays or torch tensors (the result has the kind of ``lr_up``).
        """
        is_numpy = not isinstance(lr_up, torch.Tensor)
        x = lr_up if isinstance(lr_up, torch.Tensor) else torch.from_numpy(np.asarray(lr_up, dtype=np.float64))
        g = torch.as_tensor(np.asarray(msi) if not isinstance(msi, torch.Tensor) else msi,
                             dtype=x.dtype, device=x.device)
        c, m = self.gains.shape
        if x.ndim not in (3, 4) or g.ndim != x.ndim or x.shape[-3] != c or g.shape[-3] != m \
                or x.shape[-2:] != g.shape[-2:]:
            raise InputError(f"GSA was fitted for {c} HSI and {m} MSI bands; got HSI {tuple(x.shape)} "
                             f"and MSI {tuple(g.shape)} (both (…, bands, rows, cols) on one grid)")
        w = torch.as_tensor(self.weights, dtype=x.dtype, device=x.device)
        b = torch.as_tensor(self.offsets, dtype=x.dtype, device=x.device)
        gain = torch.as_tensor(self.gains, dtype=x.dtype, device=x.device)
        used = torch.as_tensor(np.any(self.weights != 0, axis=0), device=x.device)
        xs = x.index_select(-3, torch.nonzero(used)[:, 0])
        intensity = torch.einsum("mc,...chw->...mhw", w[:, used], xs) + b[:, None, None]
        out = x + torch.einsum("cm,...mhw->...chw", gain, g - intensity)
        return out.numpy() if is_numpy else out

    def to_dict(self) -> Dict[str, list]:
        """Plain ``dict`` of lists (JSON), inverse of :meth:`from_dict`."""
        return {"weights": self.weights.tolist(), "offsets": self.offsets.tolist(),
                "gains": self.gains.tolist()}

    @classmethod
    def from_dict(cls, d: Dict[str, list]) -> GSA:
        """Rebuild from :meth:`to_dict` output."""
        return cls(np.asarray(d["weights"], dtype=np.float64), np.asarray(d["offsets"], dtype=np.float64),
                   np.asarray(d["gains"], dtype=np.float64))


def gsa_fuse(lr_hsi: np.ndarray, hr_msi: np.ndarray, scale: int, psf: Optional[np.ndarray] = None,
             good: Optional[Sequence[bool]] = None) -> np.ndarray:
    """Whole-image GSA: degrade the MSI with ``psf`` (default :func:`gaussian_psf`), fit, upsample, apply.

    ``lr_hsi`` is ``(C, h, w)``, ``hr_msi`` ``(m, h s, w s)``; returns ``(C, h s, w s)`` float64.
    """
    kernel = gaussian_psf(scale) if psf is None else psf
    model = GSA.fit(lr_hsi, blur_decimate(hr_msi, scale, kernel), good)
    return model.apply(bicubic_upsample(lr_hsi, scale), hr_msi)
