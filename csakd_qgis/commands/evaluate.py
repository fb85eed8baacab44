"""``csakd evaluate``: quality of a fused raster, against a reference and/or its own inputs.

With a reference (``csakd evaluate REFERENCE FUSED``) every full-reference
metric of :mod:`csakd_qgis.quality.metrics` is reported; with ``--lr-hsi`` and
``--hr-msi`` the no-reference consistency (the fused image degraded back and
compared with both inputs, and the QNR-style index) too; ``csakd evaluate
FUSED --lr-hsi LR --hr-msi MSI`` gives the latter alone.  See
:func:`csakd_qgis.quality.evaluation.evaluate_rasters`.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from csakd_qgis.errors import InputError
from csakd_qgis.fusion.inputs import resolve_one
from csakd_qgis.quality.evaluation import evaluate_rasters
from csakd_qgis.simulation.degradation import DEFAULT_MTF_NYQUIST

NAME = "evaluate"
HELP = "Quality metrics of a fused raster against a reference (PSNR, SAM, ERGAS, SSIM, Q2n, ...) or its inputs."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the rasters and the metric conventions."""
    parser.add_argument("rasters", nargs="+", metavar="[REFERENCE] FUSED",
                        help="reference and fused rasters on one grid, or the fused raster alone "
                             "(then --lr-hsi and --hr-msi are needed)")
    parser.add_argument("--lr-hsi", help="LR hyperspectral input (raster or product), for the no-reference "
                                         "consistency")
    parser.add_argument("--hr-msi", help="HR multispectral input (raster or product), for the no-reference "
                                         "consistency")
    parser.add_argument("--scale", type=int, default=None,
                        help="resolution ratio LR/HR (default: from the LR-HSI grid, else 4)")
    parser.add_argument("--peak", choices=("range", "band_max"), default="range",
                        help="PSNR peak: one data range for all bands, or each reference band's max "
                             "(the CSAKD paper) (default range)")
    parser.add_argument("--data-range", type=float, default=None,
                        help="data range for PSNR (peak=range) and SSIM (default: from the reference)")
    parser.add_argument("--sensor", default="sentinel2", help="MSI sensor of --hr-msi (default sentinel2)")
    parser.add_argument("--bands", default="B2,B3,B4,B8", help="MSI bands of --hr-msi (default B2,B3,B4,B8)")
    parser.add_argument("--mtf", type=float, default=DEFAULT_MTF_NYQUIST,
                        help=f"MTF at Nyquist of the LR sensor's PSF (default {DEFAULT_MTF_NYQUIST})")
    parser.add_argument("--report", help="write an HTML report (per-band PSNR, spectra, error map) here")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the metrics."""
    if len(args.rasters) > 2:
        raise InputError("give at most two rasters: REFERENCE FUSED")
    if len(args.rasters) == 1 and (args.lr_hsi is None or args.hr_msi is None):
        raise InputError("give REFERENCE FUSED, or FUSED with --lr-hsi and --hr-msi")
    reference = args.rasters[0] if len(args.rasters) == 2 else None
    lr_hsi, hr_msi = (None if path is None else resolve_one(path, role)[0]
                      for path, role in ((args.lr_hsi, "LR-HSI"), (args.hr_msi, "HR-MSI")))
    result = evaluate_rasters(reference, args.rasters[-1], lr_hsi=lr_hsi, hr_msi=hr_msi,
                              scale=args.scale, peak=args.peak, data_range=args.data_range, sensor=args.sensor,
                              bands=args.bands.split(","), mtf=args.mtf, report_html=args.report)
    if args.json:  # strict JSON: an infinite PSNR (no error at all) is written as null
        clean = {k: {n: (None if isinstance(v, float) and not np.isfinite(v) else v) for n, v in d.items()}
                 for k, d in result.sections.items()}
        print(json.dumps(clean, indent=2))
    else:
        for section, values in result.sections.items():
            print(f"[{section}]")
            for key, value in values.items():
                print(f"  {key:13s} {value:.6g}" if isinstance(value, float) else f"  {key:13s} {value}")
    return 0
