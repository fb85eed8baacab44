"""A guard on every fused output: degraded back, it must reproduce its own inputs.

After a fusion, :func:`check_fused` reads the output over part of the scene
sample (:mod:`csakd_qgis.fusion.sample`), degrades it with the degradation
estimated from the pair (the PSF to the LR-HSI's grid, the spectral
response to the HR-MSI's bands; :mod:`csakd_qgis.estimation`) and compares
it with both inputs.  A fused image that explains its inputs far worse than
the inputs explain each other, or whose values leave the LR-HSI's range,
comes from a misread input, not from a weak method: an offset or a scale
not applied (a Sentinel-2 L2A ``BOA_ADD_OFFSET``, digital numbers against
reflectance), MSI bands in another order or from another sensor than a
network expects, a misregistration.  A classical method fits its
coefficients to the pair and so stays consistent; the guard matters most for
networks, whose weights were fitted to other data.

Errors are relative: for each good band, the RMSE of the difference over
the standard deviation of the input band, then the median over bands.  The
inputs' own consistency (the LR-HSI through the spectral response against
the HR-MSI blurred by the PSF) is the yardstick: an output fails when its
error exceeds ``FACTOR`` times the inputs' and the inputs' plus ``MARGIN``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np
import rasterio

from csakd_qgis.estimation import blur_sample
from csakd_qgis.fusion.plan import FusionPlan
from csakd_qgis.fusion.sample import framed_mosaic, sample_scene, sample_windows
from csakd_qgis.io.read import read_window

#: An error above ``FACTOR`` x the inputs' own (and above theirs + :data:`MARGIN`) fails.
FACTOR = 3.0

#: See :data:`FACTOR`: relative error (fraction of the band's standard deviation).  The bundled student, fitted to
#: other scenes, sits at 0.18-0.21 on the sample; an MSI read 0.1 reflectance too high gives it 0.69.
MARGIN = 0.4

#: Output values further than this many LR-HSI value ranges (0.1-99.9 percentile) outside it are out of range.
RANGE_SLACK = 1.0

#: Largest share of out-of-range output values that passes.
MAX_OUT_OF_RANGE = 0.01

#: Every ``WINDOW_STRIDE``-th sample window is checked (bounds the memory: the output's bands are read).
WINDOW_STRIDE = 4


@dataclass(frozen=True)
class GuardReport:
    """What :func:`check_fused` found (relative errors, see the module notes; NaN when not measured).

    Attributes
    ----------
    lr_error, msi_error:
        The output degraded by the PSF against the LR-HSI, and through the
        spectral response against the HR-MSI.
    msi_error_inputs:
        The inputs' own consistency: the LR-HSI through the spectral
        response against the HR-MSI blurred by the PSF.
    out_of_range:
        Share of the output's values outside the LR-HSI's range by more
        than :data:`RANGE_SLACK` ranges.
    passed:
        False when a check failed; ``message`` names the likely cause.
    """

    lr_error: float
    msi_error: float
    msi_error_inputs: float
    out_of_range: float
    passed: bool
    message: str

    def to_dict(self) -> Dict[str, object]:
        """JSON-ready dict (None for NaN)."""
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in self.__dict__.items()}


def _relative_error(predicted: np.ndarray, observed: np.ndarray, bands: np.ndarray) -> float:
    """Median over ``bands`` of RMSE(predicted - observed) / std(observed), on pixels finite in both."""
    errors = []
    for b in np.flatnonzero(bands):
        p, o = predicted[b].ravel(), observed[b].ravel()
        ok = np.isfinite(p) & np.isfinite(o)
        if ok.sum() > 8 and np.std(o[ok]) > 0:
            errors.append(np.sqrt(np.mean((p[ok] - o[ok]) ** 2)) / np.std(o[ok]))
    return float(np.median(errors)) if errors else float("nan")


def _out_of_range(out: np.ndarray, lr: np.ndarray, bands: np.ndarray) -> float:
    """Share of finite ``out`` values of ``bands`` beyond :data:`RANGE_SLACK` ranges of ``lr``'s values."""
    outside, total = 0, 0
    for b in np.flatnonzero(bands):
        ref, values = lr[b][np.isfinite(lr[b])], out[b][np.isfinite(out[b])]
        if ref.size < 8 or values.size == 0:
            continue
        lo, hi = np.percentile(ref, [0.1, 99.9])
        span = max(hi - lo, 1e-12)
        outside += int(np.count_nonzero((values < lo - RANGE_SLACK * span) | (values > hi + RANGE_SLACK * span)))
        total += values.size
    return outside / total if total else float("nan")


