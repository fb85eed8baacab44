"""csakd_qgis.models.files: the .safetensors naming rules."""

from pathlib import Path

from csakd_qgis.models.files import model_name, optimizer_path_for, strip_suffix, teacher_path_for


def test_model_name_drops_only_a_trailing_suffix():
    assert model_name("models/potsdam.safetensors") == "potsdam"
    assert model_name(Path("a/b.teacher.safetensors")) == "b.teacher"
    assert model_name("models/potsdam") == "potsdam"
    assert model_name("x.safetensors.bak") == "x.safetensors.bak"
    assert strip_suffix("folder/m.safetensors") == "folder/m"


def test_teacher_and_optimiser_files_go_beside_the_model():
    assert teacher_path_for("out/m.safetensors") == Path("out/m.teacher.safetensors")
    assert optimizer_path_for(Path("out/m.safetensors")) == Path("out/m.optim.safetensors")
    assert teacher_path_for("out/m") == Path("out/m.teacher.safetensors")
    assert optimizer_path_for("out/m.v2") == Path("out/m.v2.optim.safetensors")
