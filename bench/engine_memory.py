"""Peak memory and throughput of ``csakd_qgis.engine.fuse`` against the output size.

Builds synthetic tiled GeoTIFF pairs in a temporary folder (LR-HSI with many
bands, 4-band HR-MSI, scale 3), runs each case in a fresh subprocess and
reads that process's peak resident set size (``ru_maxrss``), so cases do not
share memory.  Prints a markdown table and writes it to ``docs/benchmarks.md``
under "Engine memory and throughput" (other sections are kept).

Usage: ``python bench/engine_memory.py [--quick] [--keep]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

ROOT = Path(__file__).resolve().parents[1]
SCALE, MSI_BANDS = 3, 4
HEADING = "## Engine memory and throughput"
#: GDAL block cache (MB) of the fusing process; GDAL's default is 5 % of RAM, which dominates peak RSS.
GDAL_CACHE_MB = 256

CHILD = r"""
import json, resource, sys, time, torch
torch.set_num_threads(1)
from csakd_qgis.engine import fuse
kw = json.loads(sys.argv[4])
if kw.pop("network", False):
    from csakd_qgis.models import ModelConfig, build_model
    cfg = ModelConfig(bands=kw.pop("bands"), msi_bands=4, scale=3, nf=8, gc=4, blocks=(1, 1, 1, 1), lr_groups=1,
                      fusion="csa_invariant", paper_mode=False, upsample="bilinear", head="light")
    kw["model"] = build_model(cfg).eval()
else:
    kw.pop("bands")
t = time.perf_counter()
report = fuse(sys.argv[1], sys.argv[2], sys.argv[3], device="cpu", overwrite=True, **kw)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": time.perf_counter() - t, "rss_mb": rss,
                  "timings": report.timings}))
"""


def write_synthetic(path: Path, bands: int, size: int, transform: Affine, seed: int) -> None:
    """A smooth random ``bands x size x size`` float32 raster, tiled and ZSTD-compressed, written in strips."""
    rng = np.random.default_rng(seed)
    weights = rng.random((bands, 3)).astype(np.float32)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=bands, dtype="float32",
                       crs="EPSG:32633", transform=transform, tiled=True, blockxsize=256, blockysize=256,
                       compress="zstd", interleave="band") as ds:
        step = 256
        x = np.linspace(0, 6, size, dtype=np.float32)
        for row in range(0, size, step):
            h = min(step, size - row)
            y = np.linspace(row, row + h, h, dtype=np.float32)[:, None] * (6.0 / size)
            base = np.stack([np.sin(x + y), np.cos(2 * x - y), np.sin(3 * y) * np.cos(x)])
            ds.write(0.3 + 0.1 * np.einsum("bk,khw->bhw", weights, base), window=Window(0, row, size, h))


def machine() -> str:
    """CPU model, core count and RAM of this machine."""
    cpu = "unknown CPU"
    info = Path("/proc/cpuinfo")
    if info.exists():
        found = re.search(r"model name\s*:\s*(.+)", info.read_text())
        cpu = found.group(1).strip() if found else cpu
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {ram:.0f} GiB RAM, Python {platform.python_version()}"


def run_case(folder: Path, out_size: int, bands: int, method: str, tile: int) -> dict:
    """Fuse one synthetic pair in a subprocess; returns seconds, peak RSS (MB) and stage timings."""
    lr_size = out_size // SCALE
    lr_t = Affine(30.0, 0, 366000.0, 0, -30.0, 5810000.0)
    lr, msi = folder / f"lr_{lr_size}_{bands}.tif", folder / f"msi_{out_size}.tif"
    if not lr.exists():
        write_synthetic(lr, bands, lr_size, lr_t, 1)
    if not msi.exists():
        write_synthetic(msi, MSI_BANDS, out_size, lr_t * Affine.scale(1 / SCALE), 2)
    kwargs = {"method": "csakd" if method == "network" else method, "network": method == "network",
              "bands": bands, "tile": tile, "overlap": 8, "dtype": "int16", "output_scale": 1e-4}
    done = subprocess.run([sys.executable, "-c", CHILD, str(lr), str(msi), str(folder / "out.tif"),
                           json.dumps(kwargs)], cwd=ROOT, capture_output=True, text=True, check=True,
                          env={**os.environ, "GDAL_CACHEMAX": str(GDAL_CACHE_MB)})
    os.remove(folder / "out.tif")
    return json.loads(done.stdout.strip().splitlines()[-1])


def update_doc(table: str) -> None:
    """Replace (or append) the section under :data:`HEADING` in docs/benchmarks.md."""
    doc = ROOT / "docs" / "benchmarks.md"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    section = f"{HEADING}\n\n{table}\n"
    pattern = re.compile(rf"^{re.escape(HEADING)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    doc.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only (about a minute)")
    args = parser.parse_args()
    bands = 128
    cases = [(1008, "bicubic"), (2016, "bicubic"), (384, "network")]
    if not args.quick:
        cases = [(1008, "bicubic"), (2016, "bicubic"), (4032, "bicubic"), (384, "network"), (768, "network")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="csakd-bench-") as tmp:
        for size, method in cases:
            r = run_case(Path(tmp), size, bands, method, tile=64)
            t = r["timings"]
            rows.append(f"| {size} x {size} | {bands} | {method} | {r['rss_mb']:.0f} | {r['seconds']:.1f} | "
                        f"{size * size / r['seconds'] / 1e6:.2f} | {t['read']:.1f} / {t['infer']:.1f} / "
                        f"{t['blend']:.1f} / {t['write']:.1f} |")
            print(rows[-1], flush=True)
    table = "\n".join([
        f"Machine: {machine()}; 1 torch thread; scale {SCALE}, {MSI_BANDS} MSI bands, tile 64 LR px, overlap 8,",
        "int16 output (ZSTD); synthetic tiled GeoTIFF inputs; network = tiny csa_invariant student (nf 8).",
        f"Peak RSS is the fusing process's ru_maxrss (Python, torch and GDAL included); "
        f"GDAL_CACHEMAX={GDAL_CACHE_MB} MB.",
        "",
        "| output (px) | bands | method | peak RSS (MB) | time (s) | Mpx/s | read / infer / blend / write (s) |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ])
    print(table)
    update_doc(table)


if __name__ == "__main__":
    main()
