"""Where models live, and which one fits a pair of inputs.

Two folders are searched, in this order:

* bundled models: ``<plugin>/resources/models/*.safetensors`` (shipped with
  the plugin, read-only), or for an engine installed from its wheel
  ``<prefix>/share/csakd_qgis/models`` (:func:`bundled_dir`);
* installed models: ``$CSAKD_MODEL_DIR`` when set, else
  ``~/.local/share/csakd/models`` (models a user trained or downloaded).

A model's *name* is its file name without ``.safetensors``
(:func:`csakd_qgis.models.files.model_name`); an installed model shadows a
bundled one of the same name.  Only card headers are read
while listing, never weights.
"""

from __future__ import annotations

import os
import site
import sys
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple, cast

from csakd_qgis.errors import CheckpointError, ModelMismatchError
from csakd_qgis.models.card import ModelCard
from csakd_qgis.models.checkpoint import read_card
from csakd_qgis.models.files import SUFFIX, model_name, strip_suffix

if TYPE_CHECKING:
    from csakd_qgis.io.bands import BandInfo

#: Largest centre-wavelength difference (nm) for two bands to count as the same.
WAVELENGTH_TOLERANCE_NM = 5.0


_HOW_TO_TRAIN = (
    "Make a fitting model with 'csakd train --scene LR_HSI.tif HR_MSI.tif --out model.safetensors' "
    "(trains on the pair itself, Wald protocol) or the QGIS algorithm 'csakd:train', then pass it "
    "as the model or copy it into {folder}."
)


def bundled_dir() -> Path:
    """The folder of models shipped with the plugin or the wheel.

    ``resources/models`` beside the package (the plugin folder, a source
    checkout); else, for a wheel install, ``share/csakd_qgis/models`` under
    the environment's prefix or the user base (``pip install --user``),
    where ``pyproject.toml``'s data files put them.  The plugin path when
    none exists.
    """
    source = Path(__file__).resolve().parents[2] / "resources" / "models"
    if source.is_dir():
        return source
    for base in (sys.prefix, site.getuserbase()):
        installed = Path(base) / "share" / "csakd_qgis" / "models"
        if installed.is_dir():
            return installed
    return source


def user_dir() -> Path:
    """The folder of user-installed models (``$CSAKD_MODEL_DIR`` or ``~/.local/share/csakd/models``)."""
    env = os.environ.get("CSAKD_MODEL_DIR")
    return Path(env).expanduser() if env else Path.home() / ".local" / "share" / "csakd" / "models"


def list_models() -> List[Tuple[Path, ModelCard]]:
    """Every readable model, installed first, one per name, sorted by name within each folder.

    Files whose header is not a csakd card are skipped (they cannot be used
    by name); pass them as paths to get the reason.
    """
    seen = set()
    found: List[Tuple[Path, ModelCard]] = []
    for folder in (user_dir(), bundled_dir()):
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob(f"*{SUFFIX}")):
            name = model_name(path)
            if name in seen:
                continue
            try:
                card = read_card(path)
            except CheckpointError:
                continue
            seen.add(name)
            found.append((path, card))
    return found


def resolve_model(name_or_path: str) -> Tuple[Path, ModelCard]:
    """Find a model by file path or by name.

    Raises
    ------
    CheckpointError
        When it is neither an existing file nor the name of a listed model
        (the message lists the names available).
    """
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path, read_card(path)
    name = strip_suffix(name_or_path)
    models = list_models()
    for p, card in models:
        if model_name(p) == name:
            return p, card
    names = ", ".join(model_name(p) for p, _ in models) or "none"
    raise CheckpointError(
        f"model {name_or_path!r} is neither a file nor an installed model (available: {names}; "
        f"installed models live in {user_dir()})"
    )


def _wavelength_gap(a: Sequence[Optional[float]], b: Sequence[Optional[float]]) -> Optional[float]:
    """Largest |a_i - b_i| over bands where both are known; None when no pair is known."""
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    return max(abs(x - y) for x, y in pairs) if pairs else None


