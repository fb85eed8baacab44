"""Peak memory, throughput, write speed and tile halo of ``csakd_qgis.fusion.engine.fuse``.

Three parts, each written to its own subsection of "Engine memory and
throughput" in ``docs/benchmarks.md`` (other sections are kept):

* ``memory`` (default): synthetic tiled GeoTIFF pairs (LR-HSI with many
  bands, 4-band HR-MSI, scale 3) fused by bicubic and by the default student
  network, each case in a fresh subprocess whose peak resident set size
  (``VmHWM``) is read, so cases do not share memory.  Also per-stage
  seconds and the ratio of end-to-end throughput to the method's raw
  throughput on in-memory tiles of the same size and batch, measured in the
  same process right after the run;
* ``write``: the write stage alone (blender and GeoTIFF writer, no reading
  or compute) at 1008 x 1008 output pixels, comparing the engine's
  block-aligned strips with writing every blend cell as its own window;
* ``halo``: tiled against whole-image PSNR of the network for several halos.

The network is the bundled model ``resources/models/enmap_s2_x3.safetensors``
when it exists, else a randomly initialised ``project_student``.

Usage: ``python bench/engine_memory.py [--quick] [--part memory|write|halo|all]`` (``--quick``: the
memory part at small sizes, under 3 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
from affine import Affine
from common import (
    BENCHMARKS,
    LR_TRANSFORM,
    load_network,
    machine,
    network_spec,
    replace_section,
    run_child,
    write_synthetic,
)

from csakd_qgis.options import CPU_BATCH_SIZE

SCALE, MSI_BANDS, TILE, OVERLAP = 3, 4, 64, 8
BATCH = CPU_BATCH_SIZE
HEADING = "## Engine memory and throughput"
PARTS = {"memory": "### Peak memory and throughput", "write": "### Write stage", "halo": "### Tile halo"}

#: Child process of one ``memory`` case: fuse, then time the method alone on in-memory tiles.  ``kw["method"]``:
#: ``bicubic``, ``network`` (with ``backend``) or a name the engine resolves and fits (``auto``, a classical
#: method), whose fitted form is then prepared again to time the plan and fit (``prepare_s``).
FUSE_CHILD = r"""
import json, sys, time, numpy as np, torch
lr_path, msi_path, out, kw = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
torch.set_num_threads(kw.get("threads", 1))
from common import BUNDLED, calls_at_once, load_network, peak_rss_mb
from csakd_qgis.fusion.engine import fuse
from csakd_qgis.fusion.methods import BicubicMethod, make_method
from csakd_qgis.io.read import read_info
fitted = kw["method"] not in ("bicubic", "network")  # a name the engine resolves and fits on the scene
if kw["method"] == "bicubic":
    method = BicubicMethod(kw["scale"])
elif fitted:
    method = kw["method"]
elif kw.get("backend", "torch") == "onnxruntime":  # the bundled model exported in memory, as fuse's auto does
    method = make_method("csakd", str(BUNDLED), backend="onnxruntime", scale=kw["scale"],
                         lr_bands=read_info(lr_path).bands, msi_bands=4)
else:
    method = load_network(kw["bands"], kw["scale"])
rss_start = peak_rss_mb()
start = time.perf_counter()
report = fuse(lr_path, msi_path, out, method=method, device="cpu", overwrite=True, tile=kw["tile"],
              overlap=kw["overlap"], batch_size=kw["batch"], dtype="int16", output_scale=1e-4)
seconds = time.perf_counter() - start
rss = peak_rss_mb()
prepare_s = None
if fitted:  # plan and fit again, timed alone, for the fitted method the raw rate is measured with
    from csakd_qgis.fusion.plan import prepare
    from csakd_qgis.io.read import BLOCK_CACHE_MB, gdal_block_cache
    from csakd_qgis.options import FuseOptions
    start = time.perf_counter()
    with gdal_block_cache(BLOCK_CACHE_MB):
        _, method = prepare(lr_path, msi_path, method=kw["method"], options=FuseOptions(device="cpu"))
    prepare_s = time.perf_counter() - start
read = report.tile_size + 2 * (kw["overlap"] + report.halo)
s, rng = kw["scale"], np.random.default_rng(0)
lr = rng.random((kw["batch"], kw["bands"], read, read), dtype=np.float32)
msi = rng.random((kw["batch"], 4, read * s, read * s), dtype=np.float32)
def rate(streams):  # core output px/s of the method alone, `streams` calls at once (common.calls_at_once)
    calls, elapsed = calls_at_once(lambda: method.predict(lr, msi), streams, 5.0)
    return calls * kw["batch"] * (report.tile_size * s) ** 2 / elapsed
