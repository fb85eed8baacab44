"""GSA fitted in the LR sensor's blur (PSF-matched GSA).

The model is :class:`csakd_qgis.classical.baselines.GSA`'s band-wise generalisation
of Gram-Schmidt Adaptive: ``fused = up(LR) + G (MSI - I(up(LR)))`` with
intensities ``I_l = sum_c a_lc HSI_c + b_l`` and gains ``G (C, m)``.  What
changes is the fit: the intensity weights are regressed between the LR-HSI
and the HR-MSI blurred by the Gaussian PSF of width ``sigma`` and sampled
at the LR pixel centres moved by ``offset``
(:func:`csakd_qgis.classical.filters.degrade_sample`), not the MSI's block
means.  The upsampled LR-HSI carries the offset; the MSI does not, so the
detail ``MSI - I`` also moves the explained part of the scene onto the MSI's
grid.

Halo: the interpolator's support only (2 LR pixels for bicubic), since the
intensity and the detail are computed pixel by pixel at HR.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence

import numpy as np

from csakd_qgis.classical.baselines import GSA
from csakd_qgis.classical.filters import Offset, check_scale, check_sigma, degrade_sample, kernel_radius, upsample
from csakd_qgis.classical.linear import DEFAULT_RIDGE, ArrayLike, as_tensor, check_batch


@dataclass(frozen=True)
class PsfGSA:
    """PSF-matched GSA (see the module notes); build with :meth:`fit`.

    Attributes
    ----------
    scale, sigma, offset:
        Resolution ratio, PSF standard deviation (HR pixels), LR-HSI offset (LR pixels).
    kernel:
        Interpolation kernel of the LR-HSI (:data:`csakd_qgis.classical.filters.KERNELS`).
    model:
        The fitted :class:`csakd_qgis.classical.baselines.GSA` coefficients.
    """

    scale: int
    sigma: float
    offset: Offset
    kernel: str
    model: GSA

    @classmethod
    def fit(cls, lr_sample: np.ndarray, msi_sample_hr: np.ndarray, scale: int, sigma: float,
            offset: Offset = (0.0, 0.0), good: Optional[Sequence[bool]] = None, *, kernel: str = "bicubic",
            ridge_strength: float = DEFAULT_RIDGE) -> PsfGSA:
        """Fit once per scene on a sample; arguments as :meth:`csakd_qgis.classical.glp.GLP.fit`.

        LR pixels whose PSF footprint holds NaN MSI pixels or that are NaN
        in a good HSI band are left out.
        """
        scale, sigma = check_scale(scale), check_sigma(sigma)
        kernel_radius(kernel)
        offset = (float(offset[0]), float(offset[1]))
        msi_lr, usable = degrade_sample(lr_sample, msi_sample_hr, scale, sigma, offset)
        msi_lr[:, ~usable] = np.nan
        model = GSA.fit(np.asarray(lr_sample, dtype=np.float64), msi_lr, good, ridge_strength)
        return cls(scale, sigma, offset, kernel, model)

    @property
    def halo(self) -> int:
        """LR context per tile side: the interpolation kernel's radius."""
        return kernel_radius(self.kernel)

    def apply(self, lr: ArrayLike, msi: ArrayLike) -> ArrayLike:
        """Fuse a batch ``lr (B, C, h, w)``, ``msi (B, m, h s, w s)``; as :meth:`csakd_qgis.classical.glp.GLP.apply`."""
        x, was_numpy = as_tensor(lr)
        g = as_tensor(msi)[0].to(dtype=x.dtype, device=x.device)
        c, m = self.model.gains.shape
        check_batch(x, g, self.scale, c, m, "GSA")
        out = self.model.apply(upsample(x, self.scale, self.kernel), g)
        return out.numpy() if was_numpy else out

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready ``dict``, inverse of :meth:`from_dict`."""
        return {"type": "psf_gsa", "scale": self.scale, "sigma": self.sigma, "offset": list(self.offset),
                "kernel": self.kernel, "model": self.model.to_dict()}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> PsfGSA:
        """Rebuild from :meth:`to_dict` output."""
        return cls(int(d["scale"]), float(d["sigma"]), (float(d["offset"][0]), float(d["offset"][1])),
                   str(d["kernel"]), GSA.from_dict(d["model"]))
