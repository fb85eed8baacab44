"""The engine's wheel: every package is in it, and a fresh install runs the ``csakd`` command.

The wheel is built from a copy of the sources (no ``build/`` left in the working tree,
no stale files from an earlier build) and without the network.  It is installed with
``--no-deps`` into a new venv made from Debian's Python with its site packages (numpy,
GDAL, rasterio).  torch and safetensors live only in the project's ``.venv``: a ``.pth``
file appends that folder to ``sys.path`` after the new venv's own site-packages.  Python
does not read the ``.pth`` files of a folder named that way, so the editable install's
finder stays off and ``csakd_qgis`` must come from the wheel, which the tests check.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "resources" / "sample"
SYSTEM_PYTHON = Path("/usr/bin/python3")


def _run(cmd, cwd, **kwargs):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_NO_INDEX"] = "1"  # nothing is downloaded
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "csakd_qgis", src / "csakd_qgis", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "resources" / "models", src / "resources" / "models")
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", out, src], cwd=out)
    (built,) = out.glob("csakd_qgis-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory):
    """A new venv holding the wheel; returns its ``bin`` folder."""
    if not SYSTEM_PYTHON.exists():
        pytest.skip("needs Debian's /usr/bin/python3 (GDAL and rasterio come from the system)")
    root = tmp_path_factory.mktemp("venv")
    _run([SYSTEM_PYTHON, "-m", "venv", "--system-site-packages", root], cwd=root)
    bin_dir = root / "bin"
    site = Path(_run([bin_dir / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                     cwd=root).strip())
    (site / "csakd_project_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run([bin_dir / "python", "-m", "pip", "install", "--no-deps", "--no-index", wheel], cwd=root)
    return bin_dir


def test_wheel_holds_every_module_of_the_engine(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = sorted(p.parent.relative_to(ROOT).as_posix() for p in (ROOT / "csakd_qgis").rglob("__init__.py"))
    assert "csakd_qgis/distributed" in packages
    assert [p for p in packages if f"{p}/__init__.py" not in names] == []
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "csakd_qgis").rglob("*.py")}
    assert sorted(modules - names) == []


def test_installed_wheel_is_imported_instead_of_the_editable_install(venv):
    where = _run([venv / "python", "-c", "import csakd_qgis; print(csakd_qgis.__file__)"], cwd=venv)
    assert Path(where.strip()).resolve().is_relative_to(venv.parent.resolve())


def test_installed_csakd_fuses_the_sample_with_bicubic(venv, tmp_path):
    rasterio = pytest.importorskip("rasterio")
    assert "fuse" in _run([venv / "csakd", "--help"], cwd=tmp_path)
    out = tmp_path / "fused.tif"
    _run([venv / "csakd", "fuse", SAMPLE / "enmap_lr_hsi.tif", SAMPLE / "s2_hr_msi.tif", out,
          "--method", "bicubic"], cwd=tmp_path, timeout=600)
    with rasterio.open(out) as ds:
        assert ds.driver == "GTiff"
        assert ds.count == 224
        assert ds.crs is not None
        assert ds.read(1).shape == (ds.height, ds.width)


def test_installed_wheel_finds_the_bundled_models(venv):
    found = _run([venv / "python", "-c", "from csakd_qgis.models.store import bundled_dir, read_card; "
                  "d = bundled_dir(); print(d); print(sorted(p.name for p in d.glob('*.safetensors'))); "
                  "print(read_card(d / 'enmap_s2_x3.safetensors').role)"], cwd=venv)
    folder, names, role = found.strip().splitlines()
    assert Path(folder).resolve().is_relative_to(venv.parent.resolve())
    assert names == str(sorted(p.name for p in (ROOT / "resources" / "models").glob("*.safetensors")))
    assert role == "student"
