"""Train CSAKD teachers and students on a user's own data.

Modes (:data:`MODES`)
---------------------
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

Data (:class:`TrainingData`)
----------------------------
* :meth:`TrainingData.from_reference`: a reference HR-HSI degraded once by
  :func:`~csakd_qgis.simulation.degradation.simulate_pair` (sensor SRF, PSF, scale);
* :meth:`TrainingData.from_scene`: a real LR-HSI / HR-MSI pair by Wald's
  protocol (:mod:`csakd_qgis.training.scene_adaptive`).

The bottom ``val_fraction`` of each scene's rows is held out for validation
(PSNR and SAM of the full held-out block, every ``val_every`` steps); the
checkpoint with the best validation PSNR is the one saved.

Schedule: AdamW (weight decay 0, as the paper) with a cosine learning-rate
decay to 0 over ``steps``, or over ``time_budget_s`` seconds of wall-clock
time when a budget is given.  (The paper decays the teacher with a cosine
over 600 epochs and the student with a step schedule, x0.9 every 100 epochs;
one cosine for both is used here so a time budget works.)
"""

from __future__ import annotations

import copy
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from csakd_qgis.devices import resolve_device
from csakd_qgis.errors import CheckpointError, InputError, ModelMismatchError
from csakd_qgis.fusion.radiometry import robust_level
from csakd_qgis.models import checkpoint
from csakd_qgis.models.card import ModelCard, MsiInfo, Provenance, SpectralBands
from csakd_qgis.progress import SILENT, Reporter
from csakd_qgis.training.losses import FeatureAdapter, student_loss, teacher_loss
from csakd_qgis.training.patches import PatchSampler, Scene, fill_empty_bands

MODES = ("kd", "offline", "student", "teacher")
PRESET_FAMILIES = ("project", "project_small", "paper")


# ----------------------------------------------------------------------------- data


def _split_rows(scene: Scene, val_fraction: float) -> Tuple[Scene, Optional[Scene]]:
    """Hold out the bottom ``val_fraction`` of the LR rows (and the HR rows under them)."""
    h = scene.lr.shape[1]
    n_val = int(round(h * val_fraction))
    if val_fraction <= 0 or n_val == 0:
        return scene, None
    if n_val >= h:
        raise InputError(f"val_fraction {val_fraction} leaves no training rows")
    s, cut = scene.scale, h - n_val

    def part(lo: int, hi: int) -> Scene:
        return Scene(scene.lr[:, lo:hi], scene.msi[:, lo * s:hi * s], scene.ref[:, lo * s:hi * s],
                     scene.valid[lo * s:hi * s], s)

    return part(0, cut), part(cut, h)