def training_hint() -> str:
    """The sentence that tells a user how to make a model that fits their inputs."""
    return _HOW_TO_TRAIN.format(folder=user_dir())


def _reordering(expected: Sequence[Optional[float]], found: Sequence[Optional[float]],
                tolerance_nm: float) -> Optional[List[int]]:
    """1-based input band numbers that put ``found`` in the order of ``expected``, or None.

    None unless every centre is known, each expected band matches exactly
    one input band within ``tolerance_nm``, and the order differs.
    """
    if len(expected) != len(found) or any(w is None for w in list(expected) + list(found)):
        return None
    known = cast(Sequence[float], found)
    order = []
    for want in cast(Sequence[float], expected):
        near = [i for i, have in enumerate(known) if abs(have - want) <= tolerance_nm]
        if len(near) != 1:
            return None
        order.append(near[0] + 1)
    if sorted(order) != list(range(1, len(found) + 1)) or order == sorted(order):
        return None
    return order


def msi_band_order(card: ModelCard, msi_wavelengths: Sequence[Optional[float]]) -> Optional[List[int]]:
    """1-based input band numbers that give ``card``'s MSI bands in its order, or None (see :func:`_reordering`).

    Centres are matched within 20 nm (or :data:`WAVELENGTH_TOLERANCE_NM`
    when larger), as the model check does.
    """
    return _reordering(card.msi.wavelengths_nm, msi_wavelengths, max(WAVELENGTH_TOLERANCE_NM, 20.0))


def _msi_mismatch(card: ModelCard, msi_wavelengths: Sequence[Optional[float]], tolerance_nm: float) -> Optional[str]:
    """Why the input's MSI band centres do not fit ``card`` (None: they fit or are unknown).

    Tells apart the model's bands in another order (and how to reorder them)
    from the bands of another sensor.
    """
    gap = _wavelength_gap(card.msi.wavelengths_nm, msi_wavelengths)
    if gap is None or gap <= tolerance_nm:
        return None
    sensor = f"{card.msi.sensor} " if card.msi.sensor else ""
    bands = ", ".join(f"{name} ({w:.0f} nm)" if w is not None else name
                      for name, w in zip(card.msi.band_names, card.msi.wavelengths_nm))
    have = ", ".join("?" if w is None else f"{w:.0f}" for w in msi_wavelengths)
    order = _reordering(card.msi.wavelengths_nm, msi_wavelengths, tolerance_nm)
    if order is not None:
        return (f"the {sensor}MSI bands in the order {bands}, but the input has them in another order "
                f"({have} nm): reorder its bands, e.g. 'gdal_translate {' '.join(f'-b {i}' for i in order)} "
                "HR_MSI.tif HR_MSI_reordered.tif'")
    return (f"the {sensor}MSI bands {bands}, but the input's bands lie at {have} nm (up to {gap:.0f} nm away): "
            "another sensor or band set")


def mismatches(card: ModelCard, lr_wavelengths: Sequence[Optional[float]], msi_band_count: int,
               msi_wavelengths: Optional[Sequence[Optional[float]]], scale: int,
               tolerance_nm: float = WAVELENGTH_TOLERANCE_NM) -> List[str]:
    """Why ``card`` does not fit the inputs (empty list: it fits); each reason says what the model expects.

    MSI band centres are compared with a tolerance of at least 20 nm; when
    they are the model's bands in another order, the reason gives the
    ``gdal_translate -b`` order that fixes it.
    """
    why = []
    if card.lr_bands.count != len(lr_wavelengths):
        known = [w for w in card.lr_bands.wavelengths_nm if w is not None]
        span = f": {min(known):.0f}-{max(known):.0f} nm" if known else ""
        why.append(f"{card.lr_bands.count} HSI bands (input has {len(lr_wavelengths)}){span}")
    else:
        gap = _wavelength_gap(card.lr_bands.wavelengths_nm, lr_wavelengths)
        if gap is not None and gap > tolerance_nm:
            why.append(f"HSI wavelengths up to {gap:.1f} nm away from the input's (tolerance {tolerance_nm} nm)")
    if card.msi.count != msi_band_count:
        sensor = f"{card.msi.sensor} " if card.msi.sensor else ""
        why.append(f"{card.msi.count} MSI bands (input has {msi_band_count}): {sensor}"
                   + ", ".join(card.msi.band_names))
    elif msi_wavelengths is not None and card.msi.wavelengths_nm:
        reason = _msi_mismatch(card, msi_wavelengths, max(tolerance_nm, 20.0))
        if reason:
            why.append(reason)
    if card.scale != scale:
        why.append(f"scale {card.scale} (inputs have {scale})")
    return why


