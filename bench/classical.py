"""Classical methods benchmark: PSF-matched GSA, GLP and their subspace variants against bicubic and the old GSA.

Protocol (written into docs/benchmarks.md with the tables):

* Scenes, every one simulated with :func:`csakd_qgis.simulation.degradation.simulate_pair`
  (Gaussian PSF with MTF 0.3 at Nyquist, i.e. ``sigma = psf_sigma(scale)``,
  Sentinel-2A B2/B3/B4/B8), clean and at 35 dB SNR on both images (seed 0):

  - the bundled sample's 63x63x224 EnMAP reference (``resources/sample``),
    scale 3; plus the bundled files themselves (40 dB, a masked cloud in the
    MSI, which is filled with the band median for the fusion and left out of
    the metrics);
  - Indian Pines / 10,000, rows 112-143 and all 144 columns (the held-out
    test region of ``bench/quality_scenes.py``), scale 4 (band FWHMs
    unknown: delta responses); and all 144 x 144 pixels at scale 3, also
    at 40 and 45 dB (no method here is trained, so no region is held out);
  - the georeferenced AVIRIS-NG chip (24x30 or 24x28 HR pixels), scale 2 and
    4; bad bands as ``bench/quality_scenes.py`` defines them;
  - the 14 EnMAP Potsdam tiles, each cropped to 30x30 and simulated on its
    own at scale 3; the metrics are averaged over the tiles.

* Every method is fitted on the scene's own LR-HSI and HR-MSI (no reference
  is used) with the true sigma and a zero offset, and run on the whole image
  with mirrored edges as the tiled engine reads them
  (:func:`csakd_qgis.classical.fuse_whole`).  "old GSA" is
  :class:`csakd_qgis.classical.baselines.GSA` fitted against block means and
  applied to the bicubic upsampling, as the engine's GSA did before the
  PSF-matched fit.  "subspace" projects the method's output onto the LR-HSI's
  signal subspace with the default rank rule
  (:func:`csakd_qgis.classical.subspace.default_rank`); "input-projected GSA"
  projects the LR-HSI instead and fits PSF-matched GSA on it (the engine's
  design before issue 13's last change, kept here as the evidence against it).
* Metrics against the reference over good bands and valid pixels: PSNR (dB,
  peak = the reference's maximum), SAM (degrees), ERGAS (ratio = scale), SSIM.
* The EnMAP tiles, the sample and the whole of Indian Pines also at 40 and
  45 dB (:data:`CROSSOVER_DB`), for the SNR above which plain GSA leads the
  subspace variants (``auto``'s threshold).
* Design measurements on the first 4 EnMAP tiles (averages): interpolation kernels,
  injection rule, subspace rank, and the fit's sigma against the true one.
* Throughput: 224 bands, 4 MSI bands, a batch of 4 tiles of 64x64 LR pixels
  at scale 3, each method's own halo around them, float32, torch on all CPU
  threads; median of 5 runs after a warm-up; core output megapixels per second.
  The subspace methods are also fitted on the re-simulated sample at 35 dB,
  where the back-projection's kernels and halo are those of a real scene.

Usage: ``python bench/classical.py [--quick]`` (``--quick``: fewer scenes, no file written).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from common import ROOT, machine, replace_section

from csakd_qgis.classical import GLP, PsfGSA, Subspace, SubspaceFusion, fuse_whole
from csakd_qgis.classical.baselines import GSA, bicubic_upsample
from csakd_qgis.fusion.radiometry import fill_with_band_medians
from csakd_qgis.fusion.tiling import reflect_pad
from csakd_qgis.io.read import read_whole
from csakd_qgis.quality.metrics import ergas, psnr, sam, ssim
from csakd_qgis.simulation.degradation import blur_decimate, crop_to_scale, gaussian_psf, psf_sigma, simulate_pair

DATA = ROOT.parent / "shared" / "data"
SAMPLE = ROOT / "resources" / "sample"
HEADING = "## Classical methods"
NOISY_DB = 35.0
#: Further SNRs (dB) of the EnMAP tiles, where the auto rule's threshold between gsa and subspace is read.
CROSSOVER_DB = (40.0, 45.0)
#: EnMAP tiles (the first, sorted by name) of the design-choice tables.
ABLATION_TILES = 4
MSI_BANDS = ("B2", "B3", "B4", "B8")
#: A band whose mean is below this fraction of the median band mean is bad (AVIRIS-NG, as bench/quality_scenes.py).
DARK_BAND_FRACTION = 0.02


@dataclass(frozen=True)
class Scene:
    """A simulated pair with its reference; ``valid`` ``(H, W)`` marks the pixels scored."""

    name: str
    reference: np.ndarray
    lr: np.ndarray
    msi: np.ndarray
    good: np.ndarray
    scale: int
    sigma: float
    valid: np.ndarray




def simulated(name: str, cube: np.ndarray, wavelengths: Sequence[float], fwhm: Optional[Sequence[float]],
              good: np.ndarray, scale: int, snr_db: Optional[float]) -> Scene:
    """Simulate a scene from ``cube`` ``(C, H, W)`` (NaN in bad bands allowed) with the default PSF."""
    sigma = psf_sigma(scale)
    ref = np.where(good[:, None, None], np.nan_to_num(cube), 0.0)
    pair = simulate_pair(ref, wavelengths, fwhm, good, bands=MSI_BANDS, scale=scale, sigma=sigma, snr_db=snr_db,
                         seed=0)
    valid = np.ones(pair.reference.shape[1:], dtype=bool)
    return Scene(name, pair.reference, pair.lr_hsi, pair.hr_msi, good, scale, sigma, valid)


def _read(path: Path) -> Tuple[np.ndarray, List[float], List[Optional[float]], np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info, cube, _ = read_whole(str(path), "the benchmark")
    return (cube.astype(np.float64), [b.wavelength_nm for b in info.bands], [b.fwhm_nm for b in info.bands],
            np.array([b.good for b in info.bands]))


def sample_scenes(snr: Optional[float]) -> List[Scene]:
    """The bundled sample's reference, re-simulated at scale 3."""
    cube, wl, fwhm, good = _read(SAMPLE / "reference_hr_hsi.tif")
    tag = "clean" if snr is None else f"{snr:.0f} dB"
    return [simulated(f"sample, {tag}", cube, wl, fwhm, good, 3, snr)]


