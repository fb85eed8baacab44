"""The classical floor through the engine (issue 13): every method run by ``fuse`` on GeoTIFFs, nothing true given.

Protocol (written into docs/benchmarks.md with the tables):

* Scenes.  Each one is a reference raster simulated with
  :func:`csakd_qgis.simulation.simulate.simulate_rasters` (Sentinel-2A B2, B3,
  B4, B8) with its own degradation, drawn from a generator seeded by the
  scene's name: a Gaussian PSF with an MTF at Nyquist uniform in
  :data:`MTF_RANGE` and an LR-HSI misregistration uniform in
  ``±``:data:`MAX_SHIFT` LR pixels on each axis.  The clean and the
  35 dB version of a scene share that degradation (noise seeds differ):

  - the bundled sample files as they are (``resources/sample``: scale 3,
    MTF 0.3, no shift, 40 dB, a masked cloud in the MSI);
  - the four EnMAP Potsdam tiles of the default model's test block
    (:data:`ENMAP_TEST_TILES`, ``scripts/train_default_model.py``: never
    used for training or for choosing the checkpoint), each 32x32 cropped
    to 30x30 by the simulator, scale 3;
  - Indian Pines / 10,000, rows 112-143 and all 144 columns (the test
    region of ``bench/quality_scenes.py``, its synthetic 20 m grid), scale 4;
  - the georeferenced AVIRIS-NG chip (24x30 HR pixels, bad bands as
    ``bench/quality_scenes.py`` defines them), scale 2;
  - all 144 x 144 pixels of Indian Pines, scale 3: the only scene here whose
    sample windows are large enough for ``subspace_bp``'s residual statistics
    (on the others it reports nothing to correct and equals ``subspace``).

* Methods: ``fuse(lr, msi, out, method=..., device="cpu")`` with the
  engine's defaults (tiles, shift correction, degradation estimated from
  the pair on its scene sample): bicubic, gsa (PSF-matched), glp,
  subspace, subspace_bp, auto (the default; which method it chose is given) and the
  bundled student (``csakd``) where it fits (224 bands, scale 3).
* Metrics: :func:`csakd_qgis.quality.evaluation.evaluate_rasters` against the
  simulated reference (what ``csakd evaluate`` computes): PSNR (dB, peak =
  the reference's range), SAM (degrees), ERGAS (ratio = the scale), SSIM;
  bad bands and nodata left out.
* Estimation: the engine measures the LR-HSI's offset with the PSF fit on
  unshifted reads (within 0.9 LR px); the classical methods take it into
  their fit, networks and bicubic read the LR-HSI shifted by it (every
  reliable shift since issue 16; the tables in docs/benchmarks.md were
  measured when only shifts from 0.05 LR px were corrected).  The engine's total estimate is
  the reads' shift (``report.shift`` when ``report.shift_corrected``) plus
  ``report.degradation["offset"]``; it is compared with the simulated shift.
* Throughput: a synthetic 513x513 output, 224-band scene at scale 3 (six
  smooth spectra mixed by abundance maps with sharp patches), fused by
  each method as ``fuse`` does, its two phases timed: ``prepare`` (grids,
  shift, sample, degradation estimate, fit) and ``run_plan`` (the tiles).
  The old block-mean GSA (``bench/classical.py``'s ``OldGSA``, fitted on
  the whole normalised scene) runs through the same engine as a ready
  method object.

Usage: ``python bench/floor.py [--quick]`` (``--quick``: one EnMAP tile, a
smaller throughput scene, nothing written).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from affine import Affine
from classical import OldGSA
from common import ROOT, machine, publish
from quality_scenes import Crop, Source, aviris_ng, indian_pines

from csakd_qgis.fusion.engine import fuse, run_plan
from csakd_qgis.fusion.plan import prepare
from csakd_qgis.fusion.report import FuseReport
from csakd_qgis.io.bands import BandInfo
from csakd_qgis.io.read import BLOCK_CACHE_MB, gdal_block_cache, read_whole
from csakd_qgis.io.write import write_raster
from csakd_qgis.options import FuseOptions
from csakd_qgis.quality.evaluation import evaluate_rasters
from csakd_qgis.simulation.degradation import blur_decimate, gaussian_psf, psf_sigma
from csakd_qgis.simulation.simulate import simulate_rasters
from csakd_qgis.simulation.srf import sensor_bands, spectral_response_matrix

DATA = ROOT.parent / "shared" / "data"
SAMPLE = ROOT / "resources" / "sample"
HEADING = "## Classical floor through the engine (issue 13)"
NOISY_DB = 35.0
#: The MTF at Nyquist of each scene's PSF is drawn uniformly from this range.
MTF_RANGE = (0.2, 0.4)
#: Each axis of the LR-HSI's misregistration is drawn uniformly from [-MAX_SHIFT, MAX_SHIFT] LR pixels.
MAX_SHIFT = 0.4
#: The default model's test block (``TEST_TILES`` of scripts/train_default_model.py): neither trained on
#: nor used to choose the checkpoint.
ENMAP_TEST_TILES = ("160_128", "192_128", "160_160", "192_160")
MSI_BANDS = ("B2", "B3", "B4", "B8")
CLASSICAL = ("gsa", "glp", "subspace", "subspace_bp")
METHODS = ("bicubic", *CLASSICAL, "auto")
#: The bundled student fits scenes with this many bands at this scale.
STUDENT_BANDS, STUDENT_SCALE = 224, 3
#: Targets of issue 13.
GSA_SAMPLE_DB = 40.0
AUTO_MARGIN_DB = 0.2
#: Further noise realisations of every 35 dB scene (the quality table's is seed 1), for target (c).
EXTRA_NOISE_SEEDS = (2, 3)
SIGMA_TOLERANCE = 0.10
OFFSET_TOLERANCE = 0.05


@dataclass(frozen=True)
class Case:
    """One scene's GeoTIFFs and the degradation it was simulated with (``shift`` in LR px, +x east, +y south)."""

    name: str
    reference: Path
    lr: Path
    msi: Path
    scale: int
    mtf: float
    shift: Tuple[float, float]
    snr_db: Optional[float]
    bands: int
    noise_seed: int = 0

    @property
    def sigma(self) -> float:
        """True PSF sigma in output (HR) pixels."""
        return psf_sigma(self.scale, self.mtf)


