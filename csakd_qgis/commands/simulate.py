"""``csakd simulate``: an LR-HSI / HR-MSI pair from a reference hyperspectral raster (Wald's protocol).

See :func:`csakd_qgis.simulation.simulate.simulate_rasters`.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Tuple

from csakd_qgis.simulation.degradation import DEFAULT_MTF_NYQUIST
from csakd_qgis.simulation.simulate import simulate_rasters

NAME = "simulate"
HELP = ("Simulate a low-resolution HSI and a high-resolution MSI from a reference HSI "
        "(PSF blur + decimation, sensor spectral responses, optional noise and misregistration).")

OUTPUTS = ("lr_hsi.tif", "hr_msi.tif", "reference.tif")


def _shift(text: str) -> Tuple[float, float]:
    try:
        dx, dy = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shift takes DX,DY in LR pixels, e.g. 0.25,-0.1; got {text!r}") from None
    return dx, dy


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the reference, the output folder and the degradation options."""
    parser.add_argument("reference", help="reference hyperspectral raster with wavelength metadata")
    parser.add_argument("out_dir", help="folder for lr_hsi.tif, hr_msi.tif and reference.tif (created)")
    parser.add_argument("--sensor", default="sentinel2",
                        help="MSI sensor: sentinel2, sentinel2b, landsat8, landsat9 (default sentinel2)")
    parser.add_argument("--bands", default="B2,B3,B4,B8", help="comma-separated MSI bands (default B2,B3,B4,B8)")
    parser.add_argument("--scale", type=int, default=4, help="resolution ratio LR/HR, an integer (default 4)")
    parser.add_argument("--mtf", type=float, default=DEFAULT_MTF_NYQUIST,
                        help=f"MTF of the LR sensor at its Nyquist frequency (default {DEFAULT_MTF_NYQUIST})")
    parser.add_argument("--snr", type=float, default=None, help="per-band SNR in dB of added noise (default none)")
    parser.add_argument("--shift", type=_shift, default=(0.0, 0.0),
                        help="misregistration DX,DY of the LR-HSI in LR pixels, +x east, +y south (default 0,0)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    """Simulate the pair and write the three rasters into the output folder."""
    os.makedirs(args.out_dir, exist_ok=True)
    paths = [os.path.join(args.out_dir, name) for name in OUTPUTS]
    result = simulate_rasters(args.reference, *paths, sensor=args.sensor,
                              bands=[b for b in args.bands.split(",") if b.strip()], scale=args.scale,
                              mtf=args.mtf, snr_db=args.snr, shift=args.shift, seed=args.seed,
                              overwrite=args.overwrite)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"LR-HSI {result['lr_shape']} -> {paths[0]}\nHR-MSI -> {paths[1]}\n"
              f"reference {result['hr_shape']} -> {paths[2]}")
    return 0