def bundled_sample() -> Scene:
    """The bundled files as they are (40 dB, cloud in the MSI)."""
    ref, _, _, good = _read(SAMPLE / "reference_hr_hsi.tif")
    lr, _, _, _ = _read(SAMPLE / "enmap_lr_hsi.tif")
    msi, _, _, _ = _read(SAMPLE / "s2_hr_msi.tif")
    valid = np.isfinite(msi).all(axis=0)
    ref, lr, msi = crop_to_scale(ref, 3), lr, crop_to_scale(msi, 3)
    return Scene("sample, bundled files (40 dB)", ref, lr, msi, good, 3, psf_sigma(3), valid[:63, :63])


def indian_pines_scene(snr: Optional[float]) -> Scene:
    """Indian Pines rows 112-143, all 144 columns, scale 4."""
    folder = DATA / "indian_pines"
    cube = np.load(folder / "Indian_pines_corrected.npy").transpose(2, 0, 1)[:, 112:144, :144] / 10000.0
    wl = json.loads((folder / "wavelengths.json").read_text())["wavelengths_nm_from_tensorly_data_imports_py"]
    tag = "clean" if snr is None else f"{snr:.0f} dB"
    return simulated(f"Indian Pines x4, {tag}", cube, wl, None, np.ones(cube.shape[0], bool), 4, snr)


def indian_pines_whole(snr: Optional[float]) -> Scene:
    """All 144 x 144 pixels of Indian Pines, scale 3."""
    folder = DATA / "indian_pines"
    cube = np.load(folder / "Indian_pines_corrected.npy").transpose(2, 0, 1)[:, :144, :144] / 10000.0
    wl = json.loads((folder / "wavelengths.json").read_text())["wavelengths_nm_from_tensorly_data_imports_py"]
    tag = "clean" if snr is None else f"{snr:.0f} dB"
    return simulated(f"Indian Pines x3, {tag}", cube, wl, None, np.ones(cube.shape[0], bool), 3, snr)


def aviris_scene(scale: int, snr: Optional[float]) -> Scene:
    """The georeferenced AVIRIS-NG chip (24 rows) at ``scale``."""
    cube, wl, fwhm, _ = _read(DATA / "aviris_ng" / "ang20160910t185702_2rdn_img")
    small, _, _, _ = _read(DATA / "aviris_ng" / "ang20170323t202244_rdn_7000-7010")
    bad = np.zeros(cube.shape[0], bool)
    for c in (cube, small):
        bad |= ~(np.isfinite(c) & (c > 0)).all(axis=(1, 2))
    means = np.concatenate([c.reshape(c.shape[0], -1) for c in (cube, small)], axis=1).mean(axis=1)
    bad |= ~(means >= DARK_BAND_FRACTION * np.median(means[~bad]))
    tag = "clean" if snr is None else f"{snr:.0f} dB"
    fw = fwhm if all(f is not None for f in fwhm) else None
    return simulated(f"AVIRIS-NG x{scale}, {tag}", cube[:, :24], wl, fw, ~bad, scale, snr)


