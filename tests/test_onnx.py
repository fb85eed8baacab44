import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import onnx  # noqa: E402
import onnxruntime  # noqa: E402

from csakd_qgis.cli import main  # noqa: E402
from csakd_qgis.errors import CheckpointError, DependencyError, InputError, ModelMismatchError  # noqa: E402
from csakd_qgis.fusion.methods import NETWORK_METHODS, NetworkMethod, make_method, model_scales  # noqa: E402
from csakd_qgis.fusion.radiometry import robust_level  # noqa: E402
from csakd_qgis.io.read import read_info  # noqa: E402
from csakd_qgis.models import (  # noqa: E402
    FUSIONS,
    ModelConfig,
    build_model,
    onnx_runtime,  # noqa: E402
)
from csakd_qgis.models.card import ModelCard, MsiInfo, SpectralBands  # noqa: E402
from csakd_qgis.models.checkpoint import CARD_KEY, load_checkpoint, read_card  # noqa: E402
from csakd_qgis.models.onnx_export import export_onnx, onnx_bytes  # noqa: E402
from csakd_qgis.models.onnx_runtime import OnnxNetworkMethod, providers, read_onnx_card  # noqa: E402
from csakd_qgis.models.receptive_field import network_halo  # noqa: E402

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
STUDENT = ROOT / "resources" / "models" / "enmap_s2_x3.safetensors"
SAMPLE = ROOT / "resources" / "sample"

#: Fusions whose output on a tile does not depend on the tile's size (paper ``csa``/``mhca`` and ``csa_global``
#: do; they are checked in the paper configuration below).
SIZE_DEPENDENT = ("mhca", "csa", "csa_global")


def _card(cfg: ModelConfig, name: str = "tiny") -> ModelCard:
    return ModelCard(name=name, role=cfg.role, config=cfg.to_dict(), scale=cfg.scale,
                     lr_bands=SpectralBands(tuple(450.0 + 20 * i for i in range(cfg.bands))),
                     msi=MsiInfo(None, tuple(f"B{i}" for i in range(cfg.msi_bands))))


def _random_network(cfg: ModelConfig, seed: int = 0) -> torch.nn.Module:
    """Every parameter N(0, 0.1): project mode zeroes its last layer, which would hide the fusion.

    Larger weights make some attentions ill-conditioned (with std 0.3 ``csa_pooled`` in torch float32 is
    0.8 away from float64 on outputs of about 100), which no export can match.
    """
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.1)
    return model


def _inputs(cfg: ModelConfig, b: int, h: int, w: int, seed: int):
    rng = np.random.default_rng(seed)
    s = cfg.scale
    return (rng.random((b, cfg.bands, h, w), dtype=np.float32),
            rng.random((b, cfg.msi_bands, h * s, w * s), dtype=np.float32))


def _torch(model, lr, msi):
    with torch.no_grad():
        return model(torch.from_numpy(lr), torch.from_numpy(msi))[0].numpy()


def _assert_parity_at_two_sizes(cfg: ModelConfig, seed: int = 0) -> None:
    model = _random_network(cfg, seed)
    runner = OnnxNetworkMethod(onnx_bytes(model, _card(cfg)))
    # traced at (2, 9, 10) LR px: check other batch sizes, a square and a non-square tile
    for b, h, w in ((1, 6, 6), (3, 11, 7)):
        lr, msi = _inputs(cfg, b, h, w, seed=h)
        expected = _torch(model, lr, msi)
        got = runner.predict(lr, msi)
        assert got.shape == (b, cfg.bands, h * cfg.scale, w * cfg.scale)
        peak = float(np.abs(expected).max())
        assert np.abs(got - expected).max() < 1e-5 * peak  # float32 rounding through ~20 layers
    fusion = model.decoder.fuse_att
    if any(True for _ in fusion.parameters()):
        # the fusion is live in what was compared: moving its parameters moves the output
        with torch.no_grad():
            for p in fusion.parameters():
                p.add_(0.05)
        assert np.abs(_torch(model, lr, msi) - expected).max() > 1e-3 * peak


@pytest.mark.parametrize("fusion", [f for f in FUSIONS if f not in SIZE_DEPENDENT])
def test_every_size_invariant_fusion_exports_with_torch_parity_at_two_tile_sizes(fusion):
    cfg = ModelConfig(bands=5, msi_bands=3, scale=3, nf=8, gc=4, blocks=(1, 1, 1, 1), fusion=fusion,
                      attn_window=5, paper_mode=False, upsample="bicubic", head="light")
    _assert_parity_at_two_sizes(cfg)


