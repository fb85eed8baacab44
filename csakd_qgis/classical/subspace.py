"""Spectral-subspace denoising of a classical fusion's output.

Hyperspectral scenes are low-rank: a handful of principal directions carry
the signal, the rest mostly noise, and the HR-HSI lies in the same spectral
subspace as the LR-HSI (the assumption of HySure- and CNMF-type methods).
:class:`Subspace` fits, on the scene sample, the mean ``mu`` and the first
``k`` principal directions ``U`` ``(C_good, k)`` of the good bands' LR
spectra (mean-centred PCA) and projects every pixel as
``mu + U U^T (x - mu)``; bad bands pass unchanged.  :class:`SubspaceFusion`
runs a classical method (PSF-matched GSA by default, or GLP) on the LR-HSI as
it is and projects its *output*: that removes the noise outside the subspace
from both the upsampled LR-HSI and the injected MSI detail.  The projection is
pixel-wise, so the halo is the inner method's.

Why the output and not the input: projecting the LR-HSI before GSA makes its
intensities (``m`` linear combinations of a rank-``k`` sample) nearly
collinear, and the injection gains regressed on them grew large and noisy.
Measured with the true PSF on ``bench/classical.py``'s scenes at 35 dB SNR
(``docs/classical.md``): input-projected GSA lost 0.7-5 dB against plain GSA
on the sample, AVIRIS-NG and EnMAP tiles; output-projected GSA gained up to
1.6 dB over it (lost at most 0.2 dB on one EnMAP tile); on clean scenes the
output projection lost at most about 0.2 dB.

Default rank (:func:`default_rank`)
-----------------------------------
With ``N`` pixels and ``p`` good bands (``y = p / N``), white noise of
variance ``v`` gives sample-covariance eigenvalues below the
Marchenko-Pastur edge ``v (1 + sqrt(y))^2``, and the median of the
``min(p, N - 1)`` non-zero eigenvalues is about ``v max(1, y)``.  ``v`` is
estimated from that median (most of a hyperspectral spectrum's eigenvalues
are noise), and ``k`` counts the eigenvalues above ``RANK_MARGIN`` times the
edge, clipped to ``[MIN_RANK, MAX_RANK]``.  On a clean scene the median is
tiny, so ``k`` is large and the projection changes little.  Measured
(``bench/classical.py`` data, GLP): at 35 and 30 dB SNR the rule's pick was
within about 0.5 dB of the best fixed rank on the sample, EnMAP tiles and
AVIRIS-NG, 0.3-0.5 dB short on Indian Pines; on clean scenes it loses at
most about 0.15 dB against no projection.  Ranks below 8 lost up to 0.4 dB
on noisy EnMAP tiles, hence :data:`MIN_RANK`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Dict, Optional, Sequence, Tuple, Type, Union, cast

import numpy as np
import torch

from csakd_qgis.classical.consistency import LrConsistency
from csakd_qgis.classical.filters import Offset
from csakd_qgis.classical.glp import GLP
from csakd_qgis.classical.gsa import PsfGSA
from csakd_qgis.classical.linear import ArrayLike, as_tensor, good_flags
from csakd_qgis.errors import InputError
from csakd_qgis.estimation.noise import estimate_noise

#: Bounds of the default rank.
MIN_RANK, MAX_RANK = 8, 60

#: Factor on the Marchenko-Pastur noise edge above which an eigenvalue counts as signal.
RANK_MARGIN = 4.0

Inner = Union[GLP, PsfGSA]

#: Methods :class:`SubspaceFusion` can wrap, by name.
INNER: Dict[str, Type[Inner]] = {"glp": GLP, "psf_gsa": PsfGSA}


def default_rank(eigenvalues: np.ndarray, pixels: int) -> int:
    """Number of principal directions to keep (see the module notes).

    ``eigenvalues`` are the ``p`` eigenvalues (any order) of the good bands'
    sample covariance over ``pixels`` LR pixels.
    """
    ev = np.sort(np.clip(np.asarray(eigenvalues, dtype=np.float64), 0.0, None))[::-1]
    p, n = ev.size, max(int(pixels), 2)
    ratio = p / n
    noise = np.median(ev[:min(p, n - 1)]) / max(1.0, ratio)
    k = int(np.sum(ev > RANK_MARGIN * noise * (1.0 + np.sqrt(ratio)) ** 2))
    return int(min(max(k, MIN_RANK), MAX_RANK, p, n - 1))


@dataclass(frozen=True)
class Subspace:
    """Mean and principal directions of the good bands; build with :meth:`fit`.

    Attributes
    ----------
    good:
        ``(C,)`` bool, the bands projected.
    mean:
        ``(C_good,)`` mean spectrum.
    basis:
        ``(C_good, k)`` orthonormal principal directions, strongest first.
    """

    good: np.ndarray
    mean: np.ndarray
    basis: np.ndarray

    @classmethod
    def fit(cls, lr_sample: np.ndarray, good: Optional[Sequence[bool]] = None,
            rank: Optional[int] = None) -> Subspace:
        """PCA of the LR sample ``(C, h, w)``; pixels NaN in a good band are left out.

        ``rank`` None: :func:`default_rank`.
        """
        lr = np.asarray(lr_sample, dtype=np.float64)
        if lr.ndim != 3:
            raise InputError(f"the LR-HSI sample must be (bands, rows, cols), got shape {lr.shape}")
        ok = good_flags(good, lr.shape[0])
        x = lr[ok].reshape(int(ok.sum()), -1).T
        x = x[np.isfinite(x).all(axis=1)]
        if x.shape[0] < 3:
            raise InputError(f"only {x.shape[0]} LR pixels are valid in every good band; the subspace needs 3")
        mean = x.mean(axis=0)
        xc = x - mean
        ev, vec = np.linalg.eigh(xc.T @ xc / (x.shape[0] - 1))
        order = np.argsort(ev)[::-1]
        ev, vec = ev[order], vec[:, order]
        k = default_rank(ev, x.shape[0]) if rank is None else int(rank)
        if not 1 <= k <= vec.shape[1]:
            raise InputError(f"the subspace rank must lie in 1..{vec.shape[1]} (good bands), got {rank!r}")
        return cls(ok, mean, vec[:, :k])

    @property
    def rank(self) -> int:
        """Number of principal directions kept."""
        return int(self.basis.shape[1])

    def project(self, lr: ArrayLike) -> ArrayLike:
        """Project ``(C, h, w)`` or ``(B, C, h, w)`` onto the subspace; same kind and dtype, NaN spreads per pixel."""
        x, was_numpy = as_tensor(lr)
        if x.ndim not in (3, 4) or x.shape[-3] != self.good.size:
            raise InputError(f"the subspace was fitted for {self.good.size} bands; got shape {tuple(x.shape)}")
        idx = torch.as_tensor(np.flatnonzero(self.good), device=x.device)
        u = torch.as_tensor(self.basis, dtype=x.dtype, device=x.device)
        mu = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device)[:, None, None]
        sel = x.index_select(-3, idx) - mu
        coef = torch.einsum("ck,...chw->...khw", u, sel)
        projected = torch.einsum("ck,...khw->...chw", u, coef) + mu
        out = x.clone()
        out.index_copy_(-3, idx, projected)
        return out.numpy() if was_numpy else out

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready ``dict``, inverse of :meth:`from_dict`."""
        return {"good": self.good.tolist(), "mean": self.mean.tolist(), "basis": self.basis.tolist()}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> Subspace:
        """Rebuild from :meth:`to_dict` output."""
        return cls(np.asarray(d["good"], dtype=bool), np.asarray(d["mean"], dtype=np.float64),
                   np.asarray(d["basis"], dtype=np.float64))


