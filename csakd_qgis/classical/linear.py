"""Small linear-algebra helpers of the classical fits (ridge regression, array conversion, good-band flags)."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch

from csakd_qgis.errors import InputError

ArrayLike = Union[np.ndarray, torch.Tensor]

#: Ridge strength relative to the mean variance of the regressors.
DEFAULT_RIDGE = 1e-6


def ridge(x: np.ndarray, y: np.ndarray, strength: float = DEFAULT_RIDGE) -> Tuple[np.ndarray, np.ndarray]:
    """Least squares with an intercept and a ridge on the slopes.

    ``x`` ``(N, p)``, ``y`` ``(N, q)``; returns ``(slopes (p, q), intercepts
    (q,))`` minimising ``|x B + b - y|^2 + lambda |B|^2`` with ``lambda =
    strength * trace(cov(x)) / p`` (scale-free).
    """
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - x_mean, y - y_mean
    gram = xc.T @ xc
    lam = strength * np.trace(gram) / max(gram.shape[0], 1)
    slopes = np.linalg.solve(gram + lam * np.eye(gram.shape[0]), xc.T @ yc)
    return slopes, y_mean - x_mean @ slopes


def good_flags(good: Optional[Sequence[bool]], bands: int) -> np.ndarray:
    """``(bands,)`` bool flags (all True for None); :class:`InputError` for a wrong length or none good."""
    flags = np.ones(bands, dtype=bool) if good is None else np.asarray(good, dtype=bool).ravel()
    if flags.size != bands or not flags.any():
        raise InputError(f"give one good-band flag per HSI band ({bands}), at least one True")
    return flags


def as_tensor(x: ArrayLike) -> Tuple[torch.Tensor, bool]:
    """``(tensor, was_numpy)``; numpy arrays are wrapped without a copy when possible, integers become float32."""
    if isinstance(x, torch.Tensor):
        t = x
        was_numpy = False
    else:
        t = torch.from_numpy(np.ascontiguousarray(x))
        was_numpy = True
    if not t.is_floating_point():
        t = t.float()
    return t, was_numpy


def check_batch(lr: torch.Tensor, msi: torch.Tensor, scale: int, bands: int, msi_bands: int, what: str) -> None:
    """:class:`InputError` unless ``lr`` is ``(B, bands, h, w)`` and ``msi`` ``(B, msi_bands, h s, w s)``."""
    ok = (lr.ndim == 4 and msi.ndim == 4 and lr.shape[0] == msi.shape[0] and lr.shape[1] == bands
          and msi.shape[1] == msi_bands and msi.shape[2] == lr.shape[2] * scale
          and msi.shape[3] == lr.shape[3] * scale)
    if not ok:
        raise InputError(f"{what} was fitted for {bands} HSI and {msi_bands} MSI bands at scale {scale}; got LR "
                         f"{tuple(lr.shape)} and MSI {tuple(msi.shape)} (expected (B, {bands}, h, w) and "
                         f"(B, {msi_bands}, h*{scale}, w*{scale}))")
