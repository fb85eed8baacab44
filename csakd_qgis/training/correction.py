"""Training a :class:`~csakd_qgis.models.correction.CorrectionNet` on the classical floor (issue 14).

Every step draws a fresh degradation of each reference crop
(:func:`draw_example`): a random 90-degree rotation and flip of the
reference, a random crop, an SNR, a PSF width around the sensor's and a
sub-pixel misregistration.  The pair is simulated as
:func:`csakd_qgis.simulation.degradation.simulate_pair` does (spectral
response for the MSI; Gaussian PSF blur and decimation for the LR-HSI;
white noise at the SNR on both), except that the misregistration is folded
into the PSF taps (:func:`csakd_qgis.classical.filters.blur_sample` with an
offset: the exact shift of a Gaussian PSF, 20 times cheaper than
``shift_image``'s per-band splines).  The classical base is fitted on that
pair with the simulation's own PSF and offset; the spectral basis on its
LR-HSI.

A :class:`Scene` trains in the engine's regime instead: the engine fits its
classical method on a sample of the whole scene, not on the tile it fuses
(a fit on a 10 x 10 LR-pixel crop alone is 0.3-1 dB worse, see
``docs/benchmarks.md``, "Classical methods fitted on a 30 x 30 tile
alone").  :func:`draw_scene` augments the scene's parts, mosaics them,
simulates and fits the base on the whole mosaic, and cuts the training
crops from it (:func:`cut`).

Loss (good bands only): ``E(out, ref) + w_lr E(blur_sample(out), lr) +
w_msi E(R out, msi)``, the last two the consistency of the output with the
two inputs (``R`` the spectral response matrix, in the inputs' levels).
``E`` (:func:`band_error_db`) is the mean over images and bands of
``10 log10(MSE_b / peak^2)``, i.e. minus the mean band PSNR that
:func:`score` reports.  An L1 loss was used first: it lowered L1 while the
mean band PSNR fell, even on fresh draws of the training tiles (see
``docs/training.md``), because it spends the error budget on the bright
bands while the metric weighs every band by its logarithm.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from csakd_qgis.classical import GLP, Classical, PsfGSA, SubspaceFusion, fuse_whole
from csakd_qgis.classical.filters import blur_sample
from csakd_qgis.errors import InputError
from csakd_qgis.fusion.radiometry import fill_with_band_medians, robust_level
from csakd_qgis.models.correction import DEFAULT_RANK, CoefficientBasis, CorrectionNet
from csakd_qgis.quality.metrics import psnr, sam
from csakd_qgis.simulation.degradation import add_noise, psf_sigma, spectral_degrade

#: Classical bases the correction can sit on, by name: ``fit(lr, msi, scale, sigma, offset, good)`` of each.
BASES: Dict[str, Callable[..., Classical]] = {
    "gsa": PsfGSA.fit, "glp": GLP.fit,
    "subspace_bp": functools.partial(SubspaceFusion.fit, method="psf_gsa", back_project=True)}


@dataclass(frozen=True)
class Reference:
    """A reference hyperspectral crop and its sensor model.

    ``cube`` ``(C, H, W)`` float64 in reflectance (bad bands zero),
    ``good`` ``(C,)`` bool, ``srf`` ``(m, C)`` the MSI's response matrix.
    """

    name: str
    cube: np.ndarray
    good: np.ndarray
    srf: np.ndarray

    @property
    def bands(self) -> int:
        """The band count of the reference's sensor."""
        return int(self.cube.shape[0])


