"""CSAKD networks: Dual Two-Streamed teacher and student, CLRA blocks, CSA fusion.

Build a network from a :class:`ModelConfig` (or a named :func:`preset`) with
:func:`build_model`; load the authors' checkpoints with :func:`load_original`.
Every network is called as ``model(lr_hsi, hr_msi) -> (hr_hsi, fused_feature)``
with ``lr_hsi`` ``(B, C, h, w)`` and ``hr_msi`` ``(B, m, h*s, w*s)`` float32.
"""

from csakd_qgis.models.complexity import count_macs, count_parameters
from csakd_qgis.models.config import FUSIONS, PRESETS, ModelConfig, preset
from csakd_qgis.models.dts import DTSNet
from csakd_qgis.models.original import infer_config, load_original


def build_model(cfg: ModelConfig) -> DTSNet:
    """A freshly initialised network for ``cfg`` (training mode, CPU, float32)."""
    return DTSNet(cfg)


def macs_per_pixel(cfg: ModelConfig, lr_size: int = 4) -> float:
    """Multiply-adds per HR output pixel of ``cfg``, measured on a ``lr_size``-pixel-square LR input.

    Nearly independent of the size: every layer is convolutional or
    per-pixel (``'csa_global'``'s attention too: linear in the pixel count).
    """
    size = lr_size * cfg.scale
    macs = count_macs(build_model(cfg).eval(), (1, cfg.bands, lr_size, lr_size),
                      (1, cfg.msi_bands, size, size))
    return macs / (size * size)


__all__ = [
    "FUSIONS", "PRESETS", "DTSNet", "ModelConfig", "build_model", "count_macs", "count_parameters",
    "infer_config", "load_original", "macs_per_pixel", "preset",
]
