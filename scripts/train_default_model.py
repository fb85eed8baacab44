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
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from csakd_qgis.progress import Reporter
from csakd_qgis.raster_io import read_info, read_window
from csakd_qgis.training import TrainConfig, TrainingData, train

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "enmap_potsdam"
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
    parser.add_argument("--mode", default="kd")
    parser.add_argument("--budget", type=float, default=2400.0, help="wall-clock seconds")
    parser.add_argument("--patch", type=int, default=24)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--curve", type=Path, default=None, help="write the training curve (JSON) here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    excluded = set(TEST_TILES) | set(VAL_TILES)
    train_paths = args.train or [p for p in sorted(DATA.glob("enmap_potsdam_tile_*.tif"))
                                 if p.stem.replace("enmap_potsdam_tile_", "") not in excluded]
    val_paths = args.val if args.val is not None else tile_paths(VAL_TILES)
    data = data_from(train_paths, args, 0)
    validation = data_from(val_paths, args, 1000)
    data = replace(data, val=validation.train,
                   name=f"{len(train_paths)} training rasters ({', '.join(p.name for p in train_paths)}); "
                        f"validation: {', '.join(p.name for p in val_paths)}")
    config = TrainConfig(mode=args.mode, preset="project", time_budget_s=args.budget, batch_size=args.batch,
                         patch=args.patch, learning_rate=args.lr, val_every=100, seed=0, device="auto")

    def progress(fraction, message):
        print(f"\r{100 * fraction:5.1f}% {message}", end="", file=sys.stderr, flush=True)

    report = train(data, config, args.out, reporter=Reporter(progress=progress))
    print(file=sys.stderr)
    if args.curve:
        args.curve.write_text(json.dumps(report.to_dict(), indent=1))
    print(json.dumps({k: v for k, v in report.to_dict().items() if k != "curve"}, indent=1))
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
