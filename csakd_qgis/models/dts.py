"""The Dual Two-Streamed (DTS) network: the CSAKD teacher and student.

Four streams extract features from the two inputs, a fusion module merges
them on the HR grid, and a head maps the fused features to the HR-HSI:

* ``hm``: LR-HSI brought to the HR grid, concatenated with the HR-MSI;
* ``mh``: LR-HSI concatenated with the HR-MSI brought to the LR grid
  (features computed at LR, then upsampled);
* ``h``: LR-HSI alone (computed at LR, then upsampled);
* ``m``: HR-MSI alone.

Each stream is a 3x3 entry convolution, LeakyReLU(0.2) and a stack of CLRA
blocks.  With ``cfg.hm_entry == 'split'`` the ``hm`` entry convolution is
split in two: its LR-HSI part runs on the LR grid and is upsampled, its
HR-MSI part runs on the HR grid (``hmconv1_lr``, ``hmconv1_msi``).

The attribute names are the original code's (``hmconv1``, ``hmfeat``, ...,
``fuse``, ``last``, ``fuse_att``) under a ``decoder`` submodule, so
:class:`DTSNet` state dicts have exactly the keys of the authors'
``Teacher`` / ``Student`` checkpoints.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from csakd_qgis.errors import InputError
from csakd_qgis.models.blocks import LEAKY_SLOPE, LightHead, clra_stack
from csakd_qgis.models.config import ModelConfig
from csakd_qgis.models.fusion import build_fusion
from csakd_qgis.models.upsampling import make_upsample


class DTSDecoder(nn.Module):
    """The network body; see :class:`DTSNet` for the inputs and outputs."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        nf, gc = cfg.nf, cfg.gc
        hsi_msi = cfg.bands + cfg.msi_bands
        if cfg.hm_entry == "split":
            self.hmconv1_lr = nn.Conv2d(cfg.bands, nf, 3, 1, 1)
            self.hmconv1_msi = nn.Conv2d(cfg.msi_bands, nf, 3, 1, 1, bias=False)
        else:
            self.hmconv1 = nn.Conv2d(hsi_msi, nf, 3, 1, 1)
        if cfg.runs_hm_blocks or cfg.paper_mode:
            self.hmfeat = clra_stack(cfg.blocks[0], nf, gc)
        self.mhconv1 = nn.Conv2d(hsi_msi, nf, 3, 1, 1)
        self.mhfeat = clra_stack(cfg.blocks[1], nf, gc)
        self.hconv1 = nn.Conv2d(cfg.bands, nf, 3, 1, 1)
        self.hfeat = clra_stack(cfg.blocks[2], nf, gc, cfg.lr_groups)
        self.mconv1 = nn.Conv2d(cfg.msi_bands, nf, 3, 1, 1)
        self.mfeat = clra_stack(cfg.blocks[3], nf, gc)
        # The original student registers the fusion before the head, the
        # teacher after it; the order only shows in state-dict key order.
        if cfg.role == "student":
            self.fuse_att = build_fusion(cfg.fusion, nf, cfg.attn_window, cfg.scale)
        if cfg.head == "paper":
            self.fuse = nn.Conv2d(nf, cfg.bands, 3, 1, 1)
            self.last = nn.Conv2d(cfg.bands, cfg.bands, 3, 1, 1, bias=False)
        else:
            self.head = LightHead(nf, cfg.bands)
        if cfg.role == "teacher":
            self.fuse_att = build_fusion(cfg.fusion, nf, cfg.attn_window, cfg.scale)
        self.lrelu = nn.LeakyReLU(LEAKY_SLOPE)
        # LR -> HR resampling of the features (and, in project mode, of the LR-HSI): no weights in state dicts.
        self.upsampler = make_upsample(cfg.scale, "nearest" if cfg.paper_mode else cfg.upsample)
        if not cfg.paper_mode:
            # Project mode predicts a residual over the upsampled LR-HSI: a zero last layer
            # makes an untrained network start as that upsampling instead of as noise.
            last = self.head.proj if cfg.head == "light" else self.last
            nn.init.zeros_(last.weight)
            if last.bias is not None:
                nn.init.zeros_(last.bias)

    def _resample_inputs(self, lr_hsi: torch.Tensor, hr_msi: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """LR-HSI on the HR grid and HR-MSI on the LR grid."""
        s = self.cfg.scale
        if self.cfg.paper_mode:
            lr_up = F.interpolate(lr_hsi, scale_factor=s, mode="bilinear", align_corners=False)
            msi_down = F.interpolate(hr_msi, scale_factor=1 / s, mode="bicubic", align_corners=False)
        else:
            lr_up = self.upsampler(lr_hsi)
            msi_down = F.avg_pool2d(hr_msi, s)
        return lr_up, msi_down

    def _features_up(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsampler(x)

    def forward(self, lr_hsi: torch.Tensor, hr_msi: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Fuse; shapes as in :meth:`DTSNet.forward`, inputs already checked."""
        lr_up, msi_down = self._resample_inputs(lr_hsi, hr_msi)
        if self.cfg.hm_entry == "split":
            hm = self.lrelu(self._features_up(self.hmconv1_lr(lr_hsi)) + self.hmconv1_msi(hr_msi))
        else:
            hm = self.lrelu(self.hmconv1(torch.cat((lr_up, hr_msi), 1)))
        if self.cfg.runs_hm_blocks:
            hm = self.hmfeat(hm)
        mh = self._features_up(self.mhfeat(self.lrelu(self.mhconv1(torch.cat((lr_hsi, msi_down), 1)))))
        m = self.mfeat(self.lrelu(self.mconv1(hr_msi)))
        h = self._features_up(self.hfeat(self.lrelu(self.hconv1(lr_hsi))))
        fused = self.fuse_att(h, m, mh, hm)
        if self.cfg.head == "paper":
            out = self.last(self.lrelu(self.fuse(fused)))
        else:
            out = self.head(fused)
        if not self.cfg.paper_mode:
            out = out + lr_up
        return out, fused


class DTSNet(nn.Module):
    """CSAKD teacher or student, built from a :class:`ModelConfig`.

    Parameters
    ----------
    cfg : ModelConfig
        Architecture; ``cfg.paper_mode`` selects the original's exact
        structure (state-dict keys ``decoder.*`` as in the authors'
        checkpoints) or the project's variant.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.decoder = DTSDecoder(cfg)

    def check_inputs(self, lr_hsi: torch.Tensor, hr_msi: torch.Tensor) -> None:
        """Raise :class:`~csakd_qgis.errors.InputError` unless the shapes fit this model."""
        cfg = self.cfg
        if lr_hsi.dim() != 4 or hr_msi.dim() != 4:
            raise InputError(f"expected 4-D (B, C, H, W) inputs, got LR-HSI {tuple(lr_hsi.shape)} "
                             f"and HR-MSI {tuple(hr_msi.shape)}")
        if lr_hsi.shape[1] != cfg.bands or hr_msi.shape[1] != cfg.msi_bands:
            raise InputError(f"the model expects {cfg.bands} hyperspectral and {cfg.msi_bands} "
                             f"multispectral bands, got {lr_hsi.shape[1]} and {hr_msi.shape[1]}; "
                             "choose a model trained for these sensors or select matching bands")
        b, _, h, w = lr_hsi.shape
        want = (b, h * cfg.scale, w * cfg.scale)
        got = (hr_msi.shape[0], hr_msi.shape[2], hr_msi.shape[3])
        if got != want:
            raise InputError(f"HR-MSI batch/height/width {got} must be {want}: the LR-HSI "
                             f"{h}x{w} pixels times the model's scale {cfg.scale}")

    def forward(self, lr_hsi: torch.Tensor, hr_msi: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Fuse a low-resolution HSI with a high-resolution MSI.

        Parameters
        ----------
        lr_hsi : torch.Tensor
            ``(B, C, h, w)`` float32 LR-HSI, normalised reflectance roughly
            in ``[0, 1]``, ``C = cfg.bands``.
        hr_msi : torch.Tensor
            ``(B, m, h*s, w*s)`` float32 HR-MSI on the same footprint, same
            normalisation, ``m = cfg.msi_bands``, ``s = cfg.scale``.

        Returns
        -------
        hr_hsi : torch.Tensor
            ``(B, C, h*s, w*s)`` float32 fused HR-HSI (same normalisation).
        fused_feature : torch.Tensor
            ``(B, nf, h*s, w*s)`` fused features before the head (used by
            the distillation loss).

        Raises
        ------
        InputError
            If band counts or sizes do not fit the configuration.
        """
        self.check_inputs(lr_hsi, hr_msi)
        return self.decoder(lr_hsi, hr_msi)
