"""Does knowledge distillation pay?  KD vs no-KD students at equal steps, 3 seeds, with the classical bar (issue 14).

Protocol (the bundled model's data, ``scripts/train_default_model.py``): the 8
training EnMAP tiles train, tiles 64_32 and 96_128 validate (checkpoint
choice), the 4 tiles of the demo block test; every tile is degraded once by
the simulator (Sentinel-2A B2, B3, B4, B8, Gaussian PSF with MTF 0.3 at
Nyquist, scale 3, 40 dB SNR).

1. The teacher trains first and alone (``--teacher-steps``, mode ``teacher``).
2. For each seed, two students start from the same initial weights (drawn
   from the seed alone, :func:`csakd_qgis.training.networks.build_networks`)
   and take the same number of steps: one without KD (mode ``student``), one
   distilled offline from the frozen teacher (mode ``offline``: the KD joint
   loss against the teacher's output and fused features).
3. Each network's best validated weights are scored on the test tiles
   (:func:`csakd_qgis.training.validation.validate`: PSNR with the per-band
   peak, SAM in degrees), next to the strongest classical method fitted on
   each test pair with the degradation estimated from a training tile
   (:func:`csakd_qgis.training.baseline.classical_baseline`).

The issue's rule: distil only from a teacher that beats the student on
validation; the table says whether this one does.

Usage: ``python bench/kd.py [--teacher-steps 1500] [--steps 600] [--seeds 0 1 2] [--quick]``
(``--quick``: print only, do not write docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Tuple

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from common import machine, mean_std, publish  # noqa: E402
from train_default_model import DATA, TEST_TILES, VAL_TILES, data_from, tile_paths  # noqa: E402

from csakd_qgis.models.checkpoint import load_checkpoint  # noqa: E402
from csakd_qgis.training import TrainConfig, TrainingData, train  # noqa: E402
from csakd_qgis.training.baseline import classical_baseline  # noqa: E402
from csakd_qgis.training.validation import validate  # noqa: E402

HEADING = "## Knowledge distillation: KD vs no-KD students (issue 14)"


def datasets() -> Tuple[TrainingData, TrainingData]:
    """``(training data with its validation tiles, the test tiles as validation scenes)``."""
    args = argparse.Namespace(sensor="sentinel2", bands="B2,B3,B4,B8", scale=3)
    excluded = set(TEST_TILES) | set(VAL_TILES)
    train_paths = [p for p in sorted(DATA.glob("enmap_potsdam_tile_*.tif"))
                   if p.stem.replace("enmap_potsdam_tile_", "") not in excluded]
    data = data_from(train_paths, args, 0)
    data = replace(data, val=data_from(tile_paths(VAL_TILES), args, 1000).train, name="8 EnMAP tiles")
    test = replace(data, val=data_from(tile_paths(TEST_TILES), args, 2000).train, name="4 test tiles")
    return data, test


def score(path: Path, scenes: TrainingData) -> Tuple[float, float]:
    """Mean PSNR (dB) and SAM (degrees) of the checkpoint at ``path`` over ``scenes.val``."""
    model, _ = load_checkpoint(path)
    return validate(model, scenes.val, torch.device("cpu"))


def run(args: argparse.Namespace) -> Dict[str, object]:
    """Train the teacher, then the student pairs; return every score."""
    data, test = datasets()
    folder = Path(tempfile.mkdtemp(prefix="csakd-kd-"))
    common = dict(preset="project", batch_size=args.batch, patch=args.patch, learning_rate=args.lr,
                  val_every=args.val_every, device="cpu")
    start = time.time()
    teacher_path = folder / "teacher.safetensors"
    t_report = train(data, TrainConfig(mode="teacher", steps=args.teacher_steps, seed=0, **common), teacher_path)
    teacher = {"val": (t_report.best_metrics["psnr"], t_report.best_metrics["sam"]),
               "test": score(teacher_path, test), "seconds": t_report.seconds, "best_step": t_report.best_step}
    print(f"teacher: {teacher} ({time.time() - start:.0f} s)", flush=True)
    students: List[Dict[str, object]] = []
    for seed in args.seeds:
        row: Dict[str, object] = {"seed": seed}
        for mode in ("student", "offline"):
            out = folder / f"{mode}_{seed}.safetensors"
            report = train(data, TrainConfig(mode=mode, steps=args.steps, seed=seed, **common), out,
                           teacher_checkpoint=teacher_path if mode == "offline" else None)
            row[mode] = {"val": (report.best_metrics["psnr"], report.best_metrics["sam"]),
                         "test": score(out, test), "seconds": report.seconds, "best_step": report.best_step}
            print(f"seed {seed} {mode}: {row[mode]} ({time.time() - start:.0f} s)", flush=True)
        students.append(row)
    bar = classical_baseline(test)
    assert bar is not None  # the test tiles are its validation scenes
    return {"teacher": teacher, "students": students, "classical": bar, "seconds": time.time() - start}



def table(args: argparse.Namespace, result: Dict[str, object], header: str) -> str:
    """The markdown section."""
    teacher = result["teacher"]
    students = result["students"]
    bar = result["classical"]
    assert isinstance(teacher, dict) and isinstance(students, list)

    def column(mode: str, split: str, k: int) -> List[float]:
        return [s[mode][split][k] for s in students]

    nokd_val = statistics.mean(column("student", "val", 0))
    lines = [
        f"`bench/kd.py --teacher-steps {args.teacher_steps} --steps {args.steps} --seeds "
        f"{' '.join(map(str, args.seeds))}` on {header}; {result['seconds']:.0f} s in all.",
        "",
        "Project preset (teacher nf 32, student nf 24), batch "
        f"{args.batch}, patch {args.patch}, peak learning rate {args.lr:g} (cosine), validation every "
        f"{args.val_every} steps (best weights kept). 8 EnMAP training tiles, 2 validation tiles, the 4 test "
        "tiles of the demo block (never seen in training or checkpoint choice), all simulated once at 40 dB "
        "(protocol in the script's docstring). The teacher trains first and alone; each seed's two students "
        "start from the same initial weights and take the same steps. PSNR in dB (per-band peak), SAM in "
        "degrees; mean ± standard deviation over the seeds.",
        "",
        "| network | steps | validation PSNR | validation SAM | test PSNR | test SAM |",
        "|---|---|---|---|---|---|",
        f"| teacher (alone, first) | {args.teacher_steps} | {teacher['val'][0]:.2f} | {teacher['val'][1]:.2f} | "
        f"{teacher['test'][0]:.2f} | {teacher['test'][1]:.2f} |",
    ]
    for mode, label in (("student", "student without KD"), ("offline", "student, offline KD from the teacher")):
        lines.append(f"| {label} | {args.steps} | {mean_std(column(mode, 'val', 0))} | "
                     f"{mean_std(column(mode, 'val', 1))} | {mean_std(column(mode, 'test', 0))} | "
                     f"{mean_std(column(mode, 'test', 1))} |")
    lines.append(f"| strongest classical ({bar.method}, PSF estimated from a training tile, fitted on each "
                 f"test pair) | – | – | – | {bar.psnr:.2f} | {bar.sam:.2f} |")
    gains = [s["offline"]["test"][0] - s["student"]["test"][0] for s in students]
    lines += ["", "| seed | no-KD test PSNR | KD test PSNR | KD gain dB | no-KD best step | KD best step |",
              "|---|---|---|---|---|---|"]
    for s, g in zip(students, gains):
        lines.append(f"| {s['seed']} | {s['student']['test'][0]:.2f} | {s['offline']['test'][0]:.2f} | {g:+.2f} | "
                     f"{s['student']['best_step']} | {s['offline']['best_step']} |")
    verdict = "beats" if teacher["val"][0] > nokd_val else "does not beat"
    lines += ["", f"KD gain on the test tiles: {mean_std(gains)} dB. The teacher {verdict} the students "
              f"without KD on validation ({teacher['val'][0]:.2f} vs {nokd_val:.2f} dB). Classical scores on the "
              "test tiles: " + ", ".join(f"{n} {p:.2f} dB / {s:.2f}°" for n, p, s in bar.scores) + "."]
    return "\n".join(lines)


def main() -> int:
    """Run, print, and (without --quick) write the section."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher-steps", type=int, default=1500)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch", type=int, default=24)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--val-every", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="print only; do not write docs/benchmarks.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    header = machine()
    text = table(args, run(args), header)
    publish(HEADING, text, write=not args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