@pytest.mark.parametrize("fusion", ["mhca", "csa", "csa_global"])
def test_whole_tile_attentions_export_too(fusion):
    # paper mode covers its own resampling (bilinear up, bicubic down by 1/4) and the paper head
    paper = fusion != "csa_global"
    cfg = ModelConfig(bands=5, msi_bands=3, scale=4 if paper else 2, nf=8, gc=4, blocks=(1, 1, 1, 1),
                      fusion=fusion, role="student", lr_groups=2, paper_mode=paper)
    _assert_parity_at_two_sizes(cfg, seed=1)


def test_module_export_needs_a_card_that_describes_it(tmp_path):
    cfg = ModelConfig(bands=4, msi_bands=2, scale=2, nf=8, gc=4, blocks=(0, 1, 1, 1), fusion="sum",
                      role="student", paper_mode=False, head="light")
    other = ModelConfig(bands=4, msi_bands=2, scale=2, nf=8, gc=4, blocks=(0, 1, 1, 1), fusion="concat",
                        role="student", paper_mode=False, head="light")
    model = build_model(cfg)
    with pytest.raises(InputError, match="card"):
        export_onnx(model, tmp_path / "a.onnx")
    with pytest.raises(InputError, match="another network"):
        export_onnx(model, tmp_path / "a.onnx", card=_card(other))
    report = export_onnx(model, tmp_path / "a.onnx", card=_card(cfg))
    assert report.parity and max(d for _, d in report.parity) < 1e-5
    assert model.training  # the caller's mode is restored
    with pytest.raises(InputError, match="exists"):
        export_onnx(model, tmp_path / "a.onnx", card=_card(cfg))


# ------------------------------------------------------------------ the shipped student


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    if not STUDENT.exists():
        pytest.skip("the bundled student is not there")
    out = tmp_path_factory.mktemp("onnx") / "student.onnx"
    return export_onnx(STUDENT, out), out


def _sample_tiles():
    """The bundled sample pair normalised by its p99 levels: whole ``(1, 224, 21, 21)`` and two 12x9 crops."""
    with rasterio.open(SAMPLE / "enmap_lr_hsi.tif") as ds:
        lr = ds.read().astype(np.float32)
    with rasterio.open(SAMPLE / "s2_hr_msi.tif") as ds:
        msi = ds.read().astype(np.float32)
    lr, msi = lr / robust_level(lr, name="LR"), msi / robust_level(msi, name="MSI")
    whole = (lr[None], msi[None])
    crops = (np.stack([lr[:, :12, :9], lr[:, 9:, 12:]]), np.stack([msi[:, :36, :27], msi[:, 27:, 36:]]))
    return whole, crops


def test_shipped_student_export_matches_torch_on_the_sample_at_two_tile_sizes(exported):
    report, path = exported
    assert all(diff < 1e-4 for _, diff in report.parity)
    model, _ = load_checkpoint(STUDENT)
    runner = OnnxNetworkMethod(path, threads=1)
    for lr, msi in _sample_tiles():
        expected = _torch(model, lr, msi)
        got = runner.predict(lr, msi)
        assert got.shape == expected.shape == (lr.shape[0], 224, lr.shape[2] * 3, lr.shape[3] * 3)
        assert np.abs(got - expected).max() < 1e-4


def test_card_round_trip_and_metadata(exported):
    report, path = exported
    card = read_card(STUDENT)
    assert read_onnx_card(path) == card == report.card
    proto = onnx.load(str(path))
    stored = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(stored[CARD_KEY]) == card.to_dict()
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in proto.graph.input]
    assert dims == [["batch", 224, "lr_height", "lr_width"], ["batch", 4, "height", "width"]]


def _rewrite(path: Path, dest: Path, edit) -> Path:
    proto = onnx.load(str(path))
    edit(proto)
    dest.write_bytes(proto.SerializeToString())
    return dest


def test_sessions_follow_torchs_threads_and_take_concurrent_calls():
    cfg = ModelConfig(bands=5, msi_bands=3, scale=3, nf=8, gc=4, blocks=(1, 1, 1, 1), fusion="csa",
                      attn_window=5, paper_mode=False, upsample="bicubic", head="light")
    before = torch.get_num_threads()
    assert before in (1, 2)
    runner = OnnxNetworkMethod(onnx_bytes(_random_network(cfg), _card(cfg)))
    pinned = OnnxNetworkMethod(onnx_bytes(_random_network(cfg), _card(cfg)), threads=2)
    inputs = [_inputs(cfg, 1, 8, 8, seed) for seed in range(4)]
    try:
        torch.set_num_threads(2)
        expected = [runner.predict(lr, msi) for lr, msi in inputs]
        torch.set_num_threads(1)
        with ThreadPoolExecutor(2) as pool:
            got = list(pool.map(lambda pair: runner.predict(*pair), inputs))
        pinned.predict(*inputs[0])
    finally:
        torch.set_num_threads(before)
    assert sorted(runner._sessions) == [1, 2] and runner._sessions[before] is runner.session  # made with it
    assert sorted(pinned._sessions) == [2]  # a fixed thread count ignores torch's setting
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * float(np.abs(b).max()))


