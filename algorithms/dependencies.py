"""Finding the engine and the Python packages it needs, and saying what is missing.

The engine package ``csakd_qgis`` ships inside the plugin folder.  When it is
not importable already (a developer's editable install makes it so), it is
loaded from the plugin folder under its own name, without putting the whole
plugin folder on ``sys.path``.
"""

import importlib.util
import os
import sys

PLUGIN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: (import name, pip name) of every third-party package the engine needs at run time.
REQUIRED = (("numpy", "numpy"), ("torch", "torch"), ("safetensors", "safetensors"), ("rasterio", "rasterio"))


def ensure_engine_importable():
    """Make ``import csakd_qgis`` work, loading it from the plugin folder if needed."""
    if "csakd_qgis" in sys.modules or importlib.util.find_spec("csakd_qgis") is not None:
        return
    init = os.path.join(PLUGIN_DIR, "csakd_qgis", "__init__.py")
    spec = importlib.util.spec_from_file_location(
        "csakd_qgis", init, submodule_search_locations=[os.path.dirname(init)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["csakd_qgis"] = module
    spec.loader.exec_module(module)


def missing_packages():
    """Pip names of the required packages this Python cannot import."""
    return [pip for name, pip in REQUIRED if importlib.util.find_spec(name) is None]


def install_instructions(missing):
    """A message naming the missing packages and the command to install them per platform."""
    names = " ".join(missing)
    pip_only = " ".join(p for p in missing if p != "rasterio")
    lines = [
        f"CSAKD Fusion needs these Python packages in QGIS's Python, and they are missing: {', '.join(missing)}.",
        "Install them, then restart QGIS:",
        "  Debian/Ubuntu: sudo apt install python3-rasterio python3-pip && "
        f"/usr/bin/python3 -m pip install --user --break-system-packages {pip_only or names}",
        f"  Windows (OSGeo4W Shell, run as administrator): python -m pip install {pip_only or names}"
        + ("  (rasterio: run the OSGeo4W installer and add python3-rasterio)" if "rasterio" in missing else ""),
        f"  macOS (QGIS.app): /Applications/QGIS.app/Contents/MacOS/bin/python3 -m pip install {names}",
        "For an NVIDIA GPU install torch as https://pytorch.org/get-started/locally/ says for your CUDA version.",
    ]
    return "\n".join(lines)
