#!/usr/bin/env bash
# The main job on the bundled sample (make demo): fuse the EnMAP-like LR-HSI with the
# Sentinel-2 HR-MSI through qgis_process (csakd:fuse, method auto), write a quicklook,
# evaluate against the 30 m reference (csakd:evaluate) and print the metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/demo}
mkdir -p "$OUT"
SAMPLE=resources/sample
echo "demo: fusing $SAMPLE/enmap_lr_hsi.tif with $SAMPLE/s2_hr_msi.tif through qgis_process (csakd:fuse)"
scripts/qgis_process --json run csakd:fuse -- \
  LR_HSI="$SAMPLE/enmap_lr_hsi.tif" HR_MSI="$SAMPLE/s2_hr_msi.tif" METHOD=auto \
  OUTPUT="$OUT/fused.tif" REPORT="$OUT/fuse_report.html" > "$OUT/fuse.json"
.venv/bin/csakd quicklook "$OUT/fused.tif" "$OUT/quicklook.png"
scripts/qgis_process --json run csakd:evaluate -- \
  REFERENCE="$SAMPLE/reference_hr_hsi.tif" FUSED="$OUT/fused.tif" SCALE=3 \
  REPORT="$OUT/report.html" > "$OUT/evaluate.json"
.venv/bin/python - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
fuse = json.load(open(f"{out}/fuse.json"))["results"]
metrics = json.load(open(f"{out}/evaluate.json"))["results"]
model = "" if fuse["MODEL_USED"] == fuse["METHOD_USED"] else f" (model {fuse['MODEL_USED']})"
print(f"demo: method {fuse['METHOD_USED']}{model}, scale {fuse['SCALE']:g}, "
      f"estimated shift ({fuse['SHIFT_X']:+.3f}, {fuse['SHIFT_Y']:+.3f}) LR px, PSF sigma {fuse['PSF_SIGMA']:.2f} "
      f"output px, LR-HSI SNR {fuse['SNR_LR_DB']:.1f} dB")
print("demo: fused vs reference: " + ", ".join(
    f"{k} {metrics[k]:.4g}" for k in ("PSNR", "SAM", "ERGAS", "SSIM", "RMSE") if k in metrics))
print(f"demo: wrote {out}/fused.tif, {out}/quicklook.png, {out}/report.html, {out}/fuse_report.html")
PY