@dataclass(frozen=True)
class TrainingData:
    """Normalised training and validation scenes plus the metadata that goes into the card."""

    train: Tuple[Scene, ...]
    val: Tuple[Scene, ...]
    lr_bands: SpectralBands
    msi: MsiInfo
    scale: int
    protocol: str
    name: str = ""

    @property
    def bands(self) -> int:
        """Number of HSI bands C."""
        return self.train[0].lr.shape[0]

    @property
    def msi_bands(self) -> int:
        """Number of MSI bands m."""
        return self.train[0].msi.shape[0]

    @classmethod
    def from_reference(cls, reference: np.ndarray, wavelengths_nm: Sequence[float],
                       fwhm_nm: Optional[Sequence[float]] = None, good: Optional[Sequence[bool]] = None, *,
                       sensor: str = "sentinel2", bands: Sequence[str] = ("B2", "B3", "B4", "B8"),
                       scale: int = 4, val_fraction: float = 0.2, valid: Optional[np.ndarray] = None,
                       snr_db: Optional[float] = None, seed: int = 0, name: str = "") -> TrainingData:
        """Simulate the LR-HSI / HR-MSI pair of a reference once and split it.

        Parameters
        ----------
        reference:
            ``(C, H, W)`` HR-HSI in physical units, NaN = nodata (cropped to multiples of ``scale``).
        wavelengths_nm, fwhm_nm, good:
            ``(C,)`` band centres (nm), FWHMs (nm) and good-band flags.
        sensor, bands:
            The MSI to simulate (see :func:`csakd_qgis.simulation.srf.sensor_bands`).
        scale:
            Integer LR/HR pixel-size ratio.
        val_fraction:
            Fraction of rows (bottom) held out for validation; 0 = none.
        valid:
            Optional ``(H, W)`` mask, True = valid.
        snr_db, seed:
            Noise added by the simulator, and its seed.
        name:
            Name of the data for the model card.
        """
        from csakd_qgis.simulation.degradation import simulate_pair

        ref = fill_empty_bands(reference)
        if valid is not None:
            ref[:, ~np.asarray(valid, dtype=bool)] = np.nan
        pair = simulate_pair(ref, wavelengths_nm, fwhm_nm, good, sensor=sensor, bands=bands, scale=scale,
                             snr_db=snr_db, seed=seed)
        lr_level = robust_level(pair.lr_hsi, name="simulated LR-HSI")
        msi_level = robust_level(pair.hr_msi, name="simulated HR-MSI")
        s = pair.scale
        ok = np.isfinite(pair.reference).all(axis=0) & np.isfinite(pair.hr_msi).all(axis=0)
        ok &= np.kron(np.isfinite(pair.lr_hsi).all(axis=0), np.ones((s, s), dtype=bool))
        scene = Scene(np.nan_to_num(pair.lr_hsi / lr_level).astype(np.float32),
                      np.nan_to_num(pair.hr_msi / msi_level).astype(np.float32),
                      np.nan_to_num(pair.reference / lr_level).astype(np.float32), ok, s)
        train, val = _split_rows(scene, val_fraction)
        sb = pair.sensor_bands
        return cls((train,), (val,) if val is not None else (),
                   SpectralBands(tuple(float(w) for w in wavelengths_nm),
                                 tuple(float(f) for f in fwhm_nm) if fwhm_nm is not None else (),
                                 tuple(bool(g) for g in good) if good is not None else ()),
                   MsiInfo(sb.sensor, tuple(sb.names), tuple(sb.centres_nm)), s, "simulation", name)

    @classmethod
    def from_scene(cls, lr_hsi: np.ndarray, hr_msi: np.ndarray, scale: int, *,
                   lr_bands: SpectralBands, msi: MsiInfo, lr_valid: Optional[np.ndarray] = None,
                   msi_valid: Optional[np.ndarray] = None, val_fraction: float = 0.2,
                   name: str = "") -> TrainingData:
        """Scene-adaptive data from a real pair by Wald's protocol (see :mod:`csakd_qgis.training.scene_adaptive`).

        ``lr_hsi`` is ``(C, h, w)``, ``hr_msi`` ``(m, h*s, w*s)``, physical units, NaN = nodata.
        """
        from csakd_qgis.training.scene_adaptive import wald_scene

        scene = wald_scene(lr_hsi, hr_msi, scale, lr_valid=lr_valid, msi_valid=msi_valid)
        train, val = _split_rows(scene, val_fraction)
        return cls((train,), (val,) if val is not None else (), lr_bands, msi, int(scale), "wald", name)


# ----------------------------------------------------------------------------- configuration and report


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
        :func:`fit_patch`).
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

    def to_dict(self) -> dict:
        """JSON-ready dict (``curve`` as a list of dicts)."""
        return {"steps": self.steps, "seconds": self.seconds, "best_step": self.best_step,
                "best_metrics": dict(self.best_metrics),
                "curve": [vars(p).copy() for p in self.curve],
                "model_path": self.model_path, "teacher_path": self.teacher_path, "device": self.device}


def fit_patch(requested: int, data: TrainingData) -> int:
    """HR patch side actually used: the largest multiple of the scale not above ``requested`` nor any scene side.

    Raises :class:`~csakd_qgis.errors.InputError` when a scene is smaller than
    two LR pixels of patch.
    """
    s = data.scale
    smallest = min(min(sc.hr_shape) for sc in data.train)
    patch = min(requested, smallest) // s * s
    if patch < 2 * s:
        raise InputError(f"the training scenes ({smallest} HR pixels on their short side) are too small for "
                         f"patches of at least {2 * s} pixels at scale {s}; use a larger scene")
    return patch


