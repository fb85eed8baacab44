#!/usr/bin/env bash
# Build dist/csakd_fusion-<version>.zip for QGIS's "Plugins > Install from ZIP":
# the plugin folder csakd_fusion/ with the engine, algorithms, resources and licence,
# without tests, benchmarks, development files or caches.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=$(sed -n 's/^version=//p' metadata.txt)
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/csakd_fusion" dist
cp -r __init__.py plugin.py metadata.txt LICENSE README.md algorithms csakd_qgis resources "$STAGE/csakd_fusion/"
find "$STAGE" \( -name __pycache__ -o -name '*.pyc' -o -name '*.csakd-partial-*' \) -prune -exec rm -rf {} +
rm -f "dist/csakd_fusion-$VERSION.zip"
(cd "$STAGE" && python3 -m zipfile -c "$OLDPWD/dist/csakd_fusion-$VERSION.zip" csakd_fusion)
echo "dist/csakd_fusion-$VERSION.zip"
