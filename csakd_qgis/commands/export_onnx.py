"""``csakd export-onnx``: a csakd model as one ``.onnx`` file for onnxruntime.

The export has dynamic batch and tile size, carries the model card in its
metadata and is compared with torch at two other tile sizes before it is
written (:func:`csakd_qgis.models.onnx_export.export_onnx`).  Run it with
``csakd fuse --model FILE.onnx``.
"""

from __future__ import annotations

import argparse
import json

from csakd_qgis.models.onnx_export import DEFAULT_OPSET, export_onnx

NAME = "export-onnx"
HELP = "Export a csakd model (.safetensors or installed name) to ONNX for the onnxruntime backend."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the model, the output and the export options."""
    parser.add_argument("model", help="a csakd .safetensors checkpoint or an installed model name (csakd models)")
    parser.add_argument("out", help="destination .onnx file")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX operator set version (default {DEFAULT_OPSET})")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip the comparison with torch at two tile sizes")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--json", action="store_true", help="print the export report as JSON")


def run(args: argparse.Namespace) -> int:
    """Export and report the size, time and parity with torch."""
    report = export_onnx(args.model, args.out, opset=args.opset, verify=args.verify, overwrite=args.overwrite)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    checked = ", ".join(f"{b}x{h}x{w} LR px: {diff:.2g}" for (b, h, w), diff in report.parity)
    print(f"wrote {report.path} ({report.card.role} {report.card.name!r}, opset {report.opset}, "
          f"{report.bytes / 1e6:.1f} MB, {report.seconds:.1f} s)")
    print(f"max |onnxruntime - torch|: {checked}" if checked else "not compared with torch (--no-verify)")
    return 0
