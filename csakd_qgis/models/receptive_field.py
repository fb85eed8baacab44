"""How far a DTS network's output reaches into its input: the halo a tile needs to look like whole-image inference."""

from __future__ import annotations

import math

from csakd_qgis.models.config import ModelConfig
from csakd_qgis.models.fusion import ATTENTION_STATISTICS, attention_radius

#: Chained 3x3 convolutions along the deepest path of one CLRA block (3 dense units x 5 convs).
CONVS_PER_CLRA = 15

def network_halo(cfg: ModelConfig) -> int:
    """Receptive-field radius, in LR pixels, of a DTS network (a conservative bound).

    Counted from the configuration (:class:`csakd_qgis.models.ModelConfig`):

    * LR streams (``mh``, ``h``): the entry 3x3 convolution plus
      :data:`CONVS_PER_CLRA` chained 3x3 convolutions per CLRA block, in LR
      pixels, plus 2 LR pixels for the upsampling of their features and 1
      for the MSI downsampled into ``mh``;
    * HR streams (``m``, and ``hm`` for the teacher): the same count in HR
      pixels, plus 2 LR pixels for the upsampled LR-HSI they see;
    * then the fusion (:func:`csakd_qgis.models.fusion.attention_radius` HR
      pixels for ``csa_invariant`` and ``csa_pooled``;
      the paper's ``csa``/``csa_global`` attend over the whole tile and are
      bounded here only by their convolutions) and the head (two 3x3 convs
      for ``paper``, one for ``light``), in HR pixels.

    Returns ``ceil`` of the deepest path converted to LR pixels.
    """
    s = cfg.scale
    lr_path = 1 + CONVS_PER_CLRA * max(cfg.blocks[1], cfg.blocks[2]) + 3
    hm_blocks = cfg.blocks[0] if cfg.runs_hm_blocks else 0
    hr_path = 1 + CONVS_PER_CLRA * max(cfg.blocks[3], hm_blocks) + 2 * s
    statistics = ATTENTION_STATISTICS.get(cfg.fusion, "")
    fusion = attention_radius(statistics, cfg.attn_window, s)
    head = 2 if cfg.head == "paper" else 1
    return math.ceil((max(lr_path * s, hr_path) + fusion + head) / s)
