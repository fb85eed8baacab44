"""The distributed mode: regions of the global tile plan, Dask LocalCluster runs, batch, cancel, a killed worker."""

import json
import os
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from pipeline_fakes import ArraySource, RecordingSink, write_geotiff
from rasterio.windows import Window

from csakd_qgis.distributed import plan_regions
from csakd_qgis.errors import Cancelled, DependencyError, InputError
from csakd_qgis.fusion.methods import BicubicMethod
from csakd_qgis.fusion.pipeline import run_pipeline
from csakd_qgis.fusion.radiometry import Radiometry
from csakd_qgis.fusion.tiling import plan_tiles

torch.set_num_threads(1)
S = 3
LR_T = Affine(30.0, 0.0, 366000.0, 0.0, -30.0, 5810000.0)
SAMPLE = Path(__file__).resolve().parents[1] / "resources" / "sample"
MODEL = Path(__file__).resolve().parents[1] / "resources" / "models" / "enmap_s2_x3.safetensors"


# ----------------------------------------------------------------------------- regions without Dask


def test_regions_partition_the_output_on_lr_and_block_edges():
    regions = plan_regions(150, 96, scale=3, block=32, size=100)  # lcm(3, 32) = 96: 100 rounds up to 192
    assert [(w.col_off, w.row_off, w.width, w.height) for w in regions] == [(0, 0, 150, 96)]
    regions = plan_regions(300, 200, scale=3, block=32, size=96)
    assert [(w.col_off, w.row_off, w.width, w.height) for w in regions] == [
        (0, 0, 96, 96), (96, 0, 96, 96), (192, 0, 96, 96), (288, 0, 12, 96),
        (0, 96, 96, 96), (96, 96, 96, 96), (192, 96, 96, 96), (288, 96, 12, 96),
        (0, 192, 96, 8), (96, 192, 96, 8), (192, 192, 96, 8), (288, 192, 12, 8)]
    with pytest.raises(InputError):
        plan_regions(30, 30, scale=3, block=16, size=0)


class _Mix:
    """A method whose output depends on the MSI and on position inside the tile, so seams would show."""

    name, scale, halo = "mix", S, 2

    def predict(self, lr, msi):
        up = BicubicMethod(S).predict(lr, None)
        ramp = np.linspace(0.5, 1.5, up.shape[-1], dtype=np.float32)
        return up * ramp + 0.1 * msi[:, :1]


def test_regions_fused_apart_equal_the_whole_output_exactly():
    rng = np.random.default_rng(1)
    lr = rng.random((4, 40, 37)).astype(np.float32)
    msi = rng.random((2, 120, 111)).astype(np.float32)
    plan = plan_tiles(37, 40, tile=10, overlap=2, halo=2, scale=S)
    radiometry = Radiometry(1.0, 1.0, np.zeros(4, np.float32), np.zeros(2, np.float32))

    def source():
        return nullcontext(ArraySource(lr, msi))

    whole = RecordingSink((4, 120, 111))
    run_pipeline(source, _Mix(), plan, whole, radiometry, batch_size=3, block_width=48, out_block=16)
    pieces = np.full_like(whole.out, np.nan)
    computed = 0
    for region in plan_regions(111, 120, scale=S, block=16, size=48):  # 48 x 48 HR regions cut tiles (30 HR)
        sink = RecordingSink((4, int(region.height), int(region.width)))
        result = run_pipeline(source, _Mix(), plan, sink, radiometry, batch_size=2, block_width=32, out_block=16,
                              region=region)
        rows = slice(region.row_off, region.row_off + region.height)
        pieces[:, rows, region.col_off:region.col_off + region.width] = sink.out
        computed += result.tiles
        # strips start at the region's corner: every write is whole 16-row blocks of the region file
        assert all(r % 16 == 0 and c % 16 == 0 for c, r, _w, _h in sink.windows)
    # the same tiles, the same weights, the same order: equal to the last bit, region borders included
    np.testing.assert_array_equal(pieces, whole.out)
    assert computed > len(plan)  # border tiles were predicted by each region they reach
    with pytest.raises(InputError):
        run_pipeline(source, _Mix(), plan, RecordingSink((4, 1, 1)), radiometry, region=Window(100, 0, 20, 10))


def test_missing_dask_names_the_pip_command(monkeypatch):
    from csakd_qgis.distributed import require_distributed
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(DependencyError, match=r"pip install \"dask\[distributed\]\""):
        require_distributed()


