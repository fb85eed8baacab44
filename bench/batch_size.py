"""Tiles per network call on the CPU: time per tile and the memory a call holds, per backend (issue 16).

Chooses :data:`csakd_qgis.options.CPU_BATCH_SIZE`.  Each case runs in a
fresh process: the network (the bundled model, or a random
``project_student`` with 224 bands when it is absent) is loaded, the
resident set size is read (``VmRSS``), the engine's default tile (64 LR
pixels plus a halo of 4 each side: 72 x 72 LR, 216 x 216 output pixels at
scale 3; inputs uniform in [0, 1)) is run twice to warm up and then
``--runs`` times, and the median time per tile is reported with the
process's peak RSS (``VmHWM``) above the loaded model: the working memory
of one call, which a ``fuse`` run holds at its peak on top of its reads,
writes and block cache.  torch runs the ``NetworkMethod`` the engine uses;
onnxruntime the in-memory export ``fuse``'s ``backend="auto"`` uses on a
CPU (of the bundled model only).

Usage: ``python bench/batch_size.py [--runs 5] [--threads 1] [--batches 1 2 4] [--write]``
(``--write`` puts the table under "## Tiles per network call on the CPU (issue 16)" in
``docs/benchmarks.md``).
"""

from __future__ import annotations

import argparse
from typing import Dict, List

from common import machine, network_spec, publish, run_child

HEADING = "## Tiles per network call on the CPU (issue 16)"

#: Child process of one case: load, warm up, time; print JSON.
CHILD = r"""
import json, statistics, sys, time
import numpy as np, torch
backend, batch, runs, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
from common import BUNDLED, ROOT, load_network, network_spec, peak_rss_mb
from csakd_qgis.fusion.methods import make_method
from csakd_qgis.io.read import read_info
_, bands, scale = network_spec(224, 3)
if backend == "onnxruntime":  # the bundled model for the bundled sample's bands
    method = make_method("csakd", str(BUNDLED), backend="onnxruntime", scale=scale,
                         lr_bands=read_info(str(ROOT / "resources" / "sample" / "enmap_lr_hsi.tif")).bands, msi_bands=4)
else:
    method = load_network(bands, scale)
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
rng = np.random.default_rng(0)
lr = rng.random((batch, bands, 72, 72), dtype=np.float32)
msi = rng.random((batch, 4, 72 * scale, 72 * scale), dtype=np.float32)
loaded = rss_mb()
for _ in range(2):
    method.predict(lr, msi)
times = []
for _ in range(runs):
    start = time.perf_counter()
    method.predict(lr, msi)
    times.append((time.perf_counter() - start) / batch)
print(json.dumps({"s_per_tile": statistics.median(times), "call_mb": peak_rss_mb() - loaded,
                  "px_per_tile": (64 * scale) ** 2}))
"""


def run_case(backend: str, batch: int, runs: int, threads: int) -> Dict[str, float]:
    """One case in a fresh Python; its JSON line as a dict."""
    return run_child(CHILD, [backend, batch, runs, threads])


def main() -> int:
    """Run every backend and batch, print the table, and with --write store it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    header = machine()
    name, bands, scale = network_spec(224, 3)
    rows: List[str] = []
    for backend in ("torch", "onnxruntime"):
        for batch in args.batches:
            r = run_case(backend, batch, args.runs, args.threads)
            speed = r["px_per_tile"] / r["s_per_tile"] / 1e3
            rows.append(f"| {backend} | {batch} | {r['s_per_tile']:.3f} | {speed:.1f} | {r['call_mb']:.0f} |")
            print(rows[-1], flush=True)
    body = "\n".join([
        f"`bench/batch_size.py --runs {args.runs} --threads {args.threads}` on {header}.",
        "",
        f"{name} ({bands} bands, scale {scale}), the engine's default tile: 72 x 72 LR -> 216 x 216 output pixels "
        f"(192 x 192 core). Each case in a fresh process; median of {args.runs} calls after 2 warm-up calls. "
        "`memory of a call` = peak RSS above the loaded model: what a `fuse` run holds for the network at its peak.",
        "",
        "| backend | tiles per call | s / tile | k core px / s | memory of a call (MB) |",
        "|---|---|---|---|---|",
        *rows,
    ])
    publish(HEADING, body, args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
