"""Torch threads, output compression and GDAL writer threads against each other (issue 16).

On a 2-core machine the reader thread (GDAL decompression and warping), the
compute loop (torch's intra-op threads, or numpy for a classical method) and
the writer thread (blending, encoding and GDAL's compression) share the
cores.  This script times ``fuse(..., device="cpu")`` end to end for each
configuration in :data:`CONFIGS`, one setting changed at a time from the
defaults plus the one-torch-thread combinations:

* torch threads (``FuseOptions.threads``): 1, or 2 (torch's default here,
  passed explicitly because :func:`csakd_qgis.devices.set_threads` keeps the
  previous run's setting when given None);
* output compression (``FuseOptions.compress``): ZSTD at the writer's level
  (:data:`csakd_qgis.io.write.ZSTD_LEVEL`, 1) or level 3 (patched here),
  DEFLATE, none; always with the writer's predictor (3 for float32);
* GDAL's compression threads (the ``NUM_THREADS`` creation option, which
  the engine does not set: the writer compresses in the thread that
  writes); passed here through :class:`csakd_qgis.io.write.RasterWriter`'s
  creation options.

Methods: gsa on the synthetic 224-band scene of ``bench/floor.py``
(:func:`floor.synthetic_scene`) with :data:`GSA_SIDE` LR px a side, and the
bundled student (``csakd``) on the sample reference mirrored
:data:`STUDENT_MIRROR` times each way and simulated at 40 dB, unshifted
(``bench/shift_cost.py``; the synthetic scene's wavelengths are not
EnMAP's, so no installed model fits it); scale 3.  The configurations
alternate within each round (the order rotates), medians over the rounds
are given with the load averages before and after.

Usage: ``python bench/threads.py [--quick] [--repeats N] [--gsa-log FILE]``
(``--quick``: small scenes, one round, nothing written; ``--gsa-log``: take
the gsa rows from the lines an earlier run printed instead of running gsa).
"""

from __future__ import annotations

import argparse
import ast
import functools
import os
import statistics
import tempfile
import time
import warnings
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional
from unittest import mock

import numpy as np
import torch
from common import machine, publish
from floor import synthetic_scene
from shift_cost import mirrored_reference, simulate

from csakd_qgis.fusion import plan as plan_module
from csakd_qgis.fusion.engine import fuse
from csakd_qgis.io import write as write_module

HEADING = "## Threads and compression (issue 16)"
GSA_SIDE = 300
#: The student's scene: ``resources/sample/reference_hr_hsi.tif`` (63 px) mirrored this many times each way.
STUDENT_MIRROR = 9
#: A configuration must be this much faster than the default to change it.
MIN_GAIN = 0.05


@dataclass(frozen=True)
class Config:
    """One setting of the three knobs (``zstd_level`` only for ZSTD; ``writer_threads`` None: not set)."""

    label: str
    threads: int
    compress: Optional[str] = "zstd"
    zstd_level: int = write_module.ZSTD_LEVEL
    writer_threads: Optional[int] = None


CONFIGS = (
    Config("default: torch 2, zstd 1", 2),
    Config("torch 1, zstd 1", 1),
    Config("torch 2, zstd 1, GDAL NUM_THREADS 2", 2, writer_threads=2),
    Config("torch 1, zstd 1, GDAL NUM_THREADS 2", 1, writer_threads=2),
    Config("torch 2, zstd 3", 2, zstd_level=3),
    Config("torch 2, deflate", 2, "deflate"),
    Config("torch 2, no compression", 2, None),
)


def load() -> str:
    """The 1-, 5- and 15-minute load averages."""
    return "/".join(f"{v:.2f}" for v in os.getloadavg())


def run(config: Config, lr: Path, msi: Path, out: Path, method: str) -> Dict[str, float]:
    """Wall seconds, the pipeline's stage seconds and the output's size (MB) of one ``fuse`` under ``config``."""
    with ExitStack() as stack:
        stack.enter_context(mock.patch.object(write_module, "ZSTD_LEVEL", config.zstd_level))
        if config.writer_threads is not None:
            writer = functools.partial(write_module.RasterWriter, num_threads=str(config.writer_threads))
            stack.enter_context(mock.patch.object(plan_module, "RasterWriter", writer))
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        report = fuse(str(lr), str(msi), str(out), method=method, device="cpu", overwrite=True,
                      threads=config.threads, compress=config.compress)
        wall = time.perf_counter() - start
    size = out.stat().st_size / 2**20
    out.unlink()
    return {"wall": wall, "size": size, **{key: float(v) for key, v in report.timings.items()}}


