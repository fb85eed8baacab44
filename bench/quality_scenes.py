"""Quality benchmark on Indian Pines and the AVIRIS-NG chips: every method scored on a held-out test region.

Protocol (also written into docs/benchmarks.md with the tables this script produces):

* Indian Pines (``../shared/data/indian_pines``, AVIRIS 1992, 145x145x200
  uint16 radiance-like DN, water bands already removed): cropped to 144x144,
  divided by 10,000 (a constant, so the values are scaled DN, not
  reflectance).  Not georeferenced: it is given a synthetic 20 m grid in UTM
  16N for the GeoTIFFs the engine reads.  Sentinel-2A B2, B3, B4, B8 at scale 4
  (the HSI FWHMs are unknown, so each HSI band is a delta at its centre in the
  spectral responses, see :mod:`csakd_qgis.simulation.srf`).  Rows 0-95 train, rows
  96-111 validate (choose the checkpoint), rows 112-143 test, all 144 columns.
* AVIRIS-NG (``../shared/data/aviris_ng``, radiance, 425 bands): the headers
  carry no bad-band list and no band holds non-finite or zero values, so a
  band is bad when any pixel of either chip is non-finite or not positive, or
  its mean is below 2 % of the median band mean (the deep water-vapour
  absorptions near 1.38 and 1.88 um, where the radiance is noise and ERGAS,
  which divides by the band mean, would be dominated by them); bad bands get
  no weight in the MSI and are left out of every metric.  Scale 2, because the
  chips are tiny: at scale 3 the 25x30 chip's LR-HSI would be 8x10 pixels (its
  test part 4x10) and the 10x10 chip's 3x3.  Sentinel-2A B2, B3, B4, B8.  Training: the whole
  10x10 chip (not georeferenced, another flight) and rows 0-11, columns 0-19
  of the 25x30 chip (cropped to 24x30); validation: rows 0-11, columns 20-29;
  test: rows 12-23, all 30 columns (12x30 HR pixels, a 6x15 LR-HSI).  The
  AVIRIS-NG numbers come from 360 test pixels and a few hundred training
  pixels: they are noisy.
* Every region (training, validation, test) is cut from the reference first
  and simulated on its own, so no PSF footprint reaches across the split:
  Gaussian PSF with MTF 0.3 at Nyquist, decimation by the scale, Sentinel-2A
  measured responses (pyrsr), 40 dB SNR on both images (seeded per region).
  The test region is written as GeoTIFFs (reference, LR-HSI, HR-MSI) with
  ``csakd_qgis.simulation.simulate.simulate_rasters`` and every method is run on them
  through ``csakd_qgis.fusion.engine.fuse`` (no shift correction, CPU).
* Networks (project presets, ``csakd_qgis.training.train``; torch 1 thread,
  seed 0, AdamW with a cosine over the same number of steps for every
  network, batch 8, peak learning rate 1e-3, patch 24 on Indian Pines and as
  large as ``fit_patch`` allows on AVIRIS-NG (10), validation every eighth of
  the run):

  - teacher and KD student: one online co-training run, mode ``kd``;
  - student without distillation: mode ``student``, the same steps;
  - scene-adaptive student: mode ``student``, the same steps, on
    ``csakd_qgis.training.data.scene_data`` (Wald's protocol) of the test
    region's own LR-HSI and HR-MSI GeoTIFFs, without validation (the last
    weights): it never sees a reference.

* Metrics (``csakd_qgis.quality.evaluation.evaluate_rasters`` against the test
  reference, bad bands and nodata left out): PSNR (dB, peak = the reference's
  maximum over all bands, ``peak='range'``), SAM (degrees), ERGAS (ratio =
  the scale), SSIM.  Cost (``bench/quality.py``'s ``cost``): parameters,
  multiply-adds and CPU seconds (median of 3 after a warm-up, torch 1 thread)
  per 256x256 output tile.
* Targets of issue 6, computed from the numbers: KD student within 0.5 dB of
  its teacher (at most 30 % of its multiply-adds); KD student at least 1 dB
  above GSA with a lower SAM; KD student above the student trained without
  distillation at equal steps; scene-adaptive student above GSA.

Usage: ``python bench/quality_scenes.py [--steps 400] [--quick] [--work DIR]``.
``--quick`` trains 2 steps per network and prints the section without
writing docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from affine import Affine
from common import ROOT, machine, replace_section
from quality import cost, tile_side

from csakd_qgis.fusion.engine import fuse
from csakd_qgis.io.bands import BandInfo
from csakd_qgis.io.read import read_whole
from csakd_qgis.io.write import write_raster
from csakd_qgis.quality.evaluation import evaluate_rasters
from csakd_qgis.simulation.simulate import simulate_rasters
from csakd_qgis.training import TrainConfig, TrainingData, train
from csakd_qgis.training.data import scene_data

DATA = ROOT.parent / "shared" / "data"
HEADING = "## Quality on Indian Pines and AVIRIS-NG"
#: Per-band SNR (dB) of the simulated LR-HSI and HR-MSI.
SNR_DB = 40.0
#: MSI bands simulated from the references.
MSI_BANDS = ("B2", "B3", "B4", "B8")
#: A band whose mean is below this fraction of the median band mean is bad (AVIRIS-NG).
DARK_BAND_FRACTION = 0.02
#: Seed of the test region's simulated noise (training regions use 0, 1, ...; validation 1000, ...).
TEST_SEED = 2000


@dataclass(frozen=True)
class Source:
    """One hyperspectral cube the benchmark cuts its regions from.

    ``cube`` is ``(C, H, W)`` float64 in the units the tables are computed in;
    ``wavelengths_nm`` / ``fwhm_nm`` ``(C,)`` (``fwhm_nm`` None where unknown);
    ``transform`` maps (col, row) to ``crs`` coordinates (synthetic where the
    data are not georeferenced).
    """

    cube: np.ndarray
    wavelengths_nm: Tuple[float, ...]
    fwhm_nm: Optional[Tuple[float, ...]]
    crs: str
    transform: Affine


@dataclass(frozen=True)
class Crop:
    """A rectangle ``[rows[0], rows[1]) x [cols[0], cols[1])`` of the source named ``source``, in HR pixels."""

    source: str
    rows: Tuple[int, int]
    cols: Tuple[int, int]

    def cut(self, cube: np.ndarray) -> np.ndarray:
        """The crop of a ``(C, H, W)`` cube."""
        return cube[:, self.rows[0]:self.rows[1], self.cols[0]:self.cols[1]]


@dataclass(frozen=True)
class BenchScene:
    """A benchmark scene: its sources, good-band flags ``(C,)``, scale, requested HR patch and the split."""

    name: str
    sources: Dict[str, Source]
    good: Tuple[bool, ...]
    scale: int
    patch: int
    train: Tuple[Crop, ...]
    val: Tuple[Crop, ...]
    test: Crop


@dataclass(frozen=True)
class Prepared:
    """A scene ready to train and score on: training data and the test region's GeoTIFFs."""

    scene: BenchScene
    data: TrainingData
    reference: Path
    lr_hsi: Path
    hr_msi: Path


