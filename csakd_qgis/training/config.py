"""Training options: the modes, the model families and :class:`TrainConfig`.

Imports neither torch nor the models, so a dialog or a command line can
list the choices cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from csakd_qgis.errors import InputError

#: Training modes (see :mod:`csakd_qgis.training.loop`).
MODES = ("kd", "offline", "student", "teacher")
#: Model families; :func:`csakd_qgis.models.preset` builds ``<family>_teacher`` and ``<family>_student``.
PRESET_FAMILIES = ("project", "project_small", "paper")


@dataclass(frozen=True)
class TrainConfig:
    """Training options.

    Attributes
    ----------
    mode:
        One of :data:`MODES`.
    preset:
        Model family, ``"project"`` (CPU-sized, size-invariant attention),
        ``"project_small"`` (the same teacher, a student with about 6x fewer
        multiply-adds) or ``"paper"`` (the authors' sizes, scale 4); see
        :func:`csakd_qgis.models.preset`.
    steps:
        Number of optimisation steps (one batch each); ignored when
        ``time_budget_s`` is given.
    time_budget_s:
        Wall-clock budget in seconds; the cosine schedule runs over it.
    batch_size, patch:
        Patches per step, and the largest HR patch side in pixels (rounded
        down to a multiple of the scale and to the smallest scene, see
        :func:`~csakd_qgis.training.data.fit_patch`).
    learning_rate, weight_decay:
        AdamW settings (peak learning rate of the cosine).
    val_every:
        Validate every this many steps (and at the end).
    seed:
        Seeds torch and the patch sampler; CPU runs with a step count are repeatable.
    device:
        ``"auto"``, ``"cpu"``, ``"cuda"``, ... (:func:`csakd_qgis.devices.resolve_device`).
    amp:
        bf16 autocast on CUDA (ignored on CPU).
    patience:
        Early stopping: end the run once the exported network's validation
        PSNR has not improved for this many validations (``patience *
        val_every`` steps); None or 0 = run the whole schedule.  The saved
        weights are the best validated ones either way.
    """

    mode: str = "kd"
    preset: str = "project"
    steps: int = 300
    time_budget_s: Optional[float] = None
    batch_size: int = 4
    patch: int = 32
    learning_rate: float = 5e-4
    weight_decay: float = 0.0
    val_every: int = 50
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    patience: Optional[int] = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"training mode {self.mode!r} is not one of {MODES}")
        if self.preset not in PRESET_FAMILIES:
            raise InputError(f"model preset {self.preset!r} is not one of {PRESET_FAMILIES}")
        if self.time_budget_s is None and self.steps < 1:
            raise InputError("give a positive number of steps or a time budget")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise InputError(f"time budget {self.time_budget_s} s must be positive")
        if self.batch_size < 1 or self.val_every < 1:
            raise InputError("batch size and validation interval must be positive")
        if self.patience is not None and self.patience < 0:
            raise InputError(f"patience {self.patience} must be a number of validations >= 0")