def measure(method: str, lr: Path, msi: Path, folder: Path, repeats: int) -> Dict[str, List[Dict[str, float]]]:
    """``config label -> one result per round``; rounds alternate the configurations (rotating order)."""
    out = folder / f"{method}_out.tif"
    run(CONFIGS[0], lr, msi, out, method)  # warm-up: model load, page cache
    results: Dict[str, List[Dict[str, float]]] = {c.label: [] for c in CONFIGS}
    for rep in range(repeats):
        for k in range(len(CONFIGS)):
            config = CONFIGS[(k + rep) % len(CONFIGS)]
            result = run(config, lr, msi, out, method)
            results[config.label].append(result)
            print(f"{method} {config.label} rep {rep}: {result}", flush=True)
    return results


def table(method: str, side: int, results: Dict[str, List[Dict[str, float]]], loads: str) -> List[str]:
    """Markdown lines: one row per configuration, medians; ``loads`` says what the load averages were."""
    base = statistics.median(r["wall"] for r in results[CONFIGS[0].label])
    lines = [f"**{method}**, {side}x{side} output px (224 bands, scale 3); load average (1/5/15 min) {loads}.", "",
             "| configuration | wall s (min–max) | vs default | read / infer / blend / write s | output MB |",
             "|---|---|---|---|---|"]
    for config in CONFIGS:
        rows = results[config.label]
        wall = [r["wall"] for r in rows]
        med = {k: statistics.median(r[k] for r in rows) for k in ("read", "infer", "blend", "write", "size")}
        change = statistics.median(wall) / base - 1
        mark = " **faster**" if change < -MIN_GAIN else ""
        lines.append(f"| {config.label} | {statistics.median(wall):.1f} ({min(wall):.1f}–{max(wall):.1f}) | "
                     f"{100 * change:+.1f} %{mark} | {med['read']:.1f} / {med['infer']:.1f} / {med['blend']:.1f} / "
                     f"{med['write']:.1f} | {med['size']:.0f} |")
    return lines


def from_log(path: Path, method: str) -> Dict[str, List[Dict[str, float]]]:
    """``config label -> results`` from the ``METHOD LABEL rep N: {...}`` lines an earlier run printed."""
    results: Dict[str, List[Dict[str, float]]] = {c.label: [] for c in CONFIGS}
    for line in path.read_text().splitlines():
        head, _, values = line.partition(": {")
        if head.startswith(f"{method} ") and " rep " in head:
            label = head[len(method) + 1:head.rindex(" rep ")]
            results[label].append(ast.literal_eval("{" + values))
    return results


def main() -> int:
    """Time every configuration for gsa and the student; write the section (unless ``--quick``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small scenes, one round, print only")
    parser.add_argument("--repeats", type=int, default=2, help="alternating rounds per method")
    parser.add_argument("--gsa-log", type=Path, help="take gsa's rows from this earlier run's printed lines")
    parser.add_argument("--gsa-load", default="not recorded", help="load averages during that run, as text")
    args = parser.parse_args()
    np.seterr(all="ignore")
    header = machine()
    default_threads = torch.get_num_threads()
    start = time.perf_counter()
    repeats = 1 if args.quick else args.repeats
    lines: List[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.gsa_log:
            results = from_log(args.gsa_log, "gsa")
            lines += table(f"gsa (rows from an earlier run of this script, `{args.gsa_log.name}`)", 3 * GSA_SIDE,
                           results, args.gsa_load)
        else:
            side = 40 if args.quick else GSA_SIDE
            lr, msi = synthetic_scene(folder, side)
            before = load()
            results = measure("gsa", lr, msi, folder, repeats)
            lines += table("gsa", 3 * side, results, f"{before} before, {load()} after")
        lines.append("")
        torch.set_num_threads(default_threads)
        mirror = 2 if args.quick else STUDENT_MIRROR
        lr, msi = simulate(mirrored_reference(folder, mirror), folder, "student", 0.0, 40.0, 0)[1:]
        before = load()
        results = measure("csakd", lr, msi, folder, repeats)
        lines += table("student (csakd)", 63 * mirror, results, f"{before} before, {load()} after")
        torch.set_num_threads(default_threads)
    body = "\n".join([
        f"Machine: {header}. Date: {time.strftime('%Y-%m-%d')}. Produced by `bench/threads.py` in "
        f"{time.perf_counter() - start:.0f} s ({repeats} alternating rounds after a warm-up run, medians); protocol "
        f"in its docstring. `fuse(..., device=\"cpu\")` end to end with the engine's other defaults; torch's "
        f"default here is {default_threads} threads. **faster**: more than {100 * MIN_GAIN:.0f} % below the "
        "default.", "", *lines])
    publish(HEADING, body, write=not args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
