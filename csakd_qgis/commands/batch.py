"""``csakd batch``: fuse many scene pairs listed in a CSV or JSON file as one job on a Dask cluster."""

from __future__ import annotations

import argparse
import sys

from csakd_qgis.commands.fuse import (
    add_cluster_options,
    add_fusion_options,
    cluster_options,
    print_report,
    progress_bar,
)
from csakd_qgis.progress import Reporter

NAME = "batch"
HELP = "Fuse many LR-HSI / HR-MSI pairs (a CSV or JSON list) as one job on a Dask cluster."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the command's options."""
    parser.add_argument("pairs", metavar="PAIR_LIST",
                        help="CSV with the columns lr_hsi,hr_msi,output (header row) or a JSON list of objects "
                             "with those keys, and optionally lr_mask,msi_mask; inputs may be products as "
                             "downloaded; relative paths are relative to the list's folder")
    add_fusion_options(parser)
    add_cluster_options(parser)


def run(args: argparse.Namespace) -> int:
    """Fuse every pair (a local cluster of one worker unless --scheduler/--workers); 1 when a pair failed."""
    from csakd_qgis.distributed import fuse_batch, open_client, read_pair_list

    pairs = read_pair_list(args.pairs)
    workers = 1 if args.scheduler is None and args.workers is None else args.workers
    with open_client(args.scheduler, workers) as client:
        report = fuse_batch(pairs, client=client, options=cluster_options(args),
                            reporter=Reporter(progress=progress_bar))
    sys.stderr.write("\n")
    print_report(report, args.json)
    return 1 if report.failed else 0
