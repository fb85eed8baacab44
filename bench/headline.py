"""The headline scenario of issue 7: one full EnMAP tile fused with Sentinel-2 to 10 m.

Builds a realistic input pair of the size of one EnMAP scene from the real
EnMAP tiles of ``../shared/data/enmap_potsdam`` (14 tiles of 32 x 32 x 224
pixels): a 10 m reference mosaic of ``3 * lr_size`` pixels per side is laid
out from the tiles, each cell a tile mirrored so that neighbours meet at a
mirrored edge; the LR-HSI is its 3 x 3 block mean (30 m, int16 reflectance x
10000 with GDAL scale 1e-4, the tiles' wavelengths, FWHMs and bad-band list,
bad bands as nodata) and the
HR-MSI its Sentinel-2 B2, B3, B4, B8 response (10 m, int16).  Both are tiled
ZSTD GeoTIFFs written in strips, so building them never holds the mosaic.

Then ``csakd_qgis.fusion.engine.fuse`` runs with the bundled default student on all
cores (int16 output, the engine's defaults otherwise) in a fresh process
whose peak RSS is read, followed in the same process by the raw model on
in-memory tiles of the engine's read size and batch (see
``bench/engine_memory.py``), once per backend (``--backends``: torch, and
onnxruntime as ``backend="auto"`` runs it on a CPU; the ratio compares each
run with its own backend's raw model).  Then once per ``--classical`` method
(default ``auto``, what a user gets without choosing), which the engine
fits on the pair; its raw rate is measured on the method as fitted for the
scene, and the plan and fit are timed alone.  The result goes to "Headline
scenario" in ``docs/benchmarks.md``.

Usage: ``python bench/headline.py [--lr-size 1000] [--threads N] [--backends torch onnxruntime]
[--classical auto] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
from affine import Affine
from common import BUNDLED, ROOT, machine, network_spec, replace_section, run_child
from engine_memory import FUSE_CHILD
from rasterio.windows import Window

from csakd_qgis.io.bands import BandInfo
from csakd_qgis.io.read import read_info, read_window
from csakd_qgis.io.write import RasterWriter
from csakd_qgis.options import CLASSICAL_METHODS, CPU_BATCH_SIZE
from csakd_qgis.simulation.srf import spectral_response_matrix

DATA = ROOT.parent / "shared" / "data" / "enmap_potsdam"
HEADING = "## Headline scenario: one EnMAP scene with Sentinel-2 (issue 7)"
SCALE, CELL, STRIP_LR = 3, 32, 32
S2_BANDS = ("B2", "B3", "B4", "B8")
S2_CENTRES_NM = (492.7, 559.8, 664.6, 832.8)
#: 10 m grid of the mosaic: UTM 33N, origin near Potsdam.
HR_TRANSFORM = Affine(10.0, 0, 360000.0, 0, -10.0, 5820000.0)


def load_tiles() -> Tuple[np.ndarray, List[BandInfo]]:
    """The EnMAP tiles as ``(n, 224, 32, 32)`` float32 physical values (NaN = nodata) and their band metadata."""
    paths = sorted(DATA.glob("enmap_potsdam_tile_*.tif"))
    if not paths:
        raise SystemExit(f"no EnMAP tiles in {DATA}")
    tiles = []
    for path in paths:
        data, valid = read_window(str(path))
        tiles.append(np.where(valid, data, np.nan).astype(np.float32))
    return np.stack(tiles), list(read_info(str(paths[0])).bands)


def mosaic_rows(tiles: np.ndarray, row0: int, rows: int, width: int) -> np.ndarray:
    """Rows ``row0 .. row0 + rows`` of the 10 m mosaic, ``(C, rows, width)`` float32.

    Cell ``(i, j)`` (``CELL`` pixels) holds tile ``(5 i + 3 j) % n``, flipped
    left-right on odd ``j`` and upside down on odd ``i``, so every cell
    meets its neighbours at a mirrored edge of some tile.
    """
    n = len(tiles)
    r = np.arange(row0, row0 + rows)
    c = np.arange(width)
    ci, cj = r // CELL, c // CELL
    yi = np.where(ci % 2 == 1, CELL - 1 - r % CELL, r % CELL)
    xj = np.where(cj % 2 == 1, CELL - 1 - c % CELL, c % CELL)
    index = (5 * ci[:, None] + 3 * cj[None, :]) % n
    return np.moveaxis(tiles[index, :, yi[:, None], xj[None, :]], -1, 0)


def build_inputs(folder: Path, lr_size: int, lr_width: Optional[int] = None) -> Tuple[Path, Path]:
    """Write the 30 m ``lr_hsi.tif`` and the 10 m ``hr_msi.tif`` into ``folder``.

    The LR-HSI has ``lr_size`` rows and ``lr_width`` columns (default: square), the HR-MSI 3 times as many of each.
    """
    tiles, bands = load_tiles()
    response = spectral_response_matrix([b.wavelength_nm for b in bands], [b.fwhm_nm for b in bands], "sentinel2",
                                        S2_BANDS, good=[b.good for b in bands]).astype(np.float32)
    lr_width = lr_size if lr_width is None else lr_width
    hr_width = SCALE * lr_width
    lr_path, msi_path = folder / "lr_hsi.tif", folder / "hr_msi.tif"
    # reflectance stored as int16 x 10000 with GDAL scale 1e-4, as EnMAP and Sentinel-2 products do
    common = dict(crs="EPSG:32633", dtype="int16", scale=1e-4, compress="zstd", blocksize=256)
    msi_bands = [BandInfo(wavelength_nm=w, description=f"Sentinel-2 {b}") for b, w in zip(S2_BANDS, S2_CENTRES_NM)]
    with RasterWriter(str(lr_path), width=lr_width, height=lr_size, count=len(bands), bands=bands,
                      transform=HR_TRANSFORM * Affine.scale(SCALE), **common) as lr_out, \
            RasterWriter(str(msi_path), width=hr_width, height=SCALE * lr_size, count=len(S2_BANDS), bands=msi_bands,
                         transform=HR_TRANSFORM, **common) as msi_out:
        for lr_row in range(0, lr_size, STRIP_LR):
            lr_rows = min(STRIP_LR, lr_size - lr_row)
            hr = mosaic_rows(tiles, SCALE * lr_row, SCALE * lr_rows, hr_width)
            c = hr.shape[0]
            # NaN (nodata) anywhere in an LR pixel's footprint makes it nodata, as a sensor's flag would
            lr = hr.reshape(c, lr_rows, SCALE, lr_width, SCALE).mean(axis=(2, 4))
            good = np.array([b.good for b in bands])
            msi = np.einsum("mc,chw->mhw", response[:, good], np.nan_to_num(hr[good]))
            msi[:, np.isnan(hr[good]).any(axis=0)] = np.nan
            lr_out.write(lr, Window(0, lr_row, lr_width, lr_rows))
            msi_out.write(msi, Window(0, SCALE * lr_row, hr_width, SCALE * lr_rows))
    return lr_path, msi_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr-size", type=int, default=1000, help="LR-HSI pixels per side (default 1000)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: all)")
    parser.add_argument("--batch", type=int, default=CPU_BATCH_SIZE, help="tiles per network call")
    parser.add_argument("--backends", nargs="+", choices=("torch", "onnxruntime"), default=["torch", "onnxruntime"])
    parser.add_argument("--classical", nargs="*", choices=("auto",) + CLASSICAL_METHODS, default=["auto"],
                        help="engine methods fitted on the pair, run after the network (default: auto)")
    parser.add_argument("--keep", type=Path, default=None, help="build the inputs in this folder and keep them")
    parser.add_argument("--no-doc", action="store_true", help="print the section instead of writing it")
    args = parser.parse_args()
    if not BUNDLED.exists():
        raise SystemExit(f"the headline needs the bundled model {BUNDLED}")
    name, bands, scale = network_spec()
    with tempfile.TemporaryDirectory(prefix="csakd-headline-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        lr_path, msi_path = folder / "lr_hsi.tif", folder / "hr_msi.tif"
        built = "reused from --keep"
        if not (lr_path.exists() and msi_path.exists()):
            lr_path, msi_path = build_inputs(folder, args.lr_size)
            built = f"built in {time.perf_counter() - start:.0f} s"
        runs = []
        for method, backend in [("network", b) for b in args.backends] + [(m, "") for m in args.classical]:
            kw = {"method": method, "bands": bands, "scale": scale, "tile": 64, "overlap": 8,
                  "batch": args.batch, "threads": args.threads, "backend": backend or "torch"}
            out = folder / "hr_hsi.tif"
            r = run_child(FUSE_CHILD, [lr_path, msi_path, out, json.dumps(kw)])
            r["label"] = f"network, {backend}" if backend else f"{method} ({r['method']})"
            r["mb"] = out.stat().st_size / 2**20
            runs.append(r)
            out.unlink()
    hr = SCALE * args.lr_size
    rows = []
    for r in runs:
        t = r["timings"]
        e2e = hr * hr / r["seconds"]
        fit = "–" if r["prepare_s"] is None else f"{r['prepare_s']:.0f}"
        rows.append(f"| {r['label']} | {hr} x {hr} x {bands} | {r['seconds']:.0f} | {fit} | {e2e / 1e6:.3f} | "
                    f"{r['raw_px_s'] / 1e6:.3f} ({r['streams']}) | {r['raw_one_px_s'] / 1e6:.3f} | "
                    f"{e2e / r['raw_px_s']:.2f} | {r['rss_mb']:.0f} | {r['tiles']} + "
                    f"{r['recomputed']} ({r['carried']}) | {t['read']:.0f} / {t['infer']:.0f} / {t['blend']:.0f} / "
                    f"{t['write']:.0f} | {r['mb']:.0f} |")
    body = "\n".join([
        f"Machine: {machine()}.",
        "",
        f"Inputs ({built}; made by `bench/headline.py`): LR-HSI {args.lr_size} x {args.lr_size} x {bands} "
        f"int16 at 30 m, HR-MSI {hr} x {hr} x 4 int16 at 10 m (Sentinel-2 B2, B3, B4, B8), a mirrored mosaic of "
        "the 14 real EnMAP tiles (their 6 bad bands stored as nodata). `fuse` on the CPU, "
        f"{args.threads} torch threads, tile 64 LR px, overlap 8, batch {args.batch}, int16 ZSTD output, "
        f"shift estimate on, the degradation estimated from the pair. `network` = {name}; the other rows are the "
        "engine's own methods fitted on the pair (`auto`: what a user gets without choosing; in brackets the "
        "method it resolved to). Halo: " + ", ".join(f"{r['halo']} ({r['label']})" for r in runs) + " LR px.",
        "",
        "| method | output (px) | total (s) | plan + fit (s) | output Mpx/s | raw method Mpx/s (calls at once) "
        "| raw, one call at a time | end-to-end / raw | peak RSS (MB) | tiles + recomputed (carried) "
        "| read / infer / blend / write (s) | output (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Stages overlap: reading and writing run in their own threads while the network computes, so their "
        "seconds are not added to the total. `raw` = the method alone on in-memory tiles of the engine's read "
        "size and batch (the network with the same backend; a classical method as fitted for this pair), counted "
        "in core output pixels, right after the run in the same process: as many calls at once as the run made "
        "(`FuseReport.streams`), each with its share of the threads, at least 5 calls each and 5 s; `one call at "
        "a time` = one call with every thread (the same measurement for a method run one call at a time; the runs of "
        "2026-12-08 timed it twice) (onnxruntime follows torch's thread setting). The ratio is against "
        "the first. `plan + fit` = `prepare` alone (inputs, shift, "
        "radiometry, degradation estimate and the method's fit on the sample), run again after the fusion; the "
        "total includes it.",
    ])
    print(body)
    if not args.no_doc:
        replace_section(HEADING, body)


if __name__ == "__main__":
    main()