def teacher_path_for(out: os.PathLike) -> Path:
    """``model.safetensors`` -> ``model.teacher.safetensors`` (where KD saves its teacher)."""
    p = Path(out)
    return p.with_name(p.name[: -len(".safetensors")] + ".teacher.safetensors"
                       if p.name.endswith(".safetensors") else p.name + ".teacher.safetensors")


def optimizer_path_for(out: os.PathLike) -> Path:
    """Where the optimiser state for ``--resume`` is kept (``model.optim.safetensors``)."""
    p = Path(out)
    stem = p.name[: -len(".safetensors")] if p.name.endswith(".safetensors") else p.name
    return p.with_name(stem + ".optim.safetensors")


# ----------------------------------------------------------------------------- validation


def validation_metrics(out: torch.Tensor, ref: torch.Tensor, valid: torch.Tensor) -> Tuple[float, float]:
    """PSNR (dB) and SAM (degrees) of ``out`` vs ``ref`` (C, H, W) over ``valid`` (H, W) pixels.

    PSNR is the mean over bands of ``10 log10(max_b(ref)^2 / MSE_b)`` (the
    paper's per-band peak); SAM the mean angle between spectra.  Bands whose
    reference is nowhere positive (bad bands filled with 0) are left out.  Units cancel,
    so normalised values give the same numbers as physical ones.
    """
    signal = ref.reshape(ref.shape[0], -1).amax(dim=1) > 0  # bands filled with 0 (bad bands) are left out
    o = out.double()[signal][:, valid]
    r = ref.double()[signal][:, valid]
    mse = ((o - r) ** 2).mean(dim=1).clamp_min(1e-20)
    psnr = float((10 * torch.log10(r.max(dim=1).values.clamp_min(1e-20) ** 2 / mse)).mean())
    cos = (o * r).sum(0) / (o.norm(dim=0) * r.norm(dim=0)).clamp_min(1e-20)
    sam = float(torch.rad2deg(torch.arccos(cos.clamp(-1, 1))).mean())
    return psnr, sam


def _validate(model: torch.nn.Module, scenes: Sequence[Scene], device: torch.device) -> Tuple[float, float]:
    model.eval()
    psnrs, sams = [], []
    with torch.no_grad():
        for sc in scenes:
            lr = torch.from_numpy(sc.lr)[None].to(device)
            msi = torch.from_numpy(sc.msi)[None].to(device)
            out = model(lr, msi)[0][0].float().cpu()
            p, s = validation_metrics(out, torch.from_numpy(sc.ref), torch.from_numpy(sc.valid))
            psnrs.append(p)
            sams.append(s)
    model.train()
    return float(np.mean(psnrs)), float(np.mean(sams))


# ----------------------------------------------------------------------------- trainer


def _check_teacher(card: ModelCard, data: TrainingData, path: str) -> None:
    if card.role != "teacher":
        raise ModelMismatchError(f"{path} is a {card.role}, offline distillation needs a teacher checkpoint")
    if card.lr_bands.count != data.bands or card.msi.count != data.msi_bands or card.scale != data.scale:
        raise ModelMismatchError(
            f"teacher {path} expects {card.lr_bands.count} HSI bands, {card.msi.count} MSI bands and scale "
            f"{card.scale}; the training data has {data.bands}, {data.msi_bands} and {data.scale}"
        )


def _lr_at(config: TrainConfig, step: int, elapsed: float) -> Tuple[float, float]:
    """(fraction done, learning rate) on the cosine schedule."""
    if config.time_budget_s is not None:
        frac = min(elapsed / config.time_budget_s, 1.0)
    else:
        frac = min(step / config.steps, 1.0)
    return frac, config.learning_rate * 0.5 * (1.0 + math.cos(math.pi * frac))


