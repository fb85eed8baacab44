"""Integer-scale bilinear/bicubic upsampling as convolutions: equal to ``F.interpolate``, no checkpoint change."""

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from torch import nn

from csakd_qgis.fusion.radiometry import robust_level
from csakd_qgis.models import ModelConfig, build_model
from csakd_qgis.models.checkpoint import load_checkpoint
from csakd_qgis.models.upsampling import IntegerUpsample, make_upsample, phase_filters

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
STUDENT = ROOT / "resources" / "models" / "enmap_s2_x3.safetensors"
SAMPLE = ROOT / "resources" / "sample"

#: Largest accepted ``max |conv - F.interpolate|`` on inputs uniform in [0, 1] (float32 rounding only).
TOLERANCE = 1e-5


class Interpolate(nn.Module):
    """The reference: what the networks called before, ``F.interpolate`` with half-pixel centres."""

    def __init__(self, scale: int, mode: str) -> None:
        super().__init__()
        self.scale, self.mode = scale, mode

    def forward(self, x):
        return F.interpolate(x, scale_factor=self.scale, mode=self.mode, align_corners=False)


class Convolved(nn.Module):
    """What an ONNX export computes: :meth:`IntegerUpsample.convolve`, also outside export."""

    def __init__(self, up: IntegerUpsample) -> None:
        super().__init__()
        self.up = up

    def forward(self, x):
        return self.up.convolve(x)


def _uniform(shape, seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("scale", [2, 3, 4, 5, 6])
@pytest.mark.parametrize("size", [(1, 1), (2, 2), (3, 2), (5, 8), (7, 7), (16, 11)])
def test_equals_f_interpolate(mode, scale, size):
    x = _uniform((3, 2, *size), seed=scale)
    up = IntegerUpsample(scale, mode)
    got = up.convolve(x)
    expected = F.interpolate(x, scale_factor=scale, mode=mode, align_corners=False)
    assert torch.equal(up(x), expected)  # torch itself still calls F.interpolate
    assert got.shape == expected.shape == (3, 2, size[0] * scale, size[1] * scale)
    assert got.dtype == torch.float32
    assert (got - expected).abs().max().item() <= TOLERANCE


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_borders_follow_pytorch_clamping(mode):
    """A single bright pixel at each corner: zero padding or a wrong edge rule would show at the borders."""
    x = torch.zeros((1, 1, 4, 5))
    x[0, 0, 0, 0] = x[0, 0, -1, -1] = 1.0
    got = IntegerUpsample(3, mode).convolve(x)
    expected = F.interpolate(x, scale_factor=3, mode=mode, align_corners=False)
    assert (got - expected).abs().max().item() <= TOLERANCE
    # bicubic overshoots (negative lobes), bilinear does not
    assert (got.min().item() < 0) == (mode == "bicubic")


def test_tiny_inputs_are_constant_like_pytorch():
    x = torch.tensor([[[[0.25]]]])
    for mode in ("bilinear", "bicubic"):
        got = IntegerUpsample(4, mode).convolve(x)
        expected = F.interpolate(x, scale_factor=4, mode=mode, align_corners=False)
        assert torch.equal(expected, torch.full((1, 1, 4, 4), 0.25))
        assert (got - 0.25).abs().max().item() <= 1e-7


def test_float64_and_scale_one():
    x = _uniform((1, 3, 6, 4)).double()
    got = IntegerUpsample(2, "bicubic").double().convolve(x)
    assert got.dtype == torch.float64
    assert (got - F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)).abs().max() <= 1e-6
    assert IntegerUpsample(1, "bilinear")(x) is x
    assert IntegerUpsample(1, "bilinear").convolve(x) is x