@dataclass(frozen=True)
class Scene:
    """References of one sensor that :func:`draw_scene` mosaics into one simulated scene.

    ``parts`` have the same shape, bands and response matrix; with more
    than one they must be square, so that their random rotations keep the
    mosaic's layout.  ``columns``: parts per mosaic row (their order is
    shuffled at every draw).
    """

    name: str
    parts: Tuple[Reference, ...]
    columns: int = 1

    def __post_init__(self) -> None:
        shapes = {p.cube.shape for p in self.parts}
        if len(shapes) != 1:
            raise InputError(f"the parts of scene {self.name!r} differ in shape: {sorted(shapes)}")
        _, h, w = next(iter(shapes))
        if len(self.parts) > 1 and h != w:
            raise InputError(f"the parts of scene {self.name!r} are {h} x {w}; a mosaic needs square parts")
        if self.columns < 1 or len(self.parts) % self.columns:
            raise InputError(f"{len(self.parts)} parts do not fill rows of {self.columns} columns")

    @property
    def bands(self) -> int:
        """The band count of the scene's sensor."""
        return self.parts[0].bands


@dataclass(frozen=True)
class Degradation:
    """Ranges the training simulation draws from (uniformly)."""

    scale: int = 3
    snr_db: Tuple[float, float] = (30.0, 45.0)
    sigma_factor: Tuple[float, float] = (0.8, 1.2)
    max_shift: float = 0.25
    crop: int = 30


@dataclass(frozen=True)
class Example:
    """One simulated pair with its classical base and basis, normalised (float32).

    ``lr`` ``(C, h, w)``, ``msi`` ``(m, H, W)``, ``reference`` and ``base``
    ``(C, H, W)``; ``msi_ratio`` = LR-HSI level / MSI level (maps ``R out``
    into the MSI's units); ``valid`` ``(H, W)`` the pixels scored.
    ``cut``: the example was cut from a larger simulated scene
    (:func:`cut`), so its LR-HSI's border pixels saw HR pixels outside it.
    """

    name: str
    lr: np.ndarray
    msi: np.ndarray
    reference: np.ndarray
    base: np.ndarray
    basis: CoefficientBasis
    good: np.ndarray
    srf: np.ndarray
    sigma: float
    offset: Tuple[float, float]
    msi_ratio: float
    valid: np.ndarray
    cut: bool = False


