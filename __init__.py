"""CSAKD Fusion: the QGIS plugin entry point.

QGIS imports this package and calls :func:`classFactory`.  Nothing heavy is
imported here, so the plugin loads (and explains what is missing) even in a
QGIS whose Python lacks torch.
"""


def classFactory(iface):  # noqa: N802 (QGIS's name)
    """Return the plugin instance QGIS asks for (``iface`` is the QGIS interface)."""
    from .plugin import CsakdPlugin

    return CsakdPlugin(iface)