def auto_select(lr_bands: Sequence[BandInfo], msi_band_count: int,
                msi_wavelengths: Optional[Sequence[Optional[float]]] = None, scale: int = 4,
                role: str = "student", tolerance_nm: float = WAVELENGTH_TOLERANCE_NM
                ) -> Tuple[Path, ModelCard]:
    """Pick the first listed model of ``role`` that fits the inputs.

    Parameters
    ----------
    lr_bands:
        The LR-HSI's bands (``wavelength_nm`` may be None).
    msi_band_count:
        Number of HR-MSI bands m.
    msi_wavelengths:
        The MSI bands' centre wavelengths (nm) when known.  MSI centres are
        compared with a tolerance of at least 20 nm (sensors differ that much
        for "the same" band).
    scale:
        Integer ratio of LR to HR pixel size.
    role:
        ``"student"`` (fast, default) or ``"teacher"``.
    tolerance_nm:
        Largest HSI centre-wavelength difference (nm) still counted as a match.

    Raises
    ------
    ModelMismatchError
        When no model fits; the message lists what each model expects and
        how to train a fitting one.
    """
    wavelengths = [b.wavelength_nm for b in lr_bands]
    reasons = []
    for path, card in list_models():
        if card.role != role:
            continue
        why = mismatches(card, wavelengths, msi_band_count, msi_wavelengths, scale, tolerance_nm)
        if not why:
            return path, card
        reasons.append(f"{path.name} expects " + ", ".join(why))
    known = [w for w in wavelengths if w is not None]
    span = f", {min(known):.0f}-{max(known):.0f} nm" if known else ""
    listing = "; ".join(reasons) if reasons else f"no {role} model is installed"
    raise ModelMismatchError(
        f"no {role} model fits inputs with {len(wavelengths)} HSI bands{span}, {msi_band_count} MSI bands "
        f"and scale {scale} ({listing}). " + training_hint()
    )


def describe(card: ModelCard) -> str:
    """One paragraph a user reads before running a model."""
    wl = [w for w in card.lr_bands.wavelengths_nm if w is not None]
    span = f" ({min(wl):.0f}-{max(wl):.0f} nm)" if wl else " (wavelengths unknown)"
    msi = f"{card.msi.sensor} " if card.msi.sensor else ""
    text = (
        f"{card.name}: CSAKD {card.role} fusing a {card.lr_bands.count}-band HSI{span} with a "
        f"{card.msi.count}-band {msi}MSI ({', '.join(card.msi.band_names)}) at scale {card.scale}."
    )
    prov = card.provenance
    if prov.data or prov.protocol:
        text += f" Trained on {prov.data or 'unnamed data'}"
        text += f" ({prov.protocol})" if prov.protocol else ""
        text += f", {prov.steps} steps in {prov.seconds:.0f} s." if prov.steps else "."
    if card.metrics:
        shown = ", ".join(f"{k} {v:.3g}" for k, v in card.metrics.items())
        text += f" Validation{' on ' + card.validation if card.validation else ''}: {shown}."
    if card.description:
        text += " " + card.description.strip()
    if card.limits:
        text += " Limits: " + card.limits.strip()
    return text
