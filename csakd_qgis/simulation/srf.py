"""Spectral response functions: how a multispectral band sees hyperspectral bands.

The fusion problem links the two inputs by a spectral response matrix ``R``
of shape ``(m, C)``: an HR-MSI pixel is ``R @ x`` for the HR-HSI spectrum
``x`` (``C`` bands) it covers.  This module builds ``R`` from a sensor's band
responses.

Integration convention
----------------------
A multispectral band ``j`` with relative response ``r_j(λ)`` records
``∫ r_j(λ) L(λ) dλ / ∫ r_j(λ) dλ`` of the radiance spectrum ``L``.  The
hyperspectral bands sample ``L`` at centres ``λ_c``; with quadrature widths
``Δλ_c`` (half the distance between the neighbouring good band centres, one
sided at the ends, so overlapping detectors are not counted twice) the
integral becomes ``Σ_c w_jc L_c`` with

* ``w_jc = Δλ_c ∫ r_j(λ) g_c(λ) dλ`` where ``g_c`` is a unit-area Gaussian
  with the band's FWHM (the hyperspectral band's own response), or
* ``w_jc = Δλ_c r_j(λ_c)`` when the FWHM is unknown (or under 2 nm, below
  the 1 nm resolution of the tables), i.e. the band is a delta at its centre.

Each row is then divided by its sum, so the rows of ``R`` sum to 1 and an
MSI band is a weighted mean of HSI bands.  Bad bands (``good=False``) get
zero weight.  A band whose response lies mostly (more than 10 % of its area)
where no good HSI band is near raises :class:`~csakd_qgis.errors.InputError`.

Sources of band responses
-------------------------
``pyrsr`` (optional dependency, Apache-2.0) ships measured 1 nm tables for
Sentinel-2A/B MSI and Landsat 8/9 OLI.  Without it, or with
``source="table"``, each band is a Gaussian with the centre and FWHM of the
sensor's published specification (:data:`BAND_TABLES`).  ``sensor="gaussian"``
takes explicit centres and FWHMs through :meth:`SensorBands.gaussian`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np

from csakd_qgis.errors import DependencyError, InputError

#: FWHM (nm) to standard deviation of a Gaussian: FWHM = 2 sqrt(2 ln 2) sigma.
FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))

#: Minimum fraction of an MSI band's response area that good HSI bands must cover.
MIN_COVERAGE = 0.9

#: Below this FWHM (nm) an HSI band is treated as a delta at its centre.
MIN_GAUSSIAN_FWHM_NM = 2.0

#: Friendly sensor name -> (pyrsr satellite, pyrsr instrument).
PYRSR_SENSORS: Dict[str, Tuple[str, str]] = {
    "sentinel2": ("Sentinel-2A", "MSI"),
    "sentinel2a": ("Sentinel-2A", "MSI"),
    "sentinel2b": ("Sentinel-2B", "MSI"),
    "landsat8": ("Landsat-8", "OLI_TIRS"),
    "landsat9": ("Landsat-9", "OLI_TIRS"),
}

_S2A = {
    "1": (442.7, 21.0), "2": (492.4, 66.0), "3": (559.8, 36.0), "4": (664.6, 31.0),
    "5": (704.1, 15.0), "6": (740.5, 15.0), "7": (782.8, 20.0), "8": (832.8, 106.0),
    "8A": (864.7, 21.0), "9": (945.1, 20.0), "10": (1373.5, 31.0), "11": (1613.7, 91.0),
    "12": (2202.4, 175.0),
}
_S2B = {
    "1": (442.3, 21.0), "2": (492.1, 66.0), "3": (559.0, 36.0), "4": (665.0, 31.0),
    "5": (703.8, 16.0), "6": (739.1, 15.0), "7": (779.7, 20.0), "8": (833.0, 106.0),
    "8A": (864.0, 22.0), "9": (943.2, 21.0), "10": (1376.9, 30.0), "11": (1610.4, 94.0),
    "12": (2185.7, 185.0),
}
_OLI = {
    "1": (443.0, 16.0), "2": (482.0, 60.0), "3": (561.4, 57.0), "4": (654.6, 37.0),
    "5": (864.7, 28.0), "6": (1608.9, 85.0), "7": (2200.7, 187.0), "8": (589.5, 172.0),
    "9": (1373.4, 20.0),
}

#: Published centre wavelength and FWHM (nm) per band, the fallback without pyrsr
#: (ESA Sentinel-2 MSI spectral response documentation, USGS Landsat 8/9 OLI specification).
BAND_TABLES: Dict[str, Dict[str, Tuple[float, float]]] = {
    "sentinel2": _S2A,
    "sentinel2a": _S2A,
    "sentinel2b": _S2B,
    "landsat8": _OLI,
    "landsat9": _OLI,
}


def _band_key(name: str) -> str:
    """``"B02"``, ``"b2"``, ``"2"`` -> ``"2"``; ``"B8A"`` -> ``"8A"``."""
    key = str(name).strip().upper()
    if key.startswith("B"):
        key = key[1:]
    return key.lstrip("0") or "0"


def _sensor_key(sensor: str) -> str:
    return str(sensor).strip().lower().replace("-", "").replace("_", "").replace(" ", "")


@dataclass(frozen=True)
class SensorBands:
    """Relative spectral responses of a set of multispectral bands.

    Attributes
    ----------
    sensor:
        Friendly sensor name (``"sentinel2"``, ``"landsat8"``, ``"gaussian"``, ...).
    names:
        Band names as the user gave them, e.g. ``("B2", "B3", "B4", "B8")``.
    centres_nm, fwhm_nm:
        Centre wavelength and FWHM of each band in nanometres (for metadata).
    grid_nm:
        ``(G,)`` float64 wavelength grid (nm, 1 nm steps) of ``responses``.
    responses:
        ``(m, G)`` float64 relative responses on ``grid_nm`` (peak 1, zero outside).
    source:
        ``"pyrsr"`` for measured tables, ``"gaussian"`` for modelled responses.
    """

    sensor: str
    names: Tuple[str, ...]
    centres_nm: Tuple[float, ...]
    fwhm_nm: Tuple[float, ...]
    grid_nm: np.ndarray
    responses: np.ndarray
    source: str

    @classmethod
    def gaussian(cls, centres_nm: Sequence[float], fwhm_nm: Sequence[float],
                 names: Optional[Sequence[str]] = None, sensor: str = "gaussian") -> SensorBands:
        """Gaussian responses from band centres and FWHMs (both in nm)."""
        centres = np.asarray(centres_nm, dtype=np.float64).ravel()
        widths = np.asarray(fwhm_nm, dtype=np.float64).ravel()
        if centres.size == 0 or centres.shape != widths.shape:
            raise InputError(f"give one FWHM per band centre (got {centres.size} centres and "
                             f"{widths.size} FWHMs)")
        if not (np.all(np.isfinite(centres)) and np.all(widths > 0)):
            raise InputError("band centres must be finite and FWHMs positive (nanometres)")
        names = tuple(names) if names is not None else tuple(f"B{i + 1}" for i in range(centres.size))
        lo = np.floor(np.min(centres - 3 * widths))
        hi = np.ceil(np.max(centres + 3 * widths))
        grid = np.arange(lo, hi + 1.0)
        sigma = widths[:, None] * FWHM_TO_SIGMA
        resp = np.exp(-0.5 * ((grid[None, :] - centres[:, None]) / sigma) ** 2)
        return cls(sensor, names, tuple(centres.tolist()), tuple(widths.tolist()), grid, resp, "gaussian")


def _from_pyrsr(sensor: str, keys: Sequence[str], names: Sequence[str]) -> SensorBands:
    from pyrsr import RSR

    satellite, instrument = PYRSR_SENSORS[sensor]
    rsr = RSR(satellite, instrument)
    grid = np.asarray(rsr.rsrs_wvl, dtype=np.float64)
    order = [str(b) for b in rsr.bands]
    resp = np.stack([np.asarray(rsr.rsrs[k], dtype=np.float64) for k in keys])
    resp = resp / resp.max(axis=1, keepdims=True)
    centres = tuple(float(rsr.wvl[order.index(k)]) for k in keys)
    widths = tuple(float(rsr.fwhm[order.index(k)]) for k in keys)
    return SensorBands(sensor, tuple(names), centres, widths, grid, resp, "pyrsr")


def sensor_bands(sensor: str, bands: Sequence[str], source: str = "auto") -> SensorBands:
    """Look up the responses of named bands of a known sensor.

    Parameters
    ----------
    sensor:
        ``"sentinel2"`` (= Sentinel-2A), ``"sentinel2b"``, ``"landsat8"`` or ``"landsat9"``.
    bands:
        Band names such as ``["B2", "B3", "B4", "B8"]`` (``"B02"`` and ``"2"`` work too).
    source:
        ``"auto"`` (pyrsr tables when installed, else Gaussians from :data:`BAND_TABLES`),
        ``"pyrsr"`` (raise :class:`DependencyError` without it) or ``"table"``.
    """
    key = _sensor_key(sensor)
    if key not in BAND_TABLES:
        raise InputError(f"unknown sensor {sensor!r}; use one of {', '.join(sorted(BAND_TABLES))} "
                         "or give band centres and FWHMs for a Gaussian sensor")
    if source not in ("auto", "pyrsr", "table"):
        raise InputError(f"unknown response source {source!r}; use 'auto', 'pyrsr' or 'table'")
    names = [str(b).strip() for b in bands]
    if not names:
        raise InputError(f"name at least one {sensor} band, e.g. B2,B3,B4,B8")
    table = BAND_TABLES[key]
    keys = [_band_key(b) for b in names]
    for name, k in zip(names, keys):
        if k not in table:
            valid = ", ".join("B" + b for b in table)
            raise InputError(f"{sensor} has no band {name!r}; its bands are {valid}")
    if source != "table":
        try:
            import pyrsr  # noqa: F401
        except ImportError as exc:
            if source == "pyrsr":
                raise DependencyError("measured spectral responses need the 'pyrsr' package "
                                      "(pip install 'pyrsr<0.8'); or use source='table'") from exc
        else:
            return _from_pyrsr(key, keys, names)
    centres = [table[k][0] for k in keys]
    widths = [table[k][1] for k in keys]
    return SensorBands.gaussian(centres, widths, names, sensor=key)


def quadrature_widths(centres_nm: np.ndarray) -> np.ndarray:
    """Midpoint-rule widths (nm) of sorted or unsorted band centres ``(C,)``.

    Each band gets half the distance to its neighbours on either side (by
    wavelength), the first and last band the full distance to their only neighbour.
    A single band gets width 1.
    """
    centres = np.asarray(centres_nm, dtype=np.float64)
    if centres.size < 2:
        return np.ones_like(centres)
    order = np.argsort(centres, kind="stable")
    s = centres[order]
    gaps = np.diff(s)
    w = np.empty_like(s)
    w[0] = gaps[0]
    w[-1] = gaps[-1]
    w[1:-1] = 0.5 * (gaps[:-1] + gaps[1:])
    out = np.empty_like(w)
    out[order] = w
    return out


def spectral_response_matrix(wavelengths_nm: Sequence[float], fwhm_nm: Optional[Sequence[float]],
                             sensor: Union[str, SensorBands], bands: Sequence[str] = (),
                             good: Optional[Sequence[bool]] = None, source: str = "auto") -> np.ndarray:
    """Spectral response matrix ``R`` of shape ``(m, C)`` with rows summing to 1.

    Parameters
    ----------
    wavelengths_nm:
        ``(C,)`` centre wavelengths of the HSI bands in nanometres.
    fwhm_nm:
        ``(C,)`` FWHMs in nanometres, or None (NaN entries allowed) where unknown:
        those bands are treated as deltas at their centre.
    sensor:
        A sensor name for :func:`sensor_bands` or a :class:`SensorBands`.
    bands:
        MSI band names (ignored when ``sensor`` is a :class:`SensorBands`).
    good:
        ``(C,)`` booleans, False for bad bands (they get zero weight).
    source:
        Passed to :func:`sensor_bands`.

    Returns
    -------
    numpy.ndarray
        ``(m, C)`` float64; ``R[j] @ x`` is MSI band ``j`` of HSI spectrum ``x``.
    """
    sb = sensor if isinstance(sensor, SensorBands) else sensor_bands(sensor, bands, source)
    wl = np.asarray(wavelengths_nm, dtype=np.float64).ravel()
    n = wl.size
    fwhm = (np.full(n, np.nan) if fwhm_nm is None
            else np.asarray(fwhm_nm, dtype=np.float64).ravel())
    ok = np.ones(n, bool) if good is None else np.asarray(good, dtype=bool).ravel()
    if fwhm.size != n or ok.size != n:
        raise InputError(f"the HSI has {n} wavelengths but {fwhm.size} FWHMs and {ok.size} good flags")
    if n == 0 or not np.all(np.isfinite(wl)):
        raise InputError("every HSI band needs a centre wavelength (nm) to build spectral responses; "
                         "add 'wavelength' metadata to the hyperspectral raster")
    ok &= np.isfinite(wl)
    if not ok.any():
        raise InputError("the HSI has no good band (all flagged bad in 'bbl')")
    widths = np.zeros(n)
    widths[ok] = quadrature_widths(wl[ok])
    grid, resp = sb.grid_nm, sb.responses
    weights = np.zeros((len(sb.names), n))
    gauss = ok & np.isfinite(fwhm) & (fwhm >= MIN_GAUSSIAN_FWHM_NM)
    if gauss.any():
        sigma = fwhm[gauss] * FWHM_TO_SIGMA
        g = np.exp(-0.5 * ((grid[None, :] - wl[gauss, None]) / sigma[:, None]) ** 2)
        g /= sigma[:, None] * np.sqrt(2 * np.pi)
        weights[:, gauss] = resp @ g.T  # 1 nm grid: the sum is the integral
    delta = ok & ~gauss
    if delta.any():
        weights[:, delta] = np.stack([np.interp(wl[delta], grid, r, left=0.0, right=0.0) for r in resp])
    weights *= widths[None, :]
    _check_coverage(sb, wl[ok], np.where(np.isfinite(fwhm[ok]), fwhm[ok], 0.0), widths[ok])
    sums = weights.sum(axis=1, keepdims=True)
    return weights / sums


def _check_coverage(sb: SensorBands, centres: np.ndarray, fwhm: np.ndarray, widths: np.ndarray) -> None:
    """Raise InputError when good HSI bands leave an MSI band's response mostly uncovered."""
    reach = 0.5 * np.maximum(fwhm, widths) + 0.5
    dist = np.abs(sb.grid_nm[:, None] - centres[None, :])
    covered = (dist <= reach[None, :]).any(axis=1)
    area = sb.responses.sum(axis=1)
    frac = (sb.responses * covered[None, :]).sum(axis=1) / area
    for name, centre, f in zip(sb.names, sb.centres_nm, frac):
        if f < MIN_COVERAGE:
            raise InputError(
                f"the hyperspectral bands cover only {100 * f:.0f}% of {sb.sensor} band {name} "
                f"(centre {centre:.0f} nm); their good bands span {centres.min():.0f}-{centres.max():.0f} nm. "
                "Choose MSI bands inside that range or check the HSI wavelengths and bad-band list")
