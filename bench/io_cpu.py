"""Where a fusion's CPU goes: the reader thread, the writer thread and the rest, for one or more engines (issue 16).

On two cores, every CPU second the reader (GDAL reads, scaling, fill) and
the writer (blending, encoding to the output type, GDAL's compression) spend
is taken from the method, so the end-to-end rate falls below the method's
raw rate (``bench/headline.py``).  This script measures those seconds.

``csakd fuse --method M --dtype D`` of the real-scene mosaic of
``bench/headline.py`` (``--lr-size`` LR px a side, 224 bands, int16 ZSTD,
scale 3) runs in a fresh process per case, as a user runs it.  The child
records the CPU time (``time.thread_time``) of the pipeline's reader and
writer threads when each ends; the process's user and system CPU and peak
RSS come from ``wait4``.  ``rest`` = process CPU minus the two threads:
planning, the method (with torch's or onnxruntime's own threads), imports.
A stage's CPU seconds in a run are not those of the stage alone: on two
busy cores the threads share the caches and GDAL's block cache (the output's
blocks and the inputs' blocks), so the same work costs more.

``--engines`` names checkouts of this project (folders with
``csakd_qgis/``; default: this one); each case runs in its engine's folder
with only that engine on ``PYTHONPATH`` (``python -c`` puts the working
folder first on the path, so running elsewhere would import another
engine), so a change can be measured against the commit before it (make
that one with ``git worktree add /tmp/base HEAD~1``).  Rounds alternate the
cases with the order rotating; medians with the lowest and highest.

Usage: ``python bench/io_cpu.py [--engines DIR ...] [--methods auto csakd] [--dtypes int16] [--rounds 3]
[--lr-size 500] [--folder DIR] [--from-log LOG] [--no-doc]``.
"""

from __future__ import annotations

import argparse
import ast
import itertools
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

from common import ROOT, add_rerun_options, machine, publish, rotations, run_measured, spread
from headline import build_inputs

HEADING = "## CPU of the reader and writer threads (issue 16)"
#: ``csakd fuse`` with each pipeline thread's CPU seconds written to a JSON file when it ends (argv: that file,
#: then the ``csakd`` arguments).
CHILD = ("import json, sys, time, runpy\n"
         "import csakd_qgis.fusion.pipeline as pipeline\n"
         "target, cpu, run = sys.argv[1], {}, pipeline._Stage.run\n"
         "def timed(self):\n"
         "    try:\n"
         "        run(self)\n"
         "    finally:\n"
         "        cpu[self.name] = time.thread_time()\n"
         "        open(target, 'w').write(json.dumps(cpu))\n"
         "pipeline._Stage.run = timed\n"
         "sys.argv = ['csakd'] + sys.argv[2:]\n"
         "runpy.run_module('csakd_qgis.cli', run_name='__main__')\n")
#: ``(engine, method, dtype) -> [run, ...]``; a run has wall, user, sys, rss, reader and writer seconds.
Runs = Dict[Tuple[str, str, str], List[Dict[str, float]]]


def run_case(engine: Path, method: str, dtype: str, lr: Path, msi: Path, folder: Path) -> Dict[str, float]:
    """One ``csakd fuse`` in a fresh process with ``engine`` first on the path."""
    threads = folder / "threads.json"
    got = run_measured([sys.executable, "-c", CHILD, str(threads), "fuse", "--method", method, "--dtype", dtype,
                        "--overwrite", str(lr), str(msi), str(folder / "out.tif")],
                       {**os.environ, "PYTHONPATH": str(engine)}, cwd=engine)  # ``-c`` puts the cwd first
    cpu = json.loads(threads.read_text())
    threads.unlink()
    return {**got, "reader": cpu["csakd-reader"], "writer": cpu["csakd-writer"]}


def measure(engines: List[Path], methods: List[str], dtypes: List[str], rounds: int, folder: Path,
            lr_size: int) -> Runs:
    """Every case ``rounds`` times, the order rotating each round; each run printed as it ends."""
    lr, msi = folder / "lr_hsi.tif", folder / "hr_msi.tif"
    if not lr.exists():
        lr, msi = build_inputs(folder, lr_size)
    cases = [(str(e), m, d) for m, d, e in itertools.product(methods, dtypes, engines)]
    runs: Runs = {case: [] for case in cases}
    for r, order in rotations(cases, rounds):
        for case in order:
            runs[case].append(run_case(Path(case[0]), case[1], case[2], lr, msi, folder))
            print(f"round {r}, {case}: {runs[case][-1]}", flush=True)
    return runs


def from_log(path: Path) -> Runs:
    """The runs an earlier run printed."""
    runs: Runs = {}
    for line in path.read_text().splitlines():
        if line.startswith("round "):
            head, _, value = line.partition(": {")
            runs.setdefault(ast.literal_eval(head.split(", ", 1)[1]), []).append(ast.literal_eval("{" + value))
    return runs


def table(runs: Runs) -> List[str]:
    """The section's table: one row per case."""
    rows = ["| engine | method | output type | wall (s) | process CPU (s) | reader CPU (s) | writer CPU (s) | "
            "rest (s) | peak RSS (MB) |", "|---|---|---|---|---|---|---|---|---|"]
    for (engine, method, dtype), got in runs.items():
        total = [g["user"] + g["sys"] for g in got]
        rest = [t - g["reader"] - g["writer"] for t, g in zip(total, got)]
        rows.append(f"| {Path(engine).name} | {method} | {dtype} | {spread([g['wall'] for g in got])} | "
                    f"{spread(total)} | {spread([g['reader'] for g in got])} | "
                    f"{spread([g['writer'] for g in got])} | {spread(rest)} | "
                    f"{statistics.median(g['rss'] for g in got):.0f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", nargs="+", type=Path, default=[ROOT])
    parser.add_argument("--methods", nargs="+", default=["auto", "csakd"])
    parser.add_argument("--dtypes", nargs="+", default=["int16"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lr-size", type=int, default=500)
    add_rerun_options(parser)
    args = parser.parse_args()
    if args.from_log:
        runs = from_log(args.from_log)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            runs = measure([e.resolve() for e in args.engines], args.methods, args.dtypes, args.rounds,
                           args.folder or Path(tmp), args.lr_size)
    lines = [f"`bench/io_cpu.py --rounds {args.rounds} --lr-size {args.lr_size}` on {machine()}; load average "
             f"{os.getloadavg()[0]:.1f} at the end. Protocol in the script: `csakd fuse` of the real-scene mosaic "
             f"({args.lr_size}² x 224 LR px -> {3 * args.lr_size}² output px), one fresh process per run, medians "
             "(lowest-highest)." + (f" The runs are those of {args.from_log.name}, an earlier run's log (load average: "
                                    "now)." if args.from_log else ""), ""] + table(runs)
    publish(HEADING, "\n".join(lines), not args.no_doc)


if __name__ == "__main__":
    main()
