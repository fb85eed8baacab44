"""Fusion of the four stream feature maps into one.

Every fusion takes the four maps on the HR grid, each ``(B, nf, H, W)``
float32, by stream name, and returns one ``(B, nf, H, W)`` map:

* ``h``: LR-HSI stream (upsampled), the original's ``x1``;
* ``m``: HR-MSI stream, ``x2``;
* ``mh``: LR-HSI + downsampled HR-MSI stream (upsampled), ``x3``;
* ``hm``: upsampled LR-HSI + HR-MSI stream, ``x4``.

Parameter names follow the original code (``fuse_att.query_conv`` ...) so
that its checkpoints load strictly.

A fact about the original cross attention, found while porting it: it forms
the per-head ``16 x 16`` channel-attention matrix ``softmax(q k^T / 4)``
(summed over all pixels) but applies it with
``einsum('bhqk,bhvd->bhqd', attn, v)``, whose ``k`` and ``v`` indices are
distinct, so each is summed on its own.  Softmax rows sum to one, so the
result is the per-head channel sum of ``v`` broadcast to the head's 16
channels: the queries and keys do not change the output (only rounding).
``statistics='collapsed'`` keeps that computation exactly (``fusion='csa'``
and ``'mhca'``); ``'global'`` is the attention the paper describes
(``attn @ v``); ``'local'`` and ``'pooled'`` are the project's size-invariant
variants (statistics over a neighbourhood of each pixel, on the HR grid or on
the LR grid).
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

#: Channels of the query/key/value projections and heads (hard-coded in the original).
ATTN_CHANNELS = 64
ATTN_HEADS = 4
STATISTICS = ("collapsed", "global", "local", "pooled")
_EPS = 1e-6


def _gated_sum(gates: Union[torch.Tensor, Sequence[torch.Tensor]], maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """``sum_i gates[i] * maps[i]`` for four gates broadcastable to the ``(B, nf, H, W)`` maps."""
    return gates[0] * maps[0] + gates[1] * maps[1] + gates[2] * maps[2] + gates[3] * maps[3]


def _split_gates(gates: torch.Tensor):
    """Split per-pixel gates ``(B, 4, H, W)`` into four ``(B, 1, H, W)`` tensors."""
    return [gates[:, i:i + 1] for i in range(4)]


class SumFusion(nn.Module):
    """``h + m + mh + hm`` (the original's ``adaptive_fuse=0``)."""

    def forward(self, h: torch.Tensor, m: torch.Tensor, mh: torch.Tensor, hm: torch.Tensor) -> torch.Tensor:
        """Fuse four ``(B, nf, H, W)`` maps into one of the same shape."""
        return h + m + mh + hm


class SigmoidFusion(nn.Module):
    """Per-stream, per-channel learned sigmoid weights (``adaptive_fuse=1``).

    ``out = sum_i sigmoid(weights[i]) * x_i`` with ``weights`` of shape
    ``(4, nf, 1, 1)``, independent of the input.
    """

    def __init__(self, nf: int):
        super().__init__()
        self.weights = nn.Parameter(torch.randn(4, nf, 1, 1))

    def forward(self, h: torch.Tensor, m: torch.Tensor, mh: torch.Tensor, hm: torch.Tensor) -> torch.Tensor:
        """Fuse four ``(B, nf, H, W)`` maps into one of the same shape."""
        return _gated_sum(torch.sigmoid(self.weights), (h, m, mh, hm))


class ConcatFusion(nn.Module):
    """Per-pixel sigmoid gates from a 1x1 conv over the concatenation (``adaptive_fuse=4``)."""

    def __init__(self, nf: int):
        super().__init__()
        self.attention_conv = nn.Conv2d(4 * nf, 4, 1)

    def forward(self, h: torch.Tensor, m: torch.Tensor, mh: torch.Tensor, hm: torch.Tensor) -> torch.Tensor:
        """Fuse four ``(B, nf, H, W)`` maps into one of the same shape."""
        gates = torch.sigmoid(self.attention_conv(torch.cat((h, m, mh, hm), 1)))
        return _gated_sum(_split_gates(gates), (h, m, mh, hm))


def pooled_window(window: int, scale: int) -> int:
    """Side, in LR pixels (odd, >= 1), of the ``'pooled'`` statistics window for an HR ``window``."""
    return max(1, window // scale) | 1


def attention_radius(statistics: str, window: int, scale: int) -> int:
    """How far, in HR pixels, the attention of one output pixel reaches (0: it sees only its own pixel's features).

    ``'local'`` reaches ``window // 2`` pixels; ``'pooled'`` reaches every HR
    pixel of the LR pixels within ``pooled_window // 2`` of its own, so
    ``(pooled_window // 2 + 1) * scale``; ``'collapsed'`` and ``'global'``
    reach the whole input and are given 0 (bounded only by their
    convolutions; their outputs change with the tile size anyway).
    """
    if statistics == "local":
        return window // 2
    if statistics == "pooled":
        return (pooled_window(window, scale) // 2 + 1) * scale
    return 0


def box_mean(x: torch.Tensor, window: int) -> torch.Tensor:
    """Mean of ``x`` ``(B, C, H, W)`` over a ``window x window`` neighbourhood of each pixel.

    Pixels outside the image are left out of the mean (not zero-padded), so
    the result at a pixel depends only on the input within ``window // 2``
    pixels of it and inside the image.  Same shape as ``x``.  Computed as a
    row mean then a column mean (average pooling with stride 1 that does
    not count the padding); the mean over a clipped rectangle is the mean of
    its rows' means because every row has the same clipped width.
    """
    pad = window // 2
    rows = F.avg_pool2d(x, (1, window), stride=1, padding=(0, pad), count_include_pad=False)
    return F.avg_pool2d(rows, (window, 1), stride=1, padding=(pad, 0), count_include_pad=False)


class CrossAttentionFusion(nn.Module):
    """Multi-head channel cross attention; ``adaptive_fuse=2`` as a fusion.

    Queries come from ``h``, keys from ``m``, values from ``mh`` (1x1 convs
    ``nf -> 64``, 4 heads of 16 channels); the attended values go through a
    1x1 conv ``64 -> nf``.  As a fusion (the original's multi-head cross
    attention) the result is added to ``hm`` and returned.

    Parameters
    ----------
    nf : int
        Channels of the stream maps.
    statistics : {'collapsed', 'global', 'local'}
        How the ``16 x 16`` attention per head is formed and applied (see the
        module docstring): ``'collapsed'`` exactly as the original;
        ``'global'`` ``softmax(q k^T / 4) @ v`` with sums over every pixel;
        ``'local'`` per pixel, from the cosine similarity of query and key
        channels estimated over a ``window x window`` neighbourhood, scaled
        by a learned per-head ``temperature``, then applied to that pixel's
        values; ``'pooled'`` the same on the LR grid: queries and keys are
        averaged over each LR pixel's ``scale x scale`` HR pixels, the
        cosine statistics taken over :func:`pooled_window` LR pixels, and
        the attention of an LR pixel applied to the values of each of its HR
        pixels (``scale**2`` fewer statistics than ``'local'``).
    window : int
        Neighbourhood side in HR pixels for ``'local'`` and ``'pooled'`` (odd).
    scale : int
        LR/HR pixel-size ratio; used by ``'pooled'`` only, whose inputs must
        have sides that are multiples of it, aligned with the LR pixels.
    """

    def __init__(self, nf: int, statistics: str = "collapsed", window: int = 15, scale: int = 1):
        super().__init__()
        if statistics not in STATISTICS:
            raise ValueError(f"statistics must be one of {STATISTICS}, got {statistics!r}")
        self.heads = ATTN_HEADS
        self.head_dim = ATTN_CHANNELS // ATTN_HEADS
        self.statistics = statistics
        self.window = window
        self.scale = scale
        self.query_conv = nn.Conv2d(nf, ATTN_CHANNELS, 1)
        self.key_conv = nn.Conv2d(nf, ATTN_CHANNELS, 1)
        self.value_conv = nn.Conv2d(nf, ATTN_CHANNELS, 1)
        self.output_conv = nn.Conv2d(ATTN_CHANNELS, nf, 1)
        if statistics in ("local", "pooled"):
            self.temperature = nn.Parameter(torch.ones(ATTN_HEADS))

    def attend(self, query_src: torch.Tensor, key_src: torch.Tensor, value_src: torch.Tensor) -> torch.Tensor:
        """Cross attention of three ``(B, nf, H, W)`` maps; returns ``(B, nf, H, W)``."""
        b, _, height, width = query_src.shape
        shape = (b, self.heads, self.head_dim, height * width)
        q = self.query_conv(query_src).view(shape)
        k = self.key_conv(key_src).view(shape)
        v = self.value_conv(value_src).view(shape)
        if self.statistics == "local":
            out = self._local(q, k, v, height, width)
        elif self.statistics == "pooled":
            out = self._pooled(q, k, v, height, width)
        else:
            attn = torch.softmax(torch.einsum("bhqn,bhkn->bhqk", q, k) / math.sqrt(self.head_dim), -1)
            if self.statistics == "global":
                out = attn @ v
            else:
                out = torch.einsum("bhqk,bhvn->bhqn", attn, v)
        return self.output_conv(out.reshape(b, -1, height, width))

    def _local(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Windowed-cosine channel attention on the HR grid; ``q, k, v`` ``(B, heads, d, N)`` -> same shape.

        One head at a time: the ``d x d`` statistics per pixel are the
        largest tensors of the network.
        """
        b, heads, d, _ = q.shape
        grid = (b, 1, d, height, width)
        outs = []
        for i in range(heads):
            qi, ki, vi = (x[:, i:i + 1].reshape(grid) for x in (q, k, v))
            attn = self._cosine_attention(qi, ki, self.window, self.temperature[i:i + 1])
            outs.append((attn * vi[:, :, None]).sum(3).reshape(b, d, height * width))
        return torch.stack(outs, 1)

    @staticmethod
    def _cosine_attention(q: torch.Tensor, k: torch.Tensor, window: int, temperature: torch.Tensor) -> torch.Tensor:
        """Softmax of windowed cosine statistics: ``q, k`` ``(B, heads, d, H, W)`` -> ``(B, heads, d, d, H, W)``.

        Entry ``[:, h, i, j]`` weighs key channel ``j`` for query channel
        ``i`` of head ``h`` (``temperature`` ``(heads,)`` scales its
        logits); it sums to one over ``j``.
        """
        b, heads, d, height, width = q.shape
        cross = box_mean((q[:, :, :, None] * k[:, :, None]).reshape(b, heads * d * d, height, width), window)
        q_energy = box_mean((q * q).reshape(b, heads * d, height, width), window).view(b, heads, d, 1, height, width)
        k_energy = box_mean((k * k).reshape(b, heads * d, height, width), window).view(b, heads, 1, d, height, width)
        logits = cross.view(b, heads, d, d, height, width) * torch.rsqrt(q_energy * k_energy + _EPS)
        return torch.softmax(logits * temperature.view(1, heads, 1, 1, 1, 1), dim=3)

    def _pooled(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Channel attention with statistics on the LR grid; ``q, k, v`` ``(B, heads, d, N)`` -> same shape."""
        b, heads, d, _ = q.shape
        s = self.scale
        h, w = height // s, width // s

        def pool(x: torch.Tensor) -> torch.Tensor:
            return F.avg_pool2d(x.reshape(b, heads * d, height, width), s).view(b, heads, d, h, w)

        attn = self._cosine_attention(pool(q), pool(k), pooled_window(self.window, s), self.temperature)
        # one (d x d) @ (d x s*s) product per LR pixel: the attention of an LR pixel mixes its HR pixels' values
        attn = attn.permute(0, 1, 4, 5, 2, 3)
        values = v.view(b, heads, d, h, s, w, s).permute(0, 1, 3, 5, 2, 4, 6).reshape(b, heads, h, w, d, s * s)
        out = (attn @ values).view(b, heads, h, w, d, s, s)
        return out.permute(0, 1, 4, 2, 5, 3, 6).reshape(b, heads, d, height * width)

    def matmul_macs(self, pixels: int) -> int:
        """Multiply-adds of the attention itself (not its 1x1 convs) over ``pixels`` pixels.

        ``'collapsed'``: ``q k^T`` plus the broadcast product; ``'global'``:
        ``q k^T`` and ``attn @ v``; ``'local'``: the per-pixel products
        ``q_i k_j``, two box-filter passes over them, and ``attn v``;
        ``'pooled'``: the same three statistics terms on ``pixels / scale**2``
        LR pixels, plus ``attn v`` on every pixel.
        """
        per_head = self.head_dim * self.head_dim * pixels
        if self.statistics == "pooled":
            return self.heads * (3 * per_head // (self.scale * self.scale) + per_head)
        factor = {"collapsed": 1, "global": 2, "local": 4}[self.statistics]
        extra = self.head_dim * pixels if self.statistics == "collapsed" else 0
        return self.heads * (factor * per_head + extra)

    def forward(self, h: torch.Tensor, m: torch.Tensor, mh: torch.Tensor, hm: torch.Tensor) -> torch.Tensor:
        """Fuse four ``(B, nf, H, W)`` maps: ``attend(h, m, mh) + hm``."""
        return self.attend(h, m, mh) + hm


class CrossSigmoidFusion(CrossAttentionFusion):
    """Cross self-attention (CSA, ``adaptive_fuse=3``): cross attention, then sigmoid gates.

    ``a = attend(h, m, mh) + hm``; gates ``g = sigmoid(conv1x1([h, m, mh, a]))``
    of shape ``(B, 4, H, W)``; output ``g0 h + g1 m + g2 mh + g3 a``.
    """

    def __init__(self, nf: int, statistics: str = "collapsed", window: int = 15, scale: int = 1):
        super().__init__(nf, statistics, window, scale)
        self.attention_weights = nn.Conv2d(4 * nf, 4, 1)

    def forward(self, h: torch.Tensor, m: torch.Tensor, mh: torch.Tensor, hm: torch.Tensor) -> torch.Tensor:
        """Fuse four ``(B, nf, H, W)`` maps into one of the same shape."""
        attended = self.attend(h, m, mh) + hm
        gates = torch.sigmoid(self.attention_weights(torch.cat((h, m, mh, attended), 1)))
        return _gated_sum(_split_gates(gates), (h, m, mh, attended))


#: Fusion name -> statistics of its cross attention (fusions without attention are absent).
ATTENTION_STATISTICS = {"mhca": "collapsed", "csa": "collapsed", "csa_global": "global",
                        "csa_invariant": "local", "csa_pooled": "pooled"}


def build_fusion(name: str, nf: int, window: int = 15, scale: int = 1) -> nn.Module:
    """Fusion module for a :class:`~csakd_qgis.models.config.ModelConfig` ``fusion`` name.

    ``window`` (HR pixels) and ``scale`` are used by the size-invariant
    attentions only (``csa_invariant``, ``csa_pooled``).
    """
    builders = {
        "sum": lambda: SumFusion(),
        "sigmoid": lambda: SigmoidFusion(nf),
        "concat": lambda: ConcatFusion(nf),
        "mhca": lambda: CrossAttentionFusion(nf, "collapsed"),
        "csa": lambda: CrossSigmoidFusion(nf, "collapsed"),
        "csa_global": lambda: CrossSigmoidFusion(nf, "global"),
        "csa_invariant": lambda: CrossSigmoidFusion(nf, "local", window),
        "csa_pooled": lambda: CrossSigmoidFusion(nf, "pooled", window, scale),
    }
    return builders[name]()