class _Net:
    """One trained network with its optimiser and best state."""

    def __init__(self, model: torch.nn.Module, role: str, config, extra: Sequence[torch.nn.Module],
                 tc: TrainConfig):
        self.model = model
        self.role = role
        self.config = config
        params = [p for m in (model, *extra) for p in m.parameters()]
        self.optimizer = torch.optim.AdamW(params, lr=tc.learning_rate, weight_decay=tc.weight_decay)
        self.best: Optional[Tuple[float, float, int, dict]] = None
        self.losses: List[float] = []


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
        :func:`teacher_path_for`; the optimiser state for resuming to
        :func:`optimizer_path_for`.
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
    """
    from csakd_qgis.models import build_model, preset

    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    amp = config.amp and device.type == "cuda"
    c, m, s = data.bands, data.msi_bands, data.scale
    nets: Dict[str, _Net] = {}
    frozen_teacher: Optional[torch.nn.Module] = None
    adapter: Optional[FeatureAdapter] = None

    if config.mode in ("kd", "teacher"):
        cfg = preset(f"{config.preset}_teacher", c, m, s)
        nets["teacher"] = _Net(build_model(cfg).to(device).train(), "teacher", cfg, (), config)
    if config.mode == "offline":
        if teacher_checkpoint is None:
            raise InputError("offline distillation needs a trained teacher: pass --teacher TEACHER.safetensors")
        frozen_teacher, tcard = checkpoint.load_checkpoint(teacher_checkpoint, device)
        _check_teacher(tcard, data, str(teacher_checkpoint))
        for p in frozen_teacher.parameters():
            p.requires_grad_(False)
    if config.mode in ("kd", "offline", "student"):
        cfg = preset(f"{config.preset}_student", c, m, s)
        student = build_model(cfg).to(device).train()
        extra: Tuple[torch.nn.Module, ...] = ()
        if config.mode != "student":
            t_nf = nets["teacher"].config.nf if "teacher" in nets else int(tcard.config["nf"])
            if t_nf != cfg.nf:
                adapter = FeatureAdapter(cfg.nf, t_nf).to(device)
                extra = (adapter,)
        nets["student"] = _Net(student, "student", cfg, extra, config)
    exported = "teacher" if config.mode == "teacher" else "student"

    start_step = 0
    if resume is not None:
        start_step = _resume(nets, adapter, resume, device)

    sampler = PatchSampler(data.train, fit_patch(config.patch, data), seed=config.seed + start_step)
    out = Path(out)
    paths = {exported: out}
    if config.mode == "kd":
        paths["teacher"] = teacher_path_for(out)
    curve: List[CurvePoint] = []
    step = start_step
    t0 = time.perf_counter()
    total = None if config.time_budget_s is not None else config.steps

    def autocast():
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp)

    while True:
        elapsed = time.perf_counter() - t0
        if total is not None and step >= total:
            break
        if total is None and elapsed >= config.time_budget_s:
            break
        reporter.check()
        frac, lr_now = _lr_at(config, step, elapsed)
        for net in nets.values():
            for group in net.optimizer.param_groups:
                group["lr"] = lr_now
        lr_b, msi_b, ref_b = (torch.from_numpy(a).to(device) for a in sampler.batch(config.batch_size))

        t_out = t_feat = None
        if "teacher" in nets:
            net = nets["teacher"]
            with autocast():
                t_out, t_feat = net.model(lr_b, msi_b)
            loss = teacher_loss(t_out.float(), ref_b).total
            net.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            net.optimizer.step()
            net.losses.append(float(loss.detach()))
        elif frozen_teacher is not None:
            with torch.no_grad(), autocast():
                t_out, t_feat = frozen_teacher(lr_b, msi_b)
        if "student" in nets:
            net = nets["student"]
            with autocast():
                s_out, s_feat = net.model(lr_b, msi_b)
            if t_out is None:
                loss = teacher_loss(s_out.float(), ref_b).total
            else:
                loss = student_loss(s_out.float(), ref_b, t_out.float(), s_feat.float(), t_feat.float(),
                                    adapter=adapter).total
            net.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            net.optimizer.step()
            net.losses.append(float(loss.detach()))
        step += 1

        elapsed = time.perf_counter() - t0
        frac, _ = _lr_at(config, step, elapsed)
        done = (step - start_step) / max(step - start_step + (total - step if total else 0), 1)
        eta = (config.time_budget_s - elapsed) if total is None else elapsed / max(done, 1e-9) - elapsed
        last = (total is not None and step >= total) or (total is None and elapsed >= config.time_budget_s)
        if step % config.val_every == 0 or last:
            curve.append(_record(nets, exported, data, device, step))
        reporter.update(frac, f"step {step}{'/' + str(total) if total else ''}, ETA {max(eta, 0):.0f} s")

    seconds = time.perf_counter() - t0
    if not curve or curve[-1].step != step:
        curve.append(_record(nets, exported, data, device, step))
    prov = Provenance(data=data.name, protocol=data.protocol, mode=config.mode, steps=step,
                      epochs=_epochs(data, config, step - start_step), seconds=round(seconds, 1),
                      seed=config.seed, machine=f"{platform.node() or 'unknown'} ({device})")
    for role, path in paths.items():
        net = nets[role]
        if net.best is not None:
            net.model.load_state_dict(net.best[3])
        metrics = {"psnr": net.best[0], "sam": net.best[1]} if net.best is not None and data.val else {}
        card = ModelCard(
            name=path.name[: -len(".safetensors")] if path.name.endswith(".safetensors") else path.name,
            role=role, config=net.config.to_dict(), scale=s, lr_bands=data.lr_bands, msi=data.msi,
            provenance=prov, validation=f"bottom rows of {data.name or 'the training scene'}"
            if data.val else "", metrics=metrics,
            description=f"Trained by csakd train (mode {config.mode}, preset {config.preset}).",
            limits="Use with inputs whose bands, sensor and scale match this card.",
        )
        checkpoint.save_checkpoint(path, net.model, card)
    checkpoint.save_optimizer_state(optimizer_path_for(out),
                                    {role: n.optimizer for role, n in nets.items()}, {"step": step},
                                    modules={"adapter": adapter} if adapter is not None else {})
    best = nets[exported].best
    return TrainReport(
        steps=step, seconds=seconds, best_step=best[2] if best else step,
        best_metrics={"psnr": best[0], "sam": best[1]} if best and data.val else {},
        curve=tuple(curve), model_path=str(paths[exported]),
        teacher_path=str(paths["teacher"]) if "teacher" in paths and exported != "teacher" else None,
        device=str(device),
    )


def _epochs(data: TrainingData, config: TrainConfig, steps: int) -> float:
    pixels = sum(sc.valid.sum() for sc in data.train)
    return round(float(steps * config.batch_size * config.patch ** 2 / max(pixels, 1)), 2)


def _record(nets: Dict[str, _Net], exported: str, data: TrainingData, device: torch.device,
            step: int) -> CurvePoint:
    def mean_loss(role: str) -> Optional[float]:
        if role not in nets or not nets[role].losses:
            return None
        value = float(np.mean(nets[role].losses))
        nets[role].losses.clear()
        return value

    metrics: Dict[str, Tuple[float, float]] = {}
    for role, net in nets.items():
        if data.val:
            psnr, sam = _validate(net.model, data.val, device)
            metrics[role] = (psnr, sam)
            if net.best is None or psnr > net.best[0]:
                net.best = (psnr, sam, step, copy.deepcopy(net.model.state_dict()))
        else:
            net.best = (float("nan"), float("nan"), step, copy.deepcopy(net.model.state_dict()))
    psnr, sam = metrics.get(exported, (None, None))
    return CurvePoint(step, mean_loss("teacher"), mean_loss("student"), psnr, sam)


def _resume(nets: Dict[str, _Net], adapter: Optional[torch.nn.Module], resume: os.PathLike,
            device: torch.device) -> int:
    resume = Path(resume)
    sources = {"student": resume, "teacher": teacher_path_for(resume)} if "student" in nets \
        else {"teacher": resume}
    for role, net in nets.items():
        path = sources[role]
        if not path.exists():
            raise CheckpointError(f"cannot resume the {role}: {path} does not exist")
        state, card = checkpoint.read_state(path)
        checkpoint.check_state(state, net.model, str(path))
        net.model.load_state_dict(state)
    opt = optimizer_path_for(resume)
    if not opt.exists():
        return 0
    scalars = checkpoint.load_optimizer_state(opt, {role: n.optimizer for role, n in nets.items()},
                                              modules={"adapter": adapter} if adapter is not None else {})
    return int(scalars.get("step", 0))