def _no_session(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("an inference session was created for a refused file")

    monkeypatch.setattr(onnxruntime, "InferenceSession", refuse)


def test_files_without_a_valid_card_are_refused_before_any_session(exported, tmp_path, monkeypatch):
    _, path = exported
    _no_session(monkeypatch)
    bare = _rewrite(path, tmp_path / "bare.onnx", lambda p: p.ClearField("metadata_props"))
    with pytest.raises(CheckpointError, match="without a csakd model card"):
        OnnxNetworkMethod(bare)
    with pytest.raises(CheckpointError, match="without a csakd model card"):
        make_method("csakd", bare)

    def garble(proto):
        proto.metadata_props[0].value = "{not json"

    with pytest.raises(CheckpointError, match="not valid JSON"):
        OnnxNetworkMethod(_rewrite(path, tmp_path / "garbled.onnx", garble))

    def other_bands(proto):
        card = json.loads(proto.metadata_props[0].value)
        card["config"]["bands"] = 100
        proto.metadata_props[0].value = json.dumps(card)

    with pytest.raises(CheckpointError, match="contradicts itself"):
        OnnxNetworkMethod(_rewrite(path, tmp_path / "edited.onnx", other_bands))

    def custom_op(proto):
        proto.graph.node[0].domain = "evil.ops"

    with pytest.raises(CheckpointError, match="evil.ops"):
        OnnxNetworkMethod(_rewrite(path, tmp_path / "custom.onnx", custom_op))
    renamed = tmp_path / "checkpoint.onnx"
    renamed.write_bytes(STUDENT.read_bytes())
    with pytest.raises(CheckpointError, match="not an ONNX model"):
        OnnxNetworkMethod(renamed)
    with pytest.raises(CheckpointError, match="does not exist"):
        OnnxNetworkMethod(tmp_path / "missing.onnx")


# ------------------------------------------------------------------ backend selection


def _sample_bands():
    return read_info(str(SAMPLE / "enmap_lr_hsi.tif")).bands


def test_make_method_picks_the_backend(exported):
    _, path = exported
    bands = _sample_bands()
    kwargs = dict(scale=3, lr_bands=bands, msi_bands=4)
    method = make_method("csakd", path, **kwargs)
    cfg = ModelConfig.from_dict(read_card(STUDENT).config)
    assert isinstance(method, OnnxNetworkMethod) and isinstance(method, NETWORK_METHODS)
    assert (method.name, method.model_name, method.scale, method.halo) == ("student", "enmap_s2_x3", 3,
                                                                          network_halo(cfg))
    assert isinstance(make_method("csakd", str(path), backend="onnxruntime", **kwargs), OnnxNetworkMethod)
    assert isinstance(make_method("csakd", STUDENT, **kwargs), OnnxNetworkMethod)  # auto: onnxruntime on the CPU
    assert isinstance(make_method("csakd", STUDENT, backend="torch", **kwargs), NetworkMethod)
    assert isinstance(make_method("csakd", build_model(cfg), scale=3), NetworkMethod)  # a bare module: torch
    assert model_scales(path, "csakd") == (3,)
    with pytest.raises(InputError, match="onnxruntime only"):
        make_method("csakd", path, backend="torch", **kwargs)
    with pytest.raises(InputError, match="unknown backend"):
        make_method("csakd", path, backend="tensorrt", **kwargs)
    with pytest.raises(InputError, match="not a network"):
        make_method("bicubic", scale=3, backend="onnxruntime")
    with pytest.raises(InputError, match="bare torch module"):
        make_method("csakd", build_model(cfg), backend="onnxruntime")
    with pytest.raises(ModelMismatchError, match="is a student"):
        make_method("teacher", path, **kwargs)
    with pytest.raises(ModelMismatchError, match="scale 3"):
        make_method("csakd", path, scale=4, lr_bands=bands, msi_bands=4)


def test_onnxruntime_backend_exports_a_checkpoint_in_memory():
    if not STUDENT.exists():
        pytest.skip("the bundled student is not there")
    method = make_method("csakd", STUDENT, backend="onnxruntime", scale=3, lr_bands=_sample_bands(), msi_bands=4)
    assert isinstance(method, OnnxNetworkMethod) and method.model_name == "enmap_s2_x3"
    (lr, msi), _ = _sample_tiles()
    expected = make_method("csakd", STUDENT, backend="torch").predict(lr, msi)
    assert np.abs(method.predict(lr, msi) - expected).max() < 1e-4
    with pytest.raises(InputError, match="expects LR-HSI"):
        method.predict(lr[:, :100], msi)


def test_auto_backend_is_torch_without_onnxruntime_or_on_a_gpu(monkeypatch):
    from csakd_qgis.fusion.methods import _backend

    assert _backend("auto", STUDENT, "csakd", "cpu") == "onnxruntime"
    assert _backend("auto", STUDENT, "teacher", "cuda:0") == "torch"
    assert _backend("auto", None, "bicubic", "cpu") == "torch"
    assert _backend("torch", STUDENT, "csakd", "cpu") == "torch"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert _backend("auto", STUDENT, "csakd", "cpu") == "torch"
    assert isinstance(make_method("csakd", STUDENT, scale=3, lr_bands=_sample_bands(), msi_bands=4), NetworkMethod)


def test_missing_onnxruntime_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(DependencyError, match="pip install"):
        onnx_runtime.import_onnxruntime()
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(DependencyError, match="pip install"):
        onnx_runtime.import_onnx()


def test_providers_never_fall_back_silently():
    assert providers("cpu") == ["CPUExecutionProvider"]
    with pytest.raises(InputError, match="mps"):
        providers("mps")
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        assert providers("cuda:1")[0] == ("CUDAExecutionProvider", {"device_id": 1})
    else:
        with pytest.raises(DependencyError, match="onnxruntime-gpu"):
            providers("cuda")


# ------------------------------------------------------------------ engine and command line


def test_engine_fuse_with_the_onnx_export_matches_torch(exported, tmp_path):
    from csakd_qgis.fusion.engine import fuse

    _, path = exported
    lr, msi = str(SAMPLE / "enmap_lr_hsi.tif"), str(SAMPLE / "s2_hr_msi.tif")
    # small tiles so that several tiles, batches and blends are compared; the same explicit halo for both
    # (the engine caps the default halo for torch NetworkMethods only)
    options = dict(method="csakd", tile=8, overlap=2, batch_size=3, device="cpu", threads=1, halo=4)
    torch_report = fuse(lr, msi, str(tmp_path / "torch.tif"), model=str(STUDENT), **options)
    onnx_report = fuse(lr, msi, str(tmp_path / "onnx.tif"), model=str(path), **options)
    assert (onnx_report.method, onnx_report.model) == ("student", "enmap_s2_x3")
    assert onnx_report.tiles_total == torch_report.tiles_total > 4
    with rasterio.open(tmp_path / "torch.tif") as a, rasterio.open(tmp_path / "onnx.tif") as b:
        expected, got = a.read(masked=True), b.read(masked=True)
        assert b.descriptions == a.descriptions
    assert (got.mask == expected.mask).all() and (~got.mask).sum() > 0.9 * got.size
    scale = float(np.abs(expected).max())
    assert np.abs(got - expected).max() < 1e-5 * scale


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_two_threads_on_the_cpu_predict_two_batches_at_once_with_the_same_output(backend, tmp_path):
    from csakd_qgis.fusion.engine import fuse

    lr, msi = str(SAMPLE / "enmap_lr_hsi.tif"), str(SAMPLE / "s2_hr_msi.tif")
    before = torch.get_num_threads()
    reports, outputs = [], []
    try:
        for threads in (1, 2):  # one call of one thread, then two calls of one thread each
            out = tmp_path / f"{threads}.tif"
            reports.append(fuse(lr, msi, str(out), model=str(STUDENT), method="csakd", backend=backend, tile=8,
                                overlap=2, device="cpu", threads=threads))
            assert torch.get_num_threads() == threads  # the run's share given back
            with rasterio.open(out) as ds:
                outputs.append(ds.read())
    finally:
        torch.set_num_threads(before)
    assert [r.streams for r in reports] == [1, 2] and "2 batches at once" in "\n".join(reports[1].summary_lines())
    assert reports[1].tiles_total == reports[0].tiles_total > 4
    np.testing.assert_array_equal(outputs[1], outputs[0])


def test_cli_export_onnx(exported, tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    assert main(["export-onnx", str(STUDENT), str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == "enmap_s2_x3" and report["opset"] == 17 and len(report["parity"]) == 2
    assert all(p["max_abs_diff"] < 1e-4 for p in report["parity"])
    assert read_onnx_card(out) == read_card(STUDENT)
    assert main(["export-onnx", str(STUDENT), str(out)]) == 2
    assert "exists" in capsys.readouterr().err
