"""Issue 14: a CSAKD network as a learned correction on a classical base, measured on held-out data.

Data split (the bundled model's, ``scripts/train_default_model.py``): the 8
remaining EnMAP Potsdam tiles train, tiles 64_32 and 96_128 choose the
checkpoint, the 4 tiles of the demo block (160_128, 192_128, 160_160,
192_160) and the bundled sample made from them test.  Scale 3, Sentinel-2A
B2, B3, B4, B8.

* Training: fresh degradations every step
  (:mod:`csakd_qgis.training.correction`: SNR 30-45 dB, PSF sigma x0.8-1.2
  of the sensor's, shift up to 0.25 LR pixel, rotations and flips, random
  30x30 crops), loss: minus the mean band PSNR to the reference, plus 0.1 x the
  same for the LR and the MSI consistency (``band_error_db``).
* Validation: the 2 validation tiles (30x30) simulated by ``simulate_pair``
  at 35, 40 and 45 dB with the nominal PSF (6 pairs); best mean PSNR wins,
  step 0 (the untrained network, i.e. the base) included.
* Test, never seen: the bundled sample files as they are (40 dB, the
  cloud's pixels not scored), the sample's reference re-simulated at 35 dB,
  and the 4 test tiles (30x30) at 40 and 35 dB.  The classical base is fitted
  on each test pair with the true PSF and a zero offset.

``--whole-scenes`` trains in the engine's regime: every base is fitted on a
whole simulated scene (the 8 training tiles as one 2 x 4 mosaic, Indian
Pines' training rows whole) and the training crops are cut from it;
validation is the 2 validation tiles side by side, and the test groups are
only images fitted whole (the 4 test tiles appear as the sample).

The base is PSF-matched GSA (``--base gsa``, the default), GLP or the
engine's ``subspace_bp``; the bar is the best of the engine's classical
methods (:data:`BAR_METHODS`) on the same pairs.

Usage: ``python scripts/train_correction.py --steps 300 --seeds 0 1 2 [--base NAME] [--write]``
(``--write``: the table into docs/benchmarks.md, one section per base).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import quality_scenes  # noqa: E402
from common import machine, mean_std, replace_section  # noqa: E402

from csakd_qgis.classical import fit_method, fuse_whole  # noqa: E402
from csakd_qgis.io.read import read_whole  # noqa: E402
from csakd_qgis.models import macs_per_pixel, preset  # noqa: E402
from csakd_qgis.models.correction import CorrectionNet, correction_config, correction_macs_per_pixel  # noqa: E402
from csakd_qgis.simulation.degradation import crop_to_scale, psf_sigma, simulate_pair  # noqa: E402
from csakd_qgis.simulation.srf import sensor_bands, spectral_response_matrix  # noqa: E402
from csakd_qgis.training.correction import (  # noqa: E402
    Example,
    Reference,
    Scene,
    correct,
    mosaic,
    prepare,
    score,
    simulate_fast,
    train_correction,
)

DATA = ROOT.parent / "shared" / "data" / "enmap_potsdam"
#: Indian Pines rows (of its 145) that ``--indian-pines`` trains on, and the held-out rows it tests on.
IP_TRAIN_ROWS, IP_TEST_ROWS = (0, 96), (111, 144)
SAMPLE = ROOT / "resources" / "sample"
TEST_TILES = ("160_128", "192_128", "160_160", "192_160")
VAL_TILES = ("64_32", "96_128")
BANDS = ("B2", "B3", "B4", "B8")
SCALE = 3
#: The section of docs/benchmarks.md each base's table goes to.
HEADINGS = {"gsa": "## Learned correction on the classical floor (issue 14)",
            "glp": "## Learned correction on GLP (issue 14)",
            "subspace_bp": "## Learned correction on subspace_bp (issue 14)"}


def _read(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info, cube, _ = read_whole(str(path), "the correction experiment")
    good = np.array([b.good for b in info.bands])
    wl, fwhm = [b.wavelength_nm for b in info.bands], [b.fwhm_nm for b in info.bands]
    return cube.astype(np.float64), wl, fwhm, good


def reference(path: Path, crop: int = 0) -> Tuple[Reference, list, list]:
    """The tile (bad bands zero; cropped to ``crop`` pixels when given) and its S2 response matrix."""
    cube, wl, fwhm, good = _read(path)
    cube = np.where(good[:, None, None], np.nan_to_num(cube), 0.0)
    if crop:
        cube = cube[:, :crop, :crop]
    srf = spectral_response_matrix(wl, fwhm, sensor_bands("sentinel2", BANDS), good=good)
    return Reference(path.stem.replace("enmap_potsdam_tile_", ""), cube, good, srf), wl, fwhm


def simulated(ref: Reference, wl: list, fwhm: list, snr: float, base: str, seed: int) -> Example:
    """``ref`` through ``simulate_pair`` (nominal PSF, no shift), prepared with the base fitted on it."""
    sigma = psf_sigma(SCALE)
    pair = simulate_pair(ref.cube, wl, fwhm, ref.good, bands=BANDS, scale=SCALE, sigma=sigma, snr_db=snr, seed=seed)
    return prepare(f"{ref.name}, {snr:.0f} dB", pair.lr_hsi, pair.hr_msi, pair.reference, ref.good, pair.srf,
                   SCALE, sigma, (0.0, 0.0), base, 16)


def simulated_from(ref: Reference, snr: float, base: str, seed: int) -> Example:
    """``ref`` (cropped to the scale) simulated with its own response matrix (nominal PSF, no shift), prepared."""
    cube = crop_to_scale(ref.cube, SCALE)
    lr, msi = simulate_fast(cube, ref.srf, SCALE, psf_sigma(SCALE), (0.0, 0.0), snr, np.random.default_rng(seed))
    return prepare(f"{ref.name}, {snr:.0f} dB", lr, msi, cube, ref.good, ref.srf, SCALE, psf_sigma(SCALE),
                   (0.0, 0.0), base, 16)


def indian_pines() -> Tuple[List[Reference], Reference, Reference]:
    """AVIRIS Indian Pines (200 bands, DN / 10000): its top rows for training and its held-out bottom rows.

    Returns the training rows cut into 2 x 3 chunks of 48 x 48 pixels (so
    that a chunk is drawn about as often as an EnMAP tile), the same rows
    whole (96 x 144), and the test rows (33 x 144).
    """
    source = quality_scenes.indian_pines().sources["indian_pines"]  # 144 x 144, DN / 10000
    cube, wl = source.cube, list(source.wavelengths_nm)
    good = np.ones(cube.shape[0], dtype=bool)
    srf = spectral_response_matrix(wl, None, sensor_bands("sentinel2", BANDS), good=good)
    (a, b), (c, d) = IP_TRAIN_ROWS, IP_TEST_ROWS
    chunks = [Reference(f"Indian Pines {y}_{x}", np.ascontiguousarray(cube[:, y:y + 48, x:x + 48]), good, srf)
              for y in range(a, b, 48) for x in range(0, 144, 48)]
    return (chunks, Reference(f"Indian Pines rows {a}-{b - 1}", np.ascontiguousarray(cube[:, a:b]), good, srf),
            Reference("Indian Pines test rows", np.ascontiguousarray(cube[:, c:d]), good, srf))


def whole_scene_sources(train: List[Reference], ip_rows: Optional[Reference]) -> List[Scene]:
    """``--whole-scenes``: the training tiles as one mosaic (2 rows of 4), Indian Pines' training rows as another."""
    scenes = [Scene("EnMAP training tiles", tuple(train), columns=len(train) // 2)]
    return scenes + ([Scene(ip_rows.name, (ip_rows,))] if ip_rows is not None else [])


def validation_set(base: str, whole: bool) -> List[Example]:
    """The validation tiles at 35, 40 and 45 dB: each tile alone, or (``whole``) the two side by side, fitted whole."""
    refs = [reference(DATA / f"enmap_potsdam_tile_{t}.tif", 30) for t in VAL_TILES]
    if whole:
        (first, wl, fwhm), (second, _, _) = refs
        refs = [(dataclasses.replace(first, name="validation tiles", cube=mosaic([first.cube, second.cube], 2)),
                 wl, fwhm)]
    return [simulated(r, w, f, snr, base, 100 + i) for i, (r, w, f) in enumerate(refs) for snr in (35.0, 40.0, 45.0)]


def bundled(base: str) -> Example:
    """The bundled sample files (40 dB, cloud in the MSI not scored)."""
    ref, wl, fwhm = reference(SAMPLE / "reference_hr_hsi.tif")
    lr, _, _, _ = _read(SAMPLE / "enmap_lr_hsi.tif")
    msi, _, _, _ = _read(SAMPLE / "s2_hr_msi.tif")
    msi = crop_to_scale(msi, SCALE)
    valid = np.isfinite(msi).all(axis=0)
    lr = np.where(ref.good[:, None, None], lr, np.nan)
    return prepare("bundled sample files", lr, msi, crop_to_scale(ref.cube, SCALE), ref.good, ref.srf, SCALE,
                   psf_sigma(SCALE), (0.0, 0.0), base, 16, valid)


def test_sets(base: str, ip_test: Optional[Reference] = None, tiles: bool = True) -> Dict[str, List[Example]]:
    """The held-out test groups (with ``ip_test``, Indian Pines' held-out rows at 40 and 35 dB too).

    ``tiles``: also the 4 test tiles, each simulated and fitted alone (the
    sample is the four of them side by side, fitted whole).
    """
    sample_ref, wl, fwhm = reference(SAMPLE / "reference_hr_hsi.tif")
    groups = {"bundled sample files (40 dB)": [bundled(base)],
              "sample re-simulated, 35 dB": [simulated(sample_ref, wl, fwhm, 35.0, base, 1)]}
    if tiles:
        refs = [reference(DATA / f"enmap_potsdam_tile_{t}.tif", 30) for t in TEST_TILES]
        groups["4 test tiles, 40 dB"] = [simulated(r, w, f, 40.0, base, 2 + i) for i, (r, w, f) in enumerate(refs)]
        groups["4 test tiles, 35 dB"] = [simulated(r, w, f, 35.0, base, 6 + i) for i, (r, w, f) in enumerate(refs)]
    if ip_test is not None:
        groups.update({f"Indian Pines held-out rows, {snr:.0f} dB": [simulated_from(ip_test, snr, base, 20 + i)]
                       for i, snr in enumerate((40.0, 35.0))})
    return groups


#: Table names of the bases ``--base`` offers (:data:`csakd_qgis.training.correction.BASES`).
BASE_NAMES = {"gsa": "PSF-matched GSA", "glp": "GLP", "subspace_bp": "subspace_bp"}
#: The engine's classical methods whose best is the bar (``fit_method`` names).
BAR_METHODS = ("gsa", "glp", "subspace", "subspace_bp")


def strongest_classical(examples: List[Example]) -> Tuple[str, Dict[str, float]]:
    """``(name, score)`` of the best of the engine's classical methods (:data:`BAR_METHODS`) on ``examples``.

    Each is fitted as :func:`prepare` fits the base (the pair's own PSF and
    offset; pixels outside ``valid`` left out of the fit) and scored like the
    correction.
    """
    scores = {}
    for name in BAR_METHODS:
        fused = []
        for e in examples:
            fit_msi = np.where(e.valid[None], e.msi, np.nan)
            model = fit_method(name, e.lr, fit_msi, SCALE, e.sigma, e.offset, [bool(g) for g in e.good]).model
            fused.append(fuse_whole(model, e.lr, e.msi))
        scores[name] = score(examples, fused)
    best = max(scores, key=lambda n: scores[n]["psnr"])
    return best, scores[best]


def complement_only(examples: List[Example], gain: float) -> Dict[str, float]:
    """Score of the base with only the network's complement gain applied (its residual left out)."""
    fused = []
    for e in examples:
        base = torch.from_numpy(e.base)[None]
        outside = e.basis.centred(base) - e.basis.spectra(e.basis.coefficients(base))
        fused.append(base.index_copy(1, e.basis.good, base.index_select(1, e.basis.good) + gain * outside)[0].numpy())
    return score(examples, fused)


def regions(examples: List[Example], margin: int) -> Dict[str, List[Example]]:
    """``examples`` scored only within ``margin`` output pixels of their border (``border``), or only farther in."""
    parts: Dict[str, List[Example]] = {"border": [], "inside": []}
    for e in examples:
        ring = np.ones(e.valid.shape, dtype=bool)
        ring[margin:ring.shape[0] - margin, margin:ring.shape[1] - margin] = False
        parts["border"].append(dataclasses.replace(e, valid=e.valid & ring))
        parts["inside"].append(dataclasses.replace(e, valid=e.valid & ~ring))
    return parts


def _rows(groups: list) -> list:
    """Table rows of ``groups`` ``(label, base score, (bar name, bar score), run scores, complement-only scores)``."""
    rows = []
    for label, b, (bar_name, bar), got, alone in groups:
        p = [x["psnr"] for x in got]
        rows.append(f"| {label} | {bar_name} {bar['psnr']:.2f} / {bar['sam']:.2f} | {b['psnr']:.2f} / {b['sam']:.2f} "
                    f"| {mean_std(p)} / {mean_std([x['sam'] for x in got])} | {mean_std([v - b['psnr'] for v in p])} "
                    f"| {mean_std([x['psnr'] - b['psnr'] for x in alone])} "
                    f"| **{mean_std([v - bar['psnr'] for v in p])}** |")
    return rows


def main() -> int:
    """Train every seed, score the test groups, print (and with --write store) the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--base", choices=tuple(BASE_NAMES), default="gsa")
    parser.add_argument("--val-every", type=int, default=50)
    parser.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (cosine decay)")
    parser.add_argument("--loss-margin", type=int, default=0,
                        help="output px along each training crop's border left out of the fit to the reference")
    parser.add_argument("--edge-margin", type=int, default=12,
                        help="width (output px) of the border ring the gain is also reported for")
    parser.add_argument("--indian-pines", action="store_true",
                        help="also train on Indian Pines' top rows and test on its held-out bottom rows")
    parser.add_argument("--whole-scenes", action="store_true",
                        help="fit each training base on a whole simulated scene (the tiles' mosaic, Indian Pines' "
                             "rows) and cut the crops from it, validate on the validation tiles side by side, and "
                             "test only images fitted whole")
    parser.add_argument("--save-runs", metavar="JSON", help="also write the seeds' results to this file")
    parser.add_argument("--from-runs", metavar="JSON", nargs="+", default=[],
                        help="train nothing: make the table from results saved by --save-runs (e.g. one file per "
                             "seed, trained side by side with the same other options)")
    parser.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    header = machine()

    excluded = set(TEST_TILES) | set(VAL_TILES)
    tiles = [reference(p)[0] for p in sorted(DATA.glob("enmap_potsdam_tile_*.tif"))
             if p.stem.replace("enmap_potsdam_tile_", "") not in excluded]
    val = validation_set(args.base, args.whole_scenes)
    ip_rows = ip_test = None
    train: List[Union[Reference, Scene]] = list(tiles)
    if args.indian_pines:
        chunks, ip_rows, ip_test = indian_pines()
        train += chunks
    if args.whole_scenes:
        train = list(whole_scene_sources(tiles, ip_rows))
    tests = test_sets(args.base, ip_test, tiles=not args.whole_scenes)
    cfg = correction_config(16, len(BANDS), SCALE)

    base_val = score(val, [e.base for e in val])
    base_test = {g: score(ex, [e.base for e in ex]) for g, ex in tests.items()}
    parts = {g: regions(ex, args.edge_margin) for g, ex in tests.items()}
    base_parts = {g: {k: score(rex, [e.base for e in rex]) for k, rex in parts[g].items()} for g in tests}
    bars = {"validation": strongest_classical(val), **{g: strongest_classical(ex) for g, ex in tests.items()}}
    print(f"{args.base} base: validation {base_val}; test {base_test}; strongest classical {bars}", flush=True)

    runs = [r for path in args.from_runs for r in json.loads(Path(path).read_text())]
    for seed in [] if args.from_runs else args.seeds:
        torch.manual_seed(seed)
        net = CorrectionNet(cfg)
        start = time.time()
        tag = f"seed {seed}: "
        run = train_correction(net, train, val, steps=args.steps, batch_size=args.batch, lr_rate=args.lr,
                               base_method=args.base,
                               seed=seed, val_every=args.val_every, loss_margin=args.loss_margin,
                               log=lambda m, t=tag: print(t + m, flush=True))
        fused = {g: correct(net, ex) for g, ex in tests.items()}
        test = {g: score(ex, fused[g]) for g, ex in tests.items()}
        where = {g: {k: score(rex, fused[g]) for k, rex in parts[g].items()} for g in tests}
        selected_gain = net.complement_gain.item()
        alone = {"validation": complement_only(val, selected_gain),
                 **{g: complement_only(ex, selected_gain) for g, ex in tests.items()}}
        net.load_state_dict(run.last_state)
        last_test = {g: score(ex, correct(net, ex)) for g, ex in tests.items()}
        runs.append({"seed": seed, "best_step": run.best_step, "val": run.best_val, "test": test, "alone": alone,
                     "where": where,
                     "last_val": run.curve[-1], "last_test": last_test,
                     "seconds": time.time() - start, "gain": net.complement_gain.item()})
        print(f"seed {seed}: best step {run.best_step}, val {run.best_val}, test {test}, g {selected_gain:+.4f}; "
              f"last step: val {run.curve[-1]}, test {last_test}, g {net.complement_gain.item():+.4f}; "
              f"{run.seconds:.0f} s", flush=True)

    if args.from_runs:
        args.seeds = [r["seed"] for r in runs]
    if args.save_runs:
        Path(args.save_runs).write_text(json.dumps(runs, indent=1))
    student = macs_per_pixel(preset("project_student", 224, len(BANDS), SCALE))
    corr = correction_macs_per_pixel(cfg, int(tiles[0].good.sum()))
    text = table(args, base_val, base_test, bars, runs, student, corr, header, base_parts)
    print(text)
    if args.write:
        heading = HEADINGS[args.base]
        if args.loss_margin:
            heading = heading.replace(" (issue 14)", f", {args.loss_margin} px loss margin (issue 14)")
        if args.indian_pines:
            heading = heading.replace(" (issue 14)", ", with Indian Pines in training (issue 14)")
        if args.whole_scenes:
            heading = heading.replace(" (issue 14)", ", bases fitted on whole scenes (issue 14)")
        replace_section(heading, text)
    return 0



def _whole_scene_protocol(args) -> str:
    """What ``--whole-scenes`` trains on, for the table's protocol line."""
    return ("30 x 30 crops, 4 per simulation, cut from whole simulated scenes with the base and the basis fitted on "
            "the whole scene, as the engine fits on the scene (`draw_scene`): a mosaic of the 8 EnMAP training tiles "
            "(2 rows of 4, each tile rotated and flipped at random, shuffled)"
            + (" or Indian Pines' rows 0-95 (96 x 144)" if args.indian_pines else "")
            + "; the LR consistency term leaves out the LR pixels whose PSF reaches outside the crop; the test "
            "images are fitted whole, so the 4 test tiles appear only as the sample")


def table(args, base_val, base_test, bars, runs, student_macs, corr_macs, header, base_parts) -> str:
    """The markdown section: protocol, per-group means over seeds, the gain by region, per-seed rows, cost."""
    name = BASE_NAMES[args.base]
    lines = [
        f"`scripts/train_correction.py --steps {args.steps} --batch {args.batch} --seeds "
        f"{' '.join(map(str, args.seeds))} --base {args.base} --lr {args.lr:g} --loss-margin {args.loss_margin}"
        f"{' --indian-pines' if args.indian_pines else ''}{' --whole-scenes' if args.whole_scenes else ''}` "
        f"on {header}.",
        "",
        f"A project-student-sized DTS network (nf 24, gc 12, blocks 0-2-2-1, `csa_pooled`, light head) on the "
        f"rank-16 PCA coefficients of the scene's LR-HSI predicts a residual on {name} "
        "(`csakd_qgis/models/correction.py`); trained on "
        + (_whole_scene_protocol(args) if args.whole_scenes else "8 EnMAP tiles"
           + (" and 6 chunks (48 x 48) of Indian Pines' rows 0-95" if args.indian_pines else ""))
        + " with a fresh degradation every step (SNR "
        "30-45 dB, PSF sigma x0.8-1.2, shift up to 0.25 LR pixel, rotations, flips), loss minus the mean band PSNR "
        "(`band_error_db`) + 0.1 x the same for the LR and the MSI "
        "consistency; the checkpoint with the best PSNR on the 2 validation tiles "
        + ("side by side, fitted whole " if args.whole_scenes else "")
        + "(35/40/45 dB) is kept, the "
        "base itself (step 0) included. Test data never seen in training or selection. PSNR: mean over good "
        "bands, peak = the reference's maximum; SAM in degrees. Mean ± standard deviation over the seeds; "
        "every seed has the same step budget. Every method gets the same degradation: the simulation's PSF and "
        f"offset. `strongest classical` = the best PSNR of the engine's {', '.join(BAR_METHODS)} on the group; "
        "`g alone` = the base with only the network's complement gain (its residual left out).",
        "",
        f"| data | strongest classical PSNR / SAM | {name} PSNR / SAM | + correction PSNR / SAM | gain over {name} "
        "| g alone: gain over it | gain over the strongest |",
        "|---|---|---|---|---|---|---|",
    ]
    val_label = "validation (2 tiles side by side x 3 SNR)" if args.whole_scenes else "validation (2 tiles x 3 SNR)"
    groups = [(val_label, base_val, bars["validation"], [r["val"] for r in runs],
               [r["alone"]["validation"] for r in runs])]
    groups += [(g, base_test[g], bars[g], [r["test"][g] for r in runs], [r["alone"][g] for r in runs])
               for g in base_test]
    lines += _rows(groups)
    lines += ["", f"The last step's weights (step {args.steps}, not selected; for what training does):", "",
              f"| data | {name} PSNR | last-step PSNR | gain dB | {name} SAM | last-step SAM |",
              "|---|---|---|---|---|---|"]
    last = [(val_label, base_val, [{"psnr": r["last_val"][2], "sam": r["last_val"][3]}
                                                         for r in runs])]
    last += [(g, base_test[g], [r["last_test"][g] for r in runs]) for g in base_test]
    for label, b, got in last:
        p = [x["psnr"] for x in got]
        lines.append(f"| {label} | {b['psnr']:.2f} | {mean_std(p)} | {mean_std([v - b['psnr'] for v in p])} | "
                     f"{b['sam']:.2f} | {mean_std([x['sam'] for x in got])} |")
    lines += ["", f"Where the selected weights gain: within {args.edge_margin} output px of each image's border, and "
              "farther in (PSNR over those pixels only; gain over the base):", "",
              f"| data | {name} border | gain at the border | {name} inside | gain inside |", "|---|---|---|---|---|"]
    for g, b in base_parts.items():
        lines.append(f"| {g} | {b['border']['psnr']:.2f} | "
                     f"{mean_std([r['where'][g]['border']['psnr'] - b['border']['psnr'] for r in runs])} | "
                     f"{b['inside']['psnr']:.2f} | "
                     f"{mean_std([r['where'][g]['inside']['psnr'] - b['inside']['psnr'] for r in runs])} |")
    lines += ["", "| seed | best step | val gain dB | test gains dB (selected; rows above) | last-step g "
              "(complement gain - 1) | seconds |", "|---|---|---|---|---|---|"]
    for r in runs:
        gains = ", ".join(f"{r['test'][g]['psnr'] - base_test[g]['psnr']:+.2f}" for g in base_test)
        lines.append(f"| {r['seed']} | {r['best_step']} | {r['val']['psnr'] - base_val['psnr']:+.2f} | {gains} | "
                     f"{r['gain']:+.3f} | {r['seconds']:.0f} |")
    lines += ["", f"Cost per HR output pixel (224 bands, 4 MSI bands, scale 3): the correction network "
              f"{corr_macs / 1e3:.0f} k multiply-adds on top of the classical base, against {student_macs / 1e3:.0f} k "
              "for the bundled student (`macs_per_pixel`, project_student)."]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
