"""How often the pipeline should hand freed heap back to the kernel: time against peak memory (issue 16).

``fusion/pipeline.py`` calls glibc's ``malloc_trim(0)`` once per
:data:`~csakd_qgis.fusion.pipeline.TRIM_EVERY` tiles (see ``_heap_trimmer``):
without it the heap that the reader thread allocated and the other threads
freed stays with the process, and the peak crept up with the number of tiles
a run had processed.  Each trim also means the next tiles fault their
buffers in again, page by page.  Two parts, each ``TRIM_EVERY`` value in a
fresh process (the value patched in before ``fuse`` runs), the values
alternating within each round with the order rotating:

* ``cost``: ``csakd fuse`` with the default method (``auto``) on the
  real-scene mosaic of ``bench/headline.py`` (``--lr-size`` LR px a side,
  224 bands, int16 output), as a user runs it: wall seconds, user and
  system CPU seconds and minor page faults (``wait4``'s rusage), peak RSS.
* ``memory``: ``bench/memory_width.py``'s synthetic GSA case at 60 bands
  (``fuse`` in-process, 1 torch thread, peak ``VmHWM``), at 1008 x 1008
  output px, 1008 wide x 8064 long (the run whose peak crept before the
  trim) and 8064 wide x 1008.

``TRIM_EVERY`` = ``never`` is a value larger than any run's tile count.
Medians over the rounds, with the lowest and highest.

Usage: ``python bench/heap_trim.py [--every 1 8 never] [--rounds 3] [--parts cost memory] [--folder DIR]
[--from-log LOG] [--no-doc]``.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

from affine import Affine
from common import (
    LR_TRANSFORM,
    ROOT,
    add_rerun_options,
    machine,
    publish,
    rotations,
    run_measured,
    spread,
    write_synthetic,
)
from headline import build_inputs

HEADING = "## Heap trims against time and peak memory (issue 16)"
NEVER = 10**9
MSI_BANDS, SCALE, BANDS = 4, 3, 60
#: ``csakd fuse`` as a user runs it, with ``TRIM_EVERY`` patched first (argv: value, fuse arguments).
CLI_CHILD = ("import sys, runpy\n"
             "import csakd_qgis.fusion.pipeline as pipeline\n"
             "pipeline.TRIM_EVERY = int(sys.argv[1])\n"
             "sys.argv = ['csakd'] + sys.argv[2:]\n"
             "runpy.run_module('csakd_qgis.cli', run_name='__main__')\n")
#: ``bench/memory_width.py``'s GSA case in-process, with ``TRIM_EVERY`` patched (argv: lr, msi, out, value).
GSA_CHILD = ("import json, sys, torch\n"
             "torch.set_num_threads(1)\n"
             "import csakd_qgis.fusion.pipeline as pipeline\n"
             "pipeline.TRIM_EVERY = int(sys.argv[4])\n"
             "from common import peak_rss_mb\n"
             "from csakd_qgis.fusion.engine import fuse\n"
             "fuse(sys.argv[1], sys.argv[2], sys.argv[3], method='gsa', device='cpu', overwrite=True, dtype='int16',\n"
             "     output_scale=1e-4, shift_correction=False)\n"
             "print(json.dumps({'rss_mb': peak_rss_mb()}))\n")


def _value(every: str) -> int:
    return NEVER if every == "never" else int(every)


def _env() -> Dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "bench")])}


def _child(code: str, args: List[str]) -> Dict[str, float]:
    """Run ``code`` in a fresh interpreter: its wall seconds and its last line of output, parsed as JSON."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *args], env=_env(), cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"benchmark child failed:\n{done.stderr[-3000:]}")
    return {"wall": time.perf_counter() - start, **json.loads(done.stdout.strip().splitlines()[-1])}


def _usage(code: str, args: List[str]) -> Dict[str, float]:
    """Run ``code`` in a fresh interpreter (:func:`common.run_measured`)."""
    return run_measured([sys.executable, "-c", code, *args], _env())


Costs = Dict[str, List[Dict[str, float]]]
#: ``(output rows, output cols, every) -> [(peak RSS MB, seconds), ...]``.
Peaks = Dict[Tuple[int, int, str], List[Tuple[float, float]]]
#: ``(rows, cols)`` of the memory part's outputs.
SHAPES = [(1008, 1008), (8064, 1008), (1008, 8064)]


def measure_cost(folder: Path, every: List[str], rounds: int, lr_size: int) -> Costs:
    """The ``cost`` part's runs, printed as they end."""
    lr, msi = folder / "lr_hsi.tif", folder / "hr_msi.tif"
    if not lr.exists():
        lr, msi = build_inputs(folder, lr_size)
    got: Costs = {e: [] for e in every}
    for r, order in rotations(every, rounds):
        for e in order:
            got[e].append(_usage(CLI_CHILD, [str(_value(e)), "fuse", "--dtype", "int16", "--overwrite", str(lr),
                                             str(msi), str(folder / "out.tif")]))
            print(f"cost round {r}, every {e}: {got[e][-1]}", flush=True)
    return got