def test_phase_filters_sum_to_one_and_reject_bad_arguments():
    for mode in ("bilinear", "bicubic"):
        for scale in range(1, 7):
            assert np.allclose(phase_filters(scale, mode).sum(axis=1), 1.0)
    assert np.allclose(phase_filters(2, "bilinear"), [[0.25, 0.75, 0.0], [0.0, 0.75, 0.25]])
    with pytest.raises(ValueError, match="mode"):
        phase_filters(2, "area")
    with pytest.raises(ValueError, match="scale"):
        phase_filters(0, "bicubic")
    assert isinstance(make_upsample(2, "nearest"), nn.Upsample)


def test_filters_are_not_in_state_dicts():
    cfg = ModelConfig(bands=6, msi_bands=3, scale=3, nf=8, gc=4, blocks=(1, 1, 1, 1), fusion="csa_pooled",
                      paper_mode=False, upsample="bicubic", head="light", attn_window=5)
    model = build_model(cfg)
    assert isinstance(model.decoder.upsampler, IntegerUpsample)
    assert not [k for k in model.state_dict() if "upsampler" in k or k.endswith(("rows", "cols"))]
    assert {name for name, _ in model.named_buffers()} >= {"decoder.upsampler.rows", "decoder.upsampler.cols"}


def test_export_has_no_resize():
    onnx = pytest.importorskip("onnx")
    from csakd_qgis.models.card import ModelCard, MsiInfo, SpectralBands
    from csakd_qgis.models.onnx_export import onnx_bytes

    cfg = ModelConfig(bands=5, msi_bands=3, scale=3, nf=8, gc=4, blocks=(0, 1, 1, 1), fusion="csa_pooled",
                      paper_mode=False, upsample="bicubic", head="light", attn_window=5)
    card = ModelCard(name="tiny", role=cfg.role, config=cfg.to_dict(), scale=3,
                     lr_bands=SpectralBands((None,) * 5), msi=MsiInfo(None, ("B2", "B3", "B4")))
    graph = onnx.load_from_string(onnx_bytes(build_model(cfg).eval(), card)).graph
    ops = {node.op_type for node in graph.node}
    assert "Resize" not in ops
    assert {"DepthToSpace", "Pad"} <= ops


def _sample_crops():
    """The bundled sample pair normalised by its p99 levels: the whole ``(1, 224, 21, 21)`` and a batch of two crops."""
    with rasterio.open(SAMPLE / "enmap_lr_hsi.tif") as ds:
        lr = ds.read().astype(np.float32)
    with rasterio.open(SAMPLE / "s2_hr_msi.tif") as ds:
        msi = ds.read().astype(np.float32)
    lr, msi = lr / robust_level(lr, name="LR"), msi / robust_level(msi, name="MSI")
    yield lr[None], msi[None]
    yield np.stack([lr[:, :11, :8], lr[:, 10:, 13:]]), np.stack([msi[:, :33, :24], msi[:, 30:, 39:]])


def test_bundled_student_output_unchanged():
    if not STUDENT.exists():
        pytest.skip("the bundled student is not there")
    model, card = load_checkpoint(STUDENT)  # strict: the checkpoint's keys still fit
    assert isinstance(model.decoder.upsampler, IntegerUpsample)
    convolved, _ = load_checkpoint(STUDENT)
    convolved.decoder.upsampler = Convolved(convolved.decoder.upsampler)
    interpolated, _ = load_checkpoint(STUDENT)
    interpolated.decoder.upsampler = Interpolate(card.scale, interpolated.cfg.upsample)
    with torch.no_grad():
        for lr, msi in _sample_crops():
            lr, msi = torch.from_numpy(lr), torch.from_numpy(msi)
            expected = interpolated(lr, msi)[0]
            assert torch.equal(model(lr, msi)[0], expected)  # torch: unchanged to the bit
            got = convolved(lr, msi)[0]
            assert got.shape == expected.shape == (lr.shape[0], 224, lr.shape[2] * 3, lr.shape[3] * 3)
            assert (got - expected).abs().max().item() <= TOLERANCE
