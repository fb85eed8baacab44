#!/usr/bin/env bash
# Idempotent set-up of a development / CI machine (Debian 12 or 13).
#
#   1. Debian packages: QGIS, GDAL, rasterio, pyproj, xvfb (skipped when present)
#   2. .venv from /usr/bin/python3 --system-site-packages (the Python QGIS embeds),
#      with numpy pinned to Debian's so Debian's GDAL/rasterio keep working
#   3. torch (CPU wheel on Python 3.11 here; TORCH_SPEC overrides, e.g. a CUDA build)
#   4. the engine in editable mode with its test tools, and pyrsr for sensor responses
#   5. the plugin made visible to qgis_process (.qgis/plugins/csakd_fusion -> repo root)
#      and enabled in a project-local QGIS profile (.qgis/profile)
#
# Re-running it is cheap: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

# What to install for a Python version (PYVER) and Debian numpy (NUMPY_VERSION); TORCH_SPEC overrides.
choose_specs() {
  if [ -z "${TORCH_SPEC:-}" ]; then
    case "$PYVER" in
      3.11) TORCH_SPEC="torch==2.13.0" ;;   # Debian 12: a CPU wheel lies on this kind of machine's disk
      *) TORCH_SPEC="torch" ;;              # Debian 13 (3.13): from PyPI (a CUDA build, several GB)
    esac
  fi
  # pyrsr 0.8 needs numpy.trapezoid (numpy >= 2); Debian 12 ships numpy 1.24, Debian 13 numpy 2.
  case "$NUMPY_VERSION" in
    1.*) PYRSR_SPEC="pyrsr<0.8" ;;
    *) PYRSR_SPEC="pyrsr" ;;
  esac
}

# CSAKD_SETUP_PLAN=1 PYVER=3.13 NUMPY_VERSION=2.2.4 scripts/setup.sh: print the choices, change nothing.
if [ -n "${CSAKD_SETUP_PLAN:-}" ]; then
  choose_specs
  echo "torch: $TORCH_SPEC"
  echo "pyrsr: $PYRSR_SPEC"
  exit 0
fi

. /etc/os-release
echo "setup: $PRETTY_NAME"
case "${VERSION_ID:-}" in
  12|13) ;;
  *) echo "setup: warning: only Debian 12 and 13 are tested; trying anyway" >&2 ;;
esac

APT_PACKAGES="qgis python3-qgis qgis-providers gdal-bin python3-gdal python3-rasterio \
python3-pyproj proj-data python3-venv python3-pip xvfb"
missing=""
for p in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup: installing Debian packages:$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi

SYS_PY=/usr/bin/python3
PYVER=$($SYS_PY -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating .venv from $SYS_PY ($PYVER)"
  $SYS_PY -m venv --system-site-packages "$VENV"
fi
PY="$VENV/bin/python"

# pip must never replace Debian's numpy: Debian's GDAL and rasterio are built against it.
NUMPY_VERSION=$($SYS_PY -c 'import numpy; print(numpy.__version__)')
CONSTRAINTS="$VENV/csakd-constraints.txt"
printf 'numpy==%s\n' "$NUMPY_VERSION" > "$CONSTRAINTS"
PIP=("$PY" -m pip install --quiet --disable-pip-version-check -c "$CONSTRAINTS")

choose_specs
if ! "$PY" -c 'import torch' 2>/dev/null; then
  echo "setup: installing $TORCH_SPEC"
  "${PIP[@]}" "$TORCH_SPEC"
fi

STAMP="$VENV/.csakd-installed"
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ] || [ scripts/setup.sh -nt "$STAMP" ]; then
  echo "setup: installing the engine (editable) with test tools, the ONNX and Dask extras and $PYRSR_SPEC"
  "${PIP[@]}" -e ".[test,onnx,distributed]" "$PYRSR_SPEC"
  touch "$STAMP"
fi

"$PY" -W ignore::DeprecationWarning - <<'PYCHECK'
import numpy, osgeo.gdal_array, rasterio, torch, safetensors, pyrsr  # noqa: F401
import qgis.core  # noqa: F401
print(f"setup: numpy {numpy.__version__}, GDAL {osgeo.gdal.__version__}, "
      f"rasterio {rasterio.__version__}, torch {torch.__version__}, QGIS {qgis.core.Qgis.QGIS_VERSION}")
PYCHECK

# The plugin folder is the repository root; QGIS knows plugins by folder name.
mkdir -p .qgis/plugins .qgis/profile
ln -sfn "$ROOT" .qgis/plugins/csakd_fusion
if ! scripts/qgis_process plugins 2>/dev/null | grep -q '^\* csakd_fusion$'; then
  scripts/qgis_process plugins enable csakd_fusion >/dev/null
fi
echo "setup: done (run qgis_process with scripts/qgis_process)"
