"""Train CSAKD teachers and students on a user's own data: :func:`train` and its step loop.

Modes (:data:`~csakd_qgis.training.config.MODES`)
-------------------------------------------------
``kd``
    Online co-training, as in the paper: each batch first takes a teacher
    step (:func:`~csakd_qgis.training.losses.teacher_loss`), then a student step
    against the *detached* teacher output and fused feature
    (:func:`~csakd_qgis.training.losses.student_loss`).
``offline``
    Distillation from a frozen, already trained teacher checkpoint.
``student``
    The student alone, with the teacher's joint loss (the ablation "same
    student without distillation").
``teacher``
    The teacher alone.

Data comes as :class:`~csakd_qgis.training.data.TrainingData`; validation on
its held-out rows picks the checkpoint saved
(:mod:`csakd_qgis.training.validation`).

Schedule: AdamW (weight decay 0, as the paper) with a cosine learning-rate
decay to 0 over ``steps``, or over ``time_budget_s`` seconds of wall-clock
time when a budget is given.  (The paper decays the teacher with a cosine
over 600 epochs and the student with a step schedule, x0.9 every 100 epochs;
one cosine for both is used here so a time budget works.)
"""

from __future__ import annotations

import functools
import math
import os
import platform
import time
from pathlib import Path
from typing import Callable, ContextManager, List, Optional, Tuple, cast

import torch

from csakd_qgis.devices import resolve_device
from csakd_qgis.models import checkpoint
from csakd_qgis.models.card import Provenance
from csakd_qgis.models.files import optimizer_path_for
from csakd_qgis.progress import SILENT, Reporter
from csakd_qgis.training.baseline import classical_baseline
from csakd_qgis.training.config import TrainConfig
from csakd_qgis.training.data import TrainingData, fit_patch
from csakd_qgis.training.losses import student_loss, teacher_loss
from csakd_qgis.training.networks import Networks, build_networks, output_paths, resume_networks, save_networks
from csakd_qgis.training.patches import PatchSampler
from csakd_qgis.training.report import CurvePoint, TrainReport
from csakd_qgis.training.validation import record


def train(data: TrainingData, config: TrainConfig, out: os.PathLike, *,
          teacher_checkpoint: Optional[os.PathLike] = None, resume: Optional[os.PathLike] = None,
          reporter: Reporter = SILENT) -> TrainReport:
    """Train according to ``config`` and save the best checkpoint(s).

    Parameters
    ----------
    data:
        Training and validation scenes.
    config:
        Options (mode, preset, steps or budget, ...).
    out:
        Destination ``.safetensors`` of the exported model (the student, or
        the teacher in ``teacher`` mode).  In ``kd`` mode the teacher goes to
        :func:`~csakd_qgis.models.files.teacher_path_for`; the optimiser state
        for resuming to :func:`~csakd_qgis.models.files.optimizer_path_for`.
    teacher_checkpoint:
        Frozen teacher for ``offline`` mode.
    resume:
        A checkpoint written by an earlier run with the same data and mode;
        its weights (and teacher, and optimiser state when present) are
        loaded and the step count continues.
    reporter:
        Progress (with ETA in the message) and cancellation.

    Returns
    -------
    TrainReport

    Raises
    ------
    InputError
        Bad options or data too small for a patch; ``offline`` without a teacher.
    ModelMismatchError
        ``teacher_checkpoint`` is not a teacher for ``data``.
    CheckpointError
        A ``resume`` file is missing or does not fit.
    Cancelled
        When ``reporter`` says so (checked once per step).
    """
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    nets = build_networks(data, config, device, teacher_checkpoint)
    start_step = resume_networks(nets, resume) if resume is not None else 0
    sampler = PatchSampler(data.train, fit_patch(config.patch, data), seed=config.seed + start_step)
    paths = output_paths(Path(out), nets)

    curve, step, seconds = _run(nets, sampler, data, config, device, start_step, reporter)

    prov = Provenance(data=data.name, protocol=data.protocol, mode=config.mode, steps=step,
                      epochs=_epochs(data, config, step - start_step), seconds=round(seconds, 1),
                      seed=config.seed, machine=f"{platform.node() or 'unknown'} ({device})")
    reporter.update(1.0, "scoring the classical methods on the validation rows")
    baseline = classical_baseline(data)
    save_networks(nets, paths, data, config, prov, baseline)
    checkpoint.save_optimizer_state(optimizer_path_for(out), nets.optimizers(), {"step": step},
                                    modules=nets.extra_modules())
    best = nets.trained[nets.exported].best
    return TrainReport(
        steps=step, seconds=seconds, best_step=best.step if best else step,
        best_metrics={"psnr": best.psnr, "sam": best.sam} if best and data.val else {},
        curve=tuple(curve), model_path=str(paths[nets.exported]),
        teacher_path=str(paths["teacher"]) if "teacher" in paths and nets.exported != "teacher" else None,
        device=str(device),
        classical=None if baseline is None or best is None else baseline.summary(best.psnr),
    )


