"""``csakd fuse``: fuse an LR-HSI with an HR-MSI into an HR-HSI GeoTIFF, here or on a Dask cluster."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Dict, List, Optional, Protocol

from csakd_qgis.distributed.regions import REGION_SIZE
from csakd_qgis.fusion.engine import fuse
from csakd_qgis.options import (
    BACKENDS,
    CPU_BATCH_SIZE,
    DEVICES,
    DTYPES,
    GPU_BATCH_SIZE,
    METHODS,
    OVERLAP,
    PRECISIONS,
    SENSORS,
    TILE,
    FuseOptions,
    MsiBands,
)
from csakd_qgis.progress import Reporter

if TYPE_CHECKING:
    from csakd_qgis.distributed import ClusterOptions

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


def add_fusion_options(parser: argparse.ArgumentParser) -> None:
    """Declare the options that say how a scene is fused (shared with ``csakd batch``; see :class:`FuseOptions`)."""
    parser.add_argument("--model", default="auto",
                        help="model name, .safetensors or .onnx file (default: auto-select)")
    parser.add_argument("--method", choices=METHODS, default="auto",
                        help="fusion method; auto: a network whose model card shows it beats the classical methods, "
                             "else the classical method that suits the scene (default: auto)")
    parser.add_argument("--scale", type=int, default=None, help="HR/LR pixel-size ratio (default: derived)")
    parser.add_argument("--halo", type=_halo, default=None,
                        help="LR pixels of context per tile side, or 'exact' for the method's receptive-field "
                             "bound (default: 4 for networks, 2 for bicubic and GSA)")
    parser.add_argument("--tile-size", type=int, default=TILE, help=f"tile core size in LR pixels (default: {TILE})")
    parser.add_argument("--overlap", type=int, default=None,
                        help=f"tile overlap in LR pixels, at most a quarter of the tile (default: {OVERLAP}, or a "
                             "quarter of a smaller tile)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"tiles per network call (default: {CPU_BATCH_SIZE} on a CPU, {GPU_BATCH_SIZE} on a GPU)")
    parser.add_argument("--device", default="auto", help=f"{', '.join(DEVICES)} or cuda:N (default: auto)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch and onnxruntime (a network on the CPU shares them between "
                             "two tiles at once; 1: one tile, least memory)")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="network arithmetic on CUDA: float32, or autocast to bfloat16/float16 (faster, "
                             "less exact; the CPU always uses float32; default: float32)")
    parser.add_argument("--no-shift-correction", action="store_true", help="use the inputs' grids as given")
    parser.add_argument("--dtype", choices=[d for d in DTYPES if d != "same"], default="float32",
                        help="output data type (default: float32)")
    parser.add_argument("--output-scale", type=float, default=None,
                        help="physical value per stored unit for integer outputs, e.g. 1e-4")
    parser.add_argument("--cog", action="store_true", help="write a Cloud Optimized GeoTIFF")
    parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    parser.add_argument("--no-guard", action="store_true",
                        help="keep an output that disagrees with its inputs (by default it is refused: a misread "
                             "input, see docs/classical.md)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    identity = parser.add_argument_group(
        "HR-MSI band identity", "what the HR-MSI's bands are when its metadata does not say; a network then "
        "gets them in its own order")
    identity.add_argument("--msi-sensor", choices=SENSORS, default=None,
                          help="the HR-MSI's sensor (with --msi-bands)")
    identity.add_argument("--msi-bands", metavar="B2,B3,B4,B8", default=None,
                          help="the sensor's bands in the raster's order, e.g. B4,B3,B2,B8")
    identity.add_argument("--msi-wavelengths", metavar="NM,NM,...", default=None,
                          help="band centres (nm) of another camera, in the raster's order, e.g. 490,560,665,842")
    identity.add_argument("--msi-fwhm", metavar="NM,NM,...", default=None,
                          help="band widths (FWHM, nm) for --msi-wavelengths")


def msi_bands(args: argparse.Namespace) -> Optional[MsiBands]:
    """The HR-MSI band identity the parsed options give, or None (checked by :class:`MsiBands`)."""
    return MsiBands.parse(args.msi_sensor, args.msi_bands, args.msi_wavelengths, args.msi_fwhm)


def fuse_options(args: argparse.Namespace) -> FuseOptions:
    """The :class:`~csakd_qgis.options.FuseOptions` the parsed options ask for (checked there)."""
    return FuseOptions(tile=args.tile_size, overlap=args.overlap, batch_size=args.batch_size, halo=args.halo,
                       device=args.device, threads=args.threads, backend=getattr(args, "backend", "auto"),
                       precision=args.precision, shift_correction=not args.no_shift_correction, scale=args.scale,
                       dtype=args.dtype, output_scale=args.output_scale, cog=args.cog, overwrite=args.overwrite,
                       guard=not args.no_guard)


def add_cluster_options(parser: argparse.ArgumentParser) -> None:
    """Declare ``--scheduler``/``--workers`` (one of them) and ``--region-size`` (shared with ``csakd batch``)."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS", default=None,
                       help="run on the Dask cluster of this scheduler (e.g. tcp://host:8786); inputs, model and "
                            "output must be reachable under the same paths on every worker")
    where.add_argument("--workers", type=int, metavar="N", default=None,
                       help="run on a local Dask cluster of N worker processes (e.g. one per GPU)")
    parser.add_argument("--region-size", type=int, default=REGION_SIZE,
                        help=f"side of the output regions sent to the workers, HR pixels (default: {REGION_SIZE})")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the command's options."""
    parser.add_argument("lr_hsi", metavar="LR_HSI",
                        help="low-resolution hyperspectral raster, or a product as downloaded (EnMAP L2A folder or "
                             "METADATA.XML, PRISMA L2D .he5, EMIT L2A .nc; docs/inputs.md)")
    parser.add_argument("hr_msi", metavar="HR_MSI",
                        help="high-resolution multispectral raster (any CRS; must overlap), or a product as "
                             "downloaded (Sentinel-2 L2A .SAFE/.zip/MTD_MSIL2A.xml, Landsat C2 L2 MTL)")
    parser.add_argument("output", metavar="OUTPUT",
                        help="output GeoTIFF (written atomically); with --scheduler/--workers also a .vrt over "
                             "region files kept in OUTPUT_regions/")
    parser.add_argument("--lr-mask", metavar="RASTER", default=None,
                        help="pixels of the LR-HSI to exclude (nonzero), on its grid; added to a product's own mask")
    parser.add_argument("--msi-mask", metavar="RASTER", default=None,
                        help="pixels of the HR-MSI to exclude (nonzero), on its grid; added to a product's own mask")
    add_fusion_options(parser)
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="network inference: torch, onnxruntime, or auto = onnxruntime for a .onnx model "
                             "and, on the CPU with onnx and onnxruntime installed, for a checkpoint (exported in "
                             "memory); torch otherwise "
                             "(default: auto; on this machine only, not with --scheduler/--workers)")
    add_cluster_options(parser)


