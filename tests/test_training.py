import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from csakd_qgis import cli
from csakd_qgis.errors import InputError, ModelMismatchError
from csakd_qgis.models.card import MsiInfo, SpectralBands
from csakd_qgis.models.checkpoint import load_checkpoint, read_card
from csakd_qgis.models.files import optimizer_path_for
from csakd_qgis.training import TrainConfig, TrainingData, teacher_path_for, train
from csakd_qgis.training.patches import PatchSampler, Scene, augment, valid_origins
from csakd_qgis.training.scene_adaptive import wald_scene
from csakd_qgis.training.validation import validation_metrics

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _scene(c=5, m=3, h=8, w=8, s=2, seed=0):
    rng = np.random.default_rng(seed)
    lr = rng.random((c, h, w)).astype(np.float32)
    ref = np.kron(lr, np.ones((s, s), dtype=np.float32))
    msi = ref[:m] * 2.0
    return Scene(lr, msi, ref, np.ones((h * s, w * s), dtype=bool), s)


def _data(seed=0):
    sc = _scene(seed=seed)
    val = _scene(h=4, seed=seed + 1)
    return TrainingData((sc,), (val,), SpectralBands(tuple(400.0 + 50 * i for i in range(5))),
                        MsiInfo("custom", ("a", "b", "c")), 2, "simulation", "random")


def _tiny(mode, **kw):
    return TrainConfig(mode=mode, steps=kw.pop("steps", 2), batch_size=2, patch=8, val_every=1, device="cpu",
                       **kw)


# ------------------------------------------------------------------ patches


def test_augment_hand_worked():
    a = np.array([[[1, 2], [3, 4]]])
    rot, = augment([a], 1, False)
    assert rot.tolist() == [[[2, 4], [1, 3]]]
    flip, = augment([a], 0, True)
    assert flip.tolist() == [[[2, 1], [4, 3]]]


def test_patches_keep_lr_msi_and_reference_aligned_under_augmentation():
    sampler = PatchSampler([_scene()], patch=4, seed=3)
    for _ in range(5):
        lr, msi, ref = sampler.batch(4)
        assert lr.shape == (4, 5, 2, 2) and msi.shape == (4, 3, 4, 4) and ref.shape == (4, 5, 4, 4)
        np.testing.assert_array_equal(ref, np.kron(lr, np.ones((1, 1, 2, 2), dtype=np.float32)))
        np.testing.assert_array_equal(msi, 2 * ref[:, :3])


def test_patches_skip_nodata():
    sc = _scene()
    valid = np.zeros_like(sc.valid)
    valid[8:, 8:] = True  # only the bottom-right LR quarter is usable
    sc = Scene(sc.lr, sc.msi, sc.ref, valid, 2)
    lr, _, _ = PatchSampler([sc], patch=8, seed=0).batch(6)
    quarter = sc.lr[:, 4:, 4:]
    for patch in lr:  # every patch is the quarter, rotated/flipped
        assert any(np.array_equal(patch, b) for k in range(4) for f in (False, True)
                   for b in augment([quarter], k, f))
    empty = Scene(sc.lr, sc.msi, sc.ref, np.zeros_like(valid), 2)
    with pytest.raises(InputError, match="free of nodata"):
        PatchSampler([empty], patch=4)


