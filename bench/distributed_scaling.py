"""Throughput of the distributed mode on a LocalCluster of 1 and 2 workers against the single process.

For each method (bicubic on a larger synthetic scene, the bundled student on
a smaller one), the same pair is fused by :func:`csakd_qgis.fusion.engine.fuse`
(one process, 1 torch thread) and by
:func:`csakd_qgis.distributed.fuse_distributed` on a ``LocalCluster`` of 1
and 2 worker processes (1 thread each), into a GeoTIFF (regions assembled
and copied on the client) and, with 2 workers, into a VRT (no copy).  Rows
give wall-clock seconds, output pixels per second, the tiles of the plan
and the tile predictions the regions made (border overhead), and the
per-stage worker-seconds.  Fixed costs measured alongside: cluster start,
the first task on a fresh worker (imports, model load), the round trip of
an empty task through the scheduler, and the bytes of one task's job
description (what crosses the network per region: no pixels).

Writes the section "Measured here" of ``docs/distributed.md``, whose
scaling model is built on these numbers.

Usage: ``python bench/distributed_scaling.py [--quick]`` (``--quick``:
smaller scenes, about 2 minutes).
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import tempfile
import time
from pathlib import Path

from affine import Affine
from common import BUNDLED, LR_TRANSFORM, ROOT, machine, replace_section, write_synthetic

SCALE, MSI_BANDS = 3, 4
DOC = ROOT / "docs" / "distributed.md"
HEADING = "## Measured here"


def _noop() -> int:
    return 0


def fixed_costs(client) -> dict:
    """Scheduler round trip of an empty task (median of 20), in seconds."""
    trips = []
    for _ in range(20):
        start = time.perf_counter()
        client.submit(_noop, pure=False).result()
        trips.append(time.perf_counter() - start)
    return {"round_trip_s": statistics.median(trips)}


def make_pair(folder: Path, bands: int, lr_size: int) -> tuple:
    """A synthetic LR-HSI (``bands`` x ``lr_size``\u00b2) and a 4-band HR-MSI three times finer."""
    lr, msi = folder / f"lr_{bands}_{lr_size}.tif", folder / f"msi_{bands}_{lr_size}.tif"
    write_synthetic(lr, bands, lr_size, LR_TRANSFORM, seed=1)
    write_synthetic(msi, MSI_BANDS, lr_size * SCALE, LR_TRANSFORM * Affine.scale(1 / SCALE), seed=2)
    return str(lr), str(msi)


def run_case(name: str, pair: tuple, options: dict, region_size: int, folder: Path, rows: list) -> dict:
    """Fuse ``pair`` in one process, then on 1 and 2 local workers; append one table row per run.

    Returns the fixed costs measured on the 2-worker cluster (:func:`fixed_costs`).
    """
    from csakd_qgis.distributed import ClusterOptions, fuse_distributed, open_client
    from csakd_qgis.fusion.engine import fuse

    start = time.perf_counter()
    single = fuse(*pair, str(folder / f"{name}_single.tif"), threads=1, overwrite=True, **options)
    base = time.perf_counter() - start
    pixels = single.grid.width * single.grid.height
    t = single.timings
    rows.append((name, "single process", 1, 1, single.tiles_total, single.tiles_total + single.tiles_recomputed,
                 base, pixels / base, 1.0, f"{t['read']:.1f} / {t['infer']:.1f} / {t['blend'] + t['write']:.1f}",
                 "-"))
    cluster_options = ClusterOptions.build(threads=1, overwrite=True, region_size=region_size, **options)
    costs: dict = {}
    for workers in (1, 2):
        start = time.perf_counter()
        with open_client(workers=workers) as client:
            started = time.perf_counter() - start
            outputs = [f"{name}_{workers}w.tif"] + ([f"{name}_{workers}w.vrt"] if workers == 2 else [])
            for output in outputs:
                start = time.perf_counter()
                report = fuse_distributed(*pair, str(folder / output), client=client, options=cluster_options)
                seconds = time.perf_counter() - start
                f = report.fuse
                t = f.timings
                rows.append((name, f"{workers} worker(s), {output.rsplit('.', 1)[1]} (cluster start "
                             f"{started:.1f} s)", workers, report.regions, f.tiles_total,
                             f.tiles_total + f.tiles_recomputed, seconds, pixels / seconds, base / seconds,
                             f"{t['read']:.1f} / {t['infer']:.1f} / {t['blend'] + t['write']:.1f}",
                             f"{report.assemble_seconds:.1f}"))
            costs = fixed_costs(client)
    return costs


def job_bytes(pair: tuple, options: dict, region_size: int, folder: Path) -> int:
    """Pickled size of one region task's job description (sent with every task)."""
    from csakd_qgis.distributed.runner import ClusterOptions, SceneRun
    from csakd_qgis.distributed.worker import RegionJob

    scene = SceneRun(*pair, str(folder / "probe.tif"), ClusterOptions.build(region_size=region_size, overwrite=True,
                                                                      **options))
    scene.prepare()
    job = RegionJob(scene.plan, scene.spec, scene.tiles, scene.folder, 4, 1024, 256, "zstd", "event", "topic")
    return len(pickle.dumps((job, 0, scene.regions[0])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller scenes (about 2 minutes)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    header = machine()
    rows: list = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        folder = Path(tmp)
        bic_lr = 384 if args.quick else 768
        bicubic = make_pair(folder, 64, bic_lr)
        bic_opts = dict(method="bicubic", device="cpu", shift_correction=False, dtype="int16", output_scale=1e-4)
        costs = run_case(f"bicubic {bic_lr * SCALE}\u00b2 x 64", bicubic, bic_opts, 768, folder, rows)
        payload = job_bytes(bicubic, bic_opts, 768, folder)
        if BUNDLED.exists():
            net_lr = 64 if args.quick else 128
            student = make_pair(folder, 224, net_lr)
            net_opts = dict(model=str(BUNDLED), method="student", device="cpu", shift_correction=False,
                            dtype="int16", output_scale=1e-4, tile=32, overlap=8, batch_size=1, output_block=64)
            run_case(f"student {net_lr * SCALE}\u00b2 x 224", student, net_opts, 192, folder, rows)
    table = ["| scene | run | workers | regions | tiles (plan) | tile predictions | wall s | output px/s | "
             "speed-up | read / infer / blend+write (worker-s) | assemble s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]} | {r[6]:.1f} | {r[7]:,.0f} | "
                     f"{r[8]:.2f} | {r[9]} | {r[10]} |")
    body = "\n".join([
        f"Machine: 2-core CPU VM; {header}.",
        "",
        "`python bench/distributed_scaling.py" + (" --quick" if args.quick else "") + "`. LocalCluster with "
        "processes (`open_client(workers=N)`: Dask's `MALLOC_TRIM_THRESHOLD_` unset), 1 thread per worker, "
        "1 torch thread everywhere; int16 output, ZSTD. Bicubic: tile 64, "
        "overlap 8, regions of 768 px (256-px blocks). Student (bundled enmap_s2_x3, halo 4): tile 32, "
        "overlap 8, batch 1, regions of 192 px (64-px blocks), so the small scene still has several regions. "
        "Tile predictions = the plan's tiles + those predicted again at column blocks and region borders. "
        "`tif` = regions copied into one GeoTIFF on the client (in `assemble s`), `vrt` = a VRT over the "
        "region files. Worker-seconds are summed over regions. Both workers share the machine's 2 cores with "
        "the client and with other jobs, so 2 workers cannot reach 2x here.",
        "",
        *table,
        "",
        f"Fixed costs: scheduler round trip of an empty task {1000 * costs['round_trip_s']:.1f} ms (median of "
        f"20, 2 local workers); one region task's job description {payload / 1024:.1f} KiB pickled (plan, "
        "radiometry, tile plan, method spec: no pixels).",
    ])
    print(body)
    replace_section(HEADING, body, DOC)


if __name__ == "__main__":
    main()
