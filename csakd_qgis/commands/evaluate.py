"""``csakd evaluate``: quality of a fused raster, against a reference and/or its own inputs.

With a reference (``csakd evaluate REFERENCE FUSED``) every full-reference
metric of :mod:`csakd_qgis.metrics` is reported; with ``--lr-hsi`` and
``--hr-msi`` the no-reference consistency (the fused image degraded back and
compared with both inputs, and the QNR-style index) too; ``csakd evaluate
FUSED --lr-hsi LR --hr-msi MSI`` gives the latter alone.  Bands flagged bad
in the reference (or fused) metadata are left out.  The rasters are read
whole: evaluation is for scenes that fit in memory.
"""

from __future__ import annotations

import argparse
import json
from typing import Dict

import numpy as np

from ..degradation import DEFAULT_MTF_NYQUIST, gaussian_psf
from ..errors import GridError, InputError
from ..metrics import consistency, evaluate
from ..raster_io import RasterInfo, read_info, read_window
from ..srf import spectral_response_matrix

NAME = "evaluate"
HELP = "Quality metrics of a fused raster against a reference (PSNR, SAM, ERGAS, SSIM, Q2n, ...) or its inputs."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the rasters and the metric conventions."""
    parser.add_argument("rasters", nargs="+", metavar="[REFERENCE] FUSED",
                        help="reference and fused rasters on one grid, or the fused raster alone "
                             "(then --lr-hsi and --hr-msi are needed)")
    parser.add_argument("--lr-hsi", help="LR hyperspectral input, for the no-reference consistency")
    parser.add_argument("--hr-msi", help="HR multispectral input, for the no-reference consistency")
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
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")


def _same_grid(a: RasterInfo, b: RasterInfo) -> None:
    if (a.width, a.height) != (b.width, b.height):
        raise GridError(f"{b.path} is {b.width}x{b.height} pixels but {a.path} is {a.width}x{a.height}; "
                        "evaluate rasters on one grid (resample or crop first)")
    if a.crs != b.crs or not a.transform.almost_equals(b.transform, precision=1e-6 * max(a.res)):
        raise GridError(f"{b.path} and {a.path} are not on the same grid (CRS or geotransform differ)")


def _lr_scale(fused: RasterInfo, lr: RasterInfo, scale) -> int:
    ratio = lr.res[0] / fused.res[0]
    s = int(round(ratio)) if scale is None else scale
    if s < 1 or abs(ratio - s) > 1e-6 * s:
        raise GridError(f"the LR-HSI pixel is {ratio:.4g} times the fused pixel, not the scale {s}")
    lr_t, f_t = lr.transform, fused.transform
    if lr.crs != fused.crs or abs(lr_t.c - f_t.c) > 1e-3 * fused.res[0] or abs(lr_t.f - f_t.f) > 1e-3 * fused.res[1]:
        raise GridError(f"{lr.path} does not share the fused raster's origin and CRS; co-register it first")
    if (lr.width * s, lr.height * s) != (fused.width, fused.height):
        raise GridError(f"the LR-HSI ({lr.width}x{lr.height}) times {s} does not cover the fused raster "
                        f"({fused.width}x{fused.height})")
    return s


def run(args: argparse.Namespace) -> int:
    """Read the rasters and print the metrics."""
    if len(args.rasters) > 2:
        raise InputError("give at most two rasters: REFERENCE FUSED")
    no_ref = args.lr_hsi is not None or args.hr_msi is not None
    if no_ref and (args.lr_hsi is None or args.hr_msi is None):
        raise InputError("the no-reference consistency needs both --lr-hsi and --hr-msi")
    if len(args.rasters) == 1 and not no_ref:
        raise InputError("give REFERENCE FUSED, or FUSED with --lr-hsi and --hr-msi")
    fused_path = args.rasters[-1]
    finfo = read_info(fused_path)
    fused, fvalid = read_window(fused_path)
    good = np.array([b.good for b in finfo.bands])
    result: Dict[str, object] = {}
    scale = args.scale
    if no_ref:
        lrinfo, msinfo = read_info(args.lr_hsi), read_info(args.hr_msi)
        scale = _lr_scale(finfo, lrinfo, args.scale)
        _same_grid(finfo, msinfo)
        if lrinfo.count != finfo.count:
            raise InputError(f"{args.lr_hsi} has {lrinfo.count} bands, the fused raster {finfo.count}")
        good &= np.array([b.good for b in lrinfo.bands])
    if len(args.rasters) == 2:
        rinfo = read_info(args.rasters[0])
        _same_grid(rinfo, finfo)
        if rinfo.count != finfo.count:
            raise InputError(f"{args.rasters[0]} has {rinfo.count} bands, {fused_path} {finfo.count}")
        good &= np.array([b.good for b in rinfo.bands])
        ref, rvalid = read_window(args.rasters[0])
        report = evaluate(ref[good], fused[good], rvalid & fvalid, scale=scale or 4, peak=args.peak,
                          data_range=args.data_range)
        result["reference"] = report.to_dict()
    if no_ref:
        lr, _ = read_window(args.lr_hsi)
        msi, _ = read_window(args.hr_msi)
        wavelengths = [b.wavelength_nm for b in finfo.bands]
        if any(w is None for w in wavelengths):
            raise InputError(f"{fused_path} lacks band wavelengths; the consistency check needs them")
        fwhm = [b.fwhm_nm if b.fwhm_nm is not None else np.nan for b in finfo.bands]
        srf = spectral_response_matrix(np.asarray(wavelengths)[good], np.asarray(fwhm)[good], args.sensor,
                                       [b for b in args.bands.split(",") if b.strip()])
        if srf.shape[0] != msinfo.count:
            raise InputError(f"{args.hr_msi} has {msinfo.count} bands but --bands names {srf.shape[0]}")
        fused_ok = np.where(fvalid, fused[good], np.nan)
        report = consistency(fused_ok, lr[good], msi, srf, gaussian_psf(scale, args.mtf), scale)
        result["consistency"] = report.to_dict()
    if args.json:  # strict JSON: an infinite PSNR (no error at all) is written as null
        clean = {k: {n: (None if isinstance(v, float) and not np.isfinite(v) else v) for n, v in d.items()}
                 for k, d in result.items()}
        print(json.dumps(clean, indent=2))
    else:
        for section, values in result.items():
            print(f"[{section}]")
            for key, value in values.items():
                print(f"  {key:13s} {value:.6g}" if isinstance(value, float) else f"  {key:13s} {value}")
    return 0
