"""Peak memory of ``fuse`` against the output's width: PSF-matched GSA, a network, the default method (issue 16).

What a run holds should be bounded by the tile and column-block geometry,
not by the raster: the GDAL block cache is sized for one column block, the
writer holds the strips and seams of one column block, and a tile straddling
two blocks is carried on disk, not in memory.  Width is what could make it
grow (a row of tiles spans the width; the height is streamed), so each case
is fused at 1008 x 1008 output pixels and at 8064 columns x 1008 rows; GSA
at 60 bands also at the full 8064 x 8064, to show the height adds nothing,
and with pixel-interleaved inputs (GDAL's default layout, whose decoded
blocks the engine caches for a column block).

Synthetic tiled float32 GeoTIFF inputs (smooth, ``common.write_synthetic``),
stored by band unless the case says pixel:
LR-HSI with 60 or 224 bands, 4-band HR-MSI, scale 3.  The default method
(``subspace_bp``, what ``auto`` resolves to on an EnMAP scene) needs a
consistent pair with real noise, or its back-projection has nothing to
correct and the case would measure the plain subspace method: its cases
fuse the real-scene mosaic of ``bench/headline.py`` (224 EnMAP bands,
int16, Sentinel-2 B2/B3/B4/B8) at the same output sizes.  ``fuse`` with the
engine's defaults (tile 64 LR px, column blocks of 1024 px, int16 ZSTD
output, the degradation estimated from the pair), 1 torch thread, each
case in a fresh subprocess whose peak resident set size (``VmHWM``) is
read.  The network is a randomly initialised ``project_student`` for the
case's band count, run by torch (its memory, not its quality, is measured).

The peak of one run is the highest of many moments at which a tile's
computation meets the reader's and the writer's buffers, so it varies from
run to run by up to about 200 MB (the floor between tiles does not).  Each
case therefore runs ``--repeats`` times (3 by default); the table gives the
median peak with the lowest and highest, and the growth compares medians.

Each method has its own subsection of the section in ``docs/benchmarks.md``;
``--methods`` reruns some of them and keeps the others.

Usage: ``python bench/memory_width.py [--quick] [--repeats N] [--methods gsa network subspace_bp]``
(``--quick``: 60 bands only, no 8064 x 8064 case, the real-scene mosaic at 1008 x 1008 only; print only).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

from affine import Affine
from common import LR_TRANSFORM, ROOT, machine, replace_section, write_synthetic
from headline import build_inputs

SCALE, MSI_BANDS = 3, 4
HEADING = "## Memory against the output width (issue 16)"
#: Methods measured, each under its own ``### `` subsection of :data:`HEADING`.
METHODS = ("gsa", "network", "subspace_bp")
#: Methods whose cases fuse the real-scene mosaic (224 bands, ``headline.build_inputs``).
REAL_SCENE = ("subspace_bp",)

#: Child process of one case: fuse, print peak RSS and counts as JSON.
CHILD = r"""
import json, sys, time, torch
lr_path, msi_path, out, kw = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
torch.set_num_threads(1)
from common import peak_rss_mb
from csakd_qgis.fusion.engine import fuse
method = kw["method"]
if method == "network":
    from csakd_qgis.fusion.methods import NetworkMethod
    from csakd_qgis.models import build_model
    from csakd_qgis.models.config import preset
    torch.manual_seed(0)
    method = NetworkMethod(build_model(preset("project_student", kw["bands"], 4, 3)).eval(), scale=3)
rss_start = peak_rss_mb()
start = time.perf_counter()
report = fuse(lr_path, msi_path, out, method=method, device="cpu", overwrite=True, dtype="int16",
              output_scale=1e-4, shift_correction=False)
print(json.dumps({"seconds": time.perf_counter() - start, "rss_mb": peak_rss_mb(), "rss_start_mb": rss_start,
                  "tiles": report.tiles_total, "carried": report.tiles_carried,
                  "recomputed": report.tiles_recomputed}))
