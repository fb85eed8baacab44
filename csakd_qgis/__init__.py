"""CSAKD hyperspectral / multispectral fusion engine.

The engine imports no QGIS module: it is usable from plain Python, from the
``csakd`` command line and from the QGIS Processing algorithms of the plugin
that ships it.  The public API is listed in ``docs/architecture.md``; the
most used names import from here: ``from csakd_qgis import fuse, FuseOptions``.
Importing the package sets torch's CPU runtime defaults (:mod:`csakd_qgis.runtime`).
"""

from __future__ import annotations

import importlib
from typing import Any

from csakd_qgis import runtime  # noqa: F401  (torch's runtime defaults, set before anything loads torch)

__version__ = "0.14.0"

#: Short imports (``from csakd_qgis import fuse``), loaded on first use so that importing the package stays
#: free of torch and GDAL (the QGIS plugin reads :mod:`csakd_qgis.options` at start-up).
_PUBLIC = {"fuse": "csakd_qgis.fusion.engine", "FuseOptions": "csakd_qgis.options",
           "FuseReport": "csakd_qgis.fusion.report", "CsakdError": "csakd_qgis.errors"}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    """Load a short import's module on first use (PEP 562)."""
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'csakd_qgis' has no attribute {name!r}")
