"""The ``csakd`` command line.

Each sub-command lives in :mod:`csakd_qgis.commands` as a module with
``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
Errors the engine raises on purpose (:class:`~csakd_qgis.errors.CsakdError`)
are printed as one line, never as a traceback; Ctrl-C exits with status 130.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from csakd_qgis import __version__
from csakd_qgis.errors import Cancelled, CsakdError

#: Sub-command modules under ``csakd_qgis.commands``, in the order ``--help`` lists them.
COMMANDS = (
    "fuse",
    "batch",
    "coregister",
    "simulate",
    "train",
    "evaluate",
    "models",
    "convert_original",
    "export_onnx",
    "quicklook",
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per available command."""
    parser = argparse.ArgumentParser(
        prog="csakd",
        description="Hyperspectral / multispectral image fusion (CSAKD).",
    )
    parser.add_argument("--version", action="version", version=f"csakd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        module = importlib.import_module(f".commands.{name}", __package__)
        cmd = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``csakd`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except Cancelled as exc:
        print(f"csakd: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("csakd: interrupted, nothing was written", file=sys.stderr)
        return 130
    except CsakdError as exc:
        print(f"csakd {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
