"""``csakd simulate``: an LR-HSI / HR-MSI pair from a reference hyperspectral raster (Wald's protocol).

The whole reference is read into memory: the simulator is meant for
training- and test-size scenes (a few hundred pixels a side), not for full
acquisitions.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Optional, Tuple

import numpy as np
from affine import Affine

from ..degradation import DEFAULT_MTF_NYQUIST, simulate_pair
from ..errors import InputError
from ..raster_io import BandInfo, read_info, read_window, write_raster

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


def _optional(values) -> Optional[np.ndarray]:
    if any(v is None for v in values):
        return None
    return np.asarray(values, dtype=np.float64)


def run(args: argparse.Namespace) -> int:
    """Read the reference, simulate the pair and write the three rasters."""
    info = read_info(args.reference)
    wavelengths = [b.wavelength_nm for b in info.bands]
    if any(w is None for w in wavelengths):
        raise InputError(f"{args.reference} has no wavelength for every band; the simulator needs them "
                         "(per-band 'wavelength' metadata or an ENVI header)")
    data, _ = read_window(args.reference)
    pair = simulate_pair(data, wavelengths, _optional([b.fwhm_nm for b in info.bands]),
                         [b.good for b in info.bands], sensor=args.sensor,
                         bands=[b for b in args.bands.split(",") if b.strip()], scale=args.scale,
                         mtf_nyquist=args.mtf, snr_db=args.snr, shift=args.shift, seed=args.seed)
    os.makedirs(args.out_dir, exist_ok=True)
    paths = [os.path.join(args.out_dir, name) for name in OUTPUTS]
    crs = info.crs
    hr_transform = info.transform
    lr_transform = hr_transform * Affine.scale(args.scale)
    sb = pair.sensor_bands
    msi_bands = [BandInfo(wavelength_nm=c, fwhm_nm=f, description=f"{sb.sensor} {n}")
                 for n, c, f in zip(sb.names, sb.centres_nm, sb.fwhm_nm)]
    nodata = info.nodata if info.nodata is not None and np.isfinite(info.nodata) else None
    write_raster(paths[0], pair.lr_hsi, crs=crs, transform=lr_transform, nodata=nodata,
                 bands=info.bands, overwrite=args.overwrite)
    write_raster(paths[1], pair.hr_msi, crs=crs, transform=hr_transform, nodata=nodata,
                 bands=msi_bands, overwrite=args.overwrite)
    write_raster(paths[2], pair.reference, crs=crs, transform=hr_transform, nodata=nodata,
                 bands=info.bands, overwrite=args.overwrite)
    result = {
        "lr_hsi": paths[0], "hr_msi": paths[1], "reference": paths[2],
        "lr_shape": list(pair.lr_hsi.shape), "hr_shape": list(pair.reference.shape),
        "msi_bands": list(sb.names), "msi_centres_nm": list(sb.centres_nm), "srf_source": sb.source,
        "psf_size": int(pair.psf.shape[0]), "scale": pair.scale,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"LR-HSI {pair.lr_hsi.shape} -> {paths[0]}\nHR-MSI {pair.hr_msi.shape} -> {paths[1]}\n"
              f"reference {pair.reference.shape} -> {paths[2]}")
    return 0
