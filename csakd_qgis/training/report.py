"""What a training run reports: its learning curve and where it saved the model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple


@dataclass(frozen=True)
class CurvePoint:
    """Mean training losses since the previous point and the validation metrics at ``step``.

    Losses are None for a network not trained in the mode, metrics None
    without a validation set.  PSNR in dB, SAM in degrees, of the exported
    model (the student, or the teacher in ``teacher`` mode).
    """

    step: int
    teacher_loss: Optional[float]
    student_loss: Optional[float]
    val_psnr: Optional[float]
    val_sam: Optional[float]


@dataclass(frozen=True)
class TrainReport:
    """What a training run did and where it saved its checkpoints."""

    steps: int
    seconds: float
    best_step: int
    best_metrics: Dict[str, float]
    curve: Tuple[CurvePoint, ...]
    model_path: str
    teacher_path: Optional[str]
    device: str
    #: The classical bar on the same validation rows with the exported network's ``gain_db`` over it and the
    #: ``verdict`` written into its card (:meth:`csakd_qgis.training.baseline.Baseline.summary`); None
    #: without a validation set.
    classical: Optional[Dict[str, Any]] = None

    def to_dict(self) -> dict:
        """JSON-ready dict (``curve`` as a list of dicts)."""
        return {"steps": self.steps, "seconds": self.seconds, "best_step": self.best_step,
                "best_metrics": dict(self.best_metrics),
                "curve": [vars(p).copy() for p in self.curve],
                "model_path": self.model_path, "teacher_path": self.teacher_path, "device": self.device,
                "classical": self.classical}