def enmap_tiles(snr: Optional[float], count: Optional[int] = None) -> List[Scene]:
    """Each EnMAP Potsdam tile cropped to 30x30 and simulated at scale 3."""
    scenes = []
    for path in sorted((DATA / "enmap_potsdam").glob("*.tif"))[:count]:
        cube, wl, fwhm, good = _read(path)
        scenes.append(simulated(path.stem, cube[:, :30, :30], wl, fwhm, good, 3, snr))
    return scenes


# ----------------------------------------------------------------------------- methods

Method = Callable[[Scene], np.ndarray]


def _mirrored(predict: Callable[[np.ndarray, np.ndarray], np.ndarray], lr: np.ndarray, msi: np.ndarray,
              halo: int, scale: int) -> np.ndarray:
    """``predict`` on one mirrored-edge batch, cropped: what the tiled engine computes for a whole image."""
    x = reflect_pad(lr, ((halo, halo), (halo, halo)))[None]
    g = reflect_pad(msi, ((halo * scale, halo * scale), (halo * scale, halo * scale)))[None]
    out = predict(x, g)[0]
    return out[:, halo * scale:out.shape[1] - halo * scale, halo * scale:out.shape[2] - halo * scale]


class OldGSA:
    """The engine's GSA before the PSF-matched fit: fitted against block means, applied to the bicubic upsampling."""

    halo = 2

    def __init__(self, lr: np.ndarray, msi: np.ndarray, scale: int, good: Optional[np.ndarray] = None) -> None:
        self.scale = scale
        self.model = GSA.fit(lr, blur_decimate(msi, scale, gaussian_psf(scale, sigma=0)), good)

    def predict(self, lr: np.ndarray, msi: np.ndarray) -> np.ndarray:
        """``(B, C, h, w)``, ``(B, m, h s, w s)`` float32 -> ``(B, C, h s, w s)``."""
        up = bicubic_upsample(torch.from_numpy(np.ascontiguousarray(lr)), self.scale)
        return self.model.apply(up, torch.from_numpy(np.ascontiguousarray(msi))).numpy()


def old_gsa(sc: Scene) -> np.ndarray:
    """The engine's GSA before the PSF-matched fit (:class:`OldGSA`)."""
    method = OldGSA(sc.lr, sc.msi, sc.scale, sc.good)
    lr, msi = fill_with_band_medians(sc.lr), fill_with_band_medians(sc.msi)
    return _mirrored(method.predict, lr, msi, method.halo, sc.scale)


def classical(factory: Callable[[Scene, float], object], sigma_factor: float = 1.0) -> Method:
    """A method from ``factory(scene, sigma)`` (a fitted classical model) run with :func:`fuse_whole` in float32."""

    def run(sc: Scene) -> np.ndarray:
        model = factory(sc, sc.sigma * sigma_factor)
        return fuse_whole(model, fill_with_band_medians(sc.lr), fill_with_band_medians(sc.msi))

    return run


def glp(**options) -> Method:
    """GLP with ``options``."""
    return classical(lambda sc, sg: GLP.fit(sc.lr, sc.msi, sc.scale, sg, good=sc.good, **options))


def sub(method: str = "psf_gsa", rank: Optional[int] = None, **options) -> Method:
    """Subspace variant of ``method`` (its output projected)."""
    return classical(lambda sc, sg: SubspaceFusion.fit(sc.lr, sc.msi, sc.scale, sg, good=sc.good, rank=rank,
                                                      method=method, **options))


def input_projected_gsa(sc: Scene) -> np.ndarray:
    """PSF-matched GSA fitted on and applied to the subspace-projected LR-HSI."""
    subspace = Subspace.fit(sc.lr, sc.good)
    lr = subspace.project(fill_with_band_medians(sc.lr))
    model = PsfGSA.fit(subspace.project(sc.lr), sc.msi, sc.scale, sc.sigma, good=sc.good)
    return fuse_whole(model, lr, fill_with_band_medians(sc.msi))


