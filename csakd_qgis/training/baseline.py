"""The classical bar a trained network must clear, scored on the network's own validation scenes.

``method="auto"`` fuses with a network only when its model card's
:data:`~csakd_qgis.models.card.CLASSICAL_GAIN_KEY` is above 0
(:func:`csakd_qgis.fusion.methods.pays_off`).  :func:`classical_baseline`
measures the bar that number is taken against, the way the engine would fuse
the same pairs without a network:

1. the degradation (PSF width, offset, noise) is estimated from the largest
   training scene's LR-HSI / HR-MSI pair
   (:func:`csakd_qgis.estimation.estimate_degradation`), as the engine
   estimates it from the pair it fuses; an unreliable or failed estimate
   gives the default Gaussian PSF and no offset, as in the engine;
2. each of the engine's classical methods (:data:`METHODS`) is fitted with
   that degradation on each validation scene's own pair, as the engine fits
   on the pair it fuses (on the training pair when a validation scene is too
   small for a fit), and fuses it (edges mirrored by its halo,
   :func:`csakd_qgis.classical.fuse_whole`);
3. each is scored with the network's validation metric
   (:func:`csakd_qgis.training.validation.validation_metrics`: PSNR with the
   per-band peak, SAM in degrees, over the valid pixels), and the best PSNR
   is the bar: the network is compared with the strongest classical method,
   not only with the one ``auto`` would pick by the SNR.

Scenes are in the training data's normalised units (each input divided by its
robust level); PSNR and SAM do not depend on those units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from csakd_qgis.classical import fit_method, fuse_whole
from csakd_qgis.errors import InputError
from csakd_qgis.estimation import estimate_degradation
from csakd_qgis.models.card import CLASSICAL_GAIN_KEY, CLASSICAL_PSNR_KEY, CLASSICAL_SAM_KEY
from csakd_qgis.simulation.degradation import psf_sigma
from csakd_qgis.training.data import TrainingData
from csakd_qgis.training.patches import Scene
from csakd_qgis.training.validation import validation_metrics

#: The engine's classical methods the bar is taken from (:func:`csakd_qgis.classical.fit_method` names).
METHODS = ("gsa", "glp", "subspace", "subspace_bp")


@dataclass(frozen=True)
class Baseline:
    """The strongest classical method on the validation scenes.

    ``method`` is its engine name; ``psnr`` (dB) and ``sam`` (degrees) its
    mean validation metrics; ``scores`` ``(name, psnr, sam)`` for every
    method in :data:`METHODS`; ``notes`` how the degradation was obtained.
    """

    method: str
    psnr: float
    sam: float
    scores: Tuple[Tuple[str, float, float], ...]
    notes: Tuple[str, ...]

    def verdict(self, gain_db: float) -> str:
        """One sentence for the card and the logs: a network's validation gain over this bar and what auto does."""
        if gain_db > 0:
            return (f"On validation it beats the strongest classical method ({self.method}, {self.psnr:.2f} dB) "
                    f"by {gain_db:.2f} dB, so method auto fuses with it.")
        return (f"On validation it does not beat the strongest classical method ({self.method}, {self.psnr:.2f} dB; "
                f"the network {gain_db:+.2f} dB), so method auto fuses with the classical method instead; name "
                "the model with method csakd to use it anyway.")

    def card_metrics(self, network_psnr: float) -> Dict[str, float]:
        """Model-card metrics of a network with validation PSNR ``network_psnr``: its gain over this bar and the bar.

        Keys :data:`~csakd_qgis.models.card.CLASSICAL_GAIN_KEY` (what ``auto`` reads), ``CLASSICAL_PSNR_KEY``
        and ``CLASSICAL_SAM_KEY``.
        """
        return {CLASSICAL_GAIN_KEY: network_psnr - self.psnr, CLASSICAL_PSNR_KEY: self.psnr,
                CLASSICAL_SAM_KEY: self.sam}

    def summary(self, network_psnr: float) -> Dict[str, Any]:
        """JSON-ready dict of the bar with a network's ``gain_db`` over it and the :meth:`verdict`."""
        gain = network_psnr - self.psnr
        return {"method": self.method, "psnr": self.psnr, "sam": self.sam,
                "scores": [{"method": n, "psnr": p, "sam": s} for n, p, s in self.scores],
                "notes": list(self.notes), "gain_db": gain, "verdict": self.verdict(gain)}


def _good_bands(data: TrainingData, scene: Scene) -> List[bool]:
    """The card's good-band flags, or (without them) the bands holding any non-zero value."""
    if data.lr_bands.good:
        return [bool(g) for g in data.lr_bands.good]
    return [bool(b) for b in np.abs(scene.lr).reshape(scene.lr.shape[0], -1).max(axis=1) > 0]


def _degradation(scene: Scene, good: Sequence[bool],
                 wavelengths: Sequence[Optional[float]]) -> Tuple[float, Tuple[float, float], str]:
    """``(sigma HR px, offset LR px, note)`` estimated from ``scene``'s pair, or the engine's default."""
    default = psf_sigma(scene.scale)
    try:
        estimate = estimate_degradation(scene.lr, scene.msi, scene.scale, good=good,
                                        wavelengths_nm=None if None in wavelengths else
                                        [float(w) for w in wavelengths if w is not None])
    except InputError as error:
        return default, (0.0, 0.0), f"degradation not estimated ({error}); the default PSF (sigma {default:.2f})"
    if not estimate.reliable:
        return default, (0.0, 0.0), f"PSF estimate not reliable; the default PSF (sigma {default:.2f})"
    offset = (float(estimate.offset[0]), float(estimate.offset[1]))
    return float(estimate.sigma), offset, (f"degradation estimated on the training pair: PSF sigma "
                                           f"{estimate.sigma:.2f} HR px, offset ({offset[0]:+.2f}, "
                                           f"{offset[1]:+.2f}) LR px")


def classical_baseline(data: TrainingData) -> Optional[Baseline]:
    """The classical bar on ``data.val`` (see the module notes); None without validation scenes."""
    if not data.val:
        return None
    fit_scene = max(data.train, key=lambda s: s.lr.shape[1] * s.lr.shape[2])
    good = _good_bands(data, fit_scene)
    sigma, offset, note = _degradation(fit_scene, good, data.lr_bands.wavelengths_nm)
    notes = [note]
    scores = []
    for name in METHODS:
        metrics = []
        for number, sc in enumerate(data.val):
            try:
                fusion = fit_method(name, sc.lr, sc.msi, sc.scale, sigma, offset, good)
            except InputError as error:
                fusion = fit_method(name, fit_scene.lr, fit_scene.msi, sc.scale, sigma, offset, good)
                notes.append(f"{name} fitted on the training pair for validation scene {number + 1} ({error})")
            metrics.append(validation_metrics(torch.from_numpy(fuse_whole(fusion.model, sc.lr, sc.msi)),
                                              torch.from_numpy(sc.ref), torch.from_numpy(sc.valid)))
        scores.append((name, float(np.mean([m[0] for m in metrics])), float(np.mean([m[1] for m in metrics]))))
    best = max(scores, key=lambda s: s[1])
    return Baseline(best[0], best[1], best[2], tuple(scores), tuple(notes))


def scores_line(summary: Dict[str, Any]) -> str:
    """``"gsa 34.155 dB, glp ..., subspace ...; <verdict>"`` of a :meth:`Baseline.summary`, for logs."""
    scores = ", ".join(f"{c['method']} {c['psnr']:.3f} dB" for c in summary["scores"])
    return f"classical methods on the same validation rows: {scores} ({'; '.join(summary['notes'])}). " \
        f"{summary['verdict']}"
