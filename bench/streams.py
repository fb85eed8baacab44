"""Predict calls at once on the CPU: tiles per second and memory, one call of every thread against several (issue 16).

Chooses :data:`csakd_qgis.devices.CPU_STREAMS`.  A network on two cores can
run one call at a time with two intra-op threads, or two calls at once with
one thread each.  Each case runs in a fresh process: the network (the bundled
model, or a random ``project_student`` with 224 bands when it is absent) is
loaded; ``streams`` Python threads then call ``method.predict`` on the
engine's default tile (64 LR px plus a halo of 4 each side: 72 x 72 LR,
216 x 216 output px at scale 3; inputs uniform in [0, 1)), batch 1, each
under :func:`csakd_qgis.devices.shared_threads` (``threads // streams``
intra-op threads per call, as the engine runs them), after one warm-up call
per thread, for at least ``--seconds`` and 5 calls each.  Reported: core
output pixels per second over all calls, and the process's peak RSS above
the loaded model (``VmHWM``; what the calls in flight hold).

Usage: ``python bench/streams.py [--threads 2] [--streams 1 2] [--seconds 20] [--rounds 2] [--write]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
from typing import Dict, List

from common import machine, network_spec, publish, run_child

HEADING = "## Predict calls at once on the CPU (issue 16)"

#: Child process of one case: load, warm up, call from ``streams`` threads for ``seconds``; print JSON.
CHILD = r"""
import json, sys
import numpy as np, torch
backend, threads, streams, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
torch.set_num_threads(threads)
from common import BUNDLED, ROOT, calls_at_once, load_network, network_spec, peak_rss_mb
from csakd_qgis.fusion.methods import make_method
from csakd_qgis.io.read import read_info
_, bands, scale = network_spec(224, 3)
if backend == "onnxruntime":  # the bundled model for the bundled sample's bands, as fuse's auto runs it
    method = make_method("csakd", str(BUNDLED), backend="onnxruntime", scale=scale,
                         lr_bands=read_info(str(ROOT / "resources" / "sample" / "enmap_lr_hsi.tif")).bands, msi_bands=4)
else:
    method = load_network(bands, scale)
rng = np.random.default_rng(0)
lr = rng.random((1, bands, 72, 72), dtype=np.float32)
msi = rng.random((1, 4, 72 * scale, 72 * scale), dtype=np.float32)
loaded = peak_rss_mb()
calls, elapsed = calls_at_once(lambda: method.predict(lr, msi), streams, seconds)
print(json.dumps({"px_s": calls * (64 * scale) ** 2 / elapsed, "calls": calls, "share": max(1, threads // streams),
                  "held_mb": peak_rss_mb() - loaded}))
"""


def run_case(backend: str, threads: int, streams: int, seconds: float) -> Dict[str, float]:
    """One case in a fresh Python; its JSON line as a dict."""
    return run_child(CHILD, [backend, threads, streams, seconds])


def main() -> int:
    """Run every backend and number of calls in alternating rounds, print the table, and with --write store it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    header = machine()
    name, bands, scale = network_spec(224, 3)
    runs: Dict[tuple, List[Dict[str, float]]] = {}
    for round_ in range(args.rounds):
        for backend in ("torch", "onnxruntime"):
            order = args.streams if round_ % 2 == 0 else args.streams[::-1]
            for streams in order:
                r = run_case(backend, args.threads, streams, args.seconds)
                runs.setdefault((backend, streams), []).append(r)
                print(f"round {round_}, {backend}, {streams} at once: {r}", flush=True)
    rows = []
    for backend in ("torch", "onnxruntime"):
        one = statistics.median(r["px_s"] for r in runs[(backend, args.streams[0])])
        for streams in args.streams:
            got = runs[(backend, streams)]
            rate = statistics.median(r["px_s"] for r in got)
            rows.append(f"| {backend} | {streams} | {int(got[0]['share'])} | {rate / 1e3:.1f} "
                        f"({min(r['px_s'] for r in got) / 1e3:.1f}-{max(r['px_s'] for r in got) / 1e3:.1f}) | "
                        f"{rate / one:.2f} | {statistics.median(r['held_mb'] for r in got):.0f} |")
    body = "\n".join([
        f"`bench/streams.py --threads {args.threads} --seconds {args.seconds:g} --rounds {args.rounds}` on {header}.",
        "",
        f"{name} ({bands} bands, scale {scale}), the engine's default tile (72 x 72 LR -> 216 x 216 output px, "
        f"192 x 192 core), batch 1; each case in a fresh process, {args.rounds} rounds with the order alternating, "
        f"medians (lowest-highest). `calls at once` = threads calling `predict`, each with `threads per call` "
        f"intra-op threads (`devices.shared_threads`); `vs first` = against the first row of the backend; `memory` "
        "= peak RSS above the loaded model while the calls ran.",
        "",
        "| backend | calls at once | threads per call | k core px / s | vs first | memory (MB) |",
        "|---|---|---|---|---|---|",
        *rows,
    ])
    publish(HEADING, body, args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