METHODS: Dict[str, Method] = {
    "bicubic": lambda sc: bicubic_upsample(fill_with_band_medians(sc.lr), sc.scale),
    "old GSA (block means)": old_gsa,
    "PSF-matched GSA": classical(lambda sc, sg: PsfGSA.fit(sc.lr, sc.msi, sc.scale, sg, good=sc.good)),
    "GLP": glp(),
    "subspace GLP": sub("glp"),
    "subspace GSA (the engine's subspace)": sub("psf_gsa"),
    "subspace GSA back-projected onto the LR-HSI (the engine's subspace_bp)": sub("psf_gsa", back_project=True),
    "input-projected GSA": input_projected_gsa,
}

ABLATION: Dict[str, Method] = {
    "GLP, bicubic, regression gain (default)": glp(),
    "GLP, Keys a=-0.5": glp(kernel="keys"),
    "GLP, Lanczos-3": glp(kernel="lanczos3"),
    "GLP, HPM injection": glp(injection="hpm"),
    "GLP, fit sigma 0 (box)": classical(lambda sc, sg: GLP.fit(sc.lr, sc.msi, sc.scale, sg, good=sc.good), 0.0),
    "GLP, fit sigma x0.7": classical(lambda sc, sg: GLP.fit(sc.lr, sc.msi, sc.scale, sg, good=sc.good), 0.7),
    "GLP, fit sigma x1.3": classical(lambda sc, sg: GLP.fit(sc.lr, sc.msi, sc.scale, sg, good=sc.good), 1.3),
    "subspace GSA, rank 5": sub(rank=5),
    "subspace GSA, rank 10": sub(rank=10),
    "subspace GSA, rank 20": sub(rank=20),
    "subspace GSA, default rank": sub(),
}


def scores(sc: Scene, fused: np.ndarray) -> Dict[str, float]:
    """PSNR, SAM, ERGAS, SSIM over good bands and valid pixels."""
    ref, out = sc.reference[sc.good], np.asarray(fused, dtype=np.float64)[sc.good]
    return {"psnr": psnr(ref, out, sc.valid), "sam": sam(ref, out, sc.valid),
            "ergas": ergas(ref, out, sc.valid, scale=sc.scale), "ssim": ssim(ref, out, sc.valid)}


def evaluate(scenes: Sequence[Scene], methods: Dict[str, Method]) -> Dict[str, Dict[str, float]]:
    """Metrics of every method, averaged over ``scenes``."""
    table = {}
    for label, method in methods.items():
        rows = [scores(sc, method(sc)) for sc in scenes]
        table[label] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    return table


def markdown(title: str, table: Dict[str, Dict[str, float]]) -> List[str]:
    """One markdown table."""
    lines = [f"**{title}**", "", "| method | PSNR (dB) | SAM (°) | ERGAS | SSIM |", "|---|---|---|---|---|"]
    for label, s in table.items():
        lines.append(f"| {label} | {s['psnr']:.2f} | {s['sam']:.2f} | {s['ergas']:.2f} | {s['ssim']:.4f} |")
    return lines + [""]


# ----------------------------------------------------------------------------- throughput