def in_subspace(inner: Inner, lr: torch.Tensor, msi: torch.Tensor, good: np.ndarray, basis: np.ndarray,
                mean: np.ndarray) -> Tuple[torch.Tensor, torch.Tensor]:
    """``inner``'s output as coordinates in a subspace ``(B, k, H, W)`` and its other bands ``(B, C - C_good, H, W)``.

    Arguments as :meth:`~csakd_qgis.classical.gsa.PsfGSA.apply_in_subspace`, which GSA runs (it never forms
    the ``C`` bands at HR); another method's full output is projected.
    """
    if isinstance(inner, PsfGSA):
        return inner.apply_in_subspace(lr, msi, good, basis, mean)
    fused = cast(torch.Tensor, inner.apply(lr, msi))  # tensor in, tensor out
    u = torch.as_tensor(basis, dtype=fused.dtype, device=fused.device)
    mu = torch.as_tensor(mean, dtype=fused.dtype, device=fused.device)[:, None, None]
    return torch.einsum("ck,bchw->bkhw", u, fused[:, torch.as_tensor(good)] - mu), fused[:, torch.as_tensor(~good)]


def _coordinates(inner: Inner, lr: torch.Tensor, msi: torch.Tensor, basis: np.ndarray, mean: np.ndarray, *,
                 good: np.ndarray) -> torch.Tensor:
    """:func:`in_subspace`'s coordinates alone (:data:`~csakd_qgis.classical.consistency.Coordinates`)."""
    return in_subspace(inner, lr, msi, good, basis, mean)[0]


