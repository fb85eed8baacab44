"""The model card: what a checkpoint is, what it expects and how it was made.

A card travels inside the checkpoint (see :mod:`csakd_qgis.models.checkpoint`) as
JSON in the safetensors header, so it can be read without loading a single
weight.  Every part is a frozen dataclass with ``to_dict`` / ``from_dict``;
``from_dict`` rejects unknown keys and unknown format versions, so a card
written by a newer release fails loudly instead of being half understood.

Conventions
-----------
* Wavelengths and FWHM are centre values in nanometres; ``None`` = unknown.
* ``good`` follows ENVI's ``bbl``: False marks a bad band (water vapour ...).
* ``normalisation`` names the input convention; ``"p99"`` is
  :func:`csakd_qgis.fusion.radiometry.robust_level` (each input divided by its own
  99th percentile, the output multiplied back by the LR-HSI's level).
* ``metrics`` are ``name -> value`` on the validation set named by
  ``validation`` (PSNR in dB, SAM in degrees, as
  :func:`csakd_qgis.quality.metrics.evaluate` reports them).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

from csakd_qgis.errors import CheckpointError

#: The card layout this release writes and reads.
FORMAT_VERSION = 1

#: Roles a checkpoint can have.
ROLES = ("student", "teacher")

#: ``metrics`` key: validation PSNR (dB) of the network minus that of the strongest classical method on the same
#: validation scenes (:func:`csakd_qgis.training.baseline.classical_baseline`).  ``auto`` uses a network only when
#: its card says this is above 0 (:func:`csakd_qgis.fusion.methods.pays_off`).
CLASSICAL_GAIN_KEY = "val_gain_over_classical_db"

#: ``metrics`` keys of the classical bar itself: its validation PSNR (dB) and SAM (degrees).
CLASSICAL_PSNR_KEY, CLASSICAL_SAM_KEY = "classical_psnr", "classical_sam"


def _take(cls: type, data: Mapping[str, Any], what: str) -> Dict[str, Any]:
    """Check ``data`` has only the fields of dataclass ``cls`` and return it as a dict."""
    if not isinstance(data, Mapping):
        raise CheckpointError(f"model card: '{what}' must be a JSON object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise CheckpointError(
            f"model card: unknown key(s) {unknown} in '{what}'; the file was written by another "
            "release of csakd or edited by hand"
        )
    required = {f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    missing = sorted(required - set(data))
    if missing:
        raise CheckpointError(f"model card: missing key(s) {missing} in '{what}'")
    return dict(data)


def _floats(values: Any) -> Tuple[Optional[float], ...]:
    return tuple(None if v is None else float(v) for v in values)


@dataclass(frozen=True)
class SpectralBands:
    """Per-band spectral metadata of the LR-HSI the model was trained on (C entries each)."""

    wavelengths_nm: Tuple[Optional[float], ...]
    fwhm_nm: Tuple[Optional[float], ...] = ()
    good: Tuple[bool, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.wavelengths_nm)
        for name in ("fwhm_nm", "good"):
            if len(getattr(self, name)) not in (0, n):
                raise CheckpointError(
                    f"model card: {name} has {len(getattr(self, name))} entries for {n} bands"
                )

    @property
    def count(self) -> int:
        """Number of bands C."""
        return len(self.wavelengths_nm)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dict."""
        return {"wavelengths_nm": list(self.wavelengths_nm), "fwhm_nm": list(self.fwhm_nm),
                "good": list(self.good)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SpectralBands:
        """Inverse of :meth:`to_dict`; :class:`CheckpointError` on unknown keys."""
        d = _take(cls, data, "lr_bands")
        return cls(_floats(d["wavelengths_nm"]), _floats(d.get("fwhm_nm", ())),
                   tuple(bool(g) for g in d.get("good", ())))


@dataclass(frozen=True)
class MsiInfo:
    """The HR-MSI the model expects: sensor (or None for a custom one), m band names and centres (nm)."""

    sensor: Optional[str]
    band_names: Tuple[str, ...]
    wavelengths_nm: Tuple[Optional[float], ...] = ()

    @property
    def count(self) -> int:
        """Number of MSI bands m."""
        return len(self.band_names)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dict."""
        return {"sensor": self.sensor, "band_names": list(self.band_names),
                "wavelengths_nm": list(self.wavelengths_nm)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MsiInfo:
        """Inverse of :meth:`to_dict`; :class:`CheckpointError` on unknown keys."""
        d = _take(cls, data, "msi")
        return cls(d["sensor"], tuple(str(b) for b in d["band_names"]),
                   _floats(d.get("wavelengths_nm", ())))


@dataclass(frozen=True)
class Provenance:
    """How the weights were made.

    ``data`` names the scene(s); ``protocol`` is ``"simulation"`` (reference
    HR-HSI degraded by a sensor model), ``"wald"`` (scene-adaptive, see
    :mod:`csakd_qgis.training.scene_adaptive`) or ``"original"`` (the authors' weights).
    ``seconds`` is wall-clock training time, ``machine`` the device used.
    """

    data: str = ""
    protocol: str = ""
    mode: str = ""
    steps: int = 0
    epochs: float = 0.0
    seconds: float = 0.0
    seed: Optional[int] = None
    machine: str = ""

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Provenance:
        """Inverse of :meth:`to_dict`; :class:`CheckpointError` on unknown keys."""
        return cls(**_take(cls, data, "provenance"))


def today() -> str:
    """Today's date, ISO 8601 (UTC)."""
    return datetime.datetime.now(datetime.timezone.utc).date().isoformat()


@dataclass(frozen=True)
class ModelCard:
    """Everything a user or the engine needs to know about one checkpoint.

    ``config`` is the :class:`csakd_qgis.models.ModelConfig` as a dict (it
    rebuilds the network); ``scale`` is the integer HR/LR pixel-size ratio;
    ``weights_sha256`` is filled in by
    :func:`csakd_qgis.models.checkpoint.save_checkpoint` and verified on load.
    """

    name: str
    role: str
    config: Mapping[str, Any]
    scale: int
    lr_bands: SpectralBands
    msi: MsiInfo
    normalisation: str = "p99"
    provenance: Provenance = field(default_factory=Provenance)
    validation: str = ""
    metrics: Mapping[str, float] = field(default_factory=dict)
    weights_sha256: str = ""
    created: str = field(default_factory=today)
    description: str = ""
    limits: str = ""
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.format_version != FORMAT_VERSION:
            raise CheckpointError(
                f"model card format_version {self.format_version!r} is not supported by this release "
                f"(it reads version {FORMAT_VERSION}); update csakd or re-export the model"
            )
        if self.role not in ROLES:
            raise CheckpointError(f"model card role {self.role!r} is not one of {ROLES}")
        if int(self.scale) != self.scale or self.scale < 1:
            raise CheckpointError(f"model card scale {self.scale!r} is not a positive integer")

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dict (nested parts as dicts)."""
        return {
            "format_version": self.format_version, "name": self.name, "role": self.role,
            "config": dict(self.config), "scale": int(self.scale),
            "lr_bands": self.lr_bands.to_dict(), "msi": self.msi.to_dict(),
            "normalisation": self.normalisation, "provenance": self.provenance.to_dict(),
            "validation": self.validation, "metrics": {k: float(v) for k, v in self.metrics.items()},
            "weights_sha256": self.weights_sha256, "created": self.created,
            "description": self.description, "limits": self.limits,
        }

    def to_json(self) -> str:
        """Return the card as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelCard:
        """Inverse of :meth:`to_dict`.

        Raises
        ------
        CheckpointError
            On unknown or missing keys, an unknown ``format_version`` or bad values.
        """
        if isinstance(data, Mapping) and data.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
            raise CheckpointError(
                f"model card format_version {data.get('format_version')!r} is not supported by this "
                f"release (it reads version {FORMAT_VERSION}); update csakd or re-export the model"
            )
        d = _take(cls, data, "card")
        try:
            d["lr_bands"] = SpectralBands.from_dict(d["lr_bands"])
            d["msi"] = MsiInfo.from_dict(d["msi"])
            if "provenance" in d:
                d["provenance"] = Provenance.from_dict(d["provenance"])
            if "metrics" in d:
                d["metrics"] = {str(k): float(v) for k, v in dict(d["metrics"]).items()}
            if not isinstance(d["config"], Mapping):
                raise CheckpointError("model card: 'config' must be a JSON object")
            d["config"] = dict(d["config"])
            return cls(**d)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, CheckpointError):
                raise
            raise CheckpointError(f"model card has a malformed value: {exc}") from exc

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        """Parse a card from JSON text; :class:`CheckpointError` when it is not valid JSON."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, TypeError) as exc:
            raise CheckpointError(f"the model card is not valid JSON ({exc}); the file is damaged") from exc
        return cls.from_dict(data)
