"""Shared building blocks: dense units, CLRA blocks, streams and initialisation.

The Cross-Layer Residual Aggregation (CLRA) block of the paper is three dense
units in sequence with a scaled residual around them; a dense unit is five
3x3 convolutions, each seeing the concatenation of the unit's input and all
earlier outputs (growth ``gc``), with a scaled residual of its own.  The
attribute names (``MFB1``..``MFB3``, ``conv1``..``conv5``) are those of the
original code so that its checkpoints load unchanged.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

#: Negative slope of every LeakyReLU in the networks.
LEAKY_SLOPE = 0.2
#: Residual scaling inside and around the dense units.
RESIDUAL_SCALE = 0.2


def scaled_kaiming_(convs: Iterable[nn.Conv2d], scale: float = 0.1) -> None:
    """Kaiming-normal (fan-in) initialisation scaled by ``scale``, zero biases.

    The original initialises the dense units this way (scale 0.1) so that
    every residual branch starts close to zero.
    """
    for conv in convs:
        nn.init.kaiming_normal_(conv.weight, a=0, mode="fan_in")
        with torch.no_grad():
            conv.weight.mul_(scale)
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)


class DenseUnit(nn.Module):
    """Five densely connected 3x3 convolutions with a scaled residual.

    Maps ``(B, nf, H, W)`` to ``(B, nf, H, W)``:
    ``x_k = lrelu(conv_k([x, x_1, ..., x_{k-1}]))`` for k = 1..4,
    ``out = 0.2 * conv_5([x, x_1, ..., x_4]) + x``.

    Parameters
    ----------
    nf : int
        Input and output channels.
    gc : int
        Growth channels (outputs of ``conv1``..``conv4``).
    groups : int
        Convolution groups; must divide ``nf`` and ``gc``.
    """

    conv1: nn.Conv2d
    conv2: nn.Conv2d
    conv3: nn.Conv2d
    conv4: nn.Conv2d

    def __init__(self, nf: int, gc: int, groups: int = 1):
        super().__init__()
        for k in range(1, 5):
            setattr(self, f"conv{k}", nn.Conv2d(nf + (k - 1) * gc, gc, 3, 1, 1, groups=groups))
        self.conv5 = nn.Conv2d(nf + 4 * gc, nf, 3, 1, 1, groups=groups)
        self.lrelu = nn.LeakyReLU(LEAKY_SLOPE)
        scaled_kaiming_([self.conv1, self.conv2, self.conv3, self.conv4, self.conv5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the unit to ``x`` of shape ``(B, nf, H, W)``."""
        feats = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            feats.append(self.lrelu(conv(torch.cat(feats, 1))))
        return self.conv5(torch.cat(feats, 1)) * RESIDUAL_SCALE + x


class CLRABlock(nn.Module):
    """Cross-Layer Residual Aggregation block: three dense units, scaled residual.

    Maps ``(B, nf, H, W)`` to ``(B, nf, H, W)``:
    ``out = 0.2 * MFB3(MFB2(MFB1(x))) + x``.
    """

    def __init__(self, nf: int, gc: int, groups: int = 1):
        super().__init__()
        self.MFB1 = DenseUnit(nf, gc, groups)
        self.MFB2 = DenseUnit(nf, gc, groups)
        self.MFB3 = DenseUnit(nf, gc, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``x`` of shape ``(B, nf, H, W)``."""
        return self.MFB3(self.MFB2(self.MFB1(x))) * RESIDUAL_SCALE + x


def clra_stack(n_blocks: int, nf: int, gc: int, groups: int = 1) -> nn.Sequential:
    """``n_blocks`` CLRA blocks in sequence (an empty stack is the identity)."""
    return nn.Sequential(*(CLRABlock(nf, gc, groups) for _ in range(n_blocks)))


class LightHead(nn.Module):
    """Cheap spectral head: 3x3 conv ``nf -> nf``, LeakyReLU, 1x1 conv ``nf -> bands``.

    Maps ``(B, nf, H, W)`` to ``(B, bands, H, W)`` at ``9 nf^2 + nf bands``
    multiply-adds per pixel, against ``9 nf bands + 9 bands^2`` for the
    paper's head (at 224 bands and nf=24: 10.5 k instead of 500 k).  The 1x1
    projection is a learned spectral basis of ``nf`` vectors; spatial detail
    comes from the 3x3 conv and the residual over the upsampled LR-HSI that
    the project-mode network adds.
    """

    def __init__(self, nf: int, bands: int):
        super().__init__()
        self.conv = nn.Conv2d(nf, nf, 3, 1, 1)
        self.proj = nn.Conv2d(nf, bands, 1)
        self.lrelu = nn.LeakyReLU(LEAKY_SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map fused features ``(B, nf, H, W)`` to ``(B, bands, H, W)``."""
        return self.proj(self.lrelu(self.conv(x)))
