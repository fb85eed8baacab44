"""One offscreen QgsApplication per test process, with Processing and the plugin's provider.

Import lazily from QGIS tests only (``pytest.importorskip("qgis.core")`` first).
"""

import functools
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_PARENT = ROOT / ".qgis" / "plugins"  # holds the csakd_fusion -> repo root link (scripts/setup.sh)


@functools.lru_cache(maxsize=1)
def qgis_app():
    """Start QGIS once (offscreen), initialise Processing, and return the application."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    sys.path.append("/usr/share/qgis/python/plugins")
    from qgis.core import QgsApplication

    QgsApplication.setPrefixPath("/usr", True)
    app = QgsApplication([], False)
    app.initQgis()
    from processing.core.Processing import Processing

    Processing.initialize()
    return app


@functools.lru_cache(maxsize=1)
def plugin_package():
    """Import the plugin package ``csakd_fusion`` through the link the set-up made."""
    if str(PLUGIN_PARENT) not in sys.path:
        sys.path.insert(0, str(PLUGIN_PARENT))
    import csakd_fusion

    return csakd_fusion


@functools.lru_cache(maxsize=1)
def registered_plugin():
    """The plugin created through ``classFactory`` with its provider registered."""
    qgis_app()
    plugin = plugin_package().classFactory(None)
    plugin.initProcessing()
    return plugin
