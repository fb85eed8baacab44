"""The networks of one training run: built for the mode, resumed, stepped, kept at their best and saved.

Per mode (:data:`~csakd_qgis.training.config.MODES`):

``kd``
    A teacher and a student are trained.
``offline``
    A student is trained against a frozen teacher loaded from a checkpoint.
``student`` / ``teacher``
    That network alone is trained.

When a student distils from a teacher of another width (``nf``), a
:class:`~csakd_qgis.training.losses.FeatureAdapter` maps the student's fused
feature to the teacher's and is optimised with the student.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple, cast

import torch

from csakd_qgis.errors import CheckpointError, InputError, ModelMismatchError
from csakd_qgis.models import ModelConfig, build_model, checkpoint, preset
from csakd_qgis.models.card import ModelCard, Provenance
from csakd_qgis.models.files import model_name, optimizer_path_for, teacher_path_for
from csakd_qgis.training.config import TrainConfig
from csakd_qgis.training.data import TrainingData
from csakd_qgis.training.losses import FeatureAdapter

if TYPE_CHECKING:  # a run-time import would be circular (baseline -> validation -> networks)
    from csakd_qgis.training.baseline import Baseline


@dataclass(frozen=True)
class Best:
    """A network's best validation result so far and its weights at that step.

    Without a validation set every record replaces it (PSNR and SAM are NaN),
    so it holds the last weights.

    Attributes
    ----------
    psnr, sam:
        Validation PSNR in dB and SAM in degrees (NaN without a validation set).
    step:
        Steps done when the weights were taken.
    state:
        A deep copy of the model's ``state_dict()``.
    """

    psnr: float
    sam: float
    step: int
    state: Dict[str, torch.Tensor]


class TrainedNet:
    """One network being trained: its model, optimiser, losses since the last record and best state.

    ``extra`` modules (the feature adapter) are optimised together with ``model``.
    """

    def __init__(self, model: torch.nn.Module, role: str, config: ModelConfig, extra: Sequence[torch.nn.Module],
                 tc: TrainConfig):
        self.model = model
        self.role = role
        self.config = config
        params = [p for m in (model, *extra) for p in m.parameters()]
        self.optimizer = torch.optim.AdamW(params, lr=tc.learning_rate, weight_decay=tc.weight_decay)
        self.best: Optional[Best] = None
        self.losses: List[float] = []

    def descend(self, loss: torch.Tensor) -> None:
        """One optimiser step on ``loss`` (a scalar); its value is kept for the curve."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.losses.append(float(loss.detach()))


@dataclass
class Networks:
    """Everything a run trains or distils from.

    Attributes
    ----------
    trained:
        The trained networks by role, ``"teacher"`` before ``"student"`` (the order they step in).
    exported:
        Role of the network saved as the run's model: ``"teacher"`` in ``teacher`` mode, else ``"student"``.
    frozen_teacher:
        The teacher of ``offline`` mode (no gradients).
    adapter:
        Student-to-teacher feature adapter, when their widths differ.
    """

    trained: Dict[str, TrainedNet]
    exported: str
    frozen_teacher: Optional[torch.nn.Module] = None
    adapter: Optional[FeatureAdapter] = None

    def optimizers(self) -> Dict[str, torch.optim.Optimizer]:
        """The optimiser of each trained network, by role."""
        return {role: net.optimizer for role, net in self.trained.items()}

    def extra_modules(self) -> Dict[str, torch.nn.Module]:
        """Trained modules besides the networks (``{"adapter": ...}`` or nothing), by name."""
        return {"adapter": self.adapter} if self.adapter is not None else {}


def check_teacher(card: ModelCard, data: TrainingData, path: str) -> None:
    """Raise :class:`~csakd_qgis.errors.ModelMismatchError` unless ``card`` is a teacher for ``data``."""
    if card.role != "teacher":
        raise ModelMismatchError(f"{path} is a {card.role}, offline distillation needs a teacher checkpoint")
    if card.lr_bands.count != data.bands or card.msi.count != data.msi_bands or card.scale != data.scale:
        raise ModelMismatchError(
            f"teacher {path} expects {card.lr_bands.count} HSI bands, {card.msi.count} MSI bands and scale "
            f"{card.scale}; the training data has {data.bands}, {data.msi_bands} and {data.scale}"
        )