@dataclass
class Result:
    """Scores (method -> metric -> value), the method auto chose and the engine's reports of one case."""

    case: Case
    scores: Dict[str, Dict[str, float]] = field(default_factory=dict)
    reports: Dict[str, FuseReport] = field(default_factory=dict)
    seconds: Dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------- scenes


def _draw(name: str) -> Tuple[float, Tuple[float, float]]:
    """``(mtf, (dx, dy))`` drawn from a generator seeded by ``name``."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    mtf = float(rng.uniform(*MTF_RANGE))
    dx, dy = (float(v) for v in np.round(rng.uniform(-MAX_SHIFT, MAX_SHIFT, 2), 3))
    return mtf, (dx, dy)


def simulated(name: str, reference: Path, scale: int, bands: int, folder: Path) -> List[Case]:
    """The clean and the noisy cases of ``reference`` (a raster with wavelengths), sharing one degradation.

    The clean case (seed 0), the 35 dB case of the quality table (noise seed 1) and one 35 dB case per
    :data:`EXTRA_NOISE_SEEDS`.
    """
    mtf, shift = _draw(name)
    cases = []
    for number, snr in ((0, None), (1, NOISY_DB), *((seed, NOISY_DB) for seed in EXTRA_NOISE_SEEDS)):
        tag = "clean" if snr is None else f"{snr:.0f} dB" + (f", noise seed {number}" if number > 1 else "")
        stem = folder / f"{name.replace(' ', '_').replace(',', '')}_{number}"
        paths = [Path(f"{stem}_{kind}.tif") for kind in ("reference", "lr", "msi")]
        simulate_rasters(str(reference), str(paths[1]), str(paths[2]), str(paths[0]), bands=MSI_BANDS,
                         scale=scale, mtf=mtf, snr_db=snr, shift=shift, seed=number, overwrite=True)
        cases.append(Case(f"{name}, {tag}", *paths, scale, mtf, shift, snr, bands, number))
    return cases


def _write_crop(source: Source, crop: Crop, good: Sequence[bool], path: Path) -> Path:
    """Write ``crop`` of ``source`` with its band metadata (the simulator's input)."""
    fwhm = source.fwhm_nm or (None,) * len(good)
    bands = [BandInfo(wavelength_nm=w, fwhm_nm=f, good=g) for w, f, g in zip(source.wavelengths_nm, fwhm, good)]
    write_raster(str(path), crop.cut(source.cube), crs=source.crs,
                 transform=source.transform * Affine.translation(crop.cols[0], crop.rows[0]), bands=bands,
                 overwrite=True)
    return path


def scenes(folder: Path, quick: bool) -> List[Case]:
    """Every case of the quality table (see the module docstring)."""
    sample = Case("bundled sample files (40 dB, cloud)", SAMPLE / "reference_hr_hsi.tif", SAMPLE / "enmap_lr_hsi.tif",
                  SAMPLE / "s2_hr_msi.tif", 3, 0.3, (0.0, 0.0), 40.0, 224)
    cases = [sample]
    for tile in ENMAP_TEST_TILES[:1] if quick else ENMAP_TEST_TILES:
        cases += simulated(f"EnMAP {tile} x3", DATA / "enmap_potsdam" / f"enmap_potsdam_tile_{tile}.tif", 3, 224,
                           folder)
    pines = indian_pines(DATA)
    path = _write_crop(pines.sources["indian_pines"], pines.test, pines.good, folder / "indian_pines_test.tif")
    cases += simulated("Indian Pines test rows x4", path, 4, len(pines.good), folder)
    aviris = aviris_ng(DATA)
    chip = aviris.sources["georeferenced"]
    path = _write_crop(chip, Crop("georeferenced", (0, 24), (0, 30)), aviris.good, folder / "aviris.tif")
    cases += simulated("AVIRIS-NG x2", path, 2, len(aviris.good), folder)
    path = _write_crop(pines.sources["indian_pines"], Crop("indian_pines", (0, 144), (0, 144)), pines.good,
                       folder / "indian_pines_all.tif")
    cases += simulated("Indian Pines all x3", path, 3, len(pines.good), folder)
    return cases


# ----------------------------------------------------------------------------- running


def run_case(case: Case, folder: Path) -> Result:
    """Fuse ``case`` with every method that fits it and score each output."""
    result = Result(case)
    methods = list(METHODS) if case.noise_seed <= 1 else [*CLASSICAL, "auto"]
    if case.bands == STUDENT_BANDS and case.scale == STUDENT_SCALE and case.noise_seed <= 1:
        methods.append("csakd")
    for method in methods:
        out = folder / f"{case.lr.stem}_{method}.tif"
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = fuse(str(case.lr), str(case.msi), str(out), method=method, device="cpu", overwrite=True)
        result.seconds[method] = time.perf_counter() - start
        scores = evaluate_rasters(str(case.reference), str(out), scale=case.scale).sections["reference"]
        result.scores[method] = {k: float(scores[k]) for k in ("psnr", "sam", "ergas", "ssim")}
        result.reports[method] = report
        out.unlink()
    print(f"{case.name}: " + ", ".join(f"{m} {s['psnr']:.2f}" for m, s in result.scores.items())
          + f" (auto -> {result.reports['auto'].method})", flush=True)
    return result


def best_classical(result: Result) -> Tuple[str, float]:
    """``(method, PSNR)`` of the best of the :data:`CLASSICAL` methods."""
    name = max(CLASSICAL, key=lambda m: result.scores[m]["psnr"])
    return name, result.scores[name]["psnr"]


def estimated_shift(report: FuseReport) -> Tuple[Tuple[float, float], Tuple[float, float], Tuple[float, float]]:
    """``(applied, residual, total)`` offsets (LR px) the engine estimated: see the module docstring."""
    applied = report.shift if report.shift_corrected else (0.0, 0.0)
    residual = tuple(report.degradation.get("offset") or (np.nan, np.nan))
    return applied, (residual[0], residual[1]), (applied[0] + residual[0], applied[1] + residual[1])


# ----------------------------------------------------------------------------- throughput


class EngineOldGSA:
    """:class:`OldGSA` behind the engine's ``FusionMethod`` protocol (fitted on normalised whole images)."""

    name = "old gsa"

    def __init__(self, lr: np.ndarray, msi: np.ndarray, scale: int) -> None:
        self.model = OldGSA(lr, msi, scale)
        self.scale = scale
        self.halo = OldGSA.halo

    def predict(self, lr: np.ndarray, msi: np.ndarray) -> np.ndarray:
        """``(B, C, h, w)``, ``(B, m, h s, w s)`` float32 -> ``(B, C, h s, w s)`` float32."""
        return self.model.predict(lr, msi).astype(np.float32, copy=False)


def synthetic_scene(folder: Path, lr_side: int, scale: int = 3, bands: int = 224) -> Tuple[Path, Path]:
    """A linear-mixture LR-HSI (40 dB) / HR-MSI pair of ``lr_side * scale`` output pixels a side; their paths."""
    rng = np.random.default_rng(13)
    side = lr_side * scale
    wavelengths = np.linspace(420.0, 2450.0, bands)
    spectra = np.stack([0.05 + 0.4 * rng.random() * np.exp(-((wavelengths - c) / w) ** 2) + 0.1 * rng.random()
                        for c, w in zip(rng.uniform(450, 2400, 6), rng.uniform(150, 900, 6))], axis=1)
    yy, xx = np.mgrid[0:side, 0:side] / side
    maps = [1.0 + np.sin(2 * np.pi * (f1 * xx + f2 * yy) + p) for f1, f2, p in rng.uniform(0.5, 6, (6, 3))]
    for m in maps:
        for _ in range(40):
            r, c, h, w = rng.integers(0, side, 2).tolist() + rng.integers(3, 25, 2).tolist()
            m[r:r + h, c:c + w] += 2.0 * rng.random()
    abundance = np.stack(maps)
    abundance /= abundance.sum(axis=0, keepdims=True)
    srf = spectral_response_matrix(wavelengths, None, sensor_bands("sentinel2", MSI_BANDS))
    lr = np.einsum("ck,khw->chw", spectra, blur_decimate(abundance, scale, gaussian_psf(scale)))
    lr += rng.standard_normal(lr.shape) * np.sqrt((lr**2).mean(axis=(1, 2)) / 1e4)[:, None, None]
    msi = np.einsum("mk,khw->mhw", srf @ spectra, abundance)
    transform = Affine(10.0, 0.0, 366000.0, 0.0, -10.0, 5810000.0)
    paths = folder / "synthetic_lr.tif", folder / "synthetic_msi.tif"
    write_raster(str(paths[0]), lr.astype(np.float32), crs="EPSG:32633", transform=transform * Affine.scale(scale),
                 bands=[BandInfo(wavelength_nm=float(w)) for w in wavelengths], overwrite=True)
    write_raster(str(paths[1]), msi.astype(np.float32), crs="EPSG:32633", transform=transform,
                 bands=[BandInfo(wavelength_nm=c) for c in sensor_bands("sentinel2", MSI_BANDS).centres_nm],
                 overwrite=True)
    return paths


def throughput(folder: Path, lr_side: int) -> Tuple[List[str], Dict[str, Dict[str, float]]]:
    """Markdown lines and ``method -> {prepare, infer, total, us_px}`` on the synthetic scene.

    Each method runs as :func:`fuse` does, in its two timed phases: ``prepare`` (under the small block
    cache) and ``run_plan`` (the tiles); ``infer`` is the tiles' compute time as the pipeline reports it.
    """
    lr, msi = synthetic_scene(folder, lr_side)
    pixels = (lr_side * 3) ** 2
    options = FuseOptions(device="cpu", overwrite=True)
    out = folder / "synthetic_out.tif"
    rows: Dict[str, Dict[str, float]] = {}
    old: Optional[EngineOldGSA] = None
    for label, method in (("old GSA (block-mean fit)", None), ("gsa (PSF-matched)", "gsa"), ("glp", "glp"),
                          ("subspace", "subspace"), ("subspace_bp", "subspace_bp")):
        start = time.perf_counter()
        with gdal_block_cache(BLOCK_CACHE_MB):
            plan, fusion = prepare(str(lr), str(msi), method=method or old or "bicubic", options=options)
        prep_s = time.perf_counter() - start
        if method is None and old is None:  # the old GSA, fitted on the plan's normalised whole scene
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                lr_cube = read_whole(str(lr), "the benchmark")[1] / plan.radiometry.lr_level
                msi_cube = read_whole(str(msi), "the benchmark")[1] / plan.radiometry.msi_level
            fusion = old = EngineOldGSA(lr_cube, msi_cube, 3)
        start = time.perf_counter()
        result, _ = run_plan(plan, fusion, options, str(out))
        tiles_s = time.perf_counter() - start
        out.unlink()
        infer = result.timings.infer
        rows[label] = {"prepare": prep_s, "infer": infer, "tiles": tiles_s, "us_px": 1e6 * infer / pixels}
        print(f"throughput {label}: {rows[label]}", flush=True)
    ref = rows["old GSA (block-mean fit)"]["infer"]
    lines = ["| method | prepare s | tile compute s | µs / output px | compute / old GSA | all tiles s (read, "
             "compute, write) | prepare / all tiles |", "|---|---|---|---|---|---|---|"]
    for label, r in rows.items():
        lines.append(f"| {label} | {r['prepare']:.2f} | {r['infer']:.2f} | {r['us_px']:.2f} | {r['infer'] / ref:.2f} "
                     f"| {r['tiles']:.2f} | {r['prepare'] / r['tiles']:.2f} |")
    return lines, rows


# ----------------------------------------------------------------------------- tables


def quality_tables(results: Sequence[Result]) -> List[str]:
    """A PSNR summary (scene x method) and the full metrics table."""
    lines = ["PSNR (dB) per scene; auto: the method it chose; best classical in bold.", "",
             "| scene | true σ (HR px) / MTF | true shift (LR px) | bicubic | gsa | glp | subspace | subspace_bp | "
             "auto | student |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        c, best = r.case, best_classical(r)[0]
        cells = []
        for m in ("bicubic", *CLASSICAL):
            value = f"{r.scores[m]['psnr']:.2f}"
            cells.append(f"**{value}**" if m == best else value)
        cells.append(f"{r.scores['auto']['psnr']:.2f} ({r.reports['auto'].method})")
        cells.append(f"{r.scores['csakd']['psnr']:.2f}" if "csakd" in r.scores else "–")
        lines.append(f"| {c.name} | {c.sigma:.2f} / {c.mtf:.2f} | ({c.shift[0]:+.2f}, {c.shift[1]:+.2f}) | "
                     + " | ".join(cells) + " |")
    lines += ["", "All metrics (SAM in degrees; s: wall seconds of `fuse`, estimation included):", "",
              "| scene | method | PSNR | SAM | ERGAS | SSIM | s |", "|---|---|---|---|---|---|---|"]
    for r in results:
        for m, s in r.scores.items():
            label = f"auto → {r.reports[m].method}" if m == "auto" else ("student (csakd)" if m == "csakd" else m)
            lines.append(f"| {r.case.name} | {label} | {s['psnr']:.2f} | {s['sam']:.2f} | {s['ergas']:.2f} | "
                         f"{s['ssim']:.4f} | {r.seconds[m]:.1f} |")
    return lines


def estimation_table(results: Sequence[Result]) -> List[str]:
    """True against estimated PSF sigma and offset, as the engine reports them."""
    lines = ["| scene | true σ | est. σ | σ error | true shift | measured shift (applied?) | residual offset | "
             "total est. | offset error (LR px) | reliable | est. SNR (dB) | rank |", "|" + "---|" * 12]
    for r in results:
        c, rep = r.case, r.reports["auto"]
        d = rep.degradation
        applied, residual, total = estimated_shift(rep)
        sigma = d.get("sigma", np.nan)
        err = float(np.max(np.abs(np.subtract(total, c.shift))))
        snr = d.get("snr_lr_db")
        snr_text = "–" if snr is None else f"{snr:.1f}"
        lines.append(
            f"| {c.name} | {c.sigma:.3f} | {sigma:.3f} | {100 * (sigma - c.sigma) / c.sigma:+.1f} % | "
            f"({c.shift[0]:+.3f}, {c.shift[1]:+.3f}) | ({rep.shift[0]:+.3f}, {rep.shift[1]:+.3f}) "
            f"({'yes' if rep.shift_corrected else 'no'}) | ({residual[0]:+.3f}, {residual[1]:+.3f}) | "
            f"({total[0]:+.3f}, {total[1]:+.3f}) | {err:.3f} | {'yes' if d.get('reliable') else 'no'} | "
            f"{snr_text} | {d.get('rank')} |")
    return lines


def _verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def seeds_table(results: Sequence[Result]) -> List[str]:
    """PSNR of the classical methods and auto on every 35 dB noise realisation, auto's gap to the best."""
    lines = ["| scene | noise seed | gsa | glp | subspace | subspace_bp | auto | auto − best classical |",
             "|" + "---|" * 8]
    for r in results:
        if r.case.snr_db != NOISY_DB:
            continue
        gap = r.scores["auto"]["psnr"] - best_classical(r)[1]
        name = r.case.name.split(", noise seed")[0]
        lines.append(f"| {name} | {r.case.noise_seed} | "
                     + " | ".join(f"{r.scores[m]['psnr']:.2f}" for m in CLASSICAL)
                     + f" | {r.scores['auto']['psnr']:.2f} ({r.reports['auto'].method}) | {gap:+.2f} dB |")
    return lines


def targets(results: Sequence[Result], speed: Dict[str, Dict[str, float]]) -> Tuple[List[str], List[str]]:
    """The targets table and one summary sentence per target (``results``: every case, extra noise seeds too)."""
    extra = [r for r in results if r.case.noise_seed > 1]
    results = [r for r in results if r.case.noise_seed <= 1]
    lines = ["| target | scene | measured | limit | verdict |", "|---|---|---|---|---|"]
    summary = []
    sample = results[0]
    gsa = sample.scores["gsa"]["psnr"]
    lines.append(f"| (a) gsa on the bundled sample | {sample.case.name} | {gsa:.2f} dB | ≥ {GSA_SAMPLE_DB:.0f} dB | "
                 f"{_verdict(gsa >= GSA_SAMPLE_DB)} |")
    summary.append(f"(a) gsa on the bundled sample {gsa:.2f} dB: {_verdict(gsa >= GSA_SAMPLE_DB)}.")
    noisy = [r for r in results if r.case.snr_db is not None and r.case.snr_db <= NOISY_DB]
    misses = 0
    for r in noisy:
        gap = r.scores["subspace"]["psnr"] - r.scores["glp"]["psnr"]
        misses += gap < 0
        lines.append(f"| (b) subspace ≥ glp (noisy LR-HSI) | {r.case.name} | {gap:+.2f} dB | ≥ 0 | "
                     f"{_verdict(gap >= 0)} |")
    summary.append(f"(b) subspace ≥ glp on the {len(noisy)} 35 dB scenes: {len(noisy) - misses} of {len(noisy)}.")
    misses = 0
    for r in results:
        name, best = best_classical(r)
        gap = r.scores["auto"]["psnr"] - best
        misses += gap < -AUTO_MARGIN_DB
        lines.append(f"| (c) auto ≥ best classical − {AUTO_MARGIN_DB} dB | {r.case.name} | {gap:+.2f} dB "
                     f"(auto → {r.reports['auto'].method}, best {name}) | ≥ −{AUTO_MARGIN_DB} dB | "
                     f"{_verdict(gap >= -AUTO_MARGIN_DB)} |")
    extra_misses = sum(r.scores["auto"]["psnr"] - best_classical(r)[1] < -AUTO_MARGIN_DB for r in extra)
    summary.append(f"(c) auto within {AUTO_MARGIN_DB} dB of the best classical method: "
                   f"{len(results) - misses} of {len(results)} scenes; on the further noise realisations of the "
                   f"35 dB scenes (seeds {', '.join(map(str, EXTRA_NOISE_SEEDS))}): {len(extra) - extra_misses} of "
                   f"{len(extra)}.")
    sigma_ok = offset_ok = 0
    for r in results:
        rep = r.reports["auto"]
        sigma = rep.degradation.get("sigma", np.nan)
        rel = abs(sigma - r.case.sigma) / r.case.sigma
        err = float(np.max(np.abs(np.subtract(estimated_shift(rep)[2], r.case.shift))))
        sigma_ok += rel <= SIGMA_TOLERANCE
        offset_ok += err <= OFFSET_TOLERANCE
        lines.append(f"| (d) σ within {100 * SIGMA_TOLERANCE:.0f} %, offset within {OFFSET_TOLERANCE} LR px | "
                     f"{r.case.name} | σ {100 * rel:.1f} %, offset {err:.3f} px | ≤ {100 * SIGMA_TOLERANCE:.0f} %, "
                     f"≤ {OFFSET_TOLERANCE} | {_verdict(rel <= SIGMA_TOLERANCE and err <= OFFSET_TOLERANCE)} |")
    summary.append(f"(d) σ within {100 * SIGMA_TOLERANCE:.0f} % on {sigma_ok} of {len(results)} scenes, offset "
                   f"within {OFFSET_TOLERANCE} LR px on {offset_ok} of {len(results)}.")
    old, g, p = speed["old GSA (block-mean fit)"], speed["gsa (PSF-matched)"], speed["glp"]
    text = (f"gsa {g['us_px']:.2f}, glp {p['us_px']:.2f}, old GSA {old['us_px']:.2f} µs/px "
            f"(gsa ×{g['infer'] / old['infer']:.2f}, glp ×{p['infer'] / old['infer']:.2f} of old); prepare "
            f"{g['prepare']:.1f} s (gsa), {p['prepare']:.1f} s (glp) vs all tiles {g['tiles']:.1f} s, "
            f"{p['tiles']:.1f} s")
    lines.append(f"| (e) throughput (reported, no limit) | synthetic 224 bands | {text} | – | – |")
    summary.append(f"(e) {text}.")
    return lines, summary


def main() -> int:
    """Run every scene and the throughput scene; write the section (unless ``--quick``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one EnMAP tile, a small throughput scene, print only")
    args = parser.parse_args()
    np.seterr(all="ignore")
    header = machine()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        results = [run_case(case, folder) for case in scenes(folder, args.quick)]
        lr_side = 64 if args.quick else 171
        speed_lines, speed = throughput(folder, lr_side)
    target_lines, summary = targets(results, speed)
    main_results = [r for r in results if r.case.noise_seed <= 1]
    elapsed = time.perf_counter() - start
    side = lr_side * 3
    body = "\n".join([
        f"Machine: {header}. Date: {time.strftime('%Y-%m-%d')}. Produced by `bench/floor.py` in {elapsed:.0f} s; "
        "protocol in its docstring. Every number comes from `fuse` on GeoTIFFs (tiled, CPU, engine defaults) "
        "with the degradation estimated from the pair: no method is given the true PSF, shift or noise. Each "
        f"simulated scene has its own MTF (uniform {MTF_RANGE[0]}–{MTF_RANGE[1]}) and LR-HSI shift (uniform "
        f"±{MAX_SHIFT} LR px per axis, seeded by the scene name), shared by its clean and 35 dB versions. EnMAP "
        f"tiles: {', '.join(ENMAP_TEST_TILES[:1] if args.quick else ENMAP_TEST_TILES)} (the default model's test "
        "block, never trained on or used for checkpoint choice). The quality table holds one noise realisation "
        "per scene; the 35 dB scenes are repeated with further noise seeds for the classical methods and auto "
        "(\"Noise seeds\"), since the differences that decide auto's choice are under 1 dB.",
        "", "### Quality", "", *quality_tables(main_results),
        "", "### Noise seeds", "", *seeds_table(results),
        "", "### Degradation estimated by the engine",
        "", "Estimated shift = the reads' shift (`report.shift` when `report.shift_corrected`: networks and "
        "bicubic, every reliable shift) + `report.degradation['offset']`, what is left between the "
        "tiles' reads and the HR-MSI (for the classical methods the whole PSF-fit estimate, taken into their fit; "
        "`docs/classical.md`). σ in HR (output) pixels.", "", *estimation_table(main_results),
        "", f"### Throughput ({side}x{side} output px, 224 bands, 4 MSI bands, scale 3, synthetic)",
        "", "Each method runs as `fuse` does, its two phases timed: prepare (`csakd_qgis.fusion.plan.prepare`: "
        "grids, shift, sample, degradation estimate, fit) and all tiles (`run_plan`: read, compute, write); tile "
        "compute is the pipeline's `infer` time. The old GSA row's prepare is the engine's without a fit "
        "(planned as bicubic; the old GSA is then fitted on the plan's normalised whole scene, not timed).", "",
        *speed_lines,
        "", "### Targets", "", *target_lines, "", *[f"- {s}" for s in summary],
    ])
    publish(HEADING, body, write=not args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