def _time(fn: Callable[[], object], repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def throughput() -> List[str]:
    """Core output Mpx/s of old GSA and the new methods on 4 tiles of 64x64 LR pixels, 224 bands, scale 3."""
    rng = np.random.default_rng(0)
    c, m, s, tile, batch = 224, 4, 3, 64, 4
    base = rng.random((m, 3, 3)) + 0.5
    fit_lr_hr = np.einsum("mk,khw->mhw", rng.random((m, m)), rng.random((m, 96 * s, 96 * s))) + 0.2
    fit_lr_hsi = np.einsum("cm,mhw->chw", rng.random((c, m)), blur_decimate(fit_lr_hr, s, gaussian_psf(s)))
    fit_lr_hsi += 0.01 * rng.standard_normal(fit_lr_hsi.shape)
    del base
    sigma = psf_sigma(s)
    old = OldGSA(fit_lr_hsi, fit_lr_hr, s)
    models = {
        "PSF-matched GSA": PsfGSA.fit(fit_lr_hsi, fit_lr_hr, s, sigma),
        "GLP": GLP.fit(fit_lr_hsi, fit_lr_hr, s, sigma),
        "GLP, HPM injection": GLP.fit(fit_lr_hsi, fit_lr_hr, s, sigma, injection="hpm"),
        "subspace GSA (rank 10)": SubspaceFusion.fit(fit_lr_hsi, fit_lr_hr, s, sigma, rank=10),
    }
    # the back-projection's kernels and halo depend on the scene: fitted on the sample at 35 dB (224 bands)
    sample = sample_scenes(NOISY_DB)[0]
    for label, back in (("subspace GSA", False), ("subspace GSA back-projected", True)):
        fitted = SubspaceFusion.fit(sample.lr, sample.msi, s, sigma, good=sample.good, back_project=back)
        models[f"{label} (fitted on the sample at 35 dB, rank {fitted.subspace.rank})"] = fitted
    core = batch * (tile * s) ** 2 / 1e6

    def arrays(halo: int) -> Tuple[np.ndarray, np.ndarray]:
        side = tile + 2 * halo
        lr = rng.random((batch, c, side, side)).astype(np.float32)
        return lr, rng.random((batch, m, side * s, side * s)).astype(np.float32)

    lr, msi = arrays(old.halo)
    old_s = _time(lambda: old.predict(lr, msi))
    lines = ["| method | halo (LR px) | seconds per batch | core Mpx/s | time / old GSA |", "|---|---|---|---|---|",
             f"| old GSA (block-mean fit) | {old.halo} | {old_s:.3f} | {core / old_s:.2f} | 1.00 |"]
    for label, model in models.items():
        lr, msi = arrays(model.halo)
        xt, gt = torch.from_numpy(lr), torch.from_numpy(msi)
        with torch.inference_mode():
            sec = _time(lambda m=model, x=xt, g=gt: m.apply(x, g))
        lines.append(f"| {label} | {model.halo} | {sec:.3f} | {core / sec:.2f} | {sec / old_s:.2f} |")
    return lines


def main() -> int:
    """Run every scene and write the section."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer scenes, print only")
    args = parser.parse_args()
    header = machine()
    start = time.perf_counter()
    groups: List[Tuple[str, List[Scene]]] = [("bundled sample files (scale 3, 40 dB, cloud masked)",
                                              [bundled_sample()])]
    for snr in (None, NOISY_DB):
        groups.append((f"sample reference re-simulated, {'clean' if snr is None else '35 dB'} (scale 3)",
                       sample_scenes(snr)))
        if not args.quick:
            groups.append((f"Indian Pines rows 112-143, {'clean' if snr is None else '35 dB'} (scale 4)",
                           [indian_pines_scene(snr)]))
            groups.append((f"Indian Pines, all 144 x 144, {'clean' if snr is None else '35 dB'} (scale 3)",
                           [indian_pines_whole(snr)]))
            for scale in (2, 4):
                groups.append((f"AVIRIS-NG chip, {'clean' if snr is None else '35 dB'} (scale {scale})",
                               [aviris_scene(scale, snr)]))
        groups.append((f"EnMAP tiles, mean of {4 if args.quick else 14}, {'clean' if snr is None else '35 dB'} "
                       "(scale 3)", enmap_tiles(snr, 4 if args.quick else None)))
    if not args.quick:
        for snr in CROSSOVER_DB:
            groups.append((f"EnMAP tiles, mean of 14, {snr:.0f} dB (scale 3)", enmap_tiles(snr)))
            groups.append((f"sample reference re-simulated, {snr:.0f} dB (scale 3)", sample_scenes(snr)))
            groups.append((f"Indian Pines, all 144 x 144, {snr:.0f} dB (scale 3)", [indian_pines_whole(snr)]))
    lines: List[str] = []
    for title, scenes in groups:
        table = evaluate(scenes, METHODS)
        lines += markdown(title, table)
        print("\n".join(markdown(title, table)), flush=True)
    ablation: List[str] = []
    for snr in (None, NOISY_DB):
        noise = "clean" if snr is None else "35 dB"
        title = f"Design choices on the EnMAP tiles, {noise} (true sigma {psf_sigma(3):.2f})"
        table = evaluate(enmap_tiles(snr, ABLATION_TILES), ABLATION)
        ablation += markdown(title, table)
        print("\n".join(markdown(title, table)), flush=True)
    speed = throughput()
    print("\n".join(speed))
    elapsed = time.perf_counter() - start
    body = (f"Machine: {header}. Produced by `bench/classical.py` in {elapsed:.0f} s; protocol in its docstring "
            "(every method fitted on the scene's own pair with the true PSF sigma, whole image with mirrored "
            "edges, metrics over good bands).\n\n" + "\n".join(lines) + "\n" + "\n".join(ablation)
            + "\nThroughput (224 bands, 4 MSI bands, 4 tiles of 64x64 LR px at scale 3, float32, "
            f"{torch.get_num_threads()} torch threads):\n\n" + "\n".join(speed))
    if not args.quick:
        replace_section(HEADING, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
