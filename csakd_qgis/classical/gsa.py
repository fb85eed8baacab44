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
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

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

    def apply_in_subspace(self, lr: torch.Tensor, msi: torch.Tensor, good: np.ndarray, basis: np.ndarray,
                          mean: np.ndarray) -> Tuple[torch.Tensor, torch.Tensor]:
        """:meth:`apply`'s output split into its coordinates in a subspace and its other bands.

        ``lr (B, C, h, w)`` and ``msi (B, m, h s, w s)`` tensors of one dtype and device; ``good (C,)`` bool
        selects the bands the subspace ``mean + basis b`` (``basis (C_good, k)`` orthonormal) covers.  Returns
        ``b = basis^T (fused[good] - mean)`` ``(B, k, h s, w s)`` and ``fused[~good]`` ``(B, C - C_good, h s, w s)``.

        Exact by linearity (the interpolation acts band by band with weights summing to one):
        ``basis^T (up(x) + G (MSI - W up(x) - o)) = up(basis^T x) + (basis^T G) (MSI - up(W x) - o)``, so
        ``k + m`` bands are interpolated instead of ``C_good`` and nothing of ``C`` bands is formed at HR.
        A NaN stays where :meth:`apply` puts it: a good band's spreads over the pixel's coordinates, another
        band's stays in that band.
        """
        c, m = self.model.gains.shape
        check_batch(lr, msi, self.scale, c, m, "GSA")
        dt, dev = lr.dtype, lr.device
        sel = torch.as_tensor(np.flatnonzero(good), device=lr.device)
        rest = torch.as_tensor(np.flatnonzero(~good), device=lr.device)
        used = torch.as_tensor(np.flatnonzero(np.any(self.model.weights != 0, axis=0)), device=lr.device)
        u = torch.as_tensor(basis, dtype=dt, device=dev)
        w = torch.as_tensor(self.model.weights, dtype=dt, device=dev)
        k = u.shape[1]
        low = torch.cat([torch.einsum("ck,bchw->bkhw", u, lr.index_select(1, sel)),
                         torch.einsum("mc,bchw->bmhw", w.index_select(1, used), lr.index_select(1, used)),
                         lr.index_select(1, rest)], dim=1)
        up = upsample(low, self.scale, self.kernel)
        offsets = torch.as_tensor(self.model.offsets, dtype=dt, device=dev)[:, None, None]
        detail = msi - up[:, k:k + m] - offsets
        gains = torch.as_tensor(self.model.gains, dtype=dt, device=dev)
        shift = torch.as_tensor(basis.T @ mean, dtype=dt, device=dev)[:, None, None]
        coords = up[:, :k] - shift + torch.einsum("km,bmhw->bkhw", u.T @ gains.index_select(0, sel), detail)
        others = up[:, k + m:] + torch.einsum("rm,bmhw->brhw", gains.index_select(0, rest), detail)
        return coords, others

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready ``dict``, inverse of :meth:`from_dict`."""
        return {"type": "psf_gsa", "scale": self.scale, "sigma": self.sigma, "offset": list(self.offset),
                "kernel": self.kernel, "model": self.model.to_dict()}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> PsfGSA:
        """Rebuild from :meth:`to_dict` output."""
        return cls(int(d["scale"]), float(d["sigma"]), (float(d["offset"][0]), float(d["offset"][1])),
                   str(d["kernel"]), GSA.from_dict(d["model"]))
