"""CSAKD hyperspectral / multispectral fusion engine.

The engine imports no QGIS module: it is usable from plain Python, from the
``csakd`` command line and from the QGIS Processing algorithms of the plugin
that ships it.
"""

__version__ = "0.2.0"
