import builtins
import json
import pickle
import struct

import pytest
import torch

from csakd_qgis.errors import CheckpointError
from csakd_qgis.models import checkpoint
from csakd_qgis.models.card import FORMAT_VERSION, ModelCard, MsiInfo, SpectralBands
from csakd_qgis.models.checkpoint import CARD_KEY, load_checkpoint, read_card, save_checkpoint, weights_digest


def _card(config=None, bands=3):
    return ModelCard(
        name="tiny", role="student", config=config or {"bands": bands}, scale=4,
        lr_bands=SpectralBands(tuple(500.0 + 10 * i for i in range(bands)), (10.0,) * bands, (True,) * bands),
        msi=MsiInfo("sentinel2", ("B2", "B3", "B4", "B8"), (492.0, 560.0, 665.0, 833.0)),
        metrics={"psnr": 30.0}, description="a test model",
    )


class _WritesAFile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (builtins.open, (str(self.marker), "w"))


def _write_safetensors(path, header, payload=b""):
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + payload)


# ------------------------------------------------------------------ card


def test_card_round_trip_and_rejects_unknown_keys_and_versions():
    card = _card()
    assert ModelCard.from_json(card.to_json()) == card
    d = card.to_dict()
    d["surprise"] = 1
    with pytest.raises(CheckpointError, match="surprise"):
        ModelCard.from_dict(d)
    d = card.to_dict()
    d["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(CheckpointError, match="format_version"):
        ModelCard.from_dict(d)
    d = card.to_dict()
    d["msi"]["colour"] = "red"
    with pytest.raises(CheckpointError, match="colour"):
        ModelCard.from_dict(d)
    with pytest.raises(CheckpointError, match="role"):
        ModelCard.from_dict({**card.to_dict(), "role": "oracle"})
    with pytest.raises(CheckpointError, match="not valid JSON"):
        ModelCard.from_json("{not json")


def test_read_card_reads_only_the_header(tmp_path):
    path = tmp_path / "m.safetensors"
    written = save_checkpoint(path, torch.nn.Conv2d(3, 2, 1), _card())
    assert read_card(path) == written
    assert len(written.weights_sha256) == 64
    assert not list(tmp_path.glob(".*partial"))


def test_weights_digest_is_independent_sha256(tmp_path):
    import hashlib

    t = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    h = hashlib.sha256()
    h.update(b"w|torch.float32|(2, 3)|")
    h.update(t.numpy().tobytes())
    assert weights_digest({"w": t}) == h.hexdigest()
    assert weights_digest({"w": t}) != weights_digest({"w": t.reshape(3, 2)})


# ------------------------------------------------------------------ refusing bad files


def test_pickle_that_writes_a_file_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned.txt"
    evil = tmp_path / "authors.pth"
    evil.write_bytes(pickle.dumps({"state_dict": _WritesAFile(marker)}, protocol=2))
    zipped = tmp_path / "authors_zip.pth"
    torch.save({"state_dict": _WritesAFile(marker)}, zipped)
    assert not marker.exists()
    for path in (evil, zipped):
        with pytest.raises(CheckpointError, match="convert-original"):
            load_checkpoint(path)
        with pytest.raises(CheckpointError):
            read_card(path)
    # convert-original loads with weights_only=True, which rejects the object as well
    from csakd_qgis.commands import convert_original

    for path in (evil, zipped):
        with pytest.raises(CheckpointError, match="weights"):
            convert_original.convert(path, tmp_path / "out.safetensors")
    assert not marker.exists()
    assert not (tmp_path / "out.safetensors").exists()


def test_oversized_header_is_refused_before_allocation(tmp_path):
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 2**62) + b"{}")
    with pytest.raises(CheckpointError, match="header claims"):
        read_card(path)


def test_tensor_beyond_file_end_is_refused(tmp_path):
    path = tmp_path / "lying.safetensors"
    header = {"__metadata__": {CARD_KEY: _card().to_json()},
              "w": {"dtype": "F32", "shape": [1_000_000, 1_000_000], "data_offsets": [0, 4 * 10**12]}}
    _write_safetensors(path, header, b"\0" * 16)
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        load_checkpoint(path)
    header["w"] = {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}
    _write_safetensors(path, header, b"\0" * 16)
    with pytest.raises(CheckpointError, match="'w' claims bytes 0..8"):
        read_card(path)


def test_malformed_card_json_and_missing_card(tmp_path):
    path = tmp_path / "bad.safetensors"
    _write_safetensors(path, {"__metadata__": {CARD_KEY: "{oops"}})
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_card(path)
    _write_safetensors(path, {"__metadata__": {"other": "x"}})
    with pytest.raises(CheckpointError, match="without a csakd model card"):
        read_card(path)


def test_unknown_format_version_in_file(tmp_path):
    path = tmp_path / "future.safetensors"
    d = _card().to_dict()
    d["format_version"] = 99
    _write_safetensors(path, {"__metadata__": {CARD_KEY: json.dumps(d)}})
    with pytest.raises(CheckpointError, match="format_version 99"):
        read_card(path)


def test_altered_weights_fail_the_digest(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, torch.nn.Conv2d(3, 2, 1), _card())
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="digest"):
        checkpoint.read_state(path)


# ------------------------------------------------------------------ with the real networks


def _tiny_config():
    from csakd_qgis.models import preset

    return preset("project_student", bands=6, msi_bands=3, scale=2)


def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    from csakd_qgis.models import build_model

    cfg = _tiny_config()
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, _card(cfg.to_dict(), bands=6))
    loaded, card = load_checkpoint(path)
    assert not loaded.training and card.config == cfg.to_dict()
    lr, msi = torch.rand(1, 6, 8, 8), torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        a, fa = model(lr, msi)
        b, fb = loaded(lr, msi)
    assert torch.equal(a, b) and torch.equal(fa, fb)


def test_shapes_not_matching_the_card_config_are_named(tmp_path):
    from csakd_qgis.models import build_model

    cfg = _tiny_config()
    model = build_model(cfg)
    other = dict(cfg.to_dict(), bands=7)
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, _card(other, bands=7))
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_checkpoint(path)
