"""Recipe of the bundled default model: KD co-training of a teacher and a student on EnMAP tiles.

Each reference tile (an EnMAP Level-2A 30 m tile, 224 bands) is degraded by
the project's simulator into an LR-HSI at ``scale`` times its pixel size
(Gaussian PSF, MTF 0.3 at Nyquist) and a Sentinel-2 HR-MSI (B2, B3, B4, B8
through their measured responses), with 40 dB noise.  Tiles are split
three ways: training, validation (picks the best checkpoint) and test (the
demo block, never seen in training or selection; scored by bench/quality.py).

For another sensor pair (PRISMA or EMIT with Landsat 8/9), pass that sensor's
reference rasters with ``--train``/``--val`` and ``--sensor landsat8
--bands B2,B3,B4,B5`` and the scale of the pair.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from csakd_qgis.fusion.engine import fuse
from csakd_qgis.io.read import read_info, read_window
from csakd_qgis.models.checkpoint import load_checkpoint, save_checkpoint
from csakd_qgis.progress import Reporter
from csakd_qgis.quality.evaluation import evaluate_rasters
from csakd_qgis.training import TrainConfig, TrainingData, teacher_path_for, train
from csakd_qgis.training.baseline import Baseline, classical_baseline

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "enmap_potsdam"
SAMPLE = ROOT / "resources" / "sample"
DESCRIPTION = (
    "CSAKD {role} for EnMAP-like hyperspectral images (224 bands, 418-2445 nm) fused with the four 10 m "
    "Sentinel-2 bands B2, B3, B4, B8 at a resolution ratio of 3 (30 m with 10 m). Project-mode network "
    "(size-invariant cross self-attention, residual over the upsampled LR-HSI), trained by {training} "
    "on EnMAP Level-2A tiles of Potsdam (2022-07-24, EnMAP-Box test "
    "data, EnMAP data (c) DLR) degraded by simulation (Sentinel-2A measured responses, Gaussian PSF with "
    "MTF 0.3 at Nyquist, decimation by 3, 40 dB SNR)."
)
LIMITS = (
    "Trained on about 8,000 HR pixels of one summer scene of a town with lakes and forest, by simulation: "
    "real sensor pairs add misregistration, different acquisition dates and atmospheric differences it "
    "has not seen. It expects EnMAP's band set (within 5 nm) and a 4-band Sentinel-2 MSI in the order "
    "B2, B3, B4, B8; other pairs need a model of their own (csakd:train). Water-vapour bands (bbl = 0) "
    "are written as nodata."
)
#: How each training mode is described in the model card.
TRAINING = {"kd": "online knowledge-distillation co-training with its teacher",
            "offline": "knowledge distillation from a frozen, already trained teacher",
            "student": "supervised training alone (no teacher)", "teacher": "supervised training alone"}
#: The demo block (resources/sample) — the test set.
TEST_TILES = ("160_128", "192_128", "160_160", "192_160")
VAL_TILES = ("64_32", "96_128")


def tile_paths(names):
    """EnMAP tile files for tile names like ``160_128``."""
    return [DATA / f"enmap_potsdam_tile_{name}.tif" for name in names]


def data_from(paths, args, seed0):
    """One TrainingData holding every raster of ``paths`` as its own (training) scene."""
    parts = []
    for number, path in enumerate(paths):
        info = read_info(str(path))
        reference, valid = read_window(str(path))
        parts.append(TrainingData.from_reference(
            reference, [b.wavelength_nm for b in info.bands], [b.fwhm_nm for b in info.bands],
            [b.good for b in info.bands], sensor=args.sensor, bands=args.bands.split(","), scale=args.scale,
            val_fraction=0.0, valid=valid, snr_db=40.0, seed=seed0 + number, name=path.name))
    return replace(parts[0], train=tuple(s for p in parts for s in p.train))


def main() -> int:
    """Train and save the student (and teacher) with model cards."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "resources" / "models" / "enmap_s2_x3.safetensors")
    parser.add_argument("--train", nargs="*", type=Path, default=None, help="training reference rasters")
    parser.add_argument("--val", nargs="*", type=Path, default=None, help="validation reference rasters")
    parser.add_argument("--sensor", default="sentinel2")
    parser.add_argument("--bands", default="B2,B3,B4,B8")
    parser.add_argument("--scale", type=int, default=3)
    parser.add_argument("--mode", default="kd", help="kd (co-training), offline (needs --teacher) or student")
    parser.add_argument("--preset", default="project", help="model family: project or project_small")
    parser.add_argument("--teacher", type=Path, default=None, help="frozen teacher for --mode offline")
    parser.add_argument("--steps", type=int, default=None, help="a step count instead of --budget")
    parser.add_argument("--budget", type=float, default=2400.0, help="wall-clock seconds")
    parser.add_argument("--patch", type=int, default=24)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--curve", type=Path, default=None, help="write the training curve (JSON) here")
    parser.add_argument("--card-only", action="store_true",
                        help="skip training: score an existing model on the test block and rewrite its cards")
    args = parser.parse_args()
    data = training_data(args)
    if args.card_only:
        write_cards(args.out, args.mode, classical_baseline(data))
        return 0
    torch.set_num_threads(args.threads)
    config = TrainConfig(mode=args.mode, preset=args.preset, steps=args.steps or 1,
                         time_budget_s=None if args.steps else args.budget, batch_size=args.batch,
                         patch=args.patch, learning_rate=args.lr, val_every=100, seed=0, device="auto")

    def progress(fraction, message):
        print(f"\r{100 * fraction:5.1f}% {message}", end="", file=sys.stderr, flush=True)

    report = train(data, config, args.out, teacher_checkpoint=args.teacher, reporter=Reporter(progress=progress))
    print(file=sys.stderr)
    if args.curve:
        args.curve.write_text(json.dumps(report.to_dict(), indent=1))
    print(json.dumps({k: v for k, v in report.to_dict().items() if k != "curve"}, indent=1))
    if args.train is None:  # the EnMAP tiles: score on their held-out test block (the bundled sample)
        write_cards(args.out, args.mode, classical_baseline(data))
    return 0


