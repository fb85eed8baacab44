"""Classical fusion methods fitted once per scene and applied tile by tile without seams.

* :class:`~csakd_qgis.classical.gsa.PsfGSA`: GSA fitted against the MSI
  blurred by the LR sensor's PSF (not block means).
* :class:`~csakd_qgis.classical.glp.GLP`: MTF-GLP with a regression-synthesised
  guide per HSI band (additive regression gain or HPM injection).
* :class:`~csakd_qgis.classical.subspace.SubspaceFusion`: either of them on
  the LR-HSI projected onto its first principal directions (denoising).

Every method has ``fit(lr_sample, msi_sample_hr, scale, sigma, offset, good)``
returning frozen coefficients (``to_dict``/``from_dict`` for JSON), a
``halo`` in LR pixels and ``apply(lr (B, C, h, w), msi (B, m, h s, w s))``
for NaN-free batches.  :func:`fuse_whole` and the ``*_fuse`` functions run a
method on a whole image as the tiled engine would (mirrored edges),
:class:`ClassicalMethod` adapts a fitted method to the engine's
:class:`~csakd_qgis.fusion.methods.FusionMethod` protocol.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import torch

from csakd_qgis.classical.filters import KERNELS, Offset, blur_sample, degrade_sample, glp_halo, upsample
from csakd_qgis.classical.glp import GLP
from csakd_qgis.classical.gsa import PsfGSA
from csakd_qgis.classical.subspace import Subspace, SubspaceFusion, default_rank
from csakd_qgis.errors import InputError
from csakd_qgis.fusion.tiling import reflect_pad

Classical = Union[GLP, PsfGSA, SubspaceFusion]

__all__ = ["GLP", "KERNELS", "Classical", "ClassicalMethod", "PsfGSA", "Subspace", "SubspaceFusion",
           "blur_sample", "default_rank", "degrade_sample", "from_dict", "fuse_whole", "glp_fuse", "glp_halo",
           "psf_gsa_fuse", "subspace_fuse", "upsample"]


def from_dict(d: Dict[str, Any]) -> Classical:
    """Rebuild any classical method from its ``to_dict`` output (dispatch on ``d["type"]``)."""
    kinds = {"glp": GLP, "psf_gsa": PsfGSA, "subspace": SubspaceFusion}
    kind = d.get("type")
    if kind not in kinds:
        raise InputError(f"unknown classical method type {kind!r}; expected one of {', '.join(kinds)}")
    return kinds[kind].from_dict(d)


def fuse_whole(model: Classical, lr: np.ndarray, msi: np.ndarray) -> np.ndarray:
    """Apply a fitted method to a whole image, edges mirrored by its halo as the tiled engine reads them.

    ``lr`` ``(C, h, w)`` and ``msi`` ``(m, h s, w s)`` must be finite;
    returns ``(C, h s, w s)`` in ``lr``'s floating dtype (float64 for integers).
    """
    lr = np.asarray(lr)
    lr = lr if np.issubdtype(lr.dtype, np.floating) else lr.astype(np.float64)
    msi = np.asarray(msi, dtype=lr.dtype)
    if not (np.isfinite(lr).all() and np.isfinite(msi).all()):
        raise InputError("fuse_whole needs NaN-free inputs (fill nodata first, as the engine does)")
    halo, s = model.halo, model.scale
    x = reflect_pad(lr, ((halo, halo), (halo, halo)))
    g = reflect_pad(msi, ((halo * s, halo * s), (halo * s, halo * s)))
    out = model.apply(x[None], g[None])[0]
    return out[:, halo * s:out.shape[1] - halo * s, halo * s:out.shape[2] - halo * s]


def psf_gsa_fuse(lr: np.ndarray, msi: np.ndarray, scale: int, sigma: float, offset: Offset = (0.0, 0.0),
                 good: Optional[Sequence[bool]] = None, **options: Any) -> np.ndarray:
    """Fit :class:`PsfGSA` on the whole (finite) image and apply it with :func:`fuse_whole`."""
    return fuse_whole(PsfGSA.fit(lr, msi, scale, sigma, offset, good, **options), lr, msi)


def glp_fuse(lr: np.ndarray, msi: np.ndarray, scale: int, sigma: float, offset: Offset = (0.0, 0.0),
             good: Optional[Sequence[bool]] = None, **options: Any) -> np.ndarray:
    """Fit :class:`GLP` on the whole (finite) image and apply it with :func:`fuse_whole`."""
    return fuse_whole(GLP.fit(lr, msi, scale, sigma, offset, good, **options), lr, msi)


def subspace_fuse(lr: np.ndarray, msi: np.ndarray, scale: int, sigma: float, offset: Offset = (0.0, 0.0),
                  good: Optional[Sequence[bool]] = None, *, rank: Optional[int] = None, method: str = "glp",
                  **options: Any) -> np.ndarray:
    """Fit :class:`SubspaceFusion` (``method`` ``"glp"`` or ``"psf_gsa"``) on the whole image and apply it."""
    model = SubspaceFusion.fit(lr, msi, scale, sigma, offset, good, rank=rank, method=method, **options)
    return fuse_whole(model, lr, msi)


class ClassicalMethod:
    """A fitted classical method behind the engine's :class:`~csakd_qgis.fusion.methods.FusionMethod` protocol.

    ``predict`` runs :meth:`apply` on float32 batches; ``halo`` and ``scale`` are the model's.
    """

    def __init__(self, model: Classical, name: str) -> None:
        self.model = model
        self.name = name
        self.scale = int(model.scale)
        self.halo = int(model.halo)

    def predict(self, lr: np.ndarray, msi: np.ndarray) -> np.ndarray:
        """Fuse ``lr (B, C, h, w)`` and ``msi (B, m, h s, w s)`` (normalised, NaN-free) into float32."""
        x = torch.from_numpy(np.ascontiguousarray(lr, dtype=np.float32))
        g = torch.from_numpy(np.ascontiguousarray(msi, dtype=np.float32))
        with torch.inference_mode():
            return self.model.apply(x, g).numpy()
