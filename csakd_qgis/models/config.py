"""Configuration of a Dual Two-Streamed (DTS) fusion network.

One frozen :class:`ModelConfig` describes every network the project builds:
the authors' teacher and student (``paper_mode=True``, loadable from their
checkpoints) and the project's own variants (``paper_mode=False``).  It is
saved in checkpoints through :meth:`ModelConfig.to_dict` and read back with
:meth:`ModelConfig.from_dict`.

Stream order everywhere in this package (``blocks``, fused maps, gates):

0. ``hm``: LR-HSI upsampled to the HR grid, concatenated with the HR-MSI;
1. ``mh``: LR-HSI concatenated with the HR-MSI downsampled to the LR grid;
2. ``h``: LR-HSI alone;
3. ``m``: HR-MSI alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Tuple

from csakd_qgis.errors import CheckpointError, InputError

#: Fusions of the original code, by name, with their ``adaptive_fuse`` number.
ORIGINAL_FUSIONS = {"sum": 0, "sigmoid": 1, "mhca": 2, "csa": 3, "concat": 4}
#: All fusions: the original ones plus the project's channel attentions.
FUSIONS = tuple(ORIGINAL_FUSIONS) + ("csa_global", "csa_invariant", "csa_pooled")
UPSAMPLING = ("nearest", "bilinear", "bicubic")
HEADS = ("paper", "light")
HM_ENTRIES = ("hr", "split")
ROLES = ("teacher", "student")


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of a DTS network (defaults: the paper's teacher).

    Attributes
    ----------
    bands : int
        Number of hyperspectral bands ``C`` (input LR-HSI and output HR-HSI).
    msi_bands : int
        Number of multispectral bands ``m`` of the HR-MSI.
    scale : int
        Ground-sampling-distance ratio LR / HR (integer >= 2).  Paper mode
        requires 4: the original hard-codes it.
    nf : int
        Feature width of every stream.  Paper: 86.
    gc : int
        Growth channels of the dense units inside the CLRA blocks.  Paper: 43.
    blocks : tuple of 4 int
        CLRA blocks per stream, in the order ``(hm, mh, h, m)``.
        Paper teacher ``(6, 6, 4, 4)``, student ``(1, 4, 4, 1)``.
    lr_groups : int
        Convolution groups inside the CLRA blocks of the LR-HSI stream ``h``.
        The original student uses ``nf // 2``; 1 means dense convolutions.
    role : {'teacher', 'student'}
        ``'student'`` does not run the ``hm`` stream's CLRA blocks (only its
        entry convolution), as the original student.  In paper mode the
        ``blocks[0]`` unused blocks are still registered so that the authors'
        checkpoints load strictly; in project mode they are not built.
    fusion : str
        ``'csa'`` (paper-exact cross self-attention, ``adaptive_fuse=3``),
        ``'sum'``, ``'sigmoid'``, ``'mhca'``, ``'concat'`` (the original's
        alternatives), ``'csa_global'`` (the attention the paper describes,
        computed over the whole input), ``'csa_invariant'`` (channel
        attention with local statistics on the HR grid; the same output on
        tiles and on the whole image) or ``'csa_pooled'`` (the same with the
        statistics on the LR grid, ``scale**2`` times cheaper; the project
        presets' choice).  See ``docs/models.md``.
    attn_window : int
        Side, in HR pixels (odd), of the neighbourhood over which
        ``'csa_invariant'`` and ``'csa_pooled'`` estimate their channel
        statistics (``'csa_pooled'``: ``attn_window // scale`` LR pixels,
        made odd).
    paper_mode : bool
        ``True``: the original structure, resampling (bilinear / bicubic
        inputs, nearest feature upsampling, scale 4) and output head, exactly.
        ``False``: project mode (any integer scale, ``upsample`` resampling,
        area downsampling of the MSI, residual over the upsampled LR-HSI).
    upsample : {'nearest', 'bilinear', 'bicubic'}
        Project mode only: how the LR-HSI and the LR streams' features are
        brought to the HR grid.  Must stay ``'nearest'`` in paper mode.
    head : {'paper', 'light'}
        ``'paper'``: 3x3 ``nf -> C`` conv, LeakyReLU, bias-free 3x3 ``C -> C``
        conv.  ``'light'`` (project mode only): 3x3 ``nf -> nf`` conv,
        LeakyReLU, 1x1 ``nf -> C`` conv.
    hm_entry : {'hr', 'split'}
        The ``hm`` stream's entry convolution.  ``'hr'``: one 3x3
        ``C + m -> nf`` conv on the HR grid over the upsampled LR-HSI and the
        HR-MSI (``9 nf (C + m)`` MACs per HR pixel: 49 k of the project
        student's 205 k at 224 bands).  ``'split'`` (project mode only): a
        3x3 ``C -> nf`` conv on the LR grid, upsampled, plus a bias-free 3x3
        ``m -> nf`` conv on the HR grid (``9 nf (C / s**2 + m)`` MACs).
    """

    bands: int
    msi_bands: int
    scale: int = 4
    nf: int = 86
    gc: int = 43
    blocks: Tuple[int, int, int, int] = (6, 6, 4, 4)
    lr_groups: int = 1
    role: str = "teacher"
    fusion: str = "csa"
    attn_window: int = 15
    paper_mode: bool = True
    upsample: str = "nearest"
    head: str = "paper"
    hm_entry: str = "hr"

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(self.blocks))
        self._validate()

    def _validate(self) -> None:
        for name in ("bands", "msi_bands", "nf", "gc", "lr_groups"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"model option {name}={value!r} must be a positive integer")
        if not isinstance(self.scale, int) or isinstance(self.scale, bool) or self.scale < 2:
            raise InputError(f"model option scale={self.scale!r} must be an integer >= 2 "
                             "(ratio of LR-HSI to HR-MSI pixel size)")
        if len(self.blocks) != 4 or any(not isinstance(b, int) or b < 0 for b in self.blocks):
            raise InputError(f"model option blocks={self.blocks!r} must be four non-negative integers "
                             "(CLRA blocks of the hm, mh, h and m streams)")
        if self.nf % self.lr_groups or self.gc % self.lr_groups:
            raise InputError(f"model option lr_groups={self.lr_groups} must divide nf={self.nf} "
                             f"and gc={self.gc}")
        choices = {"role": ROLES, "fusion": FUSIONS, "upsample": UPSAMPLING, "head": HEADS, "hm_entry": HM_ENTRIES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise InputError(f"model option {name}={getattr(self, name)!r} is not one of {allowed}")
        if not isinstance(self.attn_window, int) or self.attn_window < 1 or self.attn_window % 2 == 0:
            raise InputError(f"model option attn_window={self.attn_window!r} must be a positive odd integer")
        if self.paper_mode:
            self._validate_paper()

    def _validate_paper(self) -> None:
        if self.scale != 4:
            raise InputError(f"paper mode reproduces the original, which hard-codes scale 4 "
                             f"(got scale={self.scale}); use paper_mode=False for other ratios")
        if self.fusion not in ORIGINAL_FUSIONS:
            raise InputError(f"fusion {self.fusion!r} is not in the original code; "
                             f"paper mode accepts {tuple(ORIGINAL_FUSIONS)}")
        if self.upsample != "nearest" or self.head != "paper" or self.hm_entry != "hr":
            raise InputError("paper mode fixes the resampling, the hm entry and the output head; leave "
                             "upsample='nearest', hm_entry='hr' and head='paper' or set paper_mode=False")

    @property
    def runs_hm_blocks(self) -> bool:
        """Whether the ``hm`` stream's CLRA blocks take part in the forward pass."""
        return self.role == "teacher"

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON-serialisable dictionary of every field (``blocks`` as a list)."""
        out = dataclasses.asdict(self)
        out["blocks"] = list(self.blocks)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """Rebuild a configuration saved by :meth:`to_dict`.

        Raises
        ------
        CheckpointError
            If ``data`` holds keys this version does not know, or lacks
            ``bands`` / ``msi_bands``.
        InputError
            If a value is out of range (see the attributes).
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CheckpointError(f"model configuration has unknown keys {unknown}; "
                                  f"it was written by another version (known keys: {sorted(known)})")
        missing = [k for k in ("bands", "msi_bands") if k not in data]
        if missing:
            raise CheckpointError(f"model configuration lacks {missing}")
        kwargs = dict(data)
        if "blocks" in kwargs:
            kwargs["blocks"] = tuple(kwargs["blocks"])
        return cls(**kwargs)


def _paper(bands: int, msi_bands: int, scale: int, role: str) -> ModelConfig:
    if role == "teacher":
        return ModelConfig(bands, msi_bands, scale)
    return ModelConfig(bands, msi_bands, scale, blocks=(1, 4, 4, 1), lr_groups=86 // 2, role="student")


def _project(bands: int, msi_bands: int, scale: int, role: str) -> ModelConfig:
    if role == "teacher":
        return ModelConfig(bands, msi_bands, scale, nf=32, gc=16, blocks=(3, 3, 2, 2),
                           fusion="csa_pooled", paper_mode=False, upsample="bicubic")
    return ModelConfig(bands, msi_bands, scale, nf=24, gc=12, blocks=(0, 2, 2, 1), lr_groups=12,
                       role="student", fusion="csa_pooled", paper_mode=False,
                       upsample="bicubic", head="light")


def _project_small(bands: int, msi_bands: int, scale: int, role: str) -> ModelConfig:
    if role == "teacher":
        return _project(bands, msi_bands, scale, role)
    return ModelConfig(bands, msi_bands, scale, nf=16, gc=8, blocks=(0, 2, 2, 0), lr_groups=8,
                       role="student", fusion="csa_pooled", paper_mode=False, upsample="bicubic",
                       head="light", hm_entry="split")


#: Preset name -> (builder, role).  Paper presets need ``scale=4``.
PRESETS = {
    "paper_teacher": (_paper, "teacher"),
    "paper_student": (_paper, "student"),
    "project_teacher": (_project, "teacher"),
    "project_student": (_project, "student"),
    "project_small_teacher": (_project_small, "teacher"),
    "project_small_student": (_project_small, "student"),
}


def preset(name: str, bands: int, msi_bands: int, scale: int = 4) -> ModelConfig:
    """Configuration of a named preset for the given band counts and scale.

    Parameters
    ----------
    name : str
        One of ``paper_teacher``, ``paper_student`` (nf=86, gc=43, blocks
        ``(6, 6, 4, 4)`` / ``(1, 4, 4, 1)``, CSA, scale 4 only),
        ``project_teacher`` (nf=32, gc=16, ``(3, 3, 2, 2)``, size-invariant
        CSA with LR-grid statistics, ``csa_pooled``) or ``project_student``
        (nf=24, gc=12, ``(0, 2, 2, 1)``, grouped LR stream, light head,
        ``csa_pooled``); ``project_small_student`` (nf=16, gc=8,
        ``(0, 2, 2, 0)``: no CLRA block on the HR grid, ``hm_entry='split'``;
        about 6x fewer multiply-adds than ``project_student``) distils from
        ``project_small_teacher``, which is ``project_teacher``.
    bands, msi_bands : int
        Hyperspectral and multispectral band counts.
    scale : int
        LR / HR pixel-size ratio.

    Raises
    ------
    InputError
        For an unknown name or values the preset cannot take.
    """
    if name not in PRESETS:
        raise InputError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    builder, role = PRESETS[name]
    return builder(bands, msi_bands, scale, role)
