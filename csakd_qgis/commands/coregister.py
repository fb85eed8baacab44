"""``csakd coregister``: put an LR-HSI on the grid aligned with an HR-MSI, shift corrected."""

from __future__ import annotations

import argparse
import json

from csakd_qgis.fusion.inputs import resolve_pair
from csakd_qgis.geo.coregister import coregister

NAME = "coregister"
HELP = ("Resample an LR-HSI onto the low-resolution grid aligned with an HR-MSI (exactly SCALE times "
        "its pixels), correcting a sub-pixel shift estimated by phase correlation.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the command's arguments."""
    parser.add_argument("lr_hsi", metavar="LR_HSI",
                        help="low-resolution hyperspectral raster or product (docs/inputs.md)")
    parser.add_argument("hr_msi", metavar="HR_MSI", help="high-resolution multispectral raster or product")
    parser.add_argument("output", metavar="OUTPUT", help="GeoTIFF to write")
    parser.add_argument("--lr-mask", metavar="RASTER", default=None,
                        help="LR-HSI pixels to leave out of the shift estimate (nonzero)")
    parser.add_argument("--msi-mask", metavar="RASTER", default=None,
                        help="HR-MSI pixels to leave out of the shift estimate (nonzero)")
    parser.add_argument("--scale", type=int, default=None,
                        help="integer resolution ratio (default: LR res / MSI res, rounded)")
    parser.add_argument("--no-shift-correction", action="store_true",
                        help="do not estimate or correct a sub-pixel shift")
    parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    """Run the co-registration and print its report; returns the exit status."""
    inputs = resolve_pair(args.lr_hsi, args.hr_msi, lr_mask=args.lr_mask, msi_mask=args.msi_mask)
    report = coregister(inputs.lr_hsi, inputs.hr_msi, args.output, scale=args.scale,
                        shift_correction=not args.no_shift_correction, overwrite=args.overwrite,
                        lr_masks=inputs.lr_masks, msi_masks=inputs.msi_masks)
    if args.json:
        print(json.dumps(dict(report.to_dict(), inputs=list(inputs.notes)), indent=2))
        return 0
    grid = report.lr_grid
    lines = [f"wrote {report.output}: {grid.width} x {grid.height} pixels of {grid.res[0]:g} x {grid.res[1]:g} "
             f"in {grid.crs.to_string()}, scale {report.scale}"]
    if report.shift is not None:
        state = "applied" if report.shift_applied else "not applied"
        lines.append(f"shift dx = {report.shift.dx:+.3f}, dy = {report.shift.dy:+.3f} LR pixels ({state})")
    lines.extend(inputs.notes + report.notes)
    print("\n".join(lines))
    return 0