def cost_table(got: Costs, rounds: int, lr_size: int) -> List[str]:
    """The ``cost`` table."""
    rows = [f"`csakd fuse --dtype int16` (method `auto`) of the real-scene mosaic, {lr_size}² x 224 LR px -> "
            f"{3 * lr_size}² output px, {rounds} rounds.", "",
            "| trim every (tiles) | wall (s) | user CPU (s) | system CPU (s) | minor page faults (k) | peak RSS (MB) |",
            "|---|---|---|---|---|---|"]
    for e, g in got.items():
        rows.append(f"| {e} | {spread([x['wall'] for x in g])} | {spread([x['user'] for x in g])} | "
                    f"{spread([x['sys'] for x in g])} | {spread([x['faults'] / 1e3 for x in g], '{:.0f}')} | "
                    f"{spread([x['rss'] for x in g], '{:.0f}')} |")
    return rows


def measure_memory(folder: Path, every: List[str], rounds: int) -> Peaks:
    """The ``memory`` part's runs, printed as they end."""
    got: Peaks = {}
    for rows, cols in SHAPES:
        lr, msi = folder / f"lr_{rows}x{cols}.tif", folder / f"msi_{rows}x{cols}.tif"
        if not lr.exists():
            write_synthetic(lr, BANDS, rows // SCALE, LR_TRANSFORM, 1, width=cols // SCALE)
            write_synthetic(msi, MSI_BANDS, rows, LR_TRANSFORM * Affine.scale(1 / SCALE), 2, width=cols)
        for r, order in rotations(every, rounds):
            for e in order:
                done = _child(GSA_CHILD, [str(lr), str(msi), str(folder / "out.tif"), str(_value(e))])
                got.setdefault((rows, cols, e), []).append((done["rss_mb"], done["wall"]))
                print(f"memory {cols} x {rows}, round {r}, every {e}: {done['rss_mb']:.0f} MB, {done['wall']:.0f} s",
                      flush=True)
    return got


def memory_table(got: Peaks, every: List[str], rounds: int) -> List[str]:
    """The ``memory`` table."""
    lines = [f"GSA, {BANDS} bands, synthetic band-interleaved inputs (`bench/memory_width.py`'s case), 1 torch "
             f"thread, output width x height; each cell: the peak RSS in MB over {rounds} runs (growth against 1008 "
             "x 1008 at the same trim), then the median seconds of the child process.", "",
             "| trim every (tiles) | " + " | ".join(f"{c} x {r}" for r, c in SHAPES) + " |",
             "|---|" + "---|" * len(SHAPES)]
    for e in every:
        first = statistics.median(p for p, _ in got[(*SHAPES[0], e)])
        cells = []
        for rows, cols in SHAPES:
            peaks = [p for p, _ in got[(rows, cols, e)]]
            growth = 100 * (statistics.median(peaks) / first - 1)
            cells.append(spread(peaks, "{:.0f}") + ("" if (rows, cols) == SHAPES[0] else f", {growth:+.1f} %")
                         + f"; {statistics.median(t for _, t in got[(rows, cols, e)]):.0f} s")
        lines.append(f"| {e} | " + " | ".join(cells) + " |")
    return lines


def from_log(path: Path) -> Tuple[Costs, Peaks]:
    """The runs an earlier run printed."""
    costs: Costs = {}
    peaks: Peaks = {}
    for line in path.read_text().splitlines():
        head, _, value = line.partition(": ")
        every = head.rsplit("every ", 1)[-1]
        if line.startswith("cost round "):
            costs.setdefault(every, []).append(ast.literal_eval(value))
        elif line.startswith("memory "):
            cols, rows = (int(v) for v in head.split(",")[0].removeprefix("memory ").split(" x "))
            mb, seconds = value.split(", ")
            peaks.setdefault((rows, cols, every), []).append((float(mb.split()[0]), float(seconds.split()[0])))
    return costs, peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", nargs="+", default=["1", "8", "never"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parts", nargs="+", choices=("cost", "memory"), default=["cost", "memory"])
    parser.add_argument("--lr-size", type=int, default=400)
    add_rerun_options(parser)
    args = parser.parse_args()
    header = machine()
    lines = [f"`bench/heap_trim.py --every {' '.join(args.every)} --rounds {args.rounds} --parts "
             f"{' '.join(args.parts)}` on {header}; load average {os.getloadavg()[0]:.1f} at the end. "
             "Protocol in the script.", ""]
    if args.from_log:
        costs, peaks = from_log(args.from_log)
        lines[0] += f" The runs are those of {args.from_log.name}, the log of an earlier run (load averages: now)."
    else:
        with tempfile.TemporaryDirectory() as tmp:
            folder = args.folder or Path(tmp)
            folder.mkdir(parents=True, exist_ok=True)
            costs = measure_cost(folder, args.every, args.rounds, args.lr_size) if "cost" in args.parts else {}
            peaks = measure_memory(folder, args.every, args.rounds) if "memory" in args.parts else {}
    if "cost" in args.parts:
        lines += cost_table(costs, args.rounds, args.lr_size) + [""]
    if "memory" in args.parts:
        lines += memory_table(peaks, args.every, args.rounds)
    publish(HEADING, "\n".join(lines), not args.no_doc)


if __name__ == "__main__":
    main()
