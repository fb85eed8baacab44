"""What correcting the LR-HSI's shift costs and brings for networks and bicubic (issue 16).

Networks and bicubic correct an estimated shift by reading the LR-HSI
shifted (:class:`csakd_qgis.geo.coregister.AlignedPair`: translated in
memory when the LR-HSI is on the grid's pixels, as here; until 0.10
through a shifted, resampling ``WarpedVRT``).  This script measures the
two things that decide whether every reliable shift should be corrected:

* Cost.  A scene big enough for the bundled student to take tens of
  seconds: ``resources/sample/reference_hr_hsi.tif`` (63x63, 224 bands)
  mirrored :data:`TIMING_REPEATS` times each way, simulated at scale 3
  (Sentinel-2 B2, B3, B4, B8, MTF 0.3, 40 dB) with the LR-HSI shifted by 0,
  0.03 and 0.3 LR px.  ``fuse(..., method="csakd", device="cpu")`` runs end
  to end (estimation, tiles, guard, style) with the engine's defaults; the
  reads are forced plain (``plan.shift = (0, 0)``) or shifted by the
  engine's own estimate, whatever its rules would choose, by wrapping
  :func:`csakd_qgis.fusion.plan.prepare` as the engine calls it.  The arms
  alternate within each repeat (the order rotates), the median is given.
* Quality.  ``reference_hr_hsi.tif`` and the four EnMAP test tiles
  (:data:`floor.ENMAP_TEST_TILES`) simulated at scale 3 with MTF 0.3, 35 dB
  and a shift of ``(+s, -s)`` LR px for s = 0.03 and 0.3, noise seeds 1-3;
  the student and bicubic each plan the pair once
  (:func:`csakd_qgis.fusion.plan.prepare`, the engine's defaults) and run
  its tiles (:func:`csakd_qgis.fusion.engine.run_plan`, what ``fuse`` runs
  between planning and the guard) with the reads left unshifted and
  shifted by the engine's estimate (the estimate is given too).  PSNR and
  SAM against the simulated reference
  (:func:`csakd_qgis.quality.evaluation.evaluate_rasters`); mean ± std over
  the seeds, and of the paired differences (corrected − left).

Usage: ``python bench/shift_cost.py [--quick]`` (``--quick``: a smaller
timing scene, one repeat, one EnMAP tile, one seed, nothing written).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple, Union
from unittest import mock

import numpy as np
from common import machine, replace_section
from floor import DATA, ENMAP_TEST_TILES, MSI_BANDS, SAMPLE

from csakd_qgis.fusion import engine
from csakd_qgis.fusion.engine import fuse, run_plan
from csakd_qgis.fusion.plan import prepare
from csakd_qgis.fusion.report import FuseReport
from csakd_qgis.io.read import BLOCK_CACHE_MB, gdal_block_cache, read_whole
from csakd_qgis.io.write import write_raster
from csakd_qgis.options import FuseOptions
from csakd_qgis.quality.evaluation import evaluate_rasters
from csakd_qgis.simulation.simulate import simulate_rasters

COST_HEADING = "## Shift correction: cost (issue 16)"
QUALITY_HEADING = "## Shift correction: effect on quality (issue 16)"
#: The sample reference is mirrored this many times each way for the timing scene (63 px -> 567 output px).
TIMING_REPEATS = 9
TIMING_SHIFTS = (0.0, 0.03, 0.3)
QUALITY_SHIFTS = (0.03, 0.3)
SEEDS = (1, 2, 3)
SCALE, MTF = 3, 0.3
#: Target of issue 16: a shifted input costs at most this much more time than an unshifted one.
MAX_EXTRA = 0.05

#: The quality runs' options (everything else the engine's defaults).
QUALITY_OPTIONS = FuseOptions(device="cpu", overwrite=True)

#: How the LR-HSI is read: unshifted, shifted by the engine's estimate, or by a given ``(dx, dy)`` (LR px).
Reads = Union[str, Tuple[float, float]]


@contextmanager
def forced_reads(reads: Reads) -> Iterator[None]:
    """Make :func:`fuse` read the LR-HSI as ``reads`` says, whatever the engine's rules would choose.

    Wraps the ``prepare`` the engine calls: the plan's ``shift`` (what the
    reads apply) is replaced, and the degradation's ``offset`` (what is
    left between the reads and the HR-MSI, used by the guard) follows.
    """
    real = engine.prepare

    def planned(*args, **kwargs):
        plan, method = real(*args, **kwargs)
        measured = plan.shift_measured
        shift = (0.0, 0.0) if reads == "plain" else measured if reads == "estimate" else reads
        shift = (float(shift[0]), float(shift[1]))
        degradation = dict(plan.degradation)
        if "offset" in degradation:
            degradation["offset"] = [measured[0] - shift[0], measured[1] - shift[1]]
        return dataclasses.replace(plan, shift=shift, degradation=degradation), method

    with mock.patch.object(engine, "prepare", planned):
        yield


def load() -> str:
    """The 1-, 5- and 15-minute load averages."""
    return "/".join(f"{v:.2f}" for v in os.getloadavg())


# ----------------------------------------------------------------------------- scenes


def mirrored_reference(folder: Path, repeats: int) -> Path:
    """The sample reference mirrored ``repeats`` times each way (every seam continuous), as float32."""
    info, cube, _ = read_whole(str(SAMPLE / "reference_hr_hsi.tif"), "the benchmark")
    column = np.concatenate([cube if r % 2 == 0 else cube[:, ::-1] for r in range(repeats)], axis=1)
    big = np.concatenate([column if c % 2 == 0 else column[:, :, ::-1] for c in range(repeats)], axis=2)
    path = folder / "mirrored_reference.tif"
    write_raster(str(path), big.astype(np.float32), crs=info.crs, transform=info.transform, bands=info.bands,
                 overwrite=True)
    return path


def simulate(reference: Path, folder: Path, name: str, shift: float, snr_db: float,
             seed: int) -> Tuple[Path, Path, Path]:
    """``(reference, lr, msi)`` of ``reference`` simulated with the LR-HSI shifted by ``(+shift, -shift)``."""
    stem = folder / f"{name}_{shift:g}_{seed}"
    paths = tuple(Path(f"{stem}_{kind}.tif") for kind in ("reference", "lr", "msi"))
    simulate_rasters(str(reference), str(paths[1]), str(paths[2]), str(paths[0]), bands=MSI_BANDS, scale=SCALE,
                     mtf=MTF, snr_db=snr_db, shift=(shift, -shift), seed=seed, overwrite=True)
    return paths[0], paths[1], paths[2]


def run(lr: Path, msi: Path, out: Path, method: str, reads: Reads, **options: object) -> Tuple[FuseReport, float]:
    """``(report, wall seconds)`` of one ``fuse`` with the reads forced."""
    start = time.perf_counter()
    with forced_reads(reads), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = fuse(str(lr), str(msi), str(out), method=method, device="cpu", overwrite=True, **options)
    return report, time.perf_counter() - start


# ----------------------------------------------------------------------------- cost


def timing(folder: Path, repeats: int, mirror: int) -> List[str]:
    """Markdown lines of the cost table (medians over ``repeats`` alternating rounds)."""
    reference = mirrored_reference(folder, mirror)
    inputs = {s: simulate(reference, folder, "timing", s, 40.0, 0)[1:] for s in TIMING_SHIFTS}
    arms: List[Tuple[str, float, Reads]] = [("0 (aligned), plain reads", 0.0, "plain"),
                                            ("0.03, left (plain reads)", 0.03, "plain"),
                                            ("0.03, corrected (shifted reads)", 0.03, "estimate"),
                                            ("0.3, left (plain reads)", 0.3, "plain"),
                                            ("0.3, corrected (shifted reads)", 0.3, "estimate")]
    times: Dict[str, List[Dict[str, float]]] = {label: [] for label, _, _ in arms}
    estimates: Dict[str, Tuple[float, float]] = {}
    out = folder / "timing_out.tif"
    before = load()
    run(*inputs[0.0], out, "csakd", "plain")  # warm-up: model load, page cache
    for rep in range(repeats):
        for k in range(len(arms)):
            label, s, reads = arms[(k + rep) % len(arms)]
            report, wall = run(*inputs[s], out, "csakd", reads)
            times[label].append({"wall": wall, **{key: float(v) for key, v in report.timings.items()}})
            estimates[label] = report.shift
            print(f"timing {label} rep {rep}: {wall:.1f} s {report.timings}", flush=True)
    after = load()
    side = 63 * mirror
    base = statistics.median(t["wall"] for t in times[arms[0][0]])
    lines = [f"Student (bundled `enmap_s2_x3`), {side}x{side} output px, 224 bands, scale 3, CPU, torch "
             f"default threads; {repeats} alternating rounds after one warm-up run, medians (min–max of the wall "
             f"time in brackets). Load average (1/5/15 min) {before} before, {after} after.", "",
             "| shift (LR px), reads | estimate (dx, dy) | wall s (min–max) | vs aligned | read s | infer s | "
             "blend s | write s |", "|---|---|---|---|---|---|---|---|"]
    for label, _, _ in arms:
        rows = times[label]
        wall = [r["wall"] for r in rows]
        med = {k: statistics.median(r[k] for r in rows) for k in ("read", "infer", "blend", "write")}
        dx, dy = estimates[label]
        lines.append(f"| {label} | ({dx:+.3f}, {dy:+.3f}) | {statistics.median(wall):.1f} ({min(wall):.1f}–"
                     f"{max(wall):.1f}) | {100 * (statistics.median(wall) / base - 1):+.1f} % | {med['read']:.1f} | "
                     f"{med['infer']:.1f} | {med['blend']:.1f} | {med['write']:.1f} |")
    def median(label: str) -> float:
        return statistics.median(r["wall"] for r in times[label])

    ratios = [f"{s} px {median(f'{s}, corrected (shifted reads)') / median(f'{s}, left (plain reads)'):.3f}"
              for s in ("0.03", "0.3")]
    lines += ["", f"Median wall time, corrected / left on the same input: {'; '.join(ratios)} (target ≤ "
              f"{1 + MAX_EXTRA:.2f})."]
    return lines


# ----------------------------------------------------------------------------- quality


def quality(folder: Path, tiles: Sequence[str], seeds: Sequence[int]) -> List[str]:
    """Markdown lines of the quality tables."""
    scenes = [("sample reference", SAMPLE / "reference_hr_hsi.tif")]
    scenes += [(f"EnMAP {t}", DATA / "enmap_potsdam" / f"enmap_potsdam_tile_{t}.tif") for t in tiles]
    arms: Tuple[Tuple[str, Reads], ...] = (("left", "plain"), ("estimate", "estimate"))
    # scores[(scene, shift, method, arm)] = [(psnr, sam) per seed]; est[(scene, shift)] = [(dx, dy) per seed]
    scores: Dict[Tuple[str, float, str, str], List[Tuple[float, float]]] = {}
    est: Dict[Tuple[str, float], List[Tuple[float, float]]] = {}
    out = folder / "quality_out.tif"
    for name, path in scenes:
        for s in QUALITY_SHIFTS:
            for seed in seeds:
                reference, lr, msi = simulate(path, folder, name.replace(" ", "_"), s, 35.0, seed)
                for method in ("csakd", "bicubic"):
                    with gdal_block_cache(BLOCK_CACHE_MB), warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        plan, fusion = prepare(str(lr), str(msi), method=method, options=QUALITY_OPTIONS)
                    for arm, reads in arms:
                        shift = (0.0, 0.0) if reads == "plain" else plan.shift_measured
                        run_plan(dataclasses.replace(plan, shift=shift), fusion, QUALITY_OPTIONS, str(out))
                        metrics = evaluate_rasters(str(reference), str(out), scale=SCALE).sections["reference"]
                        scores.setdefault((name, s, method, arm), []).append(
                            (float(metrics["psnr"]), float(metrics["sam"])))
                    if method == "csakd":
                        est.setdefault((name, s), []).append(plan.shift_measured)
                print(f"quality {name} shift {s} seed {seed}: " + ", ".join(
                    f"{m}/{a} {scores[(name, s, m, a)][-1][0]:.2f}" for m in ("csakd", "bicubic") for a, _ in arms),
                    flush=True)

    def ms(values: Sequence[float], digits: int = 2) -> str:
        return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"

    lines = [f"Shift (+s, −s) LR px, 35 dB, MTF 0.3, scale 3, noise seeds {', '.join(map(str, seeds))} (mean ± std "
             "over seeds). left: reads unshifted; corrected: shifted by the engine's estimate (the reported "
             "`shift`). Δ: corrected − left, paired per seed.", "",
             "| scene | s | estimate dx, dy (mean ± std) | method | PSNR left | PSNR corrected | Δ PSNR | SAM left | "
             "SAM corrected | Δ SAM |", "|" + "---|" * 10]
    pooled: Dict[Tuple[float, str], Dict[str, List[float]]] = {}
    for name, _ in scenes:
        for s in QUALITY_SHIFTS:
            shifts = np.array(est[(name, s)])
            est_text = f"{ms(shifts[:, 0], 3)}, {ms(shifts[:, 1], 3)}"
            for method in ("csakd", "bicubic"):
                got = {a: np.array(scores[(name, s, method, a)]) for a, _ in arms}
                d_est = got["estimate"] - got["left"]
                pool = pooled.setdefault((s, method), {"psnr_est": [], "sam_est": []})
                pool["psnr_est"] += d_est[:, 0].tolist()
                pool["sam_est"] += d_est[:, 1].tolist()
                label = "student" if method == "csakd" else method
                lines.append(f"| {name} | {s:g} | {est_text} | {label} | {ms(got['left'][:, 0])} | "
                             f"{ms(got['estimate'][:, 0])} | {ms(d_est[:, 0], 3)} | "
                             f"{ms(got['left'][:, 1], 3)} | {ms(got['estimate'][:, 1], 3)} | "
                             f"{ms(d_est[:, 1], 3)} |")
    lines += ["", f"Pooled over the {len(scenes)} scenes and {len(seeds)} seeds (paired differences, mean ± std; "
              "wins: pairs where the corrected output has the higher PSNR):", "",
              "| s | method | Δ PSNR (dB) | wins | Δ SAM (°) |", "|---|---|---|---|---|"]
    for (s, method), pool in pooled.items():
        label = "student" if method == "csakd" else method
        wins = sum(v > 0 for v in pool["psnr_est"])
        lines.append(f"| {s:g} | {label} | {ms(pool['psnr_est'], 3)} | {wins} of {len(pool['psnr_est'])} | "
                     f"{ms(pool['sam_est'], 3)} |")
    return lines


def main() -> int:
    """Run the cost and/or the quality measurements; write their sections (unless ``--quick``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small timing scene, one tile, one seed, print only")
    parser.add_argument("--repeats", type=int, default=3, help="alternating timing rounds")
    parser.add_argument("--part", choices=("cost", "quality", "both"), default="both", help="what to measure")
    args = parser.parse_args()
    np.seterr(all="ignore")
    header = machine()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        parts = []
        if args.part in ("cost", "both"):
            parts.append((COST_HEADING, timing(folder, 1 if args.quick else args.repeats,
                                                                    3 if args.quick else TIMING_REPEATS)))
        if args.part in ("quality", "both"):
            parts.append((QUALITY_HEADING, quality(
                folder, ENMAP_TEST_TILES[:1] if args.quick else ENMAP_TEST_TILES, SEEDS[:1] if args.quick else SEEDS)))
    for heading, lines in parts:
        body = "\n".join([f"Machine: {header}. Date: {time.strftime('%Y-%m-%d')}. Produced by `bench/shift_cost.py "
                          f"--part {'cost' if heading == COST_HEADING else 'quality'}`; protocol in its docstring.",
                          "", *lines])
        print(heading, body, sep="\n\n")
        if not args.quick:
            replace_section(heading, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
