"""One exception tree for the engine.

Every failure the engine can report to a user is a subclass of
:class:`CsakdError`.  Where a builtin describes the failure as well, the class
inherits it too, so callers that catch ``OSError`` or ``ValueError`` keep
working.  Messages name the offending input and say what to change.

The QGIS algorithms turn these into ``QgsProcessingException`` and the command
line prints them on one line without a traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class CsakdError(Exception):
    """Root of every error the engine raises on purpose."""


class InputError(CsakdError, ValueError):
    """A user input (raster, parameter, option) cannot be used as given."""


class RasterReadError(CsakdError, OSError):
    """A raster could not be opened or read."""


class RasterWriteError(CsakdError, OSError):
    """An output raster could not be written."""


class OutputExistsError(RasterWriteError, InputError):
    """The output exists and overwriting was not allowed (also an :class:`InputError`: the user chose the name)."""


class ImplausibleOutputError(InputError):
    """The fused image does not agree with its own inputs (a misread input, see :mod:`csakd_qgis.quality.guard`)."""


class TileTooLarge(CsakdError):
    """One tile does not fit in the device's memory (the engine retries with a smaller tile)."""


class GridError(InputError):
    """Two rasters cannot be put on one grid (CRS, overlap, resolution)."""


class TilingError(InputError):
    """A tile plan cannot be made from the requested sizes."""


class CheckpointError(CsakdError, ValueError):
    """A model file is malformed, untrusted or does not fit the inputs."""


class ModelMismatchError(CheckpointError):
    """A model does not match the inputs (bands, wavelengths, scale)."""


class DependencyError(CsakdError, ImportError):
    """An optional dependency needed for the requested feature is missing."""


class Cancelled(CsakdError):
    """The run was cancelled by the user; nothing was written."""


def import_optional(module: str, purpose: str, install: str) -> ModuleType:
    """Import an optional package; :class:`DependencyError` saying what needs it and ``install`` when missing.

    ``install`` is the command (or commands) that installs it, quoted as is
    in the message.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DependencyError(f"{purpose} needs the {module!r} package: install it with  {install}  ({exc})") from exc

