"""Validation during training: PSNR and SAM on the held-out rows, and the best state of each network.

The bottom ``val_fraction`` of each scene's rows is held out
(:class:`~csakd_qgis.training.data.TrainingData`); every ``val_every`` steps
and at the end, each trained network fuses the full held-out blocks and
:func:`record` keeps its state if its PSNR is the best so far.  The
checkpoint saved is that best state.
"""

from __future__ import annotations

import copy
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from csakd_qgis.training.data import TrainingData
from csakd_qgis.training.networks import Best, Networks
from csakd_qgis.training.patches import Scene
from csakd_qgis.training.report import CurvePoint


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


def validate(model: torch.nn.Module, scenes: Sequence[Scene], device: torch.device) -> Tuple[float, float]:
    """Mean PSNR (dB) and SAM (degrees) of ``model`` over whole ``scenes`` (:func:`validation_metrics`).

    The model is put in eval mode for this and back in training mode after.
    """
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


def record(nets: Networks, data: TrainingData, device: torch.device, step: int) -> CurvePoint:
    """Validate every trained network at ``step``, keep each one's best state, and return the curve point.

    The point carries the mean losses since the previous record (which are
    then cleared) and the exported network's metrics (None without a
    validation set, in which case every network keeps its current state).
    """
    metrics: Dict[str, Tuple[float, float]] = {}
    for role, net in nets.trained.items():
        if data.val:
            psnr, sam = validate(net.model, data.val, device)
            metrics[role] = (psnr, sam)
            if net.best is None or psnr > net.best.psnr:
                net.best = Best(psnr, sam, step, copy.deepcopy(net.model.state_dict()))
        else:
            net.best = Best(float("nan"), float("nan"), step, copy.deepcopy(net.model.state_dict()))
    exported: Tuple[Optional[float], Optional[float]] = metrics.get(nets.exported, (None, None))
    return CurvePoint(step, _mean_loss(nets, "teacher"), _mean_loss(nets, "student"), *exported)


def _mean_loss(nets: Networks, role: str) -> Optional[float]:
    """Mean of the losses of ``role`` since the last call (then cleared); None if it has none."""
    net = nets.trained.get(role)
    if net is None or not net.losses:
        return None
    value = float(np.mean(net.losses))
    net.losses.clear()
    return value
