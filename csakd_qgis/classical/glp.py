"""MTF-GLP with a regression-synthesised guide per hyperspectral band.

Model
-----
For each good HSI band ``b`` a synthetic guide ``P_b = sum_k w_bk MSI_k +
c_b`` is regressed (ridge, tiny) at low resolution: the LR band against the
HR-MSI blurred by the LR sensor's PSF and sampled at the LR pixel centres
(:func:`csakd_qgis.classical.filters.degrade_sample`).  The detail of the
guide is its generalised-Laplacian-pyramid band: ``D_b = P_b - up(low(P_b))``
with ``low`` the same PSF blur and sampling and ``up`` the interpolator that
also upsamples the LR-HSI.  Both are linear, so the detail is computed on
the ``m`` MSI bands once and mixed by the ``(C, m)`` weights:

* ``injection="regression"`` (default):
  ``fused_b = up(LR_b) + g_b sum_k w_bk (MSI_k - up(low(MSI_k)))`` with the
  regression gain ``g_b = cov(LR_b, P^L_b) / var(P^L_b)`` at LR.  Because
  ``P^L_b`` is itself the least-squares fit of ``LR_b``, ``g_b`` is 1 up to
  the ridge's shrinkage; it is kept explicit so the gain is part of the
  stored coefficients.
* ``injection="hpm"`` (high-pass modulation): ``fused_b = up(LR_b) P_b /
  up(low(P_b))``, a multiplicative, locally adaptive gain.  Where the
  low-passed guide is not positive, the band gets the additive detail.

When every good HSI band is an exact linear combination of the MSI bands
and the LR-HSI was made with the same PSF, the regression recovers the
combination and ``fused = up(W low(MSI)) + W (MSI - up(low(MSI))) = W MSI``
exactly, whatever the interpolator.  Bad bands get no detail (their fused
values are the interpolated LR band).

Halo: :func:`csakd_qgis.classical.filters.glp_halo`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from csakd_qgis.classical.filters import (
    Offset,
    blur_sample,
    check_scale,
    check_sigma,
    degrade_sample,
    glp_halo,
    kernel_radius,
    upsample,
)
from csakd_qgis.classical.linear import DEFAULT_RIDGE, ArrayLike, as_tensor, check_batch, good_flags, ridge
from csakd_qgis.errors import InputError

#: Injection rules of :class:`GLP`.
INJECTIONS = ("regression", "hpm")

#: A low-passed HPM guide below this fraction of its band's LR mean counts as not positive.
HPM_FLOOR = 1e-3


@dataclass(frozen=True)
class GLP:
    """Fitted MTF-GLP coefficients (see the module notes); build with :meth:`fit`.

    Attributes
    ----------
    scale, sigma, offset:
        Resolution ratio, PSF standard deviation (HR pixels), LR-HSI offset (LR pixels).
    kernel:
        Interpolation kernel (:data:`csakd_qgis.classical.filters.KERNELS`).
    injection:
        ``"regression"`` or ``"hpm"``.
    weights:
        ``(C, m)`` guide weights ``w_bk`` times the gains ``g_b`` (zero rows for bad bands).
    intercepts:
        ``(C,)`` guide intercepts ``c_b`` (used by HPM).
    floors:
        ``(C,)`` smallest low-passed guide HPM divides by (:data:`HPM_FLOOR` times the band mean).
    """

    scale: int
    sigma: float
    offset: Offset
    kernel: str
    injection: str
    weights: np.ndarray
    intercepts: np.ndarray
    floors: np.ndarray

    @classmethod
    def fit(cls, lr_sample: np.ndarray, msi_sample_hr: np.ndarray, scale: int, sigma: float,
            offset: Offset = (0.0, 0.0), good: Optional[Sequence[bool]] = None, *, kernel: str = "bicubic",
            injection: str = "regression", ridge_strength: float = DEFAULT_RIDGE) -> GLP:
        """Fit the guide weights once per scene on a sample.

        Parameters
        ----------
        lr_sample:
            ``(C, h, w)`` LR-HSI, NaN = invalid (such pixels are left out).
        msi_sample_hr:
            ``(m, h s, w s)`` HR-MSI over the same footprint, NaN = invalid.
        scale, sigma, offset:
            Resolution ratio, PSF standard deviation in HR pixels (0: box),
            offset ``(dx, dy)`` of the LR-HSI in LR pixels
            (:mod:`csakd_qgis.classical.filters`).
        good:
            ``(C,)`` good-band flags; bad bands get no detail.  None: all good.
        kernel, injection:
            See the class attributes.
        ridge_strength:
            Ridge on the weights, relative to the mean MSI variance.

        Raises
        ------
        InputError
            Mismatched shapes, unknown kernel or injection, or fewer valid LR
            pixels than MSI bands + 2.
        """
        scale, sigma = check_scale(scale), check_sigma(sigma)
        kernel_radius(kernel)
        if injection not in INJECTIONS:
            raise InputError(f"unknown injection {injection!r}; use one of {', '.join(INJECTIONS)}")
        offset = (float(offset[0]), float(offset[1]))
        lr = np.asarray(lr_sample, dtype=np.float64)
        msi_lr, usable = degrade_sample(lr, msi_sample_hr, scale, sigma, offset)
        ok = good_flags(good, lr.shape[0])
        rows = usable & np.isfinite(lr[ok]).all(axis=0)
        m = msi_lr.shape[0]
        if rows.sum() < m + 2:
            raise InputError(f"only {int(rows.sum())} LR pixels are valid in both samples; GLP needs at least "
                             f"{m + 2}: give a larger sample or one with less nodata")
        x = msi_lr[:, rows].T                                  # (N, m)
        y = lr[ok][:, rows].T                                  # (N, C_good)
        slopes, intercepts = ridge(x, y, ridge_strength)       # (m, C_good), (C_good,)
        guide = x @ slopes + intercepts                        # P^L at LR, (N, C_good)
        gc, yc = guide - guide.mean(axis=0), y - y.mean(axis=0)
        var = np.sum(gc * gc, axis=0)
        gains = np.where(var > 0, np.sum(gc * yc, axis=0) / np.where(var > 0, var, 1.0), 0.0)
        c = lr.shape[0]
        weights = np.zeros((c, m))
        weights[ok] = slopes.T * (gains[:, None] if injection == "regression" else 1.0)
        full_intercepts = np.zeros(c)
        full_intercepts[ok] = intercepts
        floors = np.zeros(c)
        floors[ok] = HPM_FLOOR * np.abs(y.mean(axis=0))
        return cls(scale, sigma, offset, kernel, injection, weights, full_intercepts, floors)

    @property
    def halo(self) -> int:
        """LR context per tile side for tile-independent output (:func:`~csakd_qgis.classical.filters.glp_halo`)."""
        return glp_halo(self.scale, self.sigma, self.offset, self.kernel)

    def apply(self, lr: ArrayLike, msi: ArrayLike) -> ArrayLike:
        """Fuse a batch: ``lr (B, C, h, w)`` and ``msi (B, m, h s, w s)`` -> ``(B, C, h s, w s)``.

        Inputs are NaN-free numpy arrays or torch tensors (normalised as
        the engine does); the result has the kind and floating dtype of
        ``lr`` (float32 stays float32).  Pixels within :attr:`halo` LR pixels
        of the batch's edge depend on the edge; crop them when tiling.
        """
        x, was_numpy = as_tensor(lr)
        g = torch.as_tensor(msi, dtype=x.dtype, device=x.device)
        c, m = self.weights.shape
        check_batch(x, g, self.scale, c, m, "GLP")
        up = upsample(x, self.scale, self.kernel)
        low, _ = blur_sample(g, self.scale, self.sigma, self.offset)
        low_up = upsample(low, self.scale, self.kernel)
        used = np.flatnonzero(np.any(self.weights != 0, axis=1))
        idx = torch.as_tensor(used, device=x.device)
        w = torch.as_tensor(self.weights[used], dtype=x.dtype, device=x.device)
        if self.injection == "regression":
            detail = torch.einsum("cm,bmhw->bchw", w, g - low_up)
            out = up.index_add_(1, idx, detail)
        else:
            b = torch.as_tensor(self.intercepts[used], dtype=x.dtype, device=x.device)[:, None, None]
            floor = torch.as_tensor(self.floors[used], dtype=x.dtype, device=x.device)[:, None, None]
            guide_low = torch.einsum("cm,bmhw->bchw", w, low_up) + b
            detail = torch.einsum("cm,bmhw->bchw", w, g) + b - guide_low
            sel = up.index_select(1, idx)
            ratio = torch.where(guide_low > floor, sel / guide_low.clamp_min(1e-30), torch.ones((), dtype=x.dtype))
            out = up.index_add_(1, idx, detail * ratio)
        return out.numpy() if was_numpy else out

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready ``dict``, inverse of :meth:`from_dict`."""
        return {"type": "glp", "scale": self.scale, "sigma": self.sigma, "offset": list(self.offset),
                "kernel": self.kernel, "injection": self.injection, "weights": self.weights.tolist(),
                "intercepts": self.intercepts.tolist(), "floors": self.floors.tolist()}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> GLP:
        """Rebuild from :meth:`to_dict` output."""
        offset: Tuple[float, float] = (float(d["offset"][0]), float(d["offset"][1]))
        return cls(int(d["scale"]), float(d["sigma"]), offset, str(d["kernel"]), str(d["injection"]),
                   np.asarray(d["weights"], dtype=np.float64), np.asarray(d["intercepts"], dtype=np.float64),
                   np.asarray(d["floors"], dtype=np.float64))
