"""``csakd fuse``: fuse an LR-HSI with an HR-MSI into an HR-HSI GeoTIFF."""

from __future__ import annotations

import argparse
import json
import sys

from ..devices import DEVICE_CHOICES
from ..engine import DTYPES, fuse
from ..methods import METHODS
from ..progress import Reporter

NAME = "fuse"
HELP = "Fuse a low-resolution hyperspectral image with a high-resolution multispectral image."

#: Characters of the text progress bar.
BAR_WIDTH = 30


def _halo(text: str):
    if text == "exact":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--halo takes a number of LR pixels or 'exact', not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("--halo must not be negative")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the command's options."""
    parser.add_argument("lr_hsi", metavar="LR_HSI", help="low-resolution hyperspectral raster")
    parser.add_argument("hr_msi", metavar="HR_MSI", help="high-resolution multispectral raster (any CRS; must overlap)")
    parser.add_argument("output", metavar="OUTPUT", help="output GeoTIFF (written atomically)")
    parser.add_argument("--model", default="auto", help="model name or .safetensors path (default: auto-select)")
    parser.add_argument("--scale", type=int, default=None, help="HR/LR pixel-size ratio (default: derived)")
    parser.add_argument("--halo", type=_halo, default=None,
                        help="LR pixels of context per tile side, or 'exact' for the method's receptive-field "
                             "bound (default: 4 for networks, 2 for bicubic and GSA)")
    parser.add_argument("--method", choices=METHODS, default="csakd", help="fusion method (default: csakd)")
    parser.add_argument("--tile-size", type=int, default=64, help="tile core size in LR pixels (default: 64)")
    parser.add_argument("--overlap", type=int, default=8, help="tile overlap in LR pixels (default: 8)")
    parser.add_argument("--batch-size", type=int, default=4, help="tiles per network call (default: 4)")
    parser.add_argument("--device", default="auto", help=f"{', '.join(DEVICE_CHOICES)} or cuda:N (default: auto)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--no-shift-correction", action="store_true", help="use the inputs' grids as given")
    parser.add_argument("--dtype", choices=[d for d in DTYPES if d != "same"], default="float32",
                        help="output data type (default: float32)")
    parser.add_argument("--output-scale", type=float, default=None,
                        help="physical value per stored unit for integer outputs, e.g. 1e-4")
    parser.add_argument("--cog", action="store_true", help="write a Cloud Optimized GeoTIFF")
    parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")


def _progress_bar(fraction: float, message: str) -> None:
    filled = int(round(BAR_WIDTH * fraction))
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {100 * fraction:5.1f}% {message[:60]:<60}")
    sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    """Run the fusion; print a progress bar on stderr and the report on stdout."""
    report = fuse(args.lr_hsi, args.hr_msi, args.output, model=args.model, method=args.method,
                  tile=args.tile_size, overlap=args.overlap, batch_size=args.batch_size, device=args.device,
                  threads=args.threads, shift_correction=not args.no_shift_correction, dtype=args.dtype,
                  scale=args.scale, halo=args.halo, output_scale=args.output_scale, cog=args.cog,
                  overwrite=args.overwrite,
                  reporter=Reporter(progress=_progress_bar))
    sys.stderr.write("\n")
    if args.json:
        json.dump(report.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    for line in report.summary_lines():
        print(line)
    return 0