def test_valid_origins_against_brute_force():
    rng = np.random.default_rng(1)
    valid = rng.random((20, 24)) > 0.05
    got = {tuple(o) for o in valid_origins(valid, 6, 2)}
    want = {(i // 2, j // 2) for i in range(0, 15, 2) for j in range(0, 19, 2) if valid[i:i + 6, j:j + 6].all()}
    assert got == want and len(want) > 3


def test_patch_size_must_be_a_multiple_of_the_scale():
    with pytest.raises(InputError, match="multiple of the scale"):
        PatchSampler([_scene()], patch=5)


# ------------------------------------------------------------------ scene-adaptive


def test_wald_scene_shapes_levels_and_constant_image():
    lr = np.full((4, 12, 12), 200.0)
    msi = np.full((2, 36, 36), 50.0)
    sc = wald_scene(lr, msi, 3)
    assert sc.lr.shape == (4, 4, 4) and sc.msi.shape == (2, 12, 12) and sc.ref.shape == (4, 12, 12)
    np.testing.assert_allclose(sc.lr, 1.0, rtol=1e-6)
    np.testing.assert_allclose(sc.msi, 1.0, rtol=1e-6)
    np.testing.assert_allclose(sc.ref, 1.0, rtol=1e-6)
    assert sc.valid.all()
    lr_valid = np.ones((12, 12), dtype=bool)
    lr_valid[0, 0] = False
    sc = wald_scene(lr, msi, 3, lr_valid=lr_valid)
    assert not sc.valid[:3, :3].any() and sc.valid[3:, 3:].all()
    with pytest.raises(InputError, match="co-register"):
        wald_scene(lr, msi[:, :30], 3)


# ------------------------------------------------------------------ metrics


def test_validation_metrics_hand_worked():
    ref = torch.tensor([[[1.0, 2.0]], [[2.0, 4.0]]])  # 2 bands, 1x2 pixels
    out = ref * 1.5
    valid = torch.ones(1, 2, dtype=torch.bool)
    psnr, sam = validation_metrics(out, ref, valid)
    # band 0: mse (0.25 + 1)/2 = 0.625, peak 2; band 1: mse (1 + 4)/2 = 2.5, peak 4
    expect = (10 * math.log10(4 / 0.625) + 10 * math.log10(16 / 2.5)) / 2
    assert psnr == pytest.approx(expect) and sam == pytest.approx(0.0, abs=1e-5)


# ------------------------------------------------------------------ trainer


def test_cpu_training_is_deterministic(tmp_path):
    torch.set_num_threads(1)
    a = train(_data(), _tiny("student"), tmp_path / "a.safetensors")
    b = train(_data(), _tiny("student"), tmp_path / "b.safetensors")
    ma, _ = load_checkpoint(tmp_path / "a.safetensors")
    mb, _ = load_checkpoint(tmp_path / "b.safetensors")
    for (k, va), (_, vb) in zip(ma.state_dict().items(), mb.state_dict().items()):
        assert torch.equal(va, vb), k
    assert a.curve == b.curve


def test_kd_run_saves_student_teacher_cards_and_resumes(tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "m.safetensors"
    rep = train(_data(), _tiny("kd", steps=3), out)
    assert rep.steps == 3 and [p.step for p in rep.curve] == [1, 2, 3]
    assert all(p.teacher_loss is not None and p.student_loss is not None for p in rep.curve)
    best = max(rep.curve, key=lambda p: p.val_psnr)
    assert rep.best_metrics["psnr"] == pytest.approx(best.val_psnr) and rep.best_step == best.step
    student, card = load_checkpoint(out)
    teacher, tcard = load_checkpoint(teacher_path_for(out))
    assert (card.role, tcard.role) == ("student", "teacher")
    assert card.metrics["psnr"] == pytest.approx(best.val_psnr)
    assert card.provenance.mode == "kd" and card.provenance.steps == 3 and card.msi.band_names == ("a", "b", "c")
    # the student (nf 24) learned against the teacher (nf 32) through an adapter that is not exported
    assert not any("adapter" in k for k in student.state_dict())
    assert optimizer_path_for(out).exists()
    rep2 = train(_data(), _tiny("kd", steps=5), tmp_path / "m2.safetensors", resume=out)
    assert rep2.steps == 5 and [p.step for p in rep2.curve] == [4, 5]


def test_early_stopping_ends_the_run_when_validation_stalls(tmp_path):
    torch.set_num_threads(1)
    # a learning rate this high makes validation jump about, so the best check is followed by worse ones
    full = train(_data(), _tiny("student", steps=8, learning_rate=2e-2), tmp_path / "a.safetensors")
    stopped = train(_data(), _tiny("student", steps=8, learning_rate=2e-2, patience=2), tmp_path / "b.safetensors")
    best, expected = None, None
    for p in full.curve:  # validated every step: the first step 2 checks after the best so far
        best = p if best is None or p.val_psnr > best.val_psnr else best
        if p.step - best.step >= 2:
            expected = p.step
            break
    assert expected is not None and expected < 8
    assert stopped.steps == expected and stopped.curve == full.curve[:expected]
    assert stopped.best_step == best.step and read_card(stopped.model_path).provenance.steps == expected
    with pytest.raises(InputError, match="patience"):
        TrainConfig(patience=-1)


def test_the_student_starts_from_the_same_weights_in_every_mode(tmp_path):
    from csakd_qgis.training.networks import build_networks

    torch.set_num_threads(1)
    teacher = tmp_path / "t.safetensors"
    train(_data(), _tiny("teacher", steps=1), teacher)
    cpu = torch.device("cpu")
    states = [build_networks(_data(), _tiny(mode, seed=seed), cpu, teacher).trained["student"].model.state_dict()
              for mode, seed in (("student", 3), ("offline", 3), ("kd", 3), ("student", 4))]
    for other in states[1:3]:
        assert all(torch.equal(states[0][k], other[k]) for k in states[0])
    assert not all(torch.equal(states[0][k], states[3][k]) for k in states[0])  # the seed does change them


def test_offline_distillation_needs_a_fitting_teacher(tmp_path):
    torch.set_num_threads(1)
    teacher = tmp_path / "t.safetensors"
    train(_data(), _tiny("teacher", steps=1), teacher)
    assert read_card(teacher).role == "teacher"
    rep = train(_data(), _tiny("offline", steps=1), tmp_path / "s.safetensors", teacher_checkpoint=teacher)
    assert rep.teacher_path is None and read_card(rep.model_path).provenance.mode == "offline"
    with pytest.raises(ModelMismatchError, match="offline distillation needs a teacher"):
        train(_data(), _tiny("offline", steps=1), tmp_path / "x.safetensors", teacher_checkpoint=rep.model_path)
    with pytest.raises(InputError, match="--teacher"):
        train(_data(), _tiny("offline", steps=1), tmp_path / "x.safetensors")


def test_card_carries_the_gain_over_the_classical_bar_and_auto_follows_it(tmp_path):
    from csakd_qgis.fusion.methods import pays_off
    from csakd_qgis.models.card import CLASSICAL_GAIN_KEY, CLASSICAL_PSNR_KEY

    torch.set_num_threads(1)
    out = tmp_path / "m.safetensors"
    rep = train(_data(), _tiny("kd", steps=2), out)
    classical = rep.classical
    assert [c["method"] for c in classical["scores"]] == ["gsa", "glp", "subspace", "subspace_bp"]
    assert classical["psnr"] == max(c["psnr"] for c in classical["scores"])
    assert classical["gain_db"] == pytest.approx(rep.best_metrics["psnr"] - classical["psnr"])
    for path in (out, teacher_path_for(out)):  # the teacher gets its own gain
        card = read_card(path)
        gain = card.metrics["psnr"] - card.metrics[CLASSICAL_PSNR_KEY]
        assert card.metrics[CLASSICAL_GAIN_KEY] == pytest.approx(gain)
        assert pays_off(card) == (gain > 0)
        assert ("does not beat" in card.limits) == (gain <= 0) and "strongest classical method" in card.limits
    assert read_card(out).metrics[CLASSICAL_GAIN_KEY] == pytest.approx(classical["gain_db"])


def test_classical_baseline_fits_a_scene_the_msi_explains(texture):
    """HSI bands mixed from two fields that the MSI sees: the classical bar is far above bicubic."""
    from csakd_qgis.fusion.methods import bicubic_upsample
    from csakd_qgis.training.baseline import METHODS, classical_baseline

    wl = np.linspace(430.0, 890.0, 24)
    data = TrainingData.from_reference(texture(96, 96, 24, seed=5).astype(np.float64), wl, None,
                                       sensor="sentinel2", bands=("B2", "B3", "B4", "B8"), scale=3,
                                       val_fraction=0.25, name="texture")
    baseline = classical_baseline(data)
    assert baseline.method in METHODS and len(baseline.scores) == len(METHODS)
    assert "PSF" in baseline.notes[0]
    val = data.val[0]
    up = bicubic_upsample(val.lr[None], 3)[0]
    bicubic, _ = validation_metrics(torch.from_numpy(np.asarray(up)), torch.from_numpy(val.ref),
                                    torch.from_numpy(val.valid))
    assert baseline.psnr > bicubic + 5.0
    assert classical_baseline(TrainingData(data.train, (), data.lr_bands, data.msi, 3, "simulation")) is None


def test_classical_baseline_fits_on_the_training_pair_when_a_validation_scene_is_too_small():
    import dataclasses

    from csakd_qgis.training.baseline import METHODS, classical_baseline

    data = _data()
    tiny = _scene(h=1, w=2, seed=7)  # 2 LR pixels: no method can be fitted on it
    baseline = classical_baseline(dataclasses.replace(data, val=(data.val[0], tiny)))
    fallbacks = [n for n in baseline.notes if "fitted on the training pair for validation scene 2" in n]
    assert [n.split()[0] for n in fallbacks] == list(METHODS)
    assert np.isfinite(baseline.psnr)


def test_train_and_models_commands(tmp_path, capsys):
    from affine import Affine

    from csakd_qgis.io.bands import BandInfo
    from csakd_qgis.io.write import write_raster

    rng = np.random.default_rng(0)
    wl = np.linspace(420, 880, 12)
    ref = (rng.random((12, 32, 32)) * 0.2 + 0.3).astype(np.float32)
    path = tmp_path / "ref.tif"
    write_raster(str(path), ref, crs="EPSG:32633", transform=Affine(10, 0, 0, 0, -10, 0),
                 bands=[BandInfo(float(w), 10.0) for w in wl])
    out = tmp_path / "model.safetensors"
    code = cli.main(["train", "--reference", str(path), "--scale", "2", "--mode", "student", "--steps", "2",
                     "--batch-size", "2", "--patch", "8", "--device", "cpu", "--out", str(out), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["steps"] == 2 and report["model_path"] == str(out)
    card = read_card(out)
    np.testing.assert_allclose(card.lr_bands.wavelengths_nm, wl, atol=1e-3)
    assert card.msi.band_names == ("B2", "B3", "B4", "B8") and card.scale == 2
    assert cli.main(["models", "--card", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["weights_sha256"] == card.weights_sha256
    # refuses to overwrite, and tells why
    assert cli.main(["train", "--reference", str(path), "--scale", "2", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.slow
def test_kd_on_indian_pines_beats_bicubic_on_held_out_rows(tmp_path):
    """Short KD co-training on rows 0-99; the student beats bicubic on rows 100-143."""
    folder = DATA / "indian_pines"
    if not folder.is_dir():
        pytest.skip("shared Indian Pines data not present")
    from csakd_qgis.fusion.methods import bicubic_upsample
    from csakd_qgis.fusion.radiometry import robust_level
    from csakd_qgis.quality.metrics import evaluate
    from csakd_qgis.simulation.degradation import simulate_pair

    torch.set_num_threads(1)
    cube = np.load(folder / "Indian_pines_corrected.npy").astype(np.float64).transpose(2, 0, 1)
    wl = json.loads((folder / "wavelengths.json").read_text())["wavelengths_nm_from_tensorly_data_imports_py"]
    data = TrainingData.from_reference(cube[:, :100, :144], wl, None, sensor="sentinel2",
                                       bands=("B2", "B3", "B4", "B8"), scale=4, val_fraction=0.2,
                                       name="Indian Pines rows 0-99")
    rep = train(data, TrainConfig(mode="kd", steps=240, batch_size=4, patch=32, learning_rate=5e-4,
                                  val_every=60, device="cpu"), tmp_path / "ip.safetensors")
    first, last = rep.curve[0], rep.curve[-1]
    assert last.teacher_loss < first.teacher_loss and last.student_loss < first.student_loss

    pair = simulate_pair(cube[:, 100:144, :144], wl, None, sensor="sentinel2", bands=("B2", "B3", "B4", "B8"),
                         scale=4)
    lr_level, msi_level = robust_level(pair.lr_hsi), robust_level(pair.hr_msi)
    student, _ = load_checkpoint(rep.model_path)
    with torch.no_grad():
        fused = student(torch.from_numpy((pair.lr_hsi / lr_level).astype(np.float32))[None],
                        torch.from_numpy((pair.hr_msi / msi_level).astype(np.float32))[None])[0][0]
    fused = fused.double().numpy() * lr_level
    bicubic = bicubic_upsample((pair.lr_hsi / lr_level).astype(np.float32)[None], 4)[0] * lr_level
    ours = evaluate(pair.reference, fused, scale=4)
    base = evaluate(pair.reference, bicubic, scale=4)
    assert ours.psnr > base.psnr
