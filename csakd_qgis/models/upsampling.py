"""Integer-scale bilinear and bicubic upsampling as fixed-weight convolutions.

For an integer scale ``s`` and half-pixel centres (``align_corners=False``),
output pixel ``o = k*s + p`` lies at input coordinate ``k + d_p`` with
``d_p = (p + 0.5) / s - 0.5`` in ``(-0.5, 0.5)``.  Its value is therefore a
fixed filter of phase ``p`` over input pixels ``k-2 .. k+2`` (bicubic,
Keys' kernel with ``a = -0.75`` as in PyTorch) or ``k-1 .. k+1`` (bilinear),
the same for every ``k``.  :class:`IntegerUpsample` applies these filters as
one convolution per axis over the edge-replicated input and interleaves the
``s x s`` phases with a pixel shuffle.  This reproduces
``F.interpolate(x, scale_factor=s, mode=mode, align_corners=False)``
including its borders: PyTorch clamps bicubic taps to the edge pixel (edge
replication) and clamps the bilinear source coordinate at 0 and its right tap
at the last pixel, which edge replication gives too.

Which form runs
---------------
Exported to ONNX (:func:`torch.onnx.is_in_onnx_export`), :class:`IntegerUpsample`
is ``Pad(edge)``, two ``Conv`` and ``DepthToSpace`` instead of a ``Resize``,
whose cubic mode onnxruntime runs about 25 times slower on CPU (224 bands,
72 x 72 -> 216 x 216, one thread of a 2-core VM: ~1 s against ~40 ms).  Run by torch it
calls ``F.interpolate``: there the convolutions are no faster on CPU
(``pixel_shuffle`` alone costs about a third of a bicubic resize), and the
torch outputs stay bit-identical to earlier releases.

Numerically the two differ only by float32 rounding: ``F.interpolate``
computes each source coordinate ``(o + 0.5) / s - 0.5`` in float32, so its
fractional part drifts from ``d_p`` by up to about ``1e-7 * o``, while the
filters here use the exact ``d_p`` (computed in float64, stored as float32).
"""

from __future__ import annotations

from typing import Dict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: Keys' cubic convolution parameter used by PyTorch's (and OpenCV's) bicubic.
CUBIC_A = -0.75

#: Filter half-width in input pixels per mode: taps at ``k - radius .. k + radius``.
RADIUS: Dict[str, int] = {"bilinear": 1, "bicubic": 2}


def _cubic(x: float) -> float:
    """Keys' kernel with ``a = CUBIC_A`` at distance ``x`` (input pixels)."""
    x, a = abs(x), CUBIC_A
    if x <= 1:
        return ((a + 2) * x - (a + 3)) * x * x + 1
    if x < 2:
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return 0.0


def phase_filters(scale: int, mode: str) -> np.ndarray:
    """``(scale, 2*radius + 1)`` float64 filters; row ``p`` weights input pixels ``k-radius .. k+radius``.

    Raises
    ------
    ValueError
        If ``mode`` is not ``'bilinear'`` or ``'bicubic'`` or ``scale`` < 1.
    """
    if mode not in RADIUS:
        raise ValueError(f"mode must be one of {sorted(RADIUS)}, got {mode!r}")
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    radius = RADIUS[mode]
    filters = np.zeros((scale, 2 * radius + 1))
    for p in range(scale):
        d = (p + 0.5) / scale - 0.5
        for j in range(-radius, radius + 1):
            distance = j - d
            filters[p, j + radius] = _cubic(distance) if mode == "bicubic" else max(0.0, 1.0 - abs(distance))
    return filters


class IntegerUpsample(nn.Module):
    """``F.interpolate(x, scale_factor=scale, mode=mode, align_corners=False)`` as convolutions.

    Parameters
    ----------
    scale : int
        Integer upsampling factor (1 returns the input unchanged).
    mode : {'bilinear', 'bicubic'}
        Interpolation, as in :func:`torch.nn.functional.interpolate`.

    The filters are non-persistent buffers: they follow ``.to(device)`` but
    never appear in state dicts, so checkpoints are unaffected.
    """

    rows: torch.Tensor
    cols: torch.Tensor

    def __init__(self, scale: int, mode: str) -> None:
        super().__init__()
        filters = torch.from_numpy(phase_filters(scale, mode)).float()
        self.scale = scale
        self.mode = mode
        self.radius = RADIUS[mode]
        taps = filters.shape[1]
        # rows: 1 -> s channels (row phase); cols: each row phase -> s column phases,
        # so channel py * s + px is phase (py, px), the order pixel_shuffle expects.
        self.register_buffer("rows", filters.reshape(scale, 1, taps, 1), persistent=False)
        self.register_buffer("cols", filters.repeat(scale, 1).reshape(scale * scale, 1, 1, taps), persistent=False)

    def extra_repr(self) -> str:
        """Scale and mode, shown in ``repr(model)``."""
        return f"scale={self.scale}, mode={self.mode!r}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` -> ``(B, C, h*scale, w*scale)``, same dtype.

        :meth:`convolve` while exporting to ONNX, ``F.interpolate`` otherwise.
        """
        if self.scale == 1:
            return x
        if torch.onnx.is_in_onnx_export():
            return self.convolve(x)
        return F.interpolate(x, scale_factor=self.scale, mode=self.mode, align_corners=False)

    def convolve(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution form of :meth:`forward`: ``(B, C, h, w)`` -> ``(B, C, h*scale, w*scale)``."""
        if self.scale == 1:
            return x
        b, c, h, w = x.shape
        r, s = self.radius, self.scale
        y = F.pad(x.reshape(-1, 1, h, w), (r, r, r, r), mode="replicate")
        y = F.conv2d(y, self.rows.to(x.dtype))
        y = F.conv2d(y, self.cols.to(x.dtype), groups=s)
        return F.pixel_shuffle(y, s).reshape(b, c, h * s, w * s)


def make_upsample(scale: int, mode: str) -> nn.Module:
    """The resampler of ``mode`` at integer ``scale``: :class:`IntegerUpsample`, or ``nn.Upsample`` for ``'nearest'``.

    Raises
    ------
    ValueError
        For an unknown ``mode``.
    """
    if mode == "nearest":
        return nn.Upsample(scale_factor=scale, mode="nearest")
    return IntegerUpsample(scale, mode)