@dataclass(frozen=True)
class Trained:
    """A trained network file and its training run (steps, wall-clock seconds)."""

    path: Path
    method: str
    steps: int
    seconds: float


@dataclass(frozen=True)
class Row:
    """One line of a table: scores on the test region, cost per tile and training run (None for classical)."""

    label: str
    scores: Dict[str, float]
    params: int
    gmacs: float
    cpu_s: float
    steps: Optional[int]
    train_s: Optional[float]


# ----------------------------------------------------------------------------- scenes


def indian_pines(root: Path = DATA) -> BenchScene:
    """Indian Pines, 144x144 crop / 10,000, synthetic 20 m UTM 16N grid, scale 4, split by rows."""
    folder = root / "indian_pines"
    cube = np.load(folder / "Indian_pines_corrected.npy").transpose(2, 0, 1)[:, :144, :144] / 10000.0
    wavelengths = json.loads((folder / "wavelengths.json").read_text())["wavelengths_nm_from_tensorly_data_imports_py"]
    source = Source(cube.astype(np.float64), tuple(float(w) for w in wavelengths), None, "EPSG:32616",
                    Affine(20.0, 0.0, 500000.0, 0.0, -20.0, 4480000.0))
    return BenchScene("Indian Pines", {"indian_pines": source}, (True,) * cube.shape[0], 4, 24,
                      train=(Crop("indian_pines", (0, 96), (0, 144)),),
                      val=(Crop("indian_pines", (96, 112), (0, 144)),),
                      test=Crop("indian_pines", (112, 144), (0, 144)))