"""


def run_case(folder: Path, method: str, bands: int, rows: int, cols: int, interleave: str) -> Dict[str, float]:
    """Build (or reuse) the inputs of one case and fuse them in a fresh process."""
    if method in REAL_SCENE:
        scene = folder / f"mosaic_{rows}x{cols}"
        lr, msi = scene / "lr_hsi.tif", scene / "hr_msi.tif"
        if not lr.exists():
            scene.mkdir()
            build_inputs(scene, rows // SCALE, cols // SCALE)
    else:
        lr = folder / f"lr_{bands}_{rows}x{cols}_{interleave}.tif"
        msi = folder / f"msi_{rows}x{cols}_{interleave}.tif"
        if not lr.exists():
            write_synthetic(lr, bands, rows // SCALE, LR_TRANSFORM, 1, width=cols // SCALE, interleave=interleave)
        if not msi.exists():
            write_synthetic(msi, MSI_BANDS, rows, LR_TRANSFORM * Affine.scale(1 / SCALE), 2, width=cols,
                            interleave=interleave)
    out = folder / "out.tif"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "bench")])}
    done = subprocess.run([sys.executable, "-c", CHILD, str(lr), str(msi), str(out),
                           json.dumps({"method": method, "bands": bands})],
                          cwd=ROOT, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{done.stderr[-3000:]}")
    out.unlink()
    return json.loads(done.stdout.strip().splitlines()[-1])


def cases(method: str, quick: bool) -> List[Tuple[int, int, int, str]]:
    """``(bands, rows, cols, interleave)`` of every case of ``method``, the 1008-px case of each first."""
    if method in REAL_SCENE:
        return [(224, 1008, 1008, "band")] + ([] if quick else [(224, 1008, 8064, "band")])
    found = []
    for bands in ((60,) if quick else (60, 224)):
        found += [(bands, 1008, 1008, "band"), (bands, 1008, 8064, "band")]
        if method == "gsa" and bands == 60 and not quick:
            found.append((bands, 8064, 8064, "band"))
        if method == "gsa":
            found += [(bands, 1008, 1008, "pixel"), (bands, 1008, 8064, "pixel")]
    return found


def measure(folder: Path, method: str, quick: bool, repeats: int) -> List[str]:
    """Table rows of ``method``'s cases, each run ``repeats`` times; growth against its first case."""
    lines = []
    base: Dict[Tuple[int, str], float] = {}
    for bands, rows, cols, interleave in cases(method, quick):
        runs = [run_case(folder, method, bands, rows, cols, interleave) for _ in range(repeats)]
        peaks = [r["rss_mb"] for r in runs]
        peak = statistics.median(peaks)
        base.setdefault((bands, interleave), peak)
        growth = 100 * (peak / base[(bands, interleave)] - 1)
        r = runs[0]
        lines.append(f"| {method} | {bands} | {interleave} | {cols} x {rows} | {r['rss_start_mb']:.0f} | "
                     f"{peak:.0f} ({min(peaks):.0f}-{max(peaks):.0f}) | {growth:+.1f} % | "
                     f"{statistics.median(x['seconds'] for x in runs):.0f} | "
                     f"{r['tiles']} ({r['carried']} carried) |")
        print(lines[-1], flush=True)
    return lines


def main() -> int:
    """Run every case of the chosen methods, print each table, and (without --quick) write it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small cases only; print only")
    parser.add_argument("--repeats", type=int, default=3, help="fresh runs per case (default 3)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                        help="methods to measure (default: all); the others' subsections are kept")
    args = parser.parse_args()
    header = machine()
    inputs = {"gsa": "synthetic inputs", "network": "synthetic inputs, network = a random `project_student` run by "
              "torch", "subspace_bp": "the real-scene mosaic of `bench/headline.py` (224 EnMAP bands, int16)"}
    with tempfile.TemporaryDirectory(prefix="csakd-width-") as tmp:
        for method in args.methods:
            lines = measure(Path(tmp), method, args.quick, args.repeats)
            body = "\n".join([
                f"`bench/memory_width.py --repeats {args.repeats} --methods {method}` on {header}. Protocol in the "
                f"script's docstring: {inputs[method]}, scale 3, 4 MSI bands, engine defaults (tile 64 LR px, "
                "column blocks of 1024 px, int16 ZSTD), 1 torch thread, each case run "
                f"{args.repeats} times in fresh processes. Growth = median peak RSS against the median of the same "
                "bands and interleaving at 1008 x 1008.",
                "",
                "| method | bands | inputs stored by | output (cols x rows) | imports RSS (MB) | peak RSS, median "
                "(min-max) (MB) | growth | time (s, median) | tiles |",
                "|---|---|---|---|---|---|---|---|---|",
                *lines,
            ])
            print(body)
            if not args.quick:
                replace_section(f"### {method}", body, within=HEADING)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