def simulate_fast(cube: np.ndarray, srf: np.ndarray, scale: int, sigma: float, offset: Tuple[float, float],
                  snr_db: Optional[float], rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """``(lr (C, H/s, W/s), msi (m, H, W))`` float64 of ``cube`` ``(C, H, W)``; see the module notes.

    With a zero offset and no noise this is ``simulate_pair``'s output to rounding.
    """
    msi = spectral_degrade(cube, srf)
    lr = blur_sample(torch.from_numpy(np.ascontiguousarray(cube))[None], scale, sigma, offset)[0][0].numpy()
    if snr_db is not None:
        lr = add_noise(lr, snr_db, rng)
        msi = add_noise(msi, snr_db, rng)
    return lr, msi


def prepare(name: str, lr: np.ndarray, msi: np.ndarray, reference: np.ndarray, good: np.ndarray, srf: np.ndarray,
            scale: int, sigma: float, offset: Tuple[float, float], base_method: str, rank: int,
            valid: Optional[np.ndarray] = None) -> Example:
    """Normalise a pair as the engine does, fit the classical base and the basis on it.

    ``lr``/``msi`` may hold NaN (fitted around; filled with the band median
    for the fusion, as the engine fills nodata); ``valid`` defaults to all.
    """
    lr_level = robust_level(lr, name="LR-HSI")
    msi_level = robust_level(msi, name="HR-MSI")
    lr_n, msi_n = lr / lr_level, msi / msi_level
    model = BASES[base_method](lr_n, msi_n, scale, sigma, offset, [bool(g) for g in good])
    lr_f, msi_f = fill_with_band_medians(lr_n), fill_with_band_medians(msi_n)
    base = fuse_whole(model, lr_f, msi_f)
    basis = CoefficientBasis.from_lr(lr_f, good, rank)
    mask = np.ones(msi.shape[1:], bool) if valid is None else valid
    return Example(name, lr_f, msi_f, (reference / lr_level).astype(np.float32), base.astype(np.float32), basis,
                   good, srf, sigma, offset, lr_level / msi_level, mask)


def _augmented(cube: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``cube`` ``(C, H, W)`` rotated by a random multiple of 90 degrees and flipped with probability 1/2 (a view)."""
    cube = np.rot90(cube, int(rng.integers(4)), axes=(1, 2))
    return cube[:, :, ::-1] if rng.random() < 0.5 else cube


def _simulated(name: str, cube: np.ndarray, ref: Reference, rng: np.random.Generator, deg: Degradation,
               base_method: str, rank: int) -> Example:
    """``cube`` degraded with a fresh draw of ``deg`` (PSF width, offset, SNR), prepared with the base fitted on it."""
    sigma = psf_sigma(deg.scale) * float(rng.uniform(*deg.sigma_factor))
    offset = (float(rng.uniform(-deg.max_shift, deg.max_shift)), float(rng.uniform(-deg.max_shift, deg.max_shift)))
    snr = float(rng.uniform(*deg.snr_db))
    lr, msi = simulate_fast(cube, ref.srf, deg.scale, sigma, offset, snr, rng)
    return prepare(name, lr, msi, cube, ref.good, ref.srf, deg.scale, sigma, offset, base_method, rank)


def _origin(h: int, w: int, size: int, scale: int, rng: np.random.Generator) -> Tuple[int, int]:
    """A random top-left corner of a ``size`` crop of an ``h x w`` image, on the LR grid (multiples of ``scale``)."""
    return (scale * int(rng.integers((h - size) // scale + 1)), scale * int(rng.integers((w - size) // scale + 1)))


def draw_example(ref: Reference, rng: np.random.Generator, deg: Degradation, base_method: str = "gsa",
                 rank: int = DEFAULT_RANK) -> Example:
    """A fresh augmented, degraded and normalised example from ``ref`` (see the module notes)."""
    cube = _augmented(ref.cube, rng)
    h, w = cube.shape[1:]
    size = min(deg.crop, h, w) // deg.scale * deg.scale
    y, x = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
    cube = np.ascontiguousarray(cube[:, y:y + size, x:x + size])
    return _simulated(ref.name, cube, ref, rng, deg, base_method, rank)


def mosaic(cubes: Sequence[np.ndarray], columns: int) -> np.ndarray:
    """Equal-size ``(C, h, w)`` cubes laid out in rows of ``columns``: ``(C, rows h, columns w)``."""
    rows = [np.concatenate(cubes[i:i + columns], axis=2) for i in range(0, len(cubes), columns)]
    return np.ascontiguousarray(np.concatenate(rows, axis=1))


def cut(example: Example, y: int, x: int, size: int) -> Example:
    """The ``size x size`` HR crop of ``example`` at ``(y, x)`` (multiples of the scale), with its LR-HSI's pixels.

    The classical base and the spectral basis stay those fitted on the whole
    example, as the engine fuses a tile with a model fitted on the scene.
    """
    scale = example.reference.shape[1] // example.lr.shape[1]
    if y % scale or x % scale or size % scale:
        raise InputError(f"a cut at ({y}, {x}) of {size} px is off the LR grid of scale {scale}")
    hr = (slice(None), slice(y, y + size), slice(x, x + size))
    lr = (slice(None), slice(y // scale, (y + size) // scale), slice(x // scale, (x + size) // scale))
    return dataclasses.replace(example, lr=example.lr[lr], msi=example.msi[hr], reference=example.reference[hr],
                               base=example.base[hr], valid=example.valid[hr[1:]], cut=True)


def draw_scene(scene: Scene, rng: np.random.Generator, deg: Degradation, crops: int, base_method: str = "gsa",
               rank: int = DEFAULT_RANK) -> List[Example]:
    """``crops`` examples cut at random from one fresh simulation of ``scene`` (see the module notes).

    Each part is rotated and flipped at random, the parts are shuffled into
    the mosaic, the mosaic is degraded once (one PSF width, offset and SNR)
    and the base fitted on all of it; the crops (``deg.crop`` px, on the LR
    grid) may overlap.
    """
    order = rng.permutation(len(scene.parts))
    cube = mosaic([_augmented(scene.parts[i].cube, rng) for i in order], scene.columns)
    h, w = (n // deg.scale * deg.scale for n in cube.shape[1:])
    size = min(deg.crop, h, w) // deg.scale * deg.scale
    whole = _simulated(scene.name, np.ascontiguousarray(cube[:, :h, :w]), scene.parts[0], rng, deg, base_method,
                       rank)
    return [cut(whole, *_origin(h, w, size, deg.scale, rng), size) for _ in range(crops)]


def batch(examples: Sequence[Example]) -> Tuple[torch.Tensor, ...]:
    """``(lr, msi, base, reference)`` tensors ``(B, ., ., .)`` of same-size examples."""
    stack = lambda key: torch.from_numpy(np.stack([getattr(e, key) for e in examples]))  # noqa: E731
    return stack("lr"), stack("msi"), stack("base"), stack("reference")


def band_error_db(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over images and bands of ``10 log10(MSE_b / peak^2)`` (dB; minus the mean band PSNR).

    ``out`` and ``target`` ``(B, C, H, W)``; ``peak`` is each target image's
    maximum, as :func:`csakd_qgis.quality.metrics.psnr` takes it.  The
    ``1e-10`` floor keeps a perfect band at -100 dB instead of minus infinity.
    """
    mse = (out - target).pow(2).mean(dim=(2, 3))
    peak = target.amax(dim=(1, 2, 3)).clamp_min(1e-12).pow(2)[:, None]
    return 10.0 * torch.log10(mse / peak + 1e-10).mean()


def correction_loss(out: torch.Tensor, examples: Sequence[Example], lr: torch.Tensor, msi: torch.Tensor,
                    reference: torch.Tensor, w_lr: float, w_msi: float, margin: int = 0) -> torch.Tensor:
    """:func:`band_error_db` to the reference plus the two consistency terms, over good bands (module notes).

    ``margin`` (HR pixels): the fit to the reference leaves out a ring of
    that width along the crop's border, where the base and the network see
    mirrored edges that the inside of a large image never has; the two
    consistency terms keep the whole crop, except that the LR term of a
    :func:`cut` example leaves out the LR pixels whose PSF reaches outside
    the crop (``blur_sample``'s ``complete``).
    """
    good = torch.from_numpy(np.flatnonzero(examples[0].good))
    inner = (slice(None), slice(None), slice(margin, out.shape[2] - margin), slice(margin, out.shape[3] - margin))
    fit = band_error_db(out[inner].index_select(1, good), reference[inner].index_select(1, good))
    if not (w_lr or w_msi):
        return fit
    lr_terms, msi_terms = [], []
    for i, e in enumerate(examples):
        o = out[i:i + 1].index_select(1, good)
        low, complete = blur_sample(o, out.shape[2] // lr.shape[2], e.sigma, e.offset)
        target = lr[i:i + 1].index_select(1, good)
        if e.cut:
            rows, cols = complete[0, 0].any(dim=1), complete[0, 0].any(dim=0)
            low, target = low[:, :, rows][..., cols], target[:, :, rows][..., cols]
        if low.numel():  # a cut smaller than the PSF's support has no LR pixel to compare
            lr_terms.append(band_error_db(low, target))
        srf = torch.from_numpy(np.ascontiguousarray(e.srf[:, e.good], dtype=np.float32)) * e.msi_ratio
        msi_terms.append(band_error_db(torch.einsum("mc,bchw->bmhw", srf, o), msi[i:i + 1]))
    lr_term = torch.stack(lr_terms).mean() if lr_terms else torch.zeros(())
    return fit + w_lr * lr_term + w_msi * torch.stack(msi_terms).mean()


def score(examples: Sequence[Example], fused: Sequence[np.ndarray]) -> Dict[str, float]:
    """Mean PSNR (dB, peak = the reference's maximum) and SAM (degrees) over good bands and valid pixels."""
    p = [psnr(e.reference[e.good], f[e.good], e.valid) for e, f in zip(examples, fused)]
    s = [sam(e.reference[e.good], f[e.good], e.valid) for e, f in zip(examples, fused)]
    return {"psnr": float(np.mean(p)), "sam": float(np.mean(s))}


def correct(net: CorrectionNet, examples: Sequence[Example]) -> List[np.ndarray]:
    """The network's output for each example, one at a time (any sizes), float32 ``(C, H, W)``."""
    net.eval()
    outs = []
    with torch.inference_mode():
        for e in examples:
            lr, msi, base, _ = batch([e])
            outs.append(net(lr, msi, base, e.basis)[0].numpy())
    return outs


@dataclass
class CorrectionRun:
    """What :func:`train_correction` returns: the best and the last weights, the validation curve.

    ``curve`` rows are ``(step, training loss, validation PSNR, validation SAM)``.
    """

    state: Dict[str, torch.Tensor]
    last_state: Dict[str, torch.Tensor]
    best_step: int
    best_val: Dict[str, float]
    curve: List[Tuple[int, float, float, float]] = field(default_factory=list)
    seconds: float = 0.0


def train_correction(net: CorrectionNet, train: Sequence[Union[Reference, Scene]], val: Sequence[Example], *,
                     steps: int, batch_size: int = 8, lr_rate: float = 5e-4, w_lr: float = 0.1, w_msi: float = 0.1,
                     deg: Degradation = Degradation(), base_method: str = "gsa", seed: int = 0,
                     val_every: int = 50, loss_margin: int = 0, crops_per_scene: int = 4,
                     log: Optional[Callable[[str], None]] = None) -> CorrectionRun:
    """AdamW with a cosine decay over ``steps``; weights chosen by validation PSNR (step 0 = the base).

    Each batch holds ``batch_size`` fresh examples drawn from sources picked
    at random from ``train``: one crop of a :class:`Reference`
    (:func:`draw_example`) or ``crops_per_scene`` crops of one simulation of
    a :class:`Scene` (:func:`draw_scene`).  A batch keeps the band count of
    its first source (the network works on subspace coefficients, so
    references of several sensors can train it); ``loss_margin`` is
    :func:`correction_loss`'s ``margin``.
    """
    if 2 * loss_margin >= deg.crop:
        raise InputError(f"a loss margin of {loss_margin} px leaves nothing of a {deg.crop} px crop")
    if crops_per_scene < 1:
        raise InputError(f"crops_per_scene must be at least 1, not {crops_per_scene}")
    if not train or not val:
        raise InputError("training a correction needs training references and validation examples")
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr_rate, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    start = time.time()
    best = score(val, correct(net, val))
    initial = {k: v.detach().clone() for k, v in net.state_dict().items()}
    run = CorrectionRun(initial, initial, 0, best)
    run.curve.append((0, float("nan"), best["psnr"], best["sam"]))
    for step in range(1, steps + 1):
        net.train()
        examples: List[Example] = []
        pool = list(train)
        while len(examples) < batch_size:
            source = pool[int(rng.integers(len(pool)))]
            pool = [s for s in pool if s.bands == source.bands]  # one band set per batch
            if isinstance(source, Scene):
                crops = min(crops_per_scene, batch_size - len(examples))
                examples += draw_scene(source, rng, deg, crops, base_method, net.cfg.bands)
            else:
                examples.append(draw_example(source, rng, deg, base_method, net.cfg.bands))
        lr, msi, base, reference = batch(examples)
        out = net(lr, msi, base, CoefficientBasis.stack([e.basis for e in examples]))
        loss = correction_loss(out, examples, lr, msi, reference, w_lr, w_msi, loss_margin)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % val_every == 0 or step == steps:
            got = score(val, correct(net, val))
            run.curve.append((step, loss.item(), got["psnr"], got["sam"]))
            if got["psnr"] > run.best_val["psnr"]:
                run.state = {k: v.detach().clone() for k, v in net.state_dict().items()}
                run.best_step, run.best_val = step, got
            if log:
                log(f"step {step}: loss {loss.item():.5f}, val PSNR {got['psnr']:.3f} dB, SAM {got['sam']:.3f} deg "
                    f"({time.time() - start:.0f} s)")
    run.seconds = time.time() - start
    run.last_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    net.load_state_dict(run.state)
    return run
