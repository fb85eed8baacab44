"""Quicklook band choice, stretch and PNG encoding; HTML report pieces."""

import struct
import zlib

import numpy as np
import pytest

from csakd_qgis.io.bands import BandInfo
from csakd_qgis.quality.quicklook import encode_png, rgb_band_indexes, stretch
from csakd_qgis.quality.report import heat_png, svg_line_chart, table, write_page


def decode_png(data):
    """Minimal decoder for the encoder's output (8-bit RGBA, filter 0) — an independent check."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body)
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height = size
    raw = zlib.decompress(idat)
    rows = [raw[r * (4 * width + 1) + 1:(r + 1) * (4 * width + 1)] for r in range(height)]
    return np.frombuffer(b"".join(rows), np.uint8).reshape(height, width, 4)


def test_png_round_trip():
    rgba = np.random.default_rng(0).integers(0, 256, (5, 7, 4), dtype=np.uint8)
    np.testing.assert_array_equal(decode_png(encode_png(rgba)), rgba)


def test_true_colour_bands_are_nearest_good_wavelengths():
    bands = [BandInfo(w, 10.0, good) for w, good in
             [(450, True), (470, True), (545, True), (560, True), (641, False), (655, True), (700, True)]]
    assert rgb_band_indexes(bands) == (6, 3, 2)  # 641 nm is a bad band, so 655 nm is red
    assert rgb_band_indexes([BandInfo()] * 4) == (3, 2, 1)


def test_stretch_maps_percentiles_to_full_range_and_masks_invalid():
    channel = np.linspace(0.0, 100.0, 101).reshape(1, 101)
    valid = np.ones_like(channel, bool)
    valid[0, 50] = False
    out = stretch(channel, valid)
    assert out[0, 0] == 0 and out[0, 100] == 255 and out[0, 50] == 0
    assert 120 <= out[0, 49] <= 130


def test_heat_png_white_at_zero_red_at_upper():
    values = np.array([[0.0, 1.0, np.nan]])
    pixels = decode_png(heat_png(values, upper=1.0))
    assert tuple(pixels[0, 0]) == (255, 255, 255, 255)
    assert tuple(pixels[0, 1]) == (140, 0, 0, 255)
    assert pixels[0, 2, 3] == 0


def test_chart_and_page(tmp_path):
    svg = svg_line_chart({"PSNR": ([400, 500, np.nan, 700], [30, 31, np.nan, 29])},
                         title="Per-band PSNR", xlabel="nm", ylabel="dB")
    assert svg.count("<polyline") == 2  # the NaN breaks the line
    page = tmp_path / "r.html"
    write_page(str(page), "Report <1>", [("Numbers", table([("PSNR", 31.23456)])), ("Chart", svg)])
    text = page.read_text()
    assert "Report &lt;1&gt;" in text and "31.23" in text and "<svg" in text
    assert list(tmp_path.iterdir()) == [page]


@pytest.mark.parametrize("max_size", [16, 1024])
def test_quicklook_of_the_sample_reference(tmp_path, max_size):
    from pathlib import Path

    from csakd_qgis.quality.quicklook import true_colour_png

    sample = Path(__file__).resolve().parents[1] / "resources" / "sample" / "reference_hr_hsi.tif"
    pixels = decode_png(true_colour_png(str(sample), str(tmp_path / "q.png"), max_size=max_size))
    assert max(pixels.shape[:2]) == min(max_size, 63)
    assert pixels[..., 3].min() == 255  # the reference has no nodata
    assert pixels[..., :3].std() > 20   # a real scene, not a flat image