def build_networks(data: TrainingData, config: TrainConfig, device: torch.device,
                   teacher_checkpoint: Optional[os.PathLike] = None) -> Networks:
    """Fresh networks for ``config.mode``.

    The student's initial weights are drawn from a generator seeded with
    ``config.seed`` alone, so they are the same in every mode (a KD student
    and one trained without KD start from the same weights); the teacher and
    the adapter draw theirs from torch's global generator.

    Raises :class:`~csakd_qgis.errors.InputError` in ``offline`` mode without
    ``teacher_checkpoint``, and :class:`~csakd_qgis.errors.ModelMismatchError`
    when that checkpoint is not a teacher for ``data``.
    """
    c, m, s = data.bands, data.msi_bands, data.scale
    nets = Networks({}, "teacher" if config.mode == "teacher" else "student")
    if config.mode in ("kd", "teacher"):
        cfg = preset(f"{config.preset}_teacher", c, m, s)
        nets.trained["teacher"] = TrainedNet(build_model(cfg).to(device).train(), "teacher", cfg, (), config)
    if config.mode == "offline":
        if teacher_checkpoint is None:
            raise InputError("offline distillation needs a trained teacher: pass --teacher TEACHER.safetensors")
        nets.frozen_teacher, tcard = checkpoint.load_checkpoint(teacher_checkpoint, device)
        check_teacher(tcard, data, str(teacher_checkpoint))
        for p in nets.frozen_teacher.parameters():
            p.requires_grad_(False)
    if config.mode in ("kd", "offline", "student"):
        cfg = preset(f"{config.preset}_student", c, m, s)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            student = build_model(cfg).to(device).train()
        extra: Tuple[torch.nn.Module, ...] = ()
        if config.mode != "student":
            t_nf = nets.trained["teacher"].config.nf if "teacher" in nets.trained else int(tcard.config["nf"])
            if t_nf != cfg.nf:
                nets.adapter = FeatureAdapter(cfg.nf, t_nf).to(device)
                extra = (nets.adapter,)
        nets.trained["student"] = TrainedNet(student, "student", cfg, extra, config)
    return nets


def output_paths(out: Path, nets: Networks) -> Dict[str, Path]:
    """Where each saved network goes: the exported one to ``out``, a co-trained teacher beside it."""
    paths = {nets.exported: out}
    if nets.exported == "student" and "teacher" in nets.trained:
        paths["teacher"] = teacher_path_for(out)
    return paths


def resume_networks(nets: Networks, resume: os.PathLike) -> int:
    """Load the weights (and optimiser state, when saved) of an earlier run; return its step count.

    ``resume`` is the earlier run's model file; a co-trained teacher is read
    from beside it (:func:`~csakd_qgis.models.files.teacher_path_for`), the
    optimiser state from :func:`~csakd_qgis.models.files.optimizer_path_for`.
    Without optimiser state the step count starts at 0.

    Raises :class:`~csakd_qgis.errors.CheckpointError` when a network's file
    is missing or does not fit it.
    """
    resume = Path(resume)
    sources = {"student": resume, "teacher": teacher_path_for(resume)} if "student" in nets.trained \
        else {"teacher": resume}
    for role, net in nets.trained.items():
        path = sources[role]
        if not path.exists():
            raise CheckpointError(f"cannot resume the {role}: {path} does not exist")
        state, _ = checkpoint.read_state(path)
        checkpoint.check_state(state, net.model, str(path))
        net.model.load_state_dict(state)
    opt = optimizer_path_for(resume)
    if not opt.exists():
        return 0
    scalars = checkpoint.load_optimizer_state(opt, nets.optimizers(), modules=nets.extra_modules())
    return int(cast(int, scalars.get("step", 0)))


def save_networks(nets: Networks, paths: Dict[str, Path], data: TrainingData, config: TrainConfig,
                  provenance: Provenance, baseline: Optional[Baseline] = None) -> None:
    """Restore each network in ``paths`` to its best state and save it with its model card.

    With a ``baseline`` (the classical bar on the same validation scenes) the
    card's metrics carry the network's gain over it
    (:data:`~csakd_qgis.models.card.CLASSICAL_GAIN_KEY`, which ``auto``
    reads) and its ``limits`` say whether ``auto`` will use the network.
    """
    for role, path in paths.items():
        net = nets.trained[role]
        if net.best is not None:
            net.model.load_state_dict(net.best.state)
        metrics = {"psnr": net.best.psnr, "sam": net.best.sam} if net.best is not None and data.val else {}
        limits = "Use with inputs whose bands, sensor and scale match this card."
        if baseline is not None and metrics:
            metrics.update(baseline.card_metrics(metrics["psnr"]))
            limits += " " + baseline.verdict(metrics["psnr"] - baseline.psnr)
        card = ModelCard(
            name=model_name(path), role=role, config=net.config.to_dict(), scale=data.scale,
            lr_bands=data.lr_bands, msi=data.msi, provenance=provenance,
            validation=f"bottom rows of {data.name or 'the training scene'}" if data.val else "", metrics=metrics,
            description=f"Trained by csakd train (mode {config.mode}, preset {config.preset}).",
            limits=limits,
        )
        checkpoint.save_checkpoint(path, net.model, card)