def bad_bands(cubes: Sequence[np.ndarray]) -> np.ndarray:
    """``(C,)`` True for bad bands of radiance cubes ``(C, H, W)`` sharing a band set.

    Bad: a non-finite or non-positive value in any cube, or a mean (over all
    cubes' pixels) below :data:`DARK_BAND_FRACTION` of the median band mean.
    """
    bad = np.zeros(cubes[0].shape[0], dtype=bool)
    for cube in cubes:
        bad |= ~(np.isfinite(cube) & (cube > 0)).all(axis=(1, 2))
    means = np.concatenate([c.reshape(c.shape[0], -1) for c in cubes], axis=1).mean(axis=1)
    return bad | ~(means >= DARK_BAND_FRACTION * np.median(means[~bad]))


def aviris_ng(root: Path = DATA) -> BenchScene:
    """The two AVIRIS-NG radiance chips at scale 2: train on the 10x10 chip and the top of the 25x30 one."""
    folder = root / "aviris_ng"
    sources = {}
    for key, name in (("georeferenced", "ang20160910t185702_2rdn_img"),
                      ("small", "ang20170323t202244_rdn_7000-7010")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the small chip has no geotransform
            info, cube, _ = read_whole(str(folder / name), "the benchmark")
        fwhm = tuple(b.fwhm_nm for b in info.bands)
        sources[key] = Source(cube.astype(np.float64), tuple(b.wavelength_nm for b in info.bands),
                              fwhm if all(f is not None for f in fwhm) else None,
                              str(info.crs) if info.crs else "EPSG:32611", info.transform)
    big = sources["georeferenced"]
    sources["georeferenced"] = replace(big, cube=big.cube[:, :24, :30])
    bad = bad_bands([s.cube for s in sources.values()])
    return BenchScene("AVIRIS-NG", sources, tuple(bool(b) for b in ~bad), 2, 10,
                      train=(Crop("georeferenced", (0, 12), (0, 20)), Crop("small", (0, 10), (0, 10))),
                      val=(Crop("georeferenced", (0, 12), (20, 30)),),
                      test=Crop("georeferenced", (12, 24), (0, 30)))


# ----------------------------------------------------------------------------- preparation


def _band_infos(source: Source, good: Sequence[bool]) -> List[BandInfo]:
    fwhm = source.fwhm_nm or (None,) * len(good)
    return [BandInfo(wavelength_nm=w, fwhm_nm=f, good=g) for w, f, g in zip(source.wavelengths_nm, fwhm, good)]


def _simulated(scene: BenchScene, crops: Sequence[Crop], seed0: int) -> TrainingData:
    """One TrainingData holding each crop, simulated on its own, as a training scene."""
    parts = []
    for number, crop in enumerate(crops):
        src = scene.sources[crop.source]
        parts.append(TrainingData.from_reference(
            crop.cut(src.cube), src.wavelengths_nm, src.fwhm_nm, scene.good, sensor="sentinel2", bands=MSI_BANDS,
            scale=scene.scale, val_fraction=0.0, snr_db=SNR_DB, seed=seed0 + number,
            name=f"{scene.name} {crop.source} rows {crop.rows[0]}-{crop.rows[1] - 1} "
                 f"cols {crop.cols[0]}-{crop.cols[1] - 1}"))
    return replace(parts[0], train=tuple(s for p in parts for s in p.train),
                   name="; ".join(p.name for p in parts))


def prepare(scene: BenchScene, folder: Path) -> Prepared:
    """Simulate the training and validation regions, and write the test region's GeoTIFFs into ``folder``.

    Files: ``reference.tif`` (the test crop, HR grid), ``lr_hsi.tif`` (scale
    times coarser, same origin) and ``hr_msi.tif`` (HR grid).
    """
    folder.mkdir(parents=True, exist_ok=True)
    data = _simulated(scene, scene.train, 0)
    validation = _simulated(scene, scene.val, 1000)
    data = replace(data, val=validation.train, name=f"training: {data.name}; validation: {validation.name}")
    test = scene.test
    src = scene.sources[test.source]
    crop_tif = folder / "test_crop.tif"
    write_raster(str(crop_tif), test.cut(src.cube), crs=src.crs,
                 transform=src.transform * Affine.translation(test.cols[0], test.rows[0]),
                 bands=_band_infos(src, scene.good), overwrite=True)
    paths = {name: folder / f"{name}.tif" for name in ("reference", "lr_hsi", "hr_msi")}
    simulate_rasters(str(crop_tif), str(paths["lr_hsi"]), str(paths["hr_msi"]), str(paths["reference"]),
                     sensor="sentinel2", bands=MSI_BANDS, scale=scene.scale, snr_db=SNR_DB, seed=TEST_SEED,
                     overwrite=True)
    crop_tif.unlink()
    return Prepared(scene, data, paths["reference"], paths["lr_hsi"], paths["hr_msi"])


# ----------------------------------------------------------------------------- training and scoring


def _config(mode: str, steps: int, patch: int) -> TrainConfig:
    return TrainConfig(mode=mode, preset="project", steps=steps, batch_size=8, patch=patch, learning_rate=1e-3,
                       val_every=max(steps // 8, 1), seed=0, device="cpu")


def train_networks(prep: Prepared, steps: int, folder: Path) -> Dict[str, Trained]:
    """Train the KD pair, the student without KD and the scene-adaptive student; key -> :class:`Trained`."""
    patch = prep.scene.patch
    out: Dict[str, Trained] = {}
    report = train(prep.data, _config("kd", steps, patch), folder / "kd_student.safetensors")
    out["teacher"] = Trained(Path(report.teacher_path), "teacher", report.steps, report.seconds)
    out["kd"] = Trained(Path(report.model_path), "student", report.steps, report.seconds)
    report = train(prep.data, _config("student", steps, patch), folder / "student_no_kd.safetensors")
    out["no_kd"] = Trained(Path(report.model_path), "student", report.steps, report.seconds)
    wald = scene_data(str(prep.lr_hsi), str(prep.hr_msi), scale=prep.scene.scale, val_fraction=0.0)
    report = train(wald, _config("student", steps, patch), folder / "scene_adaptive.safetensors")
    out["scene"] = Trained(Path(report.model_path), "student", report.steps, report.seconds)
    return out


def score(prep: Prepared, method: str, model: Optional[Path], folder: Path) -> Dict[str, float]:
    """PSNR, SAM, ERGAS, SSIM of ``method`` (with ``model``) on the test region."""
    out = folder / f"fused_{method}_{model.stem if model else 'none'}.tif"
    fuse(str(prep.lr_hsi), str(prep.hr_msi), str(out), method=method, model=str(model) if model else None,
         shift_correction=False, device="cpu", threads=1, overwrite=True)
    scores = evaluate_rasters(str(prep.reference), str(out), scale=prep.scene.scale).sections["reference"]
    return {k: float(scores[k]) for k in ("psnr", "sam", "ergas", "ssim")}


LABELS = (("bicubic", "bicubic"), ("gsa", "GSA"), ("teacher", "CSAKD teacher (KD co-training)"),
          ("kd", "CSAKD student (KD)"), ("no_kd", "student without KD, same steps"),
          ("scene", "scene-adaptive student (Wald, test inputs only)"))


def run_scene(scene: BenchScene, steps: int, folder: Path) -> Dict[str, Row]:
    """Prepare, train and score one scene; key (see :data:`LABELS`) -> :class:`Row`."""
    prep = prepare(scene, folder)
    nets = train_networks(prep, steps, folder)
    rows: Dict[str, Row] = {}
    costs: Dict[str, Tuple[int, float, float]] = {}
    for key, label in LABELS:
        if key in ("bicubic", "gsa"):
            rows[key] = Row(label, score(prep, key, None, folder), 0, float("nan"), float("nan"), None, None)
            continue
        net = nets[key]
        kind = "teacher" if key == "teacher" else "student"  # the students share one architecture
        if kind not in costs:
            costs[kind] = cost(net.path)
        rows[key] = Row(label, score(prep, net.method, net.path, folder), *costs[kind], net.steps, net.seconds)
        print(scene.name, label, rows[key], flush=True)
    return rows


# ----------------------------------------------------------------------------- report


def targets(rows: Dict[str, Row]) -> List[str]:
    """One line per issue-6 target: what was measured and whether it is met on this scene."""
    def p(key: str) -> float:
        return rows[key].scores["psnr"]

    def s(key: str) -> float:
        return rows[key].scores["sam"]

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    ratio = rows["kd"].gmacs / rows["teacher"].gmacs
    gap = p("kd") - p("teacher")
    over_gsa = p("kd") - p("gsa")
    over_no_kd = p("kd") - p("no_kd")
    scene = p("scene") - p("gsa")
    return [
        f"- KD student within 0.5 dB of its teacher at ≤ 30 % of its multiply-adds: {gap:+.2f} dB "
        f"({p('kd'):.2f} vs {p('teacher'):.2f}), {100 * ratio:.0f} % of the MACs: "
        f"{verdict(gap >= -0.5 and ratio <= 0.3)}.",
        f"- KD student ≥ GSA + 1 dB with a lower SAM: {over_gsa:+.2f} dB, SAM {s('kd'):.2f}° vs {s('gsa'):.2f}°: "
        f"{verdict(over_gsa >= 1.0 and s('kd') < s('gsa'))}.",
        f"- KD student better than the same student without KD at equal steps: {over_no_kd:+.2f} dB, "
        f"SAM {s('kd'):.2f}° vs {s('no_kd'):.2f}°: {verdict(over_no_kd > 0)} (judged on PSNR).",
        f"- Scene-adaptive student above GSA (no reference seen): {scene:+.2f} dB, SAM {s('scene'):.2f}° vs "
        f"{s('gsa'):.2f}°: {verdict(scene > 0)} (judged on PSNR).",
    ]


def table(scene: BenchScene, rows: Dict[str, Row]) -> List[str]:
    """Markdown table lines for one scene."""
    side = tile_side(scene.scale)
    lines = [f"| method | PSNR (dB) | SAM (°) | ERGAS | SSIM | parameters | G MACs / {side}² tile | "
             "CPU s / tile (1 thread) | training steps | training s (1 thread) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for key, _ in LABELS:
        r = rows[key]
        sc = r.scores
        cells = [f"{sc['psnr']:.2f}", f"{sc['sam']:.2f}", f"{sc['ergas']:.2f}", f"{sc['ssim']:.4f}",
                 f"{r.params:,}" if r.params else "–", f"{r.gmacs:.1f}" if np.isfinite(r.gmacs) else "–",
                 f"{r.cpu_s:.2f}" if np.isfinite(r.cpu_s) else "–",
                 str(r.steps) if r.steps is not None else "–",
                 f"{r.train_s:.0f}" if r.train_s is not None else "–"]
        lines.append(f"| {r.label} | " + " | ".join(cells) + " |")
    return lines


SPLITS = {
    "Indian Pines": "144x144 crop of the 145x145 scene, / 10,000 (scaled radiance-like DN), synthetic 20 m UTM 16N "
                    "grid, Sentinel-2A B2/B3/B4/B8 (HSI bands as deltas: FWHM unknown), scale 4. Train rows "
                    "0-95, validation rows 96-111, **test rows 112-143** (32x144 HR, 8x36 LR pixels), all "
                    "columns.",
    "AVIRIS-NG": "radiance, 425 bands of which {bad} are bad (non-positive, or mean below 2 % of the median band "
                 "mean: the deep water-vapour absorptions), Sentinel-2A B2/B3/B4/B8, scale 2 (at scale 3 the 25x30 "
                 "chip's LR-HSI would be 8x10 pixels, its test part 4x10, the 10x10 chip's 3x3). Train: the "
                 "10x10 chip and rows 0-11, "
                 "columns 0-19 of the 25x30 chip (cropped to 24x30); validation rows 0-11, columns 20-29; "
                 "**test rows 12-23**, all 30 columns (12x30 HR, 6x15 LR pixels). With 360 test pixels and "
                 "about 340 training pixels these numbers are noisy.",
}


def section(results: Dict[str, Tuple[BenchScene, Dict[str, Row]]], steps: int, header: str,
            total_s: float) -> str:
    """The markdown section: protocol, a table and the targets for each scene."""
    parts = [
        f"Machine: {header}. Produced by `bench/quality_scenes.py --steps {steps}` in {total_s / 60:.0f} min; "
        "the protocol is in its docstring. No GPU was lent to this session: no GPU s / tile column.",
        "",
        "Protocol in short: each region (training, validation, test) is cut from the reference and simulated "
        "on its own (Gaussian PSF, MTF 0.3 at Nyquist, decimation by the scale, Sentinel-2A measured "
        "responses, 40 dB SNR), so train, validation and test never share a pixel or a PSF footprint; every "
        "row is scored on the test region through `csakd_qgis.fusion.engine.fuse` and "
        "`csakd_qgis.quality.evaluation.evaluate_rasters` (PSNR peak = the reference's maximum, SAM in degrees, ERGAS "
        "with the scale, SSIM; bad bands left out). Networks: project presets, "
        f"{steps} steps each, batch 8, peak learning rate 1e-3 (cosine), seed 0, torch 1 thread, checkpoint "
        "chosen on the validation region (PSNR with per-band peak). The teacher and the KD student come from "
        "one co-training run (its time is given on both rows); the student without KD trains alone for the "
        "same steps; the scene-adaptive student trains for the same steps on Wald pairs of the test region's "
        "own LR-HSI and HR-MSI (`training_io.scene_data`, no validation, last weights), never on a reference. "
        "Cost: parameters, multiply-adds and CPU seconds (median of 3, 1 thread) per 256x256 output tile; the "
        "three students share one architecture, so their cost was measured once.",
    ]
    for scene, rows in results.values():
        bad = len(scene.good) - sum(scene.good)
        parts += ["", f"### {scene.name}", "", SPLITS[scene.name].format(bad=bad), "", *table(scene, rows), "",
                  "Targets on this scene (computed from the table):", "", *targets(rows)]
    return "\n".join(parts)


def main() -> int:
    """Run the protocol on both scenes and write (or, with ``--quick``, print) the section."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400, help="training steps per network (default 400)")
    parser.add_argument("--quick", action="store_true",
                        help="2 steps per network; print the section instead of writing docs/benchmarks.md")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep the rasters and models in this folder (default: a temporary one)")
    args = parser.parse_args()
    steps = 2 if args.quick else args.steps
    torch.set_num_threads(1)
    np.seterr(all="ignore")
    header = machine()
    start = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        for scene in (indian_pines(), aviris_ng()):
            folder = work / scene.name.replace(" ", "_").lower()
            results[scene.name] = (scene, run_scene(scene, steps, folder))
    body = section(results, steps, header, time.perf_counter() - start)
    if not args.quick:
        replace_section(HEADING, body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
