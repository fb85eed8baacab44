"""Classical fusion methods fitted once per scene and applied tile by tile without seams.

* :class:`~csakd_qgis.classical.gsa.PsfGSA`: GSA fitted against the MSI
  blurred by the LR sensor's PSF (not block means).
* :class:`~csakd_qgis.classical.glp.GLP`: MTF-GLP with a regression-synthesised
  guide per HSI band (additive regression gain or HPM injection).
* :class:`~csakd_qgis.classical.subspace.SubspaceFusion`: either of them with
  its output projected onto the LR-HSI's first principal directions (denoising),
  optionally back-projected onto the LR-HSI
  (:class:`~csakd_qgis.classical.consistency.LrConsistency`).

Every method has ``fit(lr_sample, msi_sample_hr, scale, sigma, offset, good)``
returning frozen coefficients (``to_dict``/``from_dict`` for JSON), a
``halo`` in LR pixels and ``apply(lr (B, C, h, w), msi (B, m, h s, w s))``
for NaN-free batches.  :func:`fuse_whole` and the ``*_fuse`` functions run a
method on a whole image as the tiled engine would (mirrored edges),
:class:`ClassicalMethod` adapts a fitted method to the engine's
:class:`~csakd_qgis.fusion.methods.FusionMethod` protocol.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Type, Union, cast

import numpy as np
import torch

from csakd_qgis.classical.filters import KERNELS, Offset, blur_sample, degrade_sample, glp_halo, upsample
from csakd_qgis.classical.glp import GLP
from csakd_qgis.classical.gsa import PsfGSA
from csakd_qgis.classical.subspace import Subspace, SubspaceFusion, default_rank
from csakd_qgis.errors import InputError
from csakd_qgis.fusion.tiling import reflect_pad

Classical = Union[GLP, PsfGSA, SubspaceFusion]

__all__ = ["Classical", "ClassicalMethod", "GLP", "KERNELS", "NOISY_SNR_DB", "PsfGSA", "Subspace",
           "SubspaceFusion", "blur_sample", "choose", "default_rank", "degrade_sample", "fit_method", "from_dict",
           "fuse_whole", "glp_fuse", "glp_halo", "median_snr_db", "psf_gsa_fuse", "subspace_fuse", "upsample"]

#: Median LR-HSI signal-to-noise ratio (dB, mean square over noise variance) below which :func:`choose`
#: keeps the subspace projection when the back-projection has nothing to correct (else PSF-matched GSA).
#: Measured (``docs/benchmarks.md``, "Classical methods", true PSF, mean of 14 EnMAP tiles): the subspace
#: method led PSF-matched GSA by 0.39 dB at 35 dB and trailed it by 0.07 dB at 40 dB, 0.26 dB at 45 dB and
#: 0.18 dB clean; at 35 dB it led by 0.9-1.6 dB on AVIRIS-NG and Indian Pines.
NOISY_SNR_DB = 38.0


def from_dict(d: Dict[str, Any]) -> Classical:
    """Rebuild any classical method from its ``to_dict`` output (dispatch on ``d["type"]``)."""
    kinds: Dict[str, Type[Classical]] = {"glp": GLP, "psf_gsa": PsfGSA, "subspace": SubspaceFusion}
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
    out = cast(np.ndarray, model.apply(x[None], g[None]))[0]  # numpy in, numpy out
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
                  good: Optional[Sequence[bool]] = None, *, rank: Optional[int] = None, method: str = "psf_gsa",
                  **options: Any) -> np.ndarray:
    """Fit :class:`SubspaceFusion` (``method`` ``"psf_gsa"`` or ``"glp"``) on the whole image and apply it."""
    model = SubspaceFusion.fit(lr, msi, scale, sigma, offset, good, rank=rank, method=method, **options)
    return fuse_whole(model, lr, msi)


def fit_method(name: str, lr: np.ndarray, msi: np.ndarray, scale: int, sigma: float,
               offset: Offset = (0.0, 0.0), good: Optional[Sequence[bool]] = None,
               noise_std: Optional[np.ndarray] = None) -> ClassicalMethod:
    """Fit the engine's classical method ``name`` on a scene sample.

    ``"gsa"``: :class:`PsfGSA`; ``"glp"``: :class:`GLP`; ``"subspace"``:
    :class:`SubspaceFusion` with PSF-matched GSA inside, its output
    projected onto the LR-HSI's signal subspace; ``"subspace_bp"``: the same,
    back-projected onto the LR-HSI instead of plainly projected.  ``lr``
    ``(C, h, w)`` and ``msi`` ``(m, h s, w s)`` are the normalised sample,
    NaN = invalid; ``sigma`` (HR pixels) and ``offset`` (LR pixels) the
    estimated PSF and residual misregistration; ``good`` the good-band flags;
    ``noise_std`` ``(C,)`` the LR noise in ``lr``'s units (``subspace_bp``
    only; None: estimated on ``lr``).
    """
    fits: Dict[str, Callable[..., Classical]] = {
        "gsa": PsfGSA.fit, "glp": GLP.fit, "subspace": functools.partial(SubspaceFusion.fit, method="psf_gsa"),
        "subspace_bp": functools.partial(SubspaceFusion.fit, method="psf_gsa", back_project=True,
                                         noise_std=noise_std)}
    if name not in fits:
        raise InputError(f"unknown classical method {name!r}; use one of {', '.join(fits)}")
    return ClassicalMethod(fits[name](lr, msi, scale, sigma, offset, good), name)


def median_snr_db(lr: np.ndarray, noise: np.ndarray) -> Optional[float]:
    """Median over bands of ``10 log10(mean square / noise variance)``, or None when no band's noise is known.

    ``lr`` ``(C, h, w)`` is the LR-HSI sample (NaN = invalid), ``noise``
    ``(C,)`` its estimated noise standard deviation per band (NaN for bad
    bands), in the same units.
    """
    flat = np.asarray(lr, dtype=np.float64).reshape(lr.shape[0], -1)
    finite = np.isfinite(flat)
    power = (np.where(finite, flat, 0.0) ** 2).sum(axis=1) / np.maximum(finite.sum(axis=1), 1)
    noise = np.asarray(noise, dtype=np.float64)
    usable = finite.any(axis=1) & np.isfinite(noise) & (noise > 0)
    if not usable.any():
        return None
    return float(np.median(10.0 * np.log10(power[usable] / noise[usable] ** 2)))


def choose(snr_db: Optional[float], back_projection_active: bool = True) -> Tuple[str, str]:
    """``(method, reason)``: the classical method for an LR-HSI of this SNR (:func:`median_snr_db`, dB).

    ``subspace_bp`` where its back-projection has something to correct (``back_projection_active``, known
    after its fit: :attr:`~csakd_qgis.classical.consistency.LrConsistency.active`); where it has not, its
    output is the plain subspace projection, kept below :data:`NOISY_SNR_DB`, else PSF-matched GSA.
    PSF-matched GSA also when the SNR is unknown.
    """
    if snr_db is None:
        return "gsa", "noise not measurable: PSF-matched GSA"
    snr = snr_db
    if back_projection_active:
        return "subspace_bp", (f"LR-HSI SNR {snr:.1f} dB: PSF-matched GSA in the LR-HSI's signal subspace, "
                               "back-projected onto the LR-HSI (denoised, consistent with both inputs)")
    if snr < NOISY_SNR_DB:
        return "subspace_bp", (f"LR-HSI SNR {snr:.1f} dB < {NOISY_SNR_DB:g} dB and nothing to back-project: "
                               "PSF-matched GSA projected onto the LR-HSI's signal subspace (denoised)")
    return "gsa", (f"LR-HSI SNR {snr:.1f} dB >= {NOISY_SNR_DB:g} dB and nothing to back-project: "
                   "PSF-matched GSA (leads the plain projection on clean scenes)")


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
            return cast(torch.Tensor, self.model.apply(x, g)).numpy()  # tensor in, tensor out