def training_data(args: argparse.Namespace) -> TrainingData:
    """The training rasters (``--train`` or the EnMAP tiles) with the validation rasters as validation scenes."""
    excluded = set(TEST_TILES) | set(VAL_TILES)
    train_paths = args.train or [p for p in sorted(DATA.glob("enmap_potsdam_tile_*.tif"))
                                 if p.stem.replace("enmap_potsdam_tile_", "") not in excluded]
    val_paths = args.val if args.val is not None else tile_paths(VAL_TILES)
    data = data_from(train_paths, args, 0)
    return replace(data, val=data_from(val_paths, args, 1000).train,
                   name=f"{len(train_paths)} training rasters ({', '.join(p.name for p in train_paths)}); "
                        f"validation: {', '.join(p.name for p in val_paths)}")


def write_cards(student: Path, mode: str, baseline: Optional[Baseline]) -> None:
    """Score student and teacher on the held-out test block (the bundled sample) and complete their cards.

    With ``baseline`` (the classical bar on the validation tiles) each card also gets its gain over it
    (what ``auto`` reads) and the verdict in its limits.
    """
    for path in (p for p in (student, teacher_path_for(student)) if p.exists()):
        model, card = load_checkpoint(str(path))
        with tempfile.TemporaryDirectory(prefix="csakd-card-") as tmp:  # the fused file and its .qml style
            fused = os.path.join(tmp, "test.tif")
            fuse(str(SAMPLE / "enmap_lr_hsi.tif"), str(SAMPLE / "s2_hr_msi.tif"), fused, model=str(path),
                 method=card.role, shift_correction=False, device="cpu", overwrite=True)
            scores = evaluate_rasters(str(SAMPLE / "reference_hr_hsi.tif"), fused, scale=3).sections["reference"]
        metrics = dict(card.metrics)
        metrics.update({f"test_{k}": float(scores[k]) for k in ("psnr", "sam", "ergas", "ssim")})
        limits = LIMITS
        if baseline is not None:
            metrics.update(baseline.card_metrics(metrics["psnr"]))
            limits += " " + baseline.verdict(metrics["psnr"] - baseline.psnr)
        card = replace(card, name=path.name.replace(".safetensors", ""), metrics=metrics,
                       description=DESCRIPTION.format(role=card.role, training=TRAINING[mode]),
                       limits=limits, validation=(
                           "psnr/sam: validation tiles " + ", ".join(VAL_TILES) + " (chose the checkpoint; PSNR "
                           "peak = each band's maximum); test_*: resources/sample, tiles " + ", ".join(TEST_TILES)
                           + " (never seen in training or selection; PSNR peak = data range); classical_*: the "
                           "strongest of gsa, glp and subspace on the validation tiles, val_gain_over_classical_db "
                           "= psnr - classical_psnr (csakd_qgis/training/baseline.py)"))
        save_checkpoint(path, model, card)
        print(path.name, {k: round(v, 3) for k, v in metrics.items()})


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