def progress_bar(fraction: float, message: str) -> None:
    """Draw a text progress bar on stderr."""
    filled = int(round(BAR_WIDTH * fraction))
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {100 * fraction:5.1f}% {message[:60]:<60}")
    sys.stderr.flush()


def cluster_options(args: argparse.Namespace) -> ClusterOptions:
    """The :class:`~csakd_qgis.distributed.ClusterOptions` the parsed options ask for."""
    from csakd_qgis.distributed import ClusterOptions

    return ClusterOptions(model=args.model, method=args.method, region_size=args.region_size,
                          fuse=fuse_options(args), msi_bands=msi_bands(args))


class Report(Protocol):
    """What :func:`print_report` prints: a fuse, distributed or batch report."""

    def to_dict(self) -> Dict[str, object]:
        """JSON-ready dict."""

    def summary_lines(self) -> List[str]:
        """Human-readable lines."""


def print_report(report: Report, as_json: bool) -> None:
    """The report as JSON or as its summary lines, on stdout."""
    if as_json:
        json.dump(report.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    for line in report.summary_lines():
        print(line)


def run(args: argparse.Namespace) -> int:
    """Run the fusion; print a progress bar on stderr and the report on stdout."""
    reporter = Reporter(progress=progress_bar)
    report: Report
    if args.scheduler is not None or args.workers is not None:
        from csakd_qgis.distributed import fuse_distributed, open_client

        with open_client(args.scheduler, args.workers) as client:
            report = fuse_distributed(args.lr_hsi, args.hr_msi, args.output, client=client,
                                      options=cluster_options(args), reporter=reporter, lr_mask=args.lr_mask,
                                      msi_mask=args.msi_mask)
    else:
        report = fuse(args.lr_hsi, args.hr_msi, args.output, model=args.model, method=args.method,
                      options=fuse_options(args), reporter=reporter, lr_mask=args.lr_mask, msi_mask=args.msi_mask,
                      msi_bands=msi_bands(args))
    sys.stderr.write("\n")
    print_report(report, args.json)
    return 0