@dataclass(frozen=True)
class SubspaceFusion:
    """A classical method whose output is projected onto the LR-HSI's signal subspace; build with :meth:`fit`.

    Attributes
    ----------
    subspace:
        The fitted :class:`Subspace`.
    inner:
        The fitted :class:`~csakd_qgis.classical.gsa.PsfGSA` or
        :class:`~csakd_qgis.classical.glp.GLP`, fitted on the sample as it is.
    """

    subspace: Subspace
    inner: Inner
    consistency: Optional[LrConsistency] = None

    @classmethod
    def fit(cls, lr_sample: np.ndarray, msi_sample_hr: np.ndarray, scale: int, sigma: float,
            offset: Offset = (0.0, 0.0), good: Optional[Sequence[bool]] = None, *, rank: Optional[int] = None,
            method: str = "psf_gsa", back_project: bool = False, noise_std: Optional[np.ndarray] = None,
            **options: Any) -> SubspaceFusion:
        """Fit the subspace and ``method`` (``"psf_gsa"`` or ``"glp"``, with ``options``) on the sample.

        The other arguments are those of :meth:`csakd_qgis.classical.glp.GLP.fit`; ``rank`` None: :func:`default_rank`.
        ``back_project``: replace the plain projection by :class:`~csakd_qgis.classical.consistency.LrConsistency`,
        with the LR noise ``noise_std`` ``(C,)`` (None: estimated on ``lr_sample``).
        """
        if method not in INNER:
            raise InputError(f"unknown subspace method {method!r}; use one of {', '.join(INNER)}")
        subspace = Subspace.fit(lr_sample, good, rank)
        inner = INNER[method].fit(lr_sample, msi_sample_hr, scale, sigma, offset, good, **options)
        if not back_project:
            return cls(subspace, inner)
        noise = noise_std
        if noise is None:
            try:
                noise = estimate_noise(lr_sample, good=list(subspace.good))
            except InputError:  # too few pixels: no back-projection (LrConsistency.fit)
                noise = np.full(subspace.good.size, np.nan)
        coordinates = partial(_coordinates, inner, good=subspace.good)
        consistency = LrConsistency.fit(subspace, coordinates, inner.halo, lr_sample, msi_sample_hr, noise, scale,
                                        sigma, offset)
        return cls(subspace, inner, consistency)

    @property
    def scale(self) -> int:
        """Resolution ratio of the inner method."""
        return self.inner.scale

    @property
    def halo(self) -> int:
        """LR context per tile side: the inner method's (the projection is pixel-wise), plus the back-projection's."""
        return self.inner.halo + (0 if self.consistency is None else self.consistency.halo)

    def apply(self, lr: ArrayLike, msi: ArrayLike) -> ArrayLike:
        """Fuse ``lr (B, C, h, w)`` with ``msi (B, m, h s, w s)`` by the inner method, then project the result.

        With a back-projection, the projection is its corrected one.  Same kind and dtype as ``lr``.  The fused
        image is formed only as its subspace coordinates (:meth:`~csakd_qgis.classical.gsa.PsfGSA.apply_in_subspace`
        for GSA), which the back-projection corrects and the basis then expands; bands outside the subspace are
        the inner method's output.
        """
        x, was_numpy = as_tensor(lr)
        dt, dev = x.dtype, x.device
        g = as_tensor(msi)[0].to(dtype=dt, device=dev)
        frame = self.consistency if self.consistency is not None else self.subspace
        good = self.subspace.good
        coords, others = in_subspace(self.inner, x, g, good, frame.basis, frame.mean)
        if self.consistency is not None:
            coords = self.consistency.correct(coords, x)
        basis = np.zeros((good.size, frame.basis.shape[1]))  # zero rows for the other bands, filled in after
        basis[good] = frame.basis
        mean = np.zeros(good.size)
        mean[good] = frame.mean
        out = torch.einsum("ck,bkhw->bchw", torch.as_tensor(basis, dtype=dt, device=dev), coords)
        out += torch.as_tensor(mean, dtype=dt, device=dev)[:, None, None]
        out.index_copy_(1, torch.as_tensor(np.flatnonzero(~good), device=dev), others)
        return out.numpy() if was_numpy else out

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready ``dict``, inverse of :meth:`from_dict`."""
        d = {"type": "subspace", "subspace": self.subspace.to_dict(), "inner": self.inner.to_dict()}
        if self.consistency is not None:
            d["consistency"] = self.consistency.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> SubspaceFusion:
        """Rebuild from :meth:`to_dict` output."""
        inner_type = d["inner"]["type"]
        inner = GLP.from_dict(d["inner"]) if inner_type == "glp" else PsfGSA.from_dict(d["inner"])
        consistency = LrConsistency.from_dict(d["consistency"]) if "consistency" in d else None
        return cls(Subspace.from_dict(d["subspace"]), inner, consistency)
