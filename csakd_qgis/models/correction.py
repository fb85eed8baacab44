"""A CSAKD network as a learned correction on a classical fusion (issue 14).

The classical method (PSF-matched GSA or GLP, fitted on the scene) gives a
base HR-HSI ``Z``.  The network predicts a correction of ``Z`` in the
scene's spectral subspace, so it does not depend on the band count:

* :class:`CoefficientBasis`: the mean ``mu`` and the first ``k`` principal
  directions ``U`` of the scene's LR-HSI (good bands only), each direction
  with a sign fixed by its largest loading and a ``scale`` (the standard
  deviation of the LR pixels' coefficients along it).  Whitened coefficients
  are ``c = U^T (x - mu) / scale``.
* :class:`CorrectionNet`: a :class:`~csakd_qgis.models.dts.DTSNet` (CLRA
  streams, cross self-attention, head) built from a :class:`ModelConfig`
  with ``bands = k`` and ``msi_bands = m + k``.  Its LR input is the LR-HSI's
  coefficients, its HR input the HR-MSI concatenated with the base's
  coefficients.  Project-mode DTS networks add the upsampled LR input to
  their head; that term is taken off again, so what remains is the head
  alone: a residual ``r`` in whitened coefficients.  The corrected image is

  ``out = Z + U (scale * r) + g P_perp (Z - mu)``

  on the good bands (bad bands keep ``Z``), where ``P_perp = I - U U^T`` and
  ``g`` is one learnt scalar (:attr:`CorrectionNet.complement_gain`) that lets
  the network shrink what the base carries outside the subspace (mostly the
  LR-HSI's noise).  The head's last layer and ``g`` start at zero, so an
  untrained network returns ``Z`` exactly.

Every tensor is ``(B, C, H, W)`` float32 in the engine's normalised units
(each input divided by its robust level, see
:func:`csakd_qgis.fusion.radiometry.robust_level`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from csakd_qgis.errors import InputError
from csakd_qgis.models.complexity import count_macs
from csakd_qgis.models.config import ModelConfig
from csakd_qgis.models.dts import DTSNet

#: Subspace rank of the project's correction networks.
DEFAULT_RANK = 16


def correction_config(rank: int, msi_bands: int, scale: int, *, nf: int = 24, gc: int = 12,
                      blocks: Tuple[int, int, int, int] = (0, 2, 2, 1)) -> ModelConfig:
    """The DTS configuration of a correction network (default: the project student's streams).

    ``rank`` is the subspace rank ``k`` (the network's hyperspectral bands),
    ``msi_bands`` the HR-MSI's ``m``; the network's HR input has ``m + k``
    channels (the MSI and the base's coefficients).
    """
    return ModelConfig(rank, msi_bands + rank, scale, nf=nf, gc=gc, blocks=blocks, lr_groups=gc,
                       role="student", fusion="csa_pooled", paper_mode=False, upsample="bicubic", head="light")


def _batch_of_one(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None]


@dataclass(frozen=True)
class CoefficientBasis:
    """Per-image spectral bases of a batch (see the module notes); build with :meth:`from_lr`.

    Attributes
    ----------
    good:
        ``(C_good,)`` int64 indices of the good bands (the same for the whole batch).
    mean:
        ``(B, C_good)`` mean LR spectra.
    basis:
        ``(B, C_good, k)`` orthonormal principal directions, strongest first.
    scale:
        ``(B, k)`` standard deviation of the LR coefficients (> 0).
    """

    good: torch.Tensor
    mean: torch.Tensor
    basis: torch.Tensor
    scale: torch.Tensor

    @classmethod
    def from_lr(cls, lr: np.ndarray, good: Union[np.ndarray, Sequence[bool]],
                rank: int = DEFAULT_RANK) -> CoefficientBasis:
        """PCA of one NaN-free LR-HSI ``(C, h, w)`` over its good bands; a batch of one.

        Raises
        ------
        InputError
            If the image has fewer than ``rank + 1`` pixels or good bands.
        """
        flags = np.asarray(good, dtype=bool)
        x = np.asarray(lr, dtype=np.float64)[flags].reshape(int(flags.sum()), -1).T
        if x.shape[0] <= rank or x.shape[1] < rank:
            raise InputError(f"a rank-{rank} basis needs more than {rank} LR pixels and at least {rank} good "
                             f"bands; got {x.shape[0]} pixels and {x.shape[1]} bands")
        mean = x.mean(axis=0)
        ev, vec = np.linalg.eigh(np.cov(x - mean, rowvar=False))
        vec = vec[:, np.argsort(ev)[::-1][:rank]]
        strongest = np.abs(vec).argmax(axis=0)
        vec = vec * np.sign(vec[strongest, np.arange(rank)])
        spread = ((x - mean) @ vec).std(axis=0)
        spread = np.maximum(spread, 1e-6 * max(float(spread.max()), 1e-12))
        return cls(torch.from_numpy(np.flatnonzero(flags)), _batch_of_one(mean), _batch_of_one(vec),
                   _batch_of_one(spread))

    @classmethod
    def stack(cls, bases: Sequence[CoefficientBasis]) -> CoefficientBasis:
        """One batch from single-image bases with the same good bands."""
        if any(not torch.equal(b.good, bases[0].good) for b in bases):
            raise InputError("the images of a batch must share their good bands")
        return cls(bases[0].good, torch.cat([b.mean for b in bases]), torch.cat([b.basis for b in bases]),
                   torch.cat([b.scale for b in bases]))

    @property
    def rank(self) -> int:
        """Number of directions ``k``."""
        return int(self.basis.shape[2])

    def centred(self, x: torch.Tensor) -> torch.Tensor:
        """Good bands of ``x`` ``(B, C, H, W)`` minus the mean spectrum: ``(B, C_good, H, W)``."""
        return x.index_select(1, self.good) - self.mean[:, :, None, None]

    def coefficients(self, x: torch.Tensor) -> torch.Tensor:
        """Whitened coefficients ``(B, k, H, W)`` of ``x`` ``(B, C, H, W)``."""
        return torch.einsum("bck,bchw->bkhw", self.basis, self.centred(x)) / self.scale[:, :, None, None]

    def spectra(self, coef: torch.Tensor) -> torch.Tensor:
        """Good-band spectra ``(B, C_good, H, W)`` of whitened coefficients ``(B, k, H, W)`` (no mean added)."""
        return torch.einsum("bck,bkhw->bchw", self.basis, coef * self.scale[:, :, None, None])


class CorrectionNet(nn.Module):
    """Residual correction of a classical fusion by a DTS network; see the module notes.

    Parameters
    ----------
    cfg : ModelConfig
        From :func:`correction_config`: ``bands`` is the subspace rank,
        ``msi_bands`` the MSI's band count plus the rank, project mode.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.paper_mode or cfg.msi_bands <= cfg.bands:
            raise InputError("a correction network needs a project-mode configuration whose msi_bands are the "
                             "MSI's bands plus the rank (use correction_config)")
        self.cfg = cfg
        self.body = DTSNet(cfg)
        #: ``g`` of the module notes, the gain on the base's part outside the subspace minus one.
        self.complement_gain = nn.Parameter(torch.zeros(()))

    def residual(self, lr_coef: torch.Tensor, msi: torch.Tensor, base_coef: torch.Tensor) -> torch.Tensor:
        """Whitened residual ``(B, k, H, W)``.

        From the LR coefficients ``(B, k, h, w)``, the HR-MSI ``(B, m, H, W)``
        and the base's coefficients ``(B, k, H, W)``.
        """
        out, _ = self.body(lr_coef, torch.cat((msi, base_coef), 1))
        return out - self.body.decoder.upsampler(lr_coef)

    def forward(self, lr: torch.Tensor, msi: torch.Tensor, base: torch.Tensor,
                basis: CoefficientBasis) -> torch.Tensor:
        """Corrected HR-HSI.

        Parameters
        ----------
        lr : torch.Tensor
            ``(B, C, h, w)`` LR-HSI, normalised, NaN-free.
        msi : torch.Tensor
            ``(B, m, h s, w s)`` HR-MSI, normalised, NaN-free.
        base : torch.Tensor
            ``(B, C, h s, w s)`` the classical fusion of ``lr`` and ``msi``.
        basis : CoefficientBasis
            The batch's bases, rank ``cfg.bands``.

        Returns
        -------
        torch.Tensor
            ``(B, C, h s, w s)``; equal to ``base`` for an untrained network.
        """
        if basis.rank != self.cfg.bands or msi.shape[1] + basis.rank != self.cfg.msi_bands:
            raise InputError(f"the network was built for rank {self.cfg.bands} and "
                             f"{self.cfg.msi_bands - self.cfg.bands} MSI bands; got rank {basis.rank} and "
                             f"{msi.shape[1]} MSI bands")
        if base.shape[1] != lr.shape[1] or base.shape[2:] != msi.shape[2:]:
            raise InputError(f"the base {tuple(base.shape)} must have the LR-HSI's bands ({lr.shape[1]}) on the "
                             f"HR-MSI's grid {tuple(msi.shape[2:])}")
        base_coef = basis.coefficients(base)
        r = self.residual(basis.coefficients(lr), msi, base_coef)
        centred = basis.centred(base)
        outside = centred - basis.spectra(base_coef)
        corrected = base.index_select(1, basis.good) + basis.spectra(r) + self.complement_gain * outside
        return base.index_copy(1, basis.good, corrected)


def correction_macs_per_pixel(cfg: ModelConfig, good_bands: int, lr_size: int = 4) -> float:
    """Multiply-adds per HR output pixel of a :class:`CorrectionNet` on top of its classical base.

    The DTS body (measured as :func:`csakd_qgis.models.macs_per_pixel`) plus
    the projections: the base onto the ``k`` directions, the residual and the
    in-subspace part back (``3 C_good k``), the LR-HSI onto them
    (``C_good k / s^2``).  The classical base is not included.
    """
    size = lr_size * cfg.scale
    body = count_macs(DTSNet(cfg).eval(), (1, cfg.bands, lr_size, lr_size), (1, cfg.msi_bands, size, size))
    k = cfg.bands
    return body / size**2 + 3 * good_bands * k + good_bands * k / cfg.scale**2
