"""How much a classical method loses when it is fitted on a 30 x 30 tile alone (issue 14).

The learned-correction experiment (``scripts/train_correction.py``) trains,
selects and mostly tests on 30 x 30-pixel crops (10 x 10 LR pixels), and
fits its classical base on each crop.  The engine fits on a sample of the
whole scene.  This script separates the two effects on the same pixels and
the same noise: the bundled sample's reference (63 x 63, 224 EnMAP bands,
made from the four test tiles) is simulated once per SNR and seed (scale 3,
the nominal PSF, no shift, Sentinel-2 B2, B3, B4, B8; as
``train_correction.simulated``), and each of its four 30 x 30 quadrants
(LR pixels 0-9 and 11-20 each way) is scored three ways:

* ``tile alone``: the method fitted on the quadrant's own pair and run on it
  (what the experiment's crops get);
* ``scene fit, tile run``: fitted on the whole 63 x 63 pair, run on the
  quadrant's pair alone (its edges mirrored, as a crop's are);
* ``scene``: fitted and run on the whole pair, the quadrant cut out.

PSNR (dB, peak = the reference's maximum over the quadrant, good bands)
averaged over the four quadrants; mean ± std over the noise seeds.

Usage: ``python bench/fit_size.py [--methods subspace_bp gsa] [--seeds 1 2 3] [--write]``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Dict, List

import numpy as np
from common import ROOT, machine, mean_std, publish

sys.path.insert(0, str(ROOT / "scripts"))

import train_correction as experiment  # noqa: E402

from csakd_qgis.classical import fit_method, fuse_whole  # noqa: E402
from csakd_qgis.quality.metrics import psnr  # noqa: E402

HEADING = "## Classical methods fitted on a 30 x 30 tile alone (issue 14)"
#: LR offsets of the four 10 x 10 LR-pixel quadrants of the 21 x 21 LR sample.
QUADRANTS = ((0, 0), (0, 11), (11, 0), (11, 11))
TILE = 10
ARMS = ("tile alone", "scene fit, tile run", "scene")


def quadrant_scores(method: str, snr: float, seed: int) -> Dict[str, float]:
    """Mean PSNR over the quadrants for each of :data:`ARMS`."""
    s = experiment.SCALE
    ref, wl, fwhm = experiment.reference(experiment.SAMPLE / "reference_hr_hsi.tif")
    e = experiment.simulated(ref, wl, fwhm, snr, "gsa", seed)  # its base is not used here
    good = [bool(g) for g in e.good]

    def fit(lr: np.ndarray, msi: np.ndarray):
        return fit_method(method, lr, msi, s, e.sigma, e.offset, good).model

    scene_model = fit(e.lr, e.msi)
    scene = fuse_whole(scene_model, e.lr, e.msi)
    got: Dict[str, List[float]] = {arm: [] for arm in ARMS}
    for ly, lx in QUADRANTS:
        lr = e.lr[:, ly:ly + TILE, lx:lx + TILE]
        hr = (slice(s * ly, s * (ly + TILE)), slice(s * lx, s * (lx + TILE)))
        msi = e.msi[:, hr[0], hr[1]]
        truth = e.reference[e.good][:, hr[0], hr[1]]
        outputs = (fuse_whole(fit(lr, msi), lr, msi), fuse_whole(scene_model, lr, msi), scene[:, hr[0], hr[1]])
        for arm, out in zip(ARMS, outputs):
            got[arm].append(psnr(truth, out[e.good], None))
    return {arm: float(np.mean(v)) for arm, v in got.items()}


def main() -> int:
    """Score every method, SNR and seed; print (and with --write store) the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["subspace_bp", "subspace", "gsa"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args()
    lines = [f"`bench/fit_size.py --methods {' '.join(args.methods)} --seeds {' '.join(map(str, args.seeds))}` on "
             f"{machine()}. Protocol in the script's docstring: the bundled sample's reference simulated at scale 3 "
             "(nominal PSF, no shift), its four 30 x 30 quadrants scored; mean ± std over the noise seeds.", "",
             "| method | SNR | tile alone | scene fit, tile run | scene | scene fit - tile alone | scene - scene fit, "
             "tile run |", "|---|---|---|---|---|---|---|"]
    for method in args.methods:
        for snr in (40.0, 35.0):
            runs = [quadrant_scores(method, snr, seed) for seed in args.seeds]
            col = {arm: [r[arm] for r in runs] for arm in ARMS}
            fit_gain = [b - a for a, b in zip(col["tile alone"], col["scene fit, tile run"])]
            edge_gain = [b - a for a, b in zip(col["scene fit, tile run"], col["scene"])]
            lines.append(f"| {method} | {snr:.0f} dB | {mean_std(col['tile alone'])} | "
                         f"{mean_std(col['scene fit, tile run'])} | {mean_std(col['scene'])} | {mean_std(fit_gain)} | "
                         f"{mean_std(edge_gain)} |")
            print(lines[-1], flush=True)
    publish(HEADING, "\n".join(lines), args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
