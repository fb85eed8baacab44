"""Evaluation of fused rasters: full-reference metrics, no-reference consistency, HTML report.

One function, :func:`evaluate_rasters`, serves ``csakd evaluate`` and the
``csakd:evaluate`` Processing algorithm.  The rasters are read whole
(:func:`csakd_qgis.io.read.read_whole`): evaluation is meant for scenes
that fit in memory (a 1000 x 1000 x 224 float32 pair needs about 2 GB).

Bands flagged bad (ENVI ``bbl = 0``) in any of the rasters are left out of
every metric.  Pixels that are nodata in any raster are left out too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple, cast

import numpy as np

from csakd_qgis.errors import GridError, InputError
from csakd_qgis.io.bands import RasterInfo
from csakd_qgis.io.read import read_info, read_whole
from csakd_qgis.progress import SILENT, Reporter
from csakd_qgis.quality.metrics import consistency, evaluate, psnr_per_band
from csakd_qgis.simulation.degradation import DEFAULT_MTF_NYQUIST, gaussian_psf
from csakd_qgis.simulation.srf import spectral_response_matrix

#: Number of sample pixels whose spectra the report plots.
SAMPLE_SPECTRA = 3


@dataclass(frozen=True)
class EvaluationResult:
    """Metrics by section (``reference``, ``consistency``), each a name → value dict."""

    sections: Dict[str, Dict[str, object]] = field(default_factory=dict)

    def flat(self) -> Dict[str, float]:
        """Numeric values with upper-case names (``PSNR``, ``SAM``…; consistency ones prefixed ``NR_``)."""
        out: Dict[str, float] = {}
        for section, values in self.sections.items():
            prefix = "" if section == "reference" else "NR_"
            for name, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    out[prefix + name.upper()] = float(value)
        return out


def _same_grid(a: RasterInfo, b: RasterInfo) -> None:
    if (a.width, a.height) != (b.width, b.height):
        raise GridError(f"{b.path} is {b.width}x{b.height} pixels but {a.path} is {a.width}x{a.height}; "
                        "evaluate rasters on one grid (resample or crop first)")
    if a.crs != b.crs or not a.transform.almost_equals(b.transform, precision=1e-6 * max(a.res)):
        raise GridError(f"{b.path} and {a.path} are not on the same grid (CRS or geotransform differ)")


def _lr_scale(fused: RasterInfo, lr: RasterInfo, scale: Optional[int]) -> int:
    ratio = lr.res[0] / fused.res[0]
    s = int(round(ratio)) if scale is None else scale
    if s < 1 or abs(ratio - s) > 1e-6 * s:
        raise GridError(f"the LR-HSI pixel is {ratio:.4g} times the fused pixel, not the scale {s}")
    lr_t, f_t = lr.transform, fused.transform
    if lr.crs != fused.crs or abs(lr_t.c - f_t.c) > 1e-3 * fused.res[0] or abs(lr_t.f - f_t.f) > 1e-3 * fused.res[1]:
        raise GridError(f"{lr.path} does not share the fused raster's origin and CRS; co-register it first")
    if (lr.width * s, lr.height * s) != (fused.width, fused.height):
        raise GridError(f"the LR-HSI ({lr.width}x{lr.height}) times {s} does not cover the fused raster "
                        f"({fused.width}x{fused.height})")
    return s


def evaluate_rasters(reference: Optional[str], fused: str, *, lr_hsi: Optional[str] = None,
                     hr_msi: Optional[str] = None, scale: Optional[int] = None, peak: str = "range",
                     data_range: Optional[float] = None, sensor: str = "sentinel2",
                     bands: Sequence[str] = ("B2", "B3", "B4", "B8"), mtf: float = DEFAULT_MTF_NYQUIST,
                     report_html: Optional[str] = None, reporter: Reporter = SILENT) -> EvaluationResult:
    """Score ``fused`` against a reference and/or (no-reference) against its own inputs.

    Parameters
    ----------
    reference:
        HR-HSI reference on the fused raster's grid, or None for the
        no-reference check alone.
    fused:
        The fused raster.
    lr_hsi, hr_msi:
        The fusion's inputs on the aligned grids (LR exactly ``scale`` times
        coarser, same origin; MSI on the fused grid) for the consistency
        check.
    sensor, bands, mtf:
        The consistency check degrades the fused image back by this MSI
        sensor's responses and a Gaussian PSF with this MTF at Nyquist.
    scale:
        Resolution ratio for ERGAS and the consistency check (default: from
        the LR-HSI grid, else 4).
    peak, data_range:
        PSNR convention (see :mod:`csakd_qgis.quality.metrics`).
    report_html:
        Where to write an HTML report (metrics, per-band PSNR, spectra at
        sample pixels, error map, quicklooks); None writes none.
    reporter:
        Progress and cancel.
    """
    if reference is None and (lr_hsi is None or hr_msi is None):
        raise InputError("give a reference, or the LR-HSI and HR-MSI inputs for the no-reference check")
    if (lr_hsi is None) != (hr_msi is None):
        raise InputError("the no-reference consistency needs both the LR-HSI and the HR-MSI")
    reporter.update(0.05, f"reading {fused}")
    finfo, fused_data, fvalid = read_whole(fused, "evaluation")
    good = np.array([b.good for b in finfo.bands])
    sections: Dict[str, Dict[str, object]] = {}
    details = None
    if lr_hsi is not None and hr_msi is not None:
        lrinfo, msinfo = read_info(lr_hsi), read_info(hr_msi)
        scale = _lr_scale(finfo, lrinfo, scale)
        _same_grid(finfo, msinfo)
        if lrinfo.count != finfo.count:
            raise InputError(f"{lr_hsi} has {lrinfo.count} bands, the fused raster {finfo.count}")
        good &= np.array([b.good for b in lrinfo.bands])
    if reference is not None:
        rinfo = read_info(reference)
        _same_grid(rinfo, finfo)
        if rinfo.count != finfo.count:
            raise InputError(f"{reference} has {rinfo.count} bands, {fused} {finfo.count}")
        good &= np.array([b.good for b in rinfo.bands])
        reporter.update(0.2, f"reading {reference}")
        _, ref, rvalid = read_whole(reference, "evaluation")
        valid = rvalid & fvalid
        reporter.update(0.4, "full-reference metrics")
        report = evaluate(ref[good], fused_data[good], valid, scale=scale or 4, peak=peak, data_range=data_range)
        sections["reference"] = report.to_dict()
        details = (ref, valid)
    if lr_hsi is not None and hr_msi is not None:
        lr_scale = cast(int, scale)  # set from the LR-HSI grid above
        reporter.update(0.7, "no-reference consistency")
        _, lr, _ = read_whole(lr_hsi, "evaluation")
        _, msi, _ = read_whole(hr_msi, "evaluation")
        wavelengths = [b.wavelength_nm for b in finfo.bands]
        if any(w is None for w in wavelengths):
            raise InputError(f"{fused} lacks band wavelengths; the consistency check needs them")
        fwhm = [b.fwhm_nm if b.fwhm_nm is not None else np.nan for b in finfo.bands]
        srf = spectral_response_matrix(np.asarray(wavelengths)[good], np.asarray(fwhm)[good], sensor,
                                       [b.strip() for b in bands if b.strip()])
        if srf.shape[0] != msinfo.count:
            raise InputError(f"{hr_msi} has {msinfo.count} bands but {srf.shape[0]} MSI bands were named")
        fused_ok = np.where(fvalid, fused_data[good], np.nan)
        sections["consistency"] = consistency(fused_ok, lr[good], msi, srf, gaussian_psf(lr_scale, mtf),
                                              lr_scale).to_dict()
    result = EvaluationResult(sections)
    if report_html is not None:
        reporter.update(0.9, "writing the report")
        write_evaluation_report(report_html, result, fused_data, finfo, good, details, peak, data_range,
                                fused_path=fused)
    reporter.update(1.0, "done")
    return result


def write_evaluation_report(path: str, result: EvaluationResult, fused: np.ndarray, info: RasterInfo,
                            good: np.ndarray, details: Optional[Tuple[np.ndarray, np.ndarray]], peak: str,
                            data_range: Optional[float], *, fused_path: str) -> None:
    """The HTML report: metrics tables, and with a reference per-band PSNR, spectra and an error map."""
    from csakd_qgis.quality import report as html
    from csakd_qgis.quality.quicklook import true_colour_png

    sections = [(name.capitalize(), html.table(values.items(), ("metric", "value")))
                for name, values in result.sections.items()]
    sections.append(("Fused image (true colour)", html.img_tag(true_colour_png(fused_path, max_size=512),
                                                               "fused quicklook")))
    if details is not None:
        ref, valid = details
        wavelengths = np.array([b.wavelength_nm if b.wavelength_nm is not None else i
                                for i, b in enumerate(info.bands)], float)
        per_band = np.full(len(info.bands), np.nan)
        per_band[good] = psnr_per_band(ref[good], fused[good], valid, peak, data_range)
        unit = "nm" if all(b.wavelength_nm is not None for b in info.bands) else "band"
        sections.append(("Per-band PSNR", html.svg_line_chart(
            {"PSNR": (wavelengths, per_band)}, title="PSNR per band", xlabel=f"wavelength [{unit}]",
            ylabel="PSNR [dB]")))
        rows, cols = np.nonzero(valid)
        picks = np.linspace(0, rows.size - 1, SAMPLE_SPECTRA + 2)[1:-1].astype(int)
        for number, index in enumerate(picks, start=1):
            r, c = rows[index], cols[index]
            ref_spec = np.where(good, ref[:, r, c], np.nan)
            fused_spec = np.where(good, fused[:, r, c], np.nan)
            sections.append((f"Spectrum at pixel {number} (row {r}, column {c})", html.svg_line_chart(
                {"reference": (wavelengths, ref_spec), "fused": (wavelengths, fused_spec)},
                title=f"row {r}, column {c}", xlabel=f"wavelength [{unit}]", ylabel="value")))
        squared = np.where(valid, (fused[good] - ref[good]) ** 2, 0.0)
        error = np.sqrt(squared.mean(axis=0))
        sections.append(("Error map (RMSE over bands; white 0, dark red = 99th percentile)",
                         html.img_tag(html.heat_png(error, valid), "error map")))
    html.write_page(path, f"Evaluation of {info.path}", sections)
