"""``csakd train``: train a CSAKD student (and teacher) on the user's own data.

Two data sources:

* ``--reference REF.tif --sensor S --bands B2,B3,B4,B8 --scale N``: a
  hyperspectral reference is degraded into an LR-HSI / HR-MSI pair
  (supervised by simulation);
* ``--scene LR_HSI.tif HR_MSI.tif``: a real, co-registered pair, trained by
  Wald's protocol (scene-adaptive).

Rasters are read whole (see :mod:`csakd_qgis.training.data`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from csakd_qgis.errors import InputError
from csakd_qgis.fusion.inputs import resolve_one, resolve_pair
from csakd_qgis.progress import Reporter
from csakd_qgis.training import TrainConfig, TrainingData, train
from csakd_qgis.training.baseline import scores_line
from csakd_qgis.training.config import MODES, PRESET_FAMILIES
from csakd_qgis.training.data import reference_data, scene_data

NAME = "train"
HELP = "Train a CSAKD model (KD co-training, offline distillation, student or teacher alone)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare data, model, schedule and output options."""
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--reference", metavar="REF", help="hyperspectral reference raster (simulation)")
    src.add_argument("--scene", nargs=2, metavar=("LR_HSI", "HR_MSI"),
                     help="a real co-registered pair (scene-adaptive, Wald protocol); rasters or products")
    parser.add_argument("--lr-mask", metavar="RASTER", default=None,
                        help="with --scene: LR-HSI pixels to leave out (nonzero), added to a product's own mask")
    parser.add_argument("--msi-mask", metavar="RASTER", default=None,
                        help="with --scene: HR-MSI pixels to leave out (nonzero), added to a product's own mask")
    parser.add_argument("--sensor", default="sentinel2", help="MSI sensor to simulate (default sentinel2)")
    parser.add_argument("--bands", default="B2,B3,B4,B8", help="MSI bands to simulate (default B2,B3,B4,B8)")
    parser.add_argument("--scale", type=int, default=None,
                        help="LR/HR pixel-size ratio; required with --reference, read from the rasters with --scene")
    parser.add_argument("--out", required=True, help="output .safetensors (the KD teacher goes beside it)")
    parser.add_argument("--mode", choices=MODES, default="kd", help="training mode (default kd)")
    parser.add_argument("--teacher", default=None, help="frozen teacher checkpoint for --mode offline")
    parser.add_argument("--preset", choices=PRESET_FAMILIES, default="project",
                        help="model sizes: project (CPU-sized, default) or paper")
    parser.add_argument("--steps", type=int, default=300, help="optimisation steps (default 300)")
    parser.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                        help="train for this many seconds instead of --steps")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--patch", type=int, default=32, help="HR patch side in pixels (multiple of the scale)")
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--val-fraction", type=float, default=0.2,
                        help="bottom fraction of rows held out for validation (default 0.2)")
    parser.add_argument("--val-every", type=int, default=50)
    parser.add_argument("--patience", type=int, default=None, metavar="N",
                        help="stop once validation has not improved for N checks (early stopping; default off)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", default=None, help="continue from a checkpoint of an earlier run")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--json", action="store_true", help="print the training report as JSON")


def load_data(args: argparse.Namespace) -> TrainingData:
    """Build the :class:`TrainingData` the arguments describe."""
    if args.reference:
        if args.scale is None:
            raise InputError("--reference needs --scale (the LR/HR pixel-size ratio to simulate)")
        reference, _, notes = resolve_one(args.reference, "reference")
        _log(notes)
        return reference_data(reference, sensor=args.sensor, bands=args.bands.split(","), scale=args.scale,
                              val_fraction=args.val_fraction, seed=args.seed)
    inputs = resolve_pair(*args.scene, lr_mask=args.lr_mask, msi_mask=args.msi_mask)
    _log(inputs.notes)
    return scene_data(inputs.lr_hsi, inputs.hr_msi, scale=args.scale, val_fraction=args.val_fraction,
                      lr_masks=inputs.lr_masks, msi_masks=inputs.msi_masks)


def _log(lines: Sequence[str]) -> None:
    """What was read from products, on stderr (stdout is the report)."""
    for line in lines:
        sys.stderr.write(line + "\n")


def _progress(fraction: float, message: str) -> None:
    sys.stderr.write(f"\r{100 * fraction:5.1f}% {message}   ")
    sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    """Train and print the report."""
    if Path(args.out).exists() and not args.overwrite and not args.resume:
        raise InputError(f"{args.out} exists; pass --overwrite to replace it")
    data = load_data(args)
    config = TrainConfig(mode=args.mode, preset=args.preset, steps=args.steps, time_budget_s=args.time_budget,
                         batch_size=args.batch_size, patch=args.patch, learning_rate=args.learning_rate,
                         val_every=args.val_every, seed=args.seed, device=args.device,
                         patience=args.patience)
    report = train(data, config, args.out, teacher_checkpoint=args.teacher, resume=args.resume,
                   reporter=Reporter(None if args.json else _progress))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        sys.stderr.write("\n")
        best = ", ".join(f"{k} {v:.3f}" for k, v in report.best_metrics.items() if np.isfinite(v))
        print(f"trained {report.steps} steps in {report.seconds:.0f} s on {report.device}; "
              f"best validation ({report.best_step}): {best or 'no validation set'}; saved {report.model_path}"
              + (f" and {report.teacher_path}" if report.teacher_path else ""))
        if report.classical is not None:
            print(scores_line(report.classical))
    return 0
