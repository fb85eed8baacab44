"""csakd_qgis.simulation.simulate: simulated pairs written as rasters, checked against hand-worked values."""

import math

import numpy as np
import pytest
import rasterio

from csakd_qgis.errors import InputError, RasterWriteError
from csakd_qgis.io.read import read_info, read_whole
from csakd_qgis.simulation.simulate import simulate_rasters

#: 36 bands 420-945 nm, 15 nm apart and wide: they cover Sentinel-2 B2, B3, B4 and B8.
WAVELENGTHS = [420.0 + 15.0 * k for k in range(36)]
BAND_TAGS = [{"wavelength": str(w), "fwhm": "15", "wavelength_units": "Nanometers"} for w in WAVELENGTHS]


def _field(height, width, seed=0):
    """Random positive ``(height, width)`` field."""
    return np.random.default_rng(seed).uniform(0.1, 0.9, (height, width)).astype(np.float32)


def _psf_weights(scale, mtf):
    """The documented PSF, worked out here: a Gaussian of sigma (s/pi) sqrt(-2 ln MTF) HR pixels.

    Size: ceil(6 sigma) + 1 taps, one more when that parity differs from the scale's.
    """
    sigma = scale / math.pi * math.sqrt(-2.0 * math.log(mtf))
    k = math.ceil(6.0 * sigma) + 1
    k += (k % 2 != scale % 2)
    t = np.arange(k) - (k - 1) / 2.0
    g = np.exp(-0.5 * (t / sigma) ** 2)
    return np.outer(g, g) / np.outer(g, g).sum()


def test_flat_spectrum_gives_the_reference_in_every_msi_band_and_a_gaussian_blurred_lr(geotiff, tmp_path):
    scale, mtf = 2, 0.3
    field = _field(21, 19)  # cropped to 20 x 18 (multiples of the scale)
    reference = geotiff("ref.tif", np.repeat(field[None], len(WAVELENGTHS), axis=0), band_tags=BAND_TAGS)
    lr_out, msi_out = tmp_path / "lr.tif", tmp_path / "msi.tif"
    result = simulate_rasters(str(reference), str(lr_out), str(msi_out), scale=scale, mtf=mtf)

    assert result["lr_shape"] == [36, 10, 9] and result["hr_shape"] == [36, 20, 18] and result["scale"] == 2
    _, msi, msi_valid = read_whole(str(msi_out), "test")
    assert msi.shape == (4, 20, 18) and msi_valid.all()
    # every response row sums to 1, so a spectrum that is flat at v gives v in every MSI band
    np.testing.assert_allclose(msi, np.broadcast_to(field[:20, :18], msi.shape), rtol=1e-5)

    _, lr, _ = read_whole(str(lr_out), "test")
    psf = _psf_weights(scale, mtf)
    k = psf.shape[0]
    assert result["psf_size"] == k
    offset = (scale - k) // 2  # LR pixel i covers HR [i s, (i+1) s); the kernel is centred on that block
    hr = field[:20, :18].astype(np.float64)
    checked = 0
    for i in range(10):
        for j in range(9):
            r0, c0 = i * scale + offset, j * scale + offset
            if r0 < 0 or c0 < 0 or r0 + k > 20 or c0 + k > 18:
                continue  # border pixels renormalise the weights; interior ones are a plain weighted sum
            expected = float((psf * hr[r0:r0 + k, c0:c0 + k]).sum())
            np.testing.assert_allclose(lr[:, i, j], expected, rtol=1e-5)
            checked += 1
    assert checked >= 4


