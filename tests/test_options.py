import pytest

from csakd_qgis.errors import InputError
from csakd_qgis.options import MAX_BATCH, MAX_TILE, OVERLAP, FuseOptions, default_batch_size


def test_defaults_are_valid_and_the_overlap_follows_the_tile():
    options = FuseOptions()
    assert (options.tile, options.batch_size, options.tile_overlap) == (64, None, OVERLAP)
    assert FuseOptions(tile=16).tile_overlap == 4  # a quarter of a small tile, not the default 8
    assert FuseOptions(tile=16, overlap=0).tile_overlap == 0
    assert FuseOptions(tile=1).tile_overlap == 0


def test_the_default_batch_is_one_tile_on_a_cpu_and_four_on_a_gpu():
    assert [default_batch_size(d) for d in ("cpu", "cuda", "mps")] == [1, 4, 4]


@pytest.mark.parametrize("changes, message", [
    (dict(tile=0), "tile size must be between 1 and"),
    (dict(tile=MAX_TILE + 1), "tile size must be between 1 and"),
    (dict(overlap=-1), "overlap must be >= 0"),
    (dict(tile=16, overlap=5), "more than a quarter of the tile .16 LR pixels.: use --overlap 4"),
    (dict(batch_size=0), "batch size must be between 1 and"),
    (dict(batch_size=MAX_BATCH + 1), "batch size must be between 1 and"),
    (dict(halo=-2), "halo must be"),
    (dict(halo="all"), "halo must be"),
    (dict(device="gpu"), "unknown device 'gpu'; use auto, cpu, cuda, mps or cuda:N"),
    (dict(device="cuda:x"), "unknown device"),
    (dict(threads=0), "threads must be >= 1"),
    (dict(backend="tensorrt"), "unknown backend"),
    (dict(precision="int8"), "unknown precision"),
    (dict(scale=2.5), "positive integer"),
    (dict(dtype="float64"), "unknown output dtype"),
    (dict(output_scale=0.0), "output scale must be > 0"),
    (dict(output_block=100), "multiple of 16"),
    (dict(block_width=0), "column-block width must be >= 1"),
])
def test_every_bad_value_is_refused_with_the_option_to_change(changes, message):
    with pytest.raises(InputError, match=message):
        FuseOptions(**changes)


def test_replace_checks_again_and_keeps_the_rest():
    options = FuseOptions(tile=32, device="cpu")
    assert options.replace(batch_size=8) == FuseOptions(tile=32, device="cpu", batch_size=8)
    with pytest.raises(InputError, match="overlap"):
        options.replace(tile=8, overlap=4)


def test_devices_accept_numbered_cuda_and_the_listed_names():
    for device in ("auto", "cpu", "cuda", "cuda:1", "mps"):
        assert FuseOptions(device=device).device == device


def test_options_module_imports_neither_torch_nor_gdal():
    import subprocess
    import sys
    code = ("import sys, csakd_qgis.options; "
            "print(sorted(m for m in ('torch', 'rasterio', 'osgeo', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_short_imports_load_lazily():
    import subprocess
    import sys
    code = ("import sys, csakd_qgis; before = 'torch' in sys.modules; "
            "from csakd_qgis import fuse, FuseOptions, CsakdError; "
            "print(before, fuse.__module__, FuseOptions.__module__, CsakdError.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "csakd_qgis.fusion.engine", "csakd_qgis.options", "csakd_qgis.errors"]
