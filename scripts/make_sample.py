"""Build the bundled demo pair in ``resources/sample/`` from the shared EnMAP tiles.

Run once by a developer (needs ``../shared/data``); users get the result.
The four EnMAP tiles that form a 64x64 block (x 160-224, y 128-192 of the
EnMAP-Box Potsdam test scene) are mosaicked, cropped to 63x63 and used as
the 30 m reference.  From it, with the project's simulator:

* ``enmap_lr_hsi.tif`` — 224 bands at 90 m (scale 3), Gaussian PSF
  (MTF 0.3 at Nyquist), 40 dB SNR, int16 reflectance x 10000 (GDAL scale
  0.0001) like EnMAP Level-2A, with wavelength/FWHM/bbl metadata;
* ``s2_hr_msi.tif`` — Sentinel-2A B2, B3, B4, B8 through their measured
  spectral responses at 30 m, 40 dB SNR, uint16 x 10000 with a nodata block
  (a masked cloud);
* ``reference_hr_hsi.tif`` — the 30 m reference the fusion is scored against.

These tiles are held out from the default model's training.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from affine import Affine

from csakd_qgis.io.bands import BandInfo
from csakd_qgis.io.read import read_info, read_window
from csakd_qgis.io.write import write_raster
from csakd_qgis.simulation.degradation import simulate_pair

ROOT = Path(__file__).resolve().parents[1]
TILES = ("enmap_potsdam_tile_160_128.tif", "enmap_potsdam_tile_192_128.tif",
         "enmap_potsdam_tile_160_160.tif", "enmap_potsdam_tile_192_160.tif")
SCALE = 3
SIZE = 63
CLOUD = (slice(36, 48), slice(6, 18))  # rows, cols of the masked block in the HR-MSI


def mosaic(data_dir: Path):
    """The 64x64 block of the four tiles as ``(C, 64, 64)`` reflectance, with its info and transform."""
    infos = [read_info(str(data_dir / name)) for name in TILES]
    left = min(info.transform.c for info in infos)
    top = max(info.transform.f for info in infos)
    res = infos[0].res[0]
    block = np.full((infos[0].count, 64, 64), np.nan, np.float32)
    for info in infos:
        data, _ = read_window(info.path)
        col = round((info.transform.c - left) / res)
        row = round((top - info.transform.f) / res)
        block[:, row:row + info.height, col:col + info.width] = data
    return block, infos[0], Affine(res, 0.0, left, 0.0, -res, top)


def main() -> None:
    """Write the three sample rasters."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "enmap_potsdam")
    parser.add_argument("--out", type=Path, default=ROOT / "resources" / "sample")
    args = parser.parse_args()
    block, info, transform = mosaic(args.data)
    reference = block[:, :SIZE, :SIZE]
    wavelengths = [b.wavelength_nm for b in info.bands]
    fwhm = [b.fwhm_nm for b in info.bands]
    good = [b.good for b in info.bands]
    pair = simulate_pair(reference, wavelengths, fwhm, good, sensor="sentinel2", bands=("B2", "B3", "B4", "B8"),
                         scale=SCALE, mtf_nyquist=0.3, snr_db=40.0, seed=20220724)
    msi = pair.hr_msi.copy()
    msi[:, CLOUD[0], CLOUD[1]] = np.nan
    msi_bands = [BandInfo(c, w, True, f"Sentinel-2A {n} ({c:.0f} nm)")
                 for n, c, w in zip(pair.sensor_bands.names, pair.sensor_bands.centres_nm,
                                    pair.sensor_bands.fwhm_nm)]
    args.out.mkdir(parents=True, exist_ok=True)
    options = dict(crs=info.crs, overwrite=True, scale=1e-4)
    write_raster(str(args.out / "reference_hr_hsi.tif"), pair.reference, transform=transform,
                 bands=info.bands, dtype="int16", nodata=-32768, **options)
    write_raster(str(args.out / "enmap_lr_hsi.tif"), pair.lr_hsi, transform=transform * Affine.scale(SCALE),
                 bands=info.bands, dtype="int16", nodata=-32768, **options)
    write_raster(str(args.out / "s2_hr_msi.tif"), msi, transform=transform, bands=msi_bands, dtype="uint16",
                 nodata=0, **options)


if __name__ == "__main__":
    main()