def test_a_constant_image_keeps_its_spectrum_at_every_lr_pixel_and_the_grids_and_metadata_follow(
        geotiff, tmp_path):
    spectrum = np.linspace(0.1, 0.45, len(WAVELENGTHS), dtype=np.float32)
    cube = np.broadcast_to(spectrum[:, None, None], (len(WAVELENGTHS), 16, 12)).copy()
    reference = geotiff("ref.tif", cube, band_tags=BAND_TAGS)
    paths = [tmp_path / n for n in ("lr.tif", "msi.tif", "ref_out.tif")]
    result = simulate_rasters(str(reference), *map(str, paths), scale=4, bands=("B2", "B8"))

    lr_info, lr, lr_valid = read_whole(str(paths[0]), "test")
    assert lr.shape == (36, 4, 3) and lr_valid.all()
    # normalised convolution: a constant stays that constant up to the border
    np.testing.assert_allclose(lr, np.broadcast_to(spectrum[:, None, None], lr.shape), rtol=1e-5)
    assert [b.wavelength_nm for b in lr_info.bands] == pytest.approx(WAVELENGTHS)

    with rasterio.open(reference) as ref_ds, rasterio.open(paths[0]) as lr_ds, rasterio.open(paths[1]) as msi_ds:
        assert lr_ds.crs == ref_ds.crs == msi_ds.crs
        assert (lr_ds.transform.c, lr_ds.transform.f) == (ref_ds.transform.c, ref_ds.transform.f)
        assert (lr_ds.transform.a, lr_ds.transform.e) == (120.0, -120.0)  # 4 x 30 m
        assert msi_ds.transform == ref_ds.transform and (msi_ds.width, msi_ds.height) == (12, 16)
    msi_info = read_info(str(paths[1]))
    assert result["msi_bands"] == ["B2", "B8"]
    assert [b.wavelength_nm for b in msi_info.bands] == pytest.approx([492.0, 833.0], abs=5.0)
    assert all(b.description.endswith(name) for b, name in zip(msi_info.bands, ("B2", "B8")))
    _, ref_out, _ = read_whole(str(paths[2]), "test")
    np.testing.assert_array_equal(ref_out, cube)


def test_a_shift_of_one_lr_pixel_east_moves_the_lr_content_one_pixel_east(geotiff, tmp_path):
    cube = np.repeat(_field(16, 32, seed=1)[None], len(WAVELENGTHS), axis=0)
    reference = str(geotiff("ref.tif", cube, band_tags=BAND_TAGS))
    lr = {}
    for dx in (0.0, 1.0):
        out = tmp_path / f"lr_{dx}.tif"
        simulate_rasters(reference, str(out), str(tmp_path / f"msi_{dx}.tif"), scale=2, shift=(dx, 0.0))
        lr[dx] = read_whole(str(out), "test")[1]
    # interior columns (the 8-tap kernel inside the image, no edge fill): out[x] = in[x - 1]
    np.testing.assert_allclose(lr[1.0][:, :, 3:13], lr[0.0][:, :, 2:12], rtol=1e-5, atol=1e-6)
    assert not np.allclose(lr[1.0][:, :, 3:13], lr[0.0][:, :, 3:13], atol=1e-3)


def test_noise_has_the_requested_snr_and_repeats_with_its_seed(geotiff, tmp_path):
    cube = np.full((len(WAVELENGTHS), 32, 32), 0.5, dtype=np.float32)
    reference = str(geotiff("ref.tif", cube, band_tags=BAND_TAGS))

    def msi(seed, name):
        simulate_rasters(reference, str(tmp_path / f"lr{name}.tif"), str(tmp_path / f"msi{name}.tif"), scale=2,
                         snr_db=20.0, seed=seed)
        return read_whole(str(tmp_path / f"msi{name}.tif"), "test")[1]

    a, again, other = msi(1, "a"), msi(1, "b"), msi(2, "c")
    np.testing.assert_array_equal(a, again)
    assert not np.array_equal(a, other)
    # 20 dB: noise power = signal power / 100, i.e. std = 0.5 / 10 for a constant 0.5 (4 x 1024 samples)
    assert float((a - 0.5).std()) == pytest.approx(0.05, rel=0.05)


def test_refuses_a_reference_without_wavelengths_and_existing_outputs(geotiff, tmp_path):
    bare = geotiff("bare.tif", np.ones((3, 8, 8), dtype=np.float32))
    with pytest.raises(InputError, match="wavelength"):
        simulate_rasters(str(bare), str(tmp_path / "lr.tif"), str(tmp_path / "msi.tif"), scale=2)

    reference = str(geotiff("ref.tif", np.full((36, 8, 8), 0.3, dtype=np.float32), band_tags=BAND_TAGS))
    lr, msi = str(tmp_path / "lr.tif"), str(tmp_path / "msi.tif")
    simulate_rasters(reference, lr, msi, scale=2)
    with pytest.raises(RasterWriteError, match="exists"):
        simulate_rasters(reference, lr, msi, scale=2)
    simulate_rasters(reference, lr, msi, scale=2, overwrite=True)
