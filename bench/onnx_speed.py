"""Raw forward throughput of the student with torch and with onnxruntime, on the engine's tile.

The engine's default tile is 64 LR pixels with a halo of 4 on each side, so
the network sees ``72 x 72`` LR and ``216 x 216`` HR pixels at scale 3 (the
bundled model; a randomly initialised ``project_student`` with 224 bands
when it is absent).  Each case times ``predict`` on in-memory float32 tiles
(inputs uniform in [0, 1), i.e. normalised reflectance) after warm-up runs
and reports the median over ``--runs`` runs in output (HR) pixels per
second, and ``max |onnxruntime - torch|`` on the timed tiles; both backends
run in this one process, alternating call by call, with the same thread
count (``torch.set_num_threads`` and onnxruntime's intra-op threads).  The
onnxruntime model is the in-memory export of
:func:`csakd_qgis.models.onnx_export.onnx_bytes`, which is what ``csakd
export-onnx`` writes.

Usage: ``python bench/onnx_speed.py [--runs 5] [--threads 1 2] [--batches 4 1] [--random] [--write]``
(``--random``: a random ``project_student`` with the preset's fusion instead of the bundled model;
``--write`` puts the table under "## ONNX Runtime backend" in ``docs/benchmarks.md``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable, Dict, List

import numpy as np
import onnxruntime
import torch
from common import BUNDLED, machine, replace_section

from csakd_qgis.fusion.methods import NetworkMethod
from csakd_qgis.models import build_model
from csakd_qgis.models.card import ModelCard, MsiInfo, SpectralBands
from csakd_qgis.models.checkpoint import load_checkpoint, read_card
from csakd_qgis.models.config import preset
from csakd_qgis.models.onnx_export import onnx_bytes
from csakd_qgis.models.onnx_runtime import OnnxNetworkMethod

LR_TILE = 64 + 2 * 4
HEADING = "## ONNX Runtime backend"


def network(random: bool):
    """``(model, card, description)``: the bundled student, else (or if ``random``) a random ``project_student``.

    The random one has 224 bands, 4 MSI bands, scale 3 and the preset's current fusion.
    """
    if BUNDLED.exists() and not random:
        model, card = load_checkpoint(BUNDLED)
        return model, card, f"bundled {read_card(BUNDLED).name}"
    torch.manual_seed(0)
    cfg = preset("project_student", 224, 4, 3)
    card = ModelCard(name="random", role="student", config=cfg.to_dict(), scale=3,
                     lr_bands=SpectralBands((None,) * 224), msi=MsiInfo(None, ("B2", "B3", "B4", "B8")))
    return build_model(cfg).eval(), card, f"random project_student ({cfg.fusion})"


def median_seconds(runs: Dict[str, Callable[[], object]], repeats: int, warmup: int) -> Dict[str, float]:
    """Median wall-clock seconds of each ``runs[name]()`` over ``repeats`` calls after ``warmup`` untimed ones.

    The calls alternate between the entries, so that load from other
    processes on a shared machine falls on all of them alike.
    """
    for _ in range(warmup):
        for run in runs.values():
            run()
    times: Dict[str, List[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per case (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs before timing")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batches", type=int, nargs="+", default=[4, 1])
    parser.add_argument("--random", action="store_true",
                        help="time a random project_student (the preset's fusion) instead of the bundled model")
    parser.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args()

    started = machine()
    model, card, what = network(args.random)
    s = card.scale
    data = onnx_bytes(model, card)
    rng = np.random.default_rng(0)
    rows: List[str] = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        backends = {"torch": NetworkMethod(model, scale=s),
                    "onnxruntime": OnnxNetworkMethod(data, threads=threads)}
        for batch in args.batches:
            lr = rng.random((batch, card.lr_bands.count, LR_TILE, LR_TILE), dtype=np.float32)
            msi = rng.random((batch, card.msi.count, LR_TILE * s, LR_TILE * s), dtype=np.float32)
            pixels = batch * (LR_TILE * s) ** 2
            seconds = median_seconds({name: (lambda m=method, a=lr, b=msi: m.predict(a, b))
                                      for name, method in backends.items()}, args.runs, args.warmup)
            diff = float(np.abs(backends["onnxruntime"].predict(lr, msi) - backends["torch"].predict(lr, msi)).max())
            for name, value in seconds.items():
                ratio, parity = ("", "") if name == "torch" else (f"{seconds['torch'] / value:.2f}", f"{diff:.1e}")
                rows.append(f"| {name} | {threads} | {batch} | {value:.3f} | {pixels / value / 1e3:.1f} "
                            f"| {ratio} | {parity} |")
    table = "\n".join([
        f"{what}, LR tile {LR_TILE} x {LR_TILE} -> {LR_TILE * s} x {LR_TILE * s} output pixels, median of "
        f"{args.runs} runs after {args.warmup} warm-up; onnxruntime {onnxruntime.__version__} with all "
        "graph optimisations.",
        f"Machine: {started}; load average {os.getloadavg()[0]:.1f} at the end.",
        "",
        "| backend | threads | batch | s / batch | k output px / s | speed vs torch | max abs diff vs torch |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ])
    print(table)
    if args.write:
        replace_section(HEADING, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
