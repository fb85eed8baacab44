"""Quality benchmark: the fusion methods on held-out real data, with cost per output tile.

Protocol (documented in docs/benchmarks.md with the table this script writes):

* Scene: the bundled EnMAP sample (``resources/sample``): four EnMAP Level-2A
  tiles of Potsdam that the default model never saw in training or model
  selection, mosaicked (63x63 pixels at 30 m, 224 bands) as the reference;
  the LR-HSI at 90 m (scale 3, Gaussian PSF with MTF 0.3, 40 dB SNR) and a
  Sentinel-2A B2/B3/B4/B8 HR-MSI (measured responses, 40 dB SNR, a masked
  cloud) simulated from it.
* Methods: bicubic, GSA, the bundled KD student and its teacher, and any extra
  model files given with ``--model NAME=PATH`` (e.g. a student trained without
  distillation, a scene-adaptive student).
* Metrics against the reference (csakd_qgis.quality.metrics, bad bands and nodata
  left out): PSNR (peak = data range of the reference), SAM (degrees),
  ERGAS (ratio 3), SSIM.
* Cost: parameters; multiply-adds per 255x255 output tile (85x85 LR pixels,
  the nearest multiple of the scale to 256); CPU seconds per such tile
  (median of 3 forward passes after a warm-up, torch threads = all cores).

Usage: ``python bench/quality.py [--model NAME=PATH ...]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import ROOT, machine, replace_section

from csakd_qgis.fusion.engine import fuse
from csakd_qgis.models.checkpoint import load_checkpoint
from csakd_qgis.models.complexity import count_macs, count_parameters
from csakd_qgis.models.files import teacher_path_for
from csakd_qgis.quality.evaluation import evaluate_rasters

SAMPLE = ROOT / "resources" / "sample"
DEFAULT_MODEL = ROOT / "resources" / "models" / "enmap_s2_x3.safetensors"
HEADING = "## Quality on held-out EnMAP tiles (scale 3, Sentinel-2)"
#: Output tile side of the cost columns, rounded down to a multiple of the scale (255 at scale 3).
TILE = 256


def tile_side(scale: int) -> int:
    """HR side of the output tile the cost is measured on: :data:`TILE` rounded down to a multiple of ``scale``."""
    return TILE // scale * scale


def cost(path: Path):
    """(parameters, G multiply-adds, CPU seconds) per output tile of :func:`tile_side` of the model at ``path``.

    CPU seconds use torch's current thread count.
    """
    model, card = load_checkpoint(str(path))
    cfg = model.cfg
    tile_lr = tile_side(cfg.scale) // cfg.scale
    lr = torch.rand(1, cfg.bands, tile_lr, tile_lr)
    msi = torch.rand(1, cfg.msi_bands, tile_lr * cfg.scale, tile_lr * cfg.scale)
    macs = count_macs(model, tuple(lr.shape), tuple(msi.shape))
    times = []
    with torch.inference_mode():
        model(lr, msi)
        for _ in range(3):
            start = time.perf_counter()
            model(lr, msi)
            times.append(time.perf_counter() - start)
    return count_parameters(model), macs / 1e9, statistics.median(times)


def main() -> None:
    """Fuse the sample with every method, score it, and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                        help="an extra model file to compare (repeatable)")
    args = parser.parse_args()
    header = machine()
    runs = [("bicubic", "bicubic", None), ("GSA", "gsa", None),
            ("CSAKD teacher", "teacher", teacher_path_for(DEFAULT_MODEL)),
            ("CSAKD student (KD)", "student", DEFAULT_MODEL)]
    runs += [(name, "student", Path(path)) for name, path in (item.split("=", 1) for item in args.model)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, method, model in runs:
            out = Path(tmp) / f"{label.replace(' ', '_')}.tif"
            fuse(str(SAMPLE / "enmap_lr_hsi.tif"), str(SAMPLE / "s2_hr_msi.tif"), str(out), method=method,
                 model=str(model) if model else None, shift_correction=False, device="cpu", overwrite=True)
            scores = evaluate_rasters(str(SAMPLE / "reference_hr_hsi.tif"), str(out), scale=3).sections["reference"]
            params, gmacs, seconds = cost(model) if model else (0, float("nan"), float("nan"))
            rows.append((label, scores, params, gmacs, seconds))
            print(label, {k: scores[k] for k in ("psnr", "sam", "ergas", "ssim")}, params, gmacs, seconds)
    table = ["| method | PSNR (dB) | SAM (°) | ERGAS | SSIM | parameters | G MACs / 255² tile | CPU s / tile |",
             "|---|---|---|---|---|---|---|---|"]
    for label, s, params, gmacs, seconds in rows:
        cells = [f"{s['psnr']:.2f}", f"{s['sam']:.2f}", f"{s['ergas']:.2f}", f"{s['ssim']:.4f}",
                 f"{params:,}" if params else "–", f"{gmacs:.1f}" if np.isfinite(gmacs) else "–",
                 f"{seconds:.2f}" if np.isfinite(seconds) else "–"]
        table.append(f"| {label} | " + " | ".join(cells) + " |")
    body = (f"Machine: {header}. Produced by `bench/quality.py`; protocol in its docstring: the bundled "
            "sample (held-out EnMAP tiles, simulated Sentinel-2 MSI and 90 m LR-HSI at 40 dB SNR); no GPU was "
            "used.\n\n" + "\n".join(table))
    replace_section(HEADING, body)
    print("\n".join(table))


if __name__ == "__main__":
    main()
