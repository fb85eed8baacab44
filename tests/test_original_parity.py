"""Paper mode against the original CSAKD implementation's reference vectors."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from csakd_qgis.errors import CheckpointError
from csakd_qgis.models import build_model, count_parameters, infer_config, load_original, preset

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "csakd_parity"


def _require_data():
    if not DATA.is_dir():
        pytest.skip(f"reference vectors not found at {DATA}")


def _vectors(kind):
    _require_data()
    z = np.load(DATA / f"parity_{kind}_tiny.npz")
    sd = {k[len("state_dict/"):]: torch.from_numpy(z[k]) for k in z.files if k.startswith("state_dict/")}
    arrays = {k: torch.from_numpy(z[k]) for k in ("lr_hsi", "hr_msi", "output", "fused_feature")}
    return sd, arrays, json.loads(str(z["meta"]))


def _paper_model(role, msi):
    """Paper-size model on the meta device: shapes and counts without the memory or init cost."""
    with torch.device("meta"):
        return build_model(preset(f"paper_{role}", 172, msi))


def _shapes():
    _require_data()
    return json.loads((DATA / "original_state_dict_shapes.json").read_text())


@pytest.mark.parametrize("kind", ["teacher", "student"])
def test_parity_with_original_vectors(kind):
    sd, a, meta = _vectors(kind)
    model = load_original(sd)
    assert not model.training
    assert model.cfg.role == kind
    assert model.cfg.blocks == ((6, 6, 4, 4) if kind == "teacher" else tuple(meta["student_layers"]))
    assert (model.cfg.nf, model.cfg.gc, model.cfg.bands) == (meta["nf"], meta["gc"], meta["bands"])
    with torch.no_grad():
        out, fused = model(a["lr_hsi"], a["hr_msi"])
    assert out.shape == (1, 12, 32, 32)
    torch.testing.assert_close(out, a["output"], atol=1e-5, rtol=0)
    torch.testing.assert_close(fused, a["fused_feature"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["teacher_172b_4msi_csa", "student_172b_4msi_csa",
                                  "teacher_172b_6msi_csa", "student_172b_6msi_csa"])
def test_keys_and_shapes_equal_original_listing(name):
    listing = _shapes()[name]
    role, _, msi = name.split("_")[:3]
    model = _paper_model(role, int(msi[0]))
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(got) == list(listing)  # same keys in the same registration order
    assert got == listing
    meta = {k: torch.empty(v, device="meta") for k, v in listing.items()}
    assert infer_config(meta) == model.cfg


def test_parameter_counts_match_original():
    _require_data()
    counts = {}
    for role in ("teacher", "student"):
        for msi in (4, 6):
            counts[role, msi] = count_parameters(_paper_model(role, msi))
    assert counts == {("teacher", 4): 26_807_686, ("teacher", 6): 26_812_330,
                      ("student", 4): 8_748_718, ("student", 6): 8_753_362}
    student = _paper_model("student", 4)
    assert count_parameters(student.decoder.hmfeat) == 1_298_772


def test_student_never_runs_hm_blocks():
    sd, a, _ = _vectors("student")
    model = load_original(sd)
    with torch.no_grad():
        before, _ = model(a["lr_hsi"], a["hr_msi"])
        for p in model.decoder.hmfeat.parameters():
            p.add_(1.0)
        after, _ = model(a["lr_hsi"], a["hr_msi"])
    assert torch.equal(before, after)


def test_paper_csa_output_does_not_depend_on_queries_and_keys():
    # The original applies its attention with einsum('bhqk,bhvd->bhqd'), which
    # sums k and v separately: softmax rows sum to one, so q and k drop out.
    sd, a, _ = _vectors("teacher")
    model = load_original(sd)
    with torch.no_grad():
        before, _ = model(a["lr_hsi"], a["hr_msi"])
        model.decoder.fuse_att.query_conv.weight.mul_(-7.0)
        model.decoder.fuse_att.key_conv.bias.add_(3.0)
        after, _ = model(a["lr_hsi"], a["hr_msi"])
        model.decoder.fuse_att.value_conv.bias.add_(0.5)
        changed, _ = model(a["lr_hsi"], a["hr_msi"])
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)
    assert (changed - before).abs().max() > 1e-2


def test_load_from_pth_with_compile_prefix_and_nesting(tmp_path):
    sd, a, _ = _vectors("student")
    path = tmp_path / "student.pth"
    torch.save({"epoch": 3, "state_dict": {"_orig_mod." + k: v for k, v in sd.items()}}, path)
    model = load_original(path)
    with torch.no_grad():
        out, _ = model(a["lr_hsi"], a["hr_msi"])
    torch.testing.assert_close(out, a["output"], atol=1e-5, rtol=0)


class _NotATensor:
    pass


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"decoder.hconv1.weight": _NotATensor()}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_original(path)


def test_bad_state_dicts_raise_checkpoint_error(tmp_path):
    sd, _, _ = _vectors("teacher")
    with pytest.raises(CheckpointError, match="unknown keys"):
        load_original({**sd, "decoder.extra.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="not a CSAKD state dict"):
        load_original({"epoch": 1})
    with pytest.raises(CheckpointError, match="lacks"):
        load_original({"decoder.hconv1.weight": torch.zeros(4, 3, 3, 3)})
    with pytest.raises(CheckpointError, match="does not exist"):
        load_original(tmp_path / "missing.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="not a CSAKD state dict"):
        load_original(tmp_path / "list.pth")
