"""The engine must stay usable without QGIS: importing every module loads no ``qgis`` module."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import csakd_qgis

ROOT = Path(__file__).resolve().parents[1]


def test_importing_every_engine_module_loads_no_qgis():
    names = [m.name for m in pkgutil.walk_packages(csakd_qgis.__path__, "csakd_qgis.")]
    assert "csakd_qgis.fusion.engine" in names and "csakd_qgis.models.dts" in names
    code = "import importlib, sys\n" + "".join(f"importlib.import_module({n!r})\n" for n in names) + \
        "print(sorted(m for m in sys.modules if m == 'qgis' or m.startswith('qgis.')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