def check_fused(plan: FusionPlan, output: str) -> GuardReport:
    """Compare the fused ``output`` of ``plan`` with its inputs (module notes); reads a few sample windows.

    Not measured (``passed`` True, NaN errors) when the plan holds no
    reliable degradation estimate, or for bicubic, which ignores the HR-MSI.
    """
    degradation = plan.degradation
    if plan.method_name == "bicubic":
        return GuardReport(*(float("nan"),) * 4, True, "not checked: bicubic does not use the HR-MSI")
    if not degradation.get("reliable") or "sigma" not in degradation:
        return GuardReport(*(float("nan"),) * 4, True, "not checked: no reliable degradation estimate")
    windows = sample_windows(plan.grids)[::WINDOW_STRIDE]
    scale = plan.grids.scale
    # the LR-HSI is read unshifted (a warped read of a reprojected one warps every band of the blocks it
    # touches): the offset between the sample and the HR-MSI is then the reads' shift plus what the reads left
    with dataclasses.replace(plan, shift=(0.0, 0.0)).open_pair() as pair:
        sample = sample_scene(pair, windows)
    with rasterio.open(output) as ds:
        out = framed_mosaic(lambda w: read_window(ds, w), plan.grids.output, windows, scale)
    level_lr, level_msi = plan.radiometry.lr_level, plan.radiometry.msi_level
    lr, msi, out = sample.mosaic_lr / level_lr, sample.mosaic_msi / level_msi, out / level_lr
    good = np.array([b.good for b in plan.lr_info.bands]) & np.isfinite(lr).any(axis=(1, 2))
    srf = np.asarray(degradation["srf"], dtype=np.float64)
    gain = np.asarray(degradation["srf_gain"], dtype=np.float64)[:, None, None]
    bias = np.asarray(degradation["srf_bias"], dtype=np.float64)[:, None, None]
    used = good & np.any(srf != 0, axis=0)
    sigma, left = float(degradation["sigma"]), degradation["offset"]
    offset = (plan.shift[0] + float(left[0]), plan.shift[1] + float(left[1]))
    lr_error = _relative_error(blur_sample(np.where(good[:, None, None], out, np.nan)[good], scale, sigma, offset),
                               lr[good], np.ones(int(good.sum()), bool))
    through_srf = gain * np.einsum("mc,chw->mhw", srf[:, used], np.nan_to_num(out[used])) + bias
    through_srf[:, ~np.isfinite(out[used]).all(axis=0)] = np.nan
    msi_error = _relative_error(through_srf, msi, np.ones(msi.shape[0], bool))
    lr_srf = gain * np.einsum("mc,chw->mhw", srf[:, used], np.nan_to_num(lr[used])) + bias
    lr_srf[:, ~np.isfinite(lr[used]).all(axis=0)] = np.nan
    msi_inputs = _relative_error(lr_srf, blur_sample(msi, scale, sigma, offset), np.ones(msi.shape[0], bool))
    outside = _out_of_range(out, lr, good)
    return _verdict(lr_error, msi_error, msi_inputs, outside)


def _failed(error: float, yardstick: float) -> bool:
    return bool(np.isfinite(error) and np.isfinite(yardstick)
                and error > FACTOR * yardstick and error > yardstick + MARGIN)


def _verdict(lr_error: float, msi_error: float, msi_inputs: float, outside: float) -> GuardReport:
    """The :class:`GuardReport` of the measured errors, with the likely cause of a failure."""
    causes = []
    if np.isfinite(outside) and outside > MAX_OUT_OF_RANGE:
        causes.append(f"{100 * outside:.1f} % of its values lie far outside the LR-HSI's range: the two inputs "
                      "probably differ in units, scale or offset (reflectance against digital numbers, a "
                      "Sentinel-2 L2A BOA_ADD_OFFSET or a GDAL scale/offset not applied)")
    if _failed(msi_error, msi_inputs):
        causes.append(f"through the spectral response it misses the HR-MSI (relative error {msi_error:.2f}, "
                      f"the inputs agree to {msi_inputs:.2f}): the MSI bands are probably in another order or "
                      "from another sensor than the model expects, or their offset differs")
    if _failed(lr_error, msi_inputs):
        causes.append(f"degraded by the PSF it misses the LR-HSI (relative error {lr_error:.2f}): a "
                      "misregistration, a wrong scale or different units")
    message = "; ".join(causes) if causes else (f"consistent with its inputs (relative errors: LR-HSI "
                                                f"{lr_error:.3f}, HR-MSI {msi_error:.3f}; inputs {msi_inputs:.3f})")
    return GuardReport(lr_error, msi_error, msi_inputs, outside, not causes, message)


def describe(report: Optional[GuardReport]) -> str:
    """One line for the run report."""
    if report is None:
        return "output guard: off"
    return f"output guard: {'passed' if report.passed else 'FAILED'}, {report.message}"