def test_pair_list_csv_and_json(tmp_path):
    from csakd_qgis.distributed import read_pair_list
    (tmp_path / "pairs.csv").write_text("lr_hsi,hr_msi,output,comment\na.tif,b.tif,out/o1.tif,x\n"
                                        "/abs/c.tif,d.tif,o2.vrt,\n")
    pairs = read_pair_list(str(tmp_path / "pairs.csv"))
    assert pairs[0].output == str(tmp_path / "out" / "o1.tif") and pairs[1].lr_hsi == "/abs/c.tif"
    (tmp_path / "pairs.json").write_text(json.dumps([{"lr_hsi": "a", "hr_msi": "b", "output": "c"},
                                                     {"lr_hsi": "a", "hr_msi": "b"}]))
    with pytest.raises(InputError, match="item 2: missing output"):
        read_pair_list(str(tmp_path / "pairs.json"))
    (tmp_path / "dup.csv").write_text("lr_hsi,hr_msi,output\na,b,o.tif\nc,d,o.tif\n")
    with pytest.raises(InputError, match="several pairs write"):
        read_pair_list(str(tmp_path / "dup.csv"))


# ----------------------------------------------------------------------------- on a LocalCluster


@pytest.fixture(scope="module")
def client():
    pytest.importorskip("distributed")
    from csakd_qgis.distributed import open_client
    with open_client(workers=2) as c:
        c.run(__import__, "csakd_qgis.distributed.worker")  # each worker imports torch once, here
        # Dask's default MALLOC_TRIM_THRESHOLD_ (slows large-array code such as the student 2.3x) is unset
        assert set(c.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_").values()) == {None}
        yield c


@pytest.fixture
def pair(tmp_path):
    """36 x 36 LR (4 bands, wavelengths, a 12 x 12 nodata corner) and 108 x 108 MSI (3 bands), scale 3."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:36, 0:36] / 36.0
    lr = np.stack([0.2 + 0.1 * k + 0.3 * np.sin(3 * xx + k) * np.cos(2 * yy) for k in range(4)])
    lr = (lr + 0.01 * rng.random(lr.shape)).astype(np.float32)
    lr[:, :12, :12] = -1.0  # covers the first tile's window (core 9 + overlap 2 LR px): that tile is skipped
    msi = (0.3 + 0.2 * rng.random((3, 108, 108))).astype(np.float32)
    tags = [{"wavelength": str(450.0 + 50 * k), "wavelength_units": "Nanometers", "fwhm": "10"} for k in range(4)]
    return (write_geotiff(tmp_path / "lr.tif", lr, LR_T, nodata=-1.0, tags=tags),
            write_geotiff(tmp_path / "msi.tif", msi, LR_T * Affine.scale(1 / S)))


#: Small tiles, blocks and regions so a 108 px output has 2 x 2 regions that cut through tiles.
SMALL = dict(tile=10, overlap=2, batch_size=2, block_width=32, output_block=16, region_size=48)


def _everything(path):
    with rasterio.open(path) as ds:
        meta = dict(crs=ds.crs.to_epsg(), transform=tuple(ds.transform)[:6], nodata=repr(ds.nodata), dtypes=ds.dtypes,
                    scales=ds.scales, offsets=ds.offsets, descriptions=ds.descriptions,
                    band_tags=[ds.tags(i) for i in range(1, ds.count + 1)], envi=ds.tags(ns="ENVI"),
                    wavelength_units=ds.tags().get("wavelength_units"))
        return ds.read(masked=False).astype(np.float64), meta


def _leftovers(folder):
    return sorted(n for n in os.listdir(folder) if n.startswith("."))


@pytest.mark.parametrize("method,dtype,ext", [("bicubic", "float32", ".tif"), ("gsa", "int16", ".vrt")])
def test_cluster_output_equals_single_process(client, pair, tmp_path, method, dtype, ext):
    from csakd_qgis.distributed import ClusterOptions, fuse_distributed
    from csakd_qgis.fusion.engine import fuse
    lr_path, msi_path = pair
    kwargs = dict(method=method, device="cpu", dtype=dtype, output_scale=1e-4 if dtype == "int16" else None,
                  shift_correction=False, **SMALL)
    single = fuse(lr_path, msi_path, str(tmp_path / "single.tif"), **{k: v for k, v in kwargs.items()
                                                                      if k != "region_size"})
    out = str(tmp_path / f"cluster{ext}")
    report = fuse_distributed(lr_path, msi_path, out, client=client, options=ClusterOptions.build(**kwargs))
    a, meta_a = _everything(single.output)
    b, meta_b = _everything(out)
    assert a.shape == (4, 108, 108) and meta_b == meta_a
    np.testing.assert_array_equal(np.isnan(b), np.isnan(a))
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-6 if dtype == "float32" else 0.5)
    assert np.isnan(a[:, :36, :36]).all() if dtype == "float32" else (a[:, :36, :36] == -32768).all()
    # 108 px in regions of 48: 3 x 3 regions; 4 x 4 tiles of 27 HR px (+ 6 px overlap) cross region borders
    assert (report.regions, report.fuse.tiles_total, report.workers) == (9, 16, 2)
    assert report.tiles_computed == 36 and report.border_overhead == pytest.approx(36 / 16 - 1)
    assert report.fuse.tiles_skipped == single.tiles_skipped == 1  # the nodata corner tile, counted once
    assert len(report.hosts) == 2  # both worker processes took regions
    assert _leftovers(tmp_path) == []  # no staging folder, no temporary file
    if ext == ".vrt":
        files = sorted(os.listdir(tmp_path / "cluster_regions"))
        assert len(files) == 9 and files[0] == "region-0000000-0000000.tif"
    json.dumps(report.to_dict())
    assert any("cluster" in line and "9 regions" in line for line in report.summary_lines())
    # the same true-colour style as fuse's beside the output (bands at 600, 550 and 450 nm as red, green, blue)
    style, single_style = _style(Path(out).with_suffix(".qml")), _style(Path(single.output).with_suffix(".qml"))
    assert style[0] == single_style[0] == {"redBand": "4", "greenBand": "3", "blueBand": "1"}
    np.testing.assert_allclose(style[1], single_style[1], rtol=1e-3, atol=1e-6 if dtype == "float32" else 1.0)
    assert f"QGIS style (true colour, 2-98 % stretch): {Path(out).with_suffix('.qml')}" in report.fuse.notes


def _style(path):
    """``(renderer bands, [min, max] of each channel)`` of a ``.qml`` file."""
    import xml.etree.ElementTree as ET

    renderer = ET.parse(path).find("pipe/rasterrenderer")
    bands = {key: renderer.get(key) for key in ("redBand", "greenBand", "blueBand")}
    limits = [float(node.text) for node in renderer.iter() if node.tag in ("minValue", "maxValue")]
    return bands, limits


class KillOnce(BicubicMethod):
    """Bicubic that kills its worker process the first time it runs anywhere (guarded by a marker file)."""

    def __init__(self, scale, marker):
        super().__init__(scale)
        self.marker = marker

    def predict(self, lr, msi):
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return super().predict(lr, msi)
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)


def test_a_killed_worker_is_survived(client, pair, tmp_path):
    from csakd_qgis.distributed import ClusterOptions, fuse_distributed
    from csakd_qgis.fusion.engine import fuse
    lr_path, msi_path = pair
    options = dict(device="cpu", shift_correction=False, **SMALL)
    out = str(tmp_path / "out.tif")
    marker = str(tmp_path / "killed")
    fuse_distributed(lr_path, msi_path, out, client=client,
                     options=ClusterOptions.build(method=KillOnce(S, marker), **options))
    assert os.path.exists(marker)  # a worker died mid-region, leaving its temporary region file
    single = fuse(lr_path, msi_path, str(tmp_path / "single.tif"), method="bicubic",
                  **{k: v for k, v in options.items() if k != "region_size"})
    np.testing.assert_allclose(_everything(out)[0], _everything(single.output)[0], rtol=0, atol=1e-6)
    assert _leftovers(tmp_path) == []
    client.wait_for_workers(2, timeout=60)


class Slow(BicubicMethod):
    def predict(self, lr, msi):
        time.sleep(0.3)
        return super().predict(lr, msi)


def test_cancel_stops_every_worker_and_leaves_nothing(client, pair, tmp_path):
    from csakd_qgis.distributed import ClusterOptions, fuse_distributed
    from csakd_qgis.progress import Reporter
    lr_path, msi_path = pair
    seen = []
    reporter = Reporter(progress=lambda f, m: seen.append(f), is_cancelled=lambda: bool(seen) and seen[-1] > 0.1)
    started = time.perf_counter()
    with pytest.raises(Cancelled):
        fuse_distributed(lr_path, msi_path, str(tmp_path / "out.tif"), client=client, reporter=reporter,
                         options=ClusterOptions.build(method=Slow(S), device="cpu", shift_correction=False,
                                                **dict(SMALL, batch_size=1)))
    # 9 regions x 9 tiles x 0.3 s on 2 workers would take ~12 s; cancelled after the first events
    assert time.perf_counter() - started < 8
    assert 0.1 < seen[-1] < 0.9 and seen == sorted(seen)
    time.sleep(1.0)  # nothing is written after the cancel returned
    assert sorted(os.listdir(tmp_path)) == ["lr.tif", "msi.tif"]
    busy = client.run_on_scheduler(lambda dask_scheduler: [
        ts.key for ts in dask_scheduler.tasks.values() if ts.state in ("processing", "queued", "waiting")])
    assert busy == [] and not any(client.processing().values())


def test_batch_reports_each_pair_and_survives_a_bad_one(client, pair, tmp_path):
    from csakd_qgis.distributed import ClusterOptions, fuse_batch, read_pair_list
    lr_path, msi_path = pair
    (tmp_path / "list.csv").write_text("lr_hsi,hr_msi,output\n"
                                       f"{lr_path},{msi_path},a.tif\n"
                                       f"missing.tif,{msi_path},b.tif\n"
                                       f"{lr_path},{msi_path},c.vrt\n")
    report = fuse_batch(read_pair_list(str(tmp_path / "list.csv")), client=client,
                        options=ClusterOptions.build(method="bicubic", device="cpu", shift_correction=False, **SMALL))
    assert [r.ok for r in report.results] == [True, False, True]
    assert "missing.tif" in report.results[1].error and report.to_dict()["failed"] == 1
    a = _everything(str(tmp_path / "a.tif"))[0]
    np.testing.assert_allclose(_everything(str(tmp_path / "c.vrt"))[0], a, rtol=0, atol=0)
    assert not (tmp_path / "b.tif").exists() and _leftovers(tmp_path) == []
    assert report.summary_lines()[-1].startswith("2 of 3 pairs fused")


@pytest.mark.slow
def test_student_on_the_sample_equals_single_process(client, tmp_path):
    from csakd_qgis.distributed import ClusterOptions, fuse_distributed
    from csakd_qgis.fusion.engine import fuse
    if not MODEL.is_file():
        pytest.skip("bundled model missing")
    lr_path, msi_path = str(SAMPLE / "enmap_lr_hsi.tif"), str(SAMPLE / "s2_hr_msi.tif")
    options = dict(model=str(MODEL), method="csakd", device="cpu", threads=1, tile=8, overlap=2, batch_size=2,
                   block_width=32, output_block=16, dtype="int16")
    single = fuse(lr_path, msi_path, str(tmp_path / "single.tif"), **options)
    report = fuse_distributed(lr_path, msi_path, str(tmp_path / "cluster.tif"), client=client,
                              options=ClusterOptions.build(region_size=48, **options))
    a, meta_a = _everything(single.output)
    b, meta_b = _everything(str(tmp_path / "cluster.tif"))
    assert meta_b == meta_a and report.regions == 4 and report.fuse.model == "enmap_s2_x3"
    assert report.fuse.shift == single.shift  # measured once, on the client
    np.testing.assert_allclose(b, a, rtol=0, atol=1)  # int16 reflectance x 10000: at most one rounding step
    assert np.mean(b != a) < 0.01


def test_cli_fuse_on_a_scheduler_and_batch(client, pair, tmp_path, capsys):
    import argparse

    from csakd_qgis.cli import main
    from csakd_qgis.commands import batch
    lr_path, msi_path = pair
    address = client.scheduler.address
    small = ["--tile-size", "10", "--overlap", "2", "--region-size", "48", "--no-shift-correction",
             "--method", "bicubic", "--device", "cpu"]
    assert main(["fuse", lr_path, msi_path, str(tmp_path / "o.tif"), "--scheduler", address, "--json"] + small) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["cluster"]["regions"] == 1 and data["cluster"]["workers"] == 2  # 108 px < one 768-px region
    (tmp_path / "list.json").write_text(json.dumps([{"lr_hsi": lr_path, "hr_msi": msi_path, "output": "p.tif"},
                                                    {"lr_hsi": lr_path, "hr_msi": "nope.tif", "output": "q.tif"}]))
    parser = argparse.ArgumentParser()
    batch.add_arguments(parser)
    args = parser.parse_args([str(tmp_path / "list.json"), "--scheduler", address, "--json"] + small)
    assert batch.run(args) == 1  # one pair failed
    data = json.loads(capsys.readouterr().out)
    assert [p["ok"] for p in data["pairs"]] == [True, False] and (tmp_path / "p.tif").exists()