def _run(nets: Networks, sampler: PatchSampler, data: TrainingData, config: TrainConfig, device: torch.device,
         start_step: int, reporter: Reporter) -> Tuple[List[CurvePoint], int, float]:
    """Step from ``start_step`` until the step count or time budget is reached.

    Records a curve point every ``val_every`` steps and at the end.  Returns
    the curve, the step count reached and the seconds taken.
    """
    autocast = functools.partial(torch.autocast, device_type=device.type, dtype=torch.bfloat16,
                                 enabled=config.amp and device.type == "cuda")
    curve: List[CurvePoint] = []
    step = start_step
    t0 = time.perf_counter()
    while True:
        elapsed = time.perf_counter() - t0
        if _finished(config, step, elapsed):
            break
        reporter.check()
        _, lr_now = _lr_at(config, step, elapsed)
        for net in nets.trained.values():
            for group in net.optimizer.param_groups:
                group["lr"] = lr_now
        lr_b, msi_b, ref_b = (torch.from_numpy(a).to(device) for a in sampler.batch(config.batch_size))
        _step(nets, lr_b, msi_b, ref_b, autocast)
        step += 1

        elapsed = time.perf_counter() - t0
        if step % config.val_every == 0 or _finished(config, step, elapsed):
            curve.append(record(nets, data, device, step))
            if _stalled(nets, data, config, step):
                break
        frac, _ = _lr_at(config, step, elapsed)
        reporter.update(frac, _progress_message(config, step, start_step, elapsed))

    seconds = time.perf_counter() - t0
    if not curve or curve[-1].step != step:
        curve.append(record(nets, data, device, step))
    return curve, step, seconds


def _step(nets: Networks, lr_b: torch.Tensor, msi_b: torch.Tensor, ref_b: torch.Tensor,
          autocast: Callable[[], ContextManager]) -> None:
    """One batch: a teacher step (or a frozen teacher's forward pass), then a student step.

    ``lr_b`` ``(B, C, h, w)``, ``msi_b`` ``(B, m, h*s, w*s)`` and ``ref_b``
    ``(B, C, h*s, w*s)`` float32 on the training device.  A student without a
    teacher is trained with the teacher's loss.
    """
    t_out = t_feat = None
    if "teacher" in nets.trained:
        net = nets.trained["teacher"]
        with autocast():
            t_out, t_feat = net.model(lr_b, msi_b)
        net.descend(teacher_loss(t_out.float(), ref_b).total)
    elif nets.frozen_teacher is not None:
        with torch.no_grad(), autocast():
            t_out, t_feat = nets.frozen_teacher(lr_b, msi_b)
    if "student" in nets.trained:
        net = nets.trained["student"]
        with autocast():
            s_out, s_feat = net.model(lr_b, msi_b)
        if t_out is None:
            loss = teacher_loss(s_out.float(), ref_b).total
        else:
            teacher_feat = cast(torch.Tensor, t_feat)  # set with t_out
            loss = student_loss(s_out.float(), ref_b, t_out.float(), s_feat.float(), teacher_feat.float(),
                                adapter=nets.adapter).total
        net.descend(loss)


def _finished(config: TrainConfig, step: int, elapsed: float) -> bool:
    """Whether the run is done: ``steps`` reached, or ``time_budget_s`` spent when a budget is given."""
    if config.time_budget_s is not None:
        return elapsed >= config.time_budget_s
    return step >= config.steps


def _stalled(nets: Networks, data: TrainingData, config: TrainConfig, step: int) -> bool:
    """Whether early stopping ends the run: no better validation of the exported network for ``patience`` checks."""
    best = nets.trained[nets.exported].best
    if not config.patience or not data.val or best is None:
        return False
    return step - best.step >= config.patience * config.val_every


def _lr_at(config: TrainConfig, step: int, elapsed: float) -> Tuple[float, float]:
    """(fraction done, learning rate) on the cosine schedule."""
    if config.time_budget_s is not None:
        frac = min(elapsed / config.time_budget_s, 1.0)
    else:
        frac = min(step / config.steps, 1.0)
    return frac, config.learning_rate * 0.5 * (1.0 + math.cos(math.pi * frac))


def _progress_message(config: TrainConfig, step: int, start_step: int, elapsed: float) -> str:
    """``"step 12/300, ETA 40 s"`` (``"step 12, ETA 40 s"`` under a time budget).

    The ETA extrapolates the time per step of this run (since ``start_step``),
    or is the budget left.
    """
    if config.time_budget_s is not None:
        return f"step {step}, ETA {max(config.time_budget_s - elapsed, 0):.0f} s"
    done = (step - start_step) / max(config.steps - start_step, 1)
    eta = elapsed / max(done, 1e-9) - elapsed
    return f"step {step}/{config.steps}, ETA {max(eta, 0):.0f} s"


def _epochs(data: TrainingData, config: TrainConfig, steps: int) -> float:
    """Passes over the valid training pixels that ``steps`` batches of full-size patches make."""
    pixels = sum(sc.valid.sum() for sc in data.train)
    return round(float(steps * config.batch_size * config.patch ** 2 / max(pixels, 1)), 2)
