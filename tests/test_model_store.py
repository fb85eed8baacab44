import pytest
import torch

from csakd_qgis.errors import CheckpointError, ModelMismatchError
from csakd_qgis.io.bands import BandInfo
from csakd_qgis.models import store as model_store
from csakd_qgis.models.card import ModelCard, MsiInfo, Provenance, SpectralBands
from csakd_qgis.models.checkpoint import save_checkpoint


def _card(name, bands=(500.0, 600.0, 700.0), msi=4, scale=4, role="student"):
    return ModelCard(
        name=name, role=role, config={"bands": len(bands)}, scale=scale,
        lr_bands=SpectralBands(tuple(bands)),
        msi=MsiInfo("sentinel2", tuple(f"B{i}" for i in range(msi)), ()),
        provenance=Provenance(data="test", protocol="simulation", steps=10, seconds=3.0),
        metrics={"psnr": 31.5}, validation="held-out rows",
    )


@pytest.fixture()
def store(tmp_path, monkeypatch):
    bundled = tmp_path / "bundled"
    user = tmp_path / "user"
    bundled.mkdir()
    user.mkdir()
    monkeypatch.setattr(model_store, "bundled_dir", lambda: bundled)
    monkeypatch.setenv("CSAKD_MODEL_DIR", str(user))
    net = torch.nn.Conv2d(1, 1, 1)
    save_checkpoint(bundled / "vnir4.safetensors", net, _card("vnir4"))
    save_checkpoint(bundled / "shared.safetensors", net, _card("shared-bundled", msi=6))
    save_checkpoint(user / "shared.safetensors", net, _card("shared-user", scale=3))
    (user / "junk.safetensors").write_bytes(b"not a model")
    return bundled, user


def test_user_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CSAKD_MODEL_DIR", str(tmp_path))
    assert model_store.user_dir() == tmp_path
    monkeypatch.delenv("CSAKD_MODEL_DIR")
    assert model_store.user_dir().parts[-4:] == (".local", "share", "csakd", "models")


def test_list_models_user_shadows_bundled_and_skips_junk(store):
    names = [card.name for _, card in model_store.list_models()]
    assert names == ["shared-user", "vnir4"]


def test_resolve_by_name_and_path(store):
    bundled, _ = store
    path, card = model_store.resolve_model("vnir4")
    assert path == bundled / "vnir4.safetensors" and card.name == "vnir4"
    path, card = model_store.resolve_model(str(bundled / "shared.safetensors"))
    assert card.name == "shared-bundled"
    with pytest.raises(CheckpointError, match="available: shared, vnir4"):
        model_store.resolve_model("nope")


def test_auto_select_matches_bands_wavelengths_msi_and_scale(store):
    bands = [BandInfo(w) for w in (502.0, 598.0, 703.0)]
    path, card = model_store.auto_select(bands, 4, scale=4)
    assert card.name == "vnir4"
    # unknown wavelengths match by count
    _, card = model_store.auto_select([BandInfo() for _ in range(3)], 4, scale=4)
    assert card.name == "vnir4"
    # 6 nm off is beyond the 5 nm tolerance
    with pytest.raises(ModelMismatchError) as err:
        model_store.auto_select([BandInfo(w) for w in (506.0, 600.0, 700.0)], 4, scale=4)
    assert "6.0 nm" in str(err.value) and "csakd train --scene" in str(err.value)
    with pytest.raises(ModelMismatchError, match=r"scale 3 \(inputs have 4\)"):
        model_store.auto_select(bands, 6, scale=4)
    with pytest.raises(ModelMismatchError, match=r"4 MSI bands \(input has 5\)"):
        model_store.auto_select(bands, 5, scale=4)
    with pytest.raises(ModelMismatchError, match=r"3 HSI bands \(input has 2\)"):
        model_store.auto_select(bands[:2], 4, scale=4)
    with pytest.raises(ModelMismatchError, match="no teacher model is installed"):
        model_store.auto_select(bands, 4, scale=4, role="teacher")


def test_describe_mentions_what_a_user_needs():
    text = model_store.describe(_card("vnir4"))
    for part in ("vnir4", "student", "3-band HSI (500-700 nm)", "4-band sentinel2 MSI", "scale 4",
                 "simulation", "psnr 31.5"):
        assert part in text
