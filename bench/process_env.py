"""torch's CPU runtime settings that must be made before torch loads, timed end to end (issue 16).

Two process-wide settings decide how much of a 2-core machine torch leaves to
the engine's reader and writer threads:

* ``OMP_WAIT_POLICY``: libgomp, torch's OpenMP runtime on Linux, lets a
  thread that finished its share of a parallel region spin (and call
  ``sched_yield``) before it sleeps.  With the reader, the writer and two
  torch threads on two cores, the spinning takes CPU time the other threads
  need.  ``PASSIVE`` makes them sleep at once.  libgomp reads it when it
  loads (``import torch``).
* ``THP_MEM_ALLOC_ENABLE=1``: torch's CPU allocator aligns buffers of 2 MB
  or more to 2 MB and asks the kernel for transparent huge pages on them
  (``madvise``).  A 224-band tile at scale 3 is ~40 MB per tensor; in 4 KB
  pages every such tensor costs ~10,000 page faults each time it is
  allocated (glibc maps buffers over 32 MB afresh every time).  Read at
  torch's first large allocation.  Only matters where the kernel's THP
  mode is ``madvise`` (``always`` gives huge pages anyway, ``never`` none).

Each configuration runs ``csakd fuse`` as a user does (``python -m
csakd_qgis.cli fuse``, int16 output) in a fresh process with the variables
set or removed; "libgomp default" imports torch before the engine (the
engine sets no wait policy, but a user's environment might).
Inputs: ``bench/headline.py``'s real-scene mosaic (EnMAP tiles, Sentinel-2
B2/B3/B4/B8, scale 3) with ``--lr-size`` LR px a side.  Methods: ``auto``
(the default classical method) and ``csakd`` (the bundled network, with the
backend ``auto`` picks on a CPU, onnxruntime, and with torch).  The
configurations alternate within each round, the order rotating; medians of
wall, user and system CPU seconds (``wait4``'s rusage) and peak RSS.

Usage: ``python bench/process_env.py [--lr-size 400] [--rounds 3] [--methods auto csakd csakd:torch]
[--folder DIR] [--no-doc]``.
"""

from __future__ import annotations

import argparse
import ast
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

from common import ROOT, add_rerun_options, machine, publish, run_measured
from headline import build_inputs

HEADING = "## torch's runtime settings against the engine's threads (issue 16)"
#: ``name: (OMP_WAIT_POLICY or None = libgomp's default, THP_MEM_ALLOC_ENABLE)``.
CONFIGS = {"libgomp default, 4 KB pages": (None, "0"), "PASSIVE, 4 KB pages": ("PASSIVE", "0"),
           "libgomp default, huge pages": (None, "1"), "PASSIVE, huge pages": ("PASSIVE", "1")}
#: The configuration the engine sets up by itself (:mod:`csakd_qgis.runtime`).
ENGINE_DEFAULT = "libgomp default, huge pages"
CHILD = ("import sys, runpy\n"
         "if sys.argv[1] == 'torch-first':\n"
         "    import torch  # libgomp loads with OMP_WAIT_POLICY unset, before the engine could set it\n"
         "sys.argv = ['csakd'] + sys.argv[2:]\n"
         "runpy.run_module('csakd_qgis.cli', run_name='__main__')\n")


def run(config: str, method: str, lr: Path, msi: Path, out: Path) -> Dict[str, float]:
    """One ``csakd fuse`` in a child process (:func:`common.run_measured`)."""
    policy, thp = CONFIGS[config]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env["THP_MEM_ALLOC_ENABLE"] = thp
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    env["PYTHONPATH"] = str(ROOT)
    name, _, backend = method.partition(":")
    got = run_measured([sys.executable, "-c", CHILD, "torch-first" if policy is None else "engine-first", "fuse",
                        "--method", name, *(["--backend", backend] if backend else []), "--dtype", "int16",
                        "--overwrite", str(lr), str(msi), str(out)], env)
    return {k: got[k] for k in ("wall", "user", "sys", "rss")}


Results = Dict[str, Dict[str, List[Dict[str, float]]]]


def measure(args: argparse.Namespace) -> Results:
    """Every method in every configuration, ``args.rounds`` times, the configurations' order rotating."""
    results: Results = {m: {c: [] for c in CONFIGS} for m in args.methods}
    names = list(CONFIGS)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        lr, msi = folder / "lr_hsi.tif", folder / "hr_msi.tif"
        if not (lr.exists() and msi.exists()):
            lr, msi = build_inputs(folder, args.lr_size)
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for method in args.methods:
                for config in order:
                    got = run(config, method, lr, msi, folder / "out.tif")
                    results[method][config].append(got)
                    print(f"round {r}, {method}, {config}: {got}", flush=True)
    return results


def from_log(path: Path, methods: List[str]) -> Results:
    """The results :func:`measure` printed (0.11's first run marked a configuration "(engine default)")."""
    results: Results = {m: {c: [] for c in CONFIGS} for m in methods}
    for line in path.read_text().splitlines():
        if line.startswith("round "):
            head, _, value = line.partition(": ")
            _, method, config = (part.strip() for part in head.split(",", 2))
            results[method][config.replace(" (engine default)", "")].append(ast.literal_eval(value))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr-size", type=int, default=400, help="LR-HSI pixels a side (default 400)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=["auto", "csakd", "csakd:torch"],
                        help="fuse --method values, NAME:BACKEND for a --backend (default: auto csakd csakd:torch)")
    add_rerun_options(parser)
    args = parser.parse_args()
    header = machine()
    thp_mode = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    thp = thp_mode.read_text().strip() if thp_mode.exists() else "unknown"
    if args.from_log:
        results = from_log(args.from_log, args.methods)
        header += (f" (the results from {args.from_log.name}, the log of an earlier run of the same script; the "
                   "load averages are those of writing the table)")
    else:
        results = measure(args)
    end_load = os.getloadavg()[0]
    lines = [f"`bench/process_env.py --lr-size {args.lr_size} --rounds {args.rounds} --methods "
             f"{' '.join(args.methods)}` on {header}; load average {end_load:.1f} at the end. Kernel THP mode: "
             f"`{thp}`.", "",
             f"`csakd fuse --method M --dtype int16` of the headline's real-scene mosaic, {args.lr_size}² x 224 "
             f"LR px -> {3 * args.lr_size}² output px, in a fresh process per run (protocol in the script). "
             f"Medians of {args.rounds} rounds (the spread of the wall times in brackets); `ratio` = the median "
             f"wall time against the first row's; **bold**: what the engine sets up by itself.", "",
             "| method | OMP_WAIT_POLICY, pages | wall (s) | ratio | user CPU (s) | system CPU (s) | peak RSS (MB) |",
             "|---|---|---|---|---|---|---|"]
    for method in args.methods:
        first: Optional[float] = None
        for config in CONFIGS:
            rows = results[method][config]
            med = {k: statistics.median(x[k] for x in rows) for k in rows[0]}
            first = first or med["wall"]
            spread = f"{min(x['wall'] for x in rows):.1f}-{max(x['wall'] for x in rows):.1f}"
            label = f"**{config}**" if config == ENGINE_DEFAULT else config
            lines.append(f"| {method} | {label} | {med['wall']:.1f} ({spread}) | {med['wall'] / first:.2f} | "
                         f"{med['user']:.1f} | {med['sys']:.1f} | {med['rss']:.0f} |")
    publish(HEADING, "\n".join(lines), not args.no_doc)


if __name__ == "__main__":
    main()