raw = rate(report.streams)  # as the engine ran it; then one call at a time with every thread, unless that was it
raw_one = raw if report.streams == 1 else rate(1)
print(json.dumps({"seconds": seconds, "rss_mb": rss, "rss_start_mb": rss_start, "timings": report.timings,
                  "raw_px_s": raw, "raw_one_px_s": raw_one, "streams": report.streams, "prepare_s": prepare_s,
                  "method": report.method, "halo": report.halo,
                  "tiles": report.tiles_total, "recomputed": report.tiles_recomputed, "carried": report.tiles_carried}))
"""

#: Child process of one ``write`` case.
WRITE_CHILD = r"""
import json, sys, time, numpy as np, rasterio
from contextlib import nullcontext
from common import peak_rss_mb
from affine import Affine
from rasterio.windows import Window
from csakd_qgis.fusion.blend import Blender, ColumnBlocks, schedule
from csakd_qgis.io.write import RasterWriter
from csakd_qgis.fusion.tiling import plan_tiles
size, bands, mode, cache_bytes, interleave, out = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3],
                                                  int(sys.argv[4]), sys.argv[5], sys.argv[6])
plan = plan_tiles(size // 3, size // 3, tile=64, overlap=8, halo=2, scale=3)
rng = np.random.default_rng(0)
pattern = (0.3 + 0.01 * rng.standard_normal((bands, 240, 240))).astype(np.float32)


def values(window):  # the same output wherever it is cut: the pattern repeated over the raster
    rows = np.arange(window.row_off, window.row_off + window.height) % 240
    cols = np.arange(window.col_off, window.col_off + window.width) % 240
    return pattern[:, rows][:, :, cols]


# rasterio.Env's GDAL_CACHEMAX is in bytes; 0 keeps GDAL's default
env = rasterio.Env(GDAL_CACHEMAX=cache_bytes) if cache_bytes else nullcontext()
start = time.perf_counter()
with env, RasterWriter(out, width=size, height=size, count=bands, crs="EPSG:32633",
                       transform=Affine(10, 0, 0, 0, -10, 0), dtype="int16", scale=1e-4, overwrite=True,
                       interleave=interleave) as writer:
    if mode == "strips":
        blocks = ColumnBlocks.build(plan)
        blender = Blender(plan, writer, blocks)
        for tile, block in schedule(plan, blocks):
            blender.add(tile, block, values(tile.out), bands)
    else:
        for ys in plan.rows.segments:
            for xs in plan.cols.segments:
                window = Window(xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start)
                writer.write(values(window), window)
print(json.dumps({"seconds": time.perf_counter() - start, "rss_mb": peak_rss_mb()}))
"""

def memory_part(folder: Path, quick: bool) -> str:
    name, net_bands, net_scale = network_spec()
    cases = [(1008, "bicubic", 128), (2016, "bicubic", 128), (384, "network", net_bands)]
    if not quick:
        cases = [(1008, "bicubic", 128), (2016, "bicubic", 128), (4032, "bicubic", 128), (8064, "bicubic", 128),
                 (384, "network", net_bands), (576, "network", net_bands)]
    rows = []
    for size, method, bands in cases:
        scale = net_scale if method == "network" else SCALE
        lr_size = size // scale
        lr, msi = folder / f"lr_{lr_size}_{bands}.tif", folder / f"msi_{size}.tif"
        if not lr.exists():
            write_synthetic(lr, bands, lr_size, LR_TRANSFORM, 1)
        if not msi.exists():
            write_synthetic(msi, MSI_BANDS, size, LR_TRANSFORM * Affine.scale(1 / scale), 2)
        kw = {"method": method, "bands": bands, "scale": scale, "tile": TILE, "overlap": OVERLAP, "batch": BATCH}
        r = run_child(FUSE_CHILD, [lr, msi, folder / "out.tif", json.dumps(kw)])
        os.remove(folder / "out.tif")
        t = r["timings"]
        e2e = size * size / r["seconds"]
        rows.append(f"| {size} x {size} | {bands} | {method} (halo {r['halo']}) | {r['rss_start_mb']:.0f} | "
                    f"{r['rss_mb']:.0f} | {r['seconds']:.1f} | {e2e / 1e6:.3f} | {r['raw_px_s'] / 1e6:.3f} | "
                    f"{e2e / r['raw_px_s']:.2f} | {r['tiles']} + {r['recomputed']} ({r['carried']}) | "
                    f"{t['read']:.1f} / {t['infer']:.1f} / {t['blend']:.1f} / {t['write']:.1f} |")
        print(rows[-1], flush=True)
    return "\n".join([
        f"Tile {TILE} LR px, overlap {OVERLAP}, batch {BATCH}, int16 output (ZSTD level 1, 256-px blocks, "
        "column blocks of 1024 px), synthetic tiled GeoTIFF inputs, 4 MSI bands; bicubic at scale 3; "
        f"network = {name} at scale {net_scale}, default halo. 1 torch thread. `imports` = peak RSS before "
        "`fuse` (Python, numpy, torch, GDAL); `peak` = the process's peak RSS (VmHWM). Mpx/s = output pixels per "
        "second; `raw` = the method alone on in-memory tiles of the same read size and batch, counted in "
        "core output pixels; ratio = end-to-end / raw. Tiles = plan + predicted again at column-block edges. "
        "Stages overlap (read and write run in their own threads). Before `fuse` ran its shift estimate and "
        "radiometry sample under the small GDAL block cache, the bicubic rows peaked at 1147 / 1406 / 1800 MB: "
        "GDAL's default cache (5 % of the RAM) kept every input block the 4 x 4 sample windows touched (all 128 "
        "bands), more blocks on a larger raster, and glibc kept the freed heap after the datasets closed.",
        "",
        "| output (px) | bands | method | imports RSS (MB) | peak RSS (MB) | time (s) | Mpx/s | raw Mpx/s | ratio "
        "| tiles + recomputed (carried) | read / infer / blend / write (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    ])


def write_part(folder: Path, quick: bool) -> str:
    variants = [("cells", 64 << 20, "band", "each blend cell its own window, 64 MB cache"),
                ("cells", 0, "band", "each blend cell its own window, GDAL default cache (5 % of RAM)"),
                ("strips", 64 << 20, "band", "engine: block-aligned strips, 64 MB cache"),
                ("strips", 64 << 20, "pixel", "engine strips, pixel-interleaved, 64 MB cache")]
    if not quick:
        variants.insert(0, ("cells", 190, "band", "each blend cell its own window, 190-byte cache (the bug)"))
    rows = []
    for bands in (128, 224):
        for mode, cache, interleave, text in variants:
            if cache == 190 and bands == 224:
                continue
            r = run_child(WRITE_CHILD, [1008, bands, mode, cache, interleave, folder / "w.tif"])
            size_mb = (folder / "w.tif").stat().st_size / 2**20
            os.remove(folder / "w.tif")
            rows.append(f"| {bands} | {text} | {r['seconds']:.1f} | {r['rss_mb']:.0f} | {size_mb:.0f} |")
            print(rows[-1], flush=True)
    return "\n".join([
        "Blender and GeoTIFF writer only: 1008 x 1008 int16 output, tile 64 / overlap 8 at scale 3, the same "
        "output (0.3 + 1 % noise) in every variant, ZSTD level 1, 256-px blocks. The previous engine wrote "
        "each blend cell as its own window; `fuse` also passed the cache size in MB to "
        "`rasterio.Env(GDAL_CACHEMAX=...)`, which takes bytes, leaving GDAL a cache of a few hundred bytes: "
        "every partly written block was compressed, read "
        "back and compressed again at each later write into it.",
        "",
        "| bands | writer | seconds | peak RSS (MB) | file (MB) |",
        "|---|---|---|---|---|",
        *rows,
    ])


def halo_part(quick: bool) -> str:
    import torch

    from csakd_qgis.fusion.pipeline import run_pipeline
    from csakd_qgis.fusion.radiometry import Radiometry
    from csakd_qgis.fusion.tiling import plan_tiles
    from csakd_qgis.models.receptive_field import network_halo

    torch.set_num_threads(os.cpu_count() or 1)
    name, bands, scale = network_spec()
    method = load_network(bands, scale)
    exact = network_halo(method.model.cfg)
    size = 96 if quick else 128
    big = size * scale
    yy, xx = np.mgrid[0:big, 0:big] / big
    rng = np.random.default_rng(0)
    base = np.stack([np.sin(17 * xx + 9 * yy), np.cos(13 * yy - 7 * xx), np.sin(29 * xx * yy), rng.random((big, big))])
    hr = (0.25 + 0.1 * np.einsum("bk,khw->bhw", rng.random((bands, 4)), base)).astype(np.float32)
    lr = hr.reshape(bands, size, scale, size, scale).mean(axis=(2, 4))
    msi = np.stack([hr[k * bands // 4:(k + 1) * bands // 4].mean(0) for k in range(4)]).astype(np.float32)

    class Source:
        def read_lr(self, w):
            part = lr[:, w.row_off:w.row_off + w.height, w.col_off:w.col_off + w.width]
            return part, np.ones(part.shape[1:], bool)

        def read_msi(self, w):
            part = msi[:, w.row_off:w.row_off + w.height, w.col_off:w.col_off + w.width]
            return part, np.ones(part.shape[1:], bool)

    class Sink:
        def __init__(self):
            self.out = np.zeros((bands, big, big), np.float32)

        dtype = "float32"

        def encode(self, data, out):
            out[...] = data
            return out

        def write_stored(self, stored, w):
            self.out[:, w.row_off:w.row_off + w.height, w.col_off:w.col_off + w.width] = stored

    radiometry = Radiometry(1.0, 1.0, np.zeros(bands, np.float32), np.zeros(4, np.float32))

    def run(tile, overlap, halo):
        sink = Sink()
        start = time.perf_counter()
        run_pipeline(lambda: nullcontext(Source()), method, plan_tiles(size, size, tile=tile, overlap=overlap,
                     halo=halo, scale=scale), sink, radiometry, batch_size=BATCH)
        return sink.out, time.perf_counter() - start

    whole, _ = run(size, 0, exact)
    border = exact * scale
    ref = whole[:, border:-border, border:-border].astype(np.float64)
    rows = []
    for halo in (0, 4, 8, 16, exact):
        out, seconds = run(TILE, OVERLAP, halo)
        err = out[:, border:-border, border:-border] - ref
        psnr = 10 * np.log10(ref.max() ** 2 / np.mean(err ** 2))
        read = TILE + 2 * (OVERLAP + halo)
        rows.append(f"| {halo} | {read} | {(read / TILE) ** 2:.2f} | {psnr:.1f} | {np.abs(err).max():.1e} | "
                    f"{seconds:.1f} |")
        print(rows[-1], flush=True)
    from csakd_qgis.fusion.plan import NETWORK_HALO

    tile_rows = []
    for tile in (64, 96, 128):
        read = tile + 2 * (OVERLAP + NETWORK_HALO)
        lr_tile = rng.random((1, bands, read, read), dtype=np.float32)
        msi_tile = rng.random((1, 4, read * scale, read * scale), dtype=np.float32)
        start = time.perf_counter()
        method.predict(lr_tile, msi_tile)
        seconds = time.perf_counter() - start
        tile_rows.append(f"| {tile} | {read} | {(read / tile) ** 2:.2f} | {seconds:.1f} | "
                         f"{(tile * scale) ** 2 / seconds / 1e6:.3f} |")
        print(tile_rows[-1], flush=True)
    return "\n".join([
        f"Network: {name} ({bands} bands, scale {scale}; receptive-field bound `network_halo` = {exact} LR px). "
        f"Scene: {size} x {size} LR px of synthetic texture. Tiled (tile {TILE}, overlap {OVERLAP}) against "
        f"whole-image inference, compared inside a border of {exact} LR px (where both see the same context); "
        "PSNR = 10 log10(max(whole)^2 / MSE) over all bands. `read/core` = pixels computed per output pixel.",
        "",
        "| halo (LR px) | read (LR px) | read/core | PSNR tiled vs whole (dB) | max abs diff | seconds |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"Tile size at the default halo ({NETWORK_HALO}) and overlap {OVERLAP}: one in-memory tile after the "
        f"runs above ({torch.get_num_threads()} torch threads); Mpx/s counts core output pixels.",
        "",
        "| tile (LR px) | read (LR px) | read/core | seconds per tile | core Mpx/s |",
        "|---|---|---|---|---|",
        *tile_rows,
    ])


def ensure_parent() -> None:
    """Create the section and its subsections in docs/benchmarks.md when missing."""
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n"
    if all(h in text for h in PARTS.values()):
        return
    replace_section(HEADING, "\n\n".join(f"{h}\n\n(not measured yet)" for h in PARTS.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only (under 3 minutes)")
    parser.add_argument("--part", choices=[*PARTS, "all"], default=None,
                        help="what to measure (default: all; with --quick: memory)")
    args = parser.parse_args()
    ensure_parent()
    part = args.part or ("memory" if args.quick else "all")
    parts = list(PARTS) if part == "all" else [part]
    with tempfile.TemporaryDirectory(prefix="csakd-bench-") as tmp:
        folder = Path(tmp)
        for part in parts:
            body = {"memory": lambda: memory_part(folder, args.quick), "write": lambda: write_part(folder, args.quick),
                    "halo": lambda: halo_part(args.quick)}[part]()
            text = f"Machine: {machine()}{' (quick run)' if args.quick else ''}.\n\n{body}"
            print(text)
            replace_section(PARTS[part], text)


if __name__ == "__main__":
    main()
