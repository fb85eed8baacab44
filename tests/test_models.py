"""The DTS networks: configuration, blocks, fusions, project mode, MAC counts."""

import math

import pytest
import torch
import torch.nn.functional as F

from csakd_qgis.errors import CheckpointError, InputError
from csakd_qgis.models import (
    ModelConfig,
    build_model,
    count_macs,
    count_parameters,
    macs_per_pixel,
    preset,
)
from csakd_qgis.models.blocks import CLRABlock, DenseUnit
from csakd_qgis.models.fusion import CrossSigmoidFusion, attention_radius, box_mean, pooled_window

torch.set_num_threads(1)


def tiny(**kw):
    base = dict(bands=6, msi_bands=3, scale=2, nf=8, gc=4, blocks=(1, 1, 1, 1), fusion="csa_invariant",
                paper_mode=False, upsample="bilinear", head="light", attn_window=5)
    base.update(kw)
    return ModelConfig(**base)


# --- configuration -----------------------------------------------------------------------------

def test_config_round_trip_and_unknown_keys():
    cfg = tiny(lr_groups=2, role="student")
    d = cfg.to_dict()
    assert d["blocks"] == [1, 1, 1, 1]
    assert ModelConfig.from_dict(d) == cfg
    with pytest.raises(CheckpointError, match="unknown keys"):
        ModelConfig.from_dict({**d, "dropout": 0.1})
    with pytest.raises(CheckpointError, match="lacks"):
        ModelConfig.from_dict({"bands": 4})


@pytest.mark.parametrize("kw, match", [
    (dict(scale=1), "scale"),
    (dict(lr_groups=3), "lr_groups"),
    (dict(fusion="attention"), "fusion"),
    (dict(blocks=(1, 1, 1)), "blocks"),
    (dict(attn_window=4), "attn_window"),
    (dict(paper_mode=True), "scale 4"),
    (dict(paper_mode=True, scale=4, fusion="csa_invariant"), "not in the original"),
    (dict(paper_mode=True, scale=4, fusion="csa"), "head"),
    (dict(hm_entry="lr"), "hm_entry"),
])
def test_config_rejects_bad_values(kw, match):
    with pytest.raises(InputError, match=match):
        tiny(**kw)


def test_presets():
    t = preset("paper_teacher", 224, 4)
    s = preset("paper_student", 224, 4)
    assert (t.nf, t.gc, t.blocks, t.fusion, t.paper_mode) == (86, 43, (6, 6, 4, 4), "csa", True)
    assert (s.blocks, s.lr_groups, s.role) == ((1, 4, 4, 1), 43, "student")
    ps = preset("project_student", 224, 4, 3)
    assert (ps.scale, ps.head, ps.fusion, ps.paper_mode) == (3, "light", "csa_pooled", False)
    assert preset("project_teacher", 224, 4, 3).fusion == "csa_pooled"
    with pytest.raises(InputError, match="paper_teacher"):
        preset("huge", 224, 4)
    with pytest.raises(InputError, match="scale 4"):
        preset("paper_student", 224, 4, 3)


# --- blocks ------------------------------------------------------------------------------------

def test_dense_unit_and_clra_residual_scaling_by_hand():
    unit = DenseUnit(4, 2)
    block = CLRABlock(4, 2)
    with torch.no_grad():
        for module in (unit, block):
            for p in module.parameters():
                p.zero_()
            for u in ([unit] if module is unit else [block.MFB1, block.MFB2, block.MFB3]):
                u.conv5.bias.copy_(torch.tensor([1.0, -2.0, 0.5, 0.0]))
    x = torch.randn(2, 4, 5, 5)
    b = torch.tensor([1.0, -2.0, 0.5, 0.0]).view(1, 4, 1, 1)
    # unit: 0.2 * conv5(...) + x with conv5 = its bias
    torch.testing.assert_close(unit(x), x + 0.2 * b)
    # block: three units add 0.2 b each, then 0.2 * (x + 0.6 b) + x
    torch.testing.assert_close(block(x), 1.2 * x + 0.12 * b)


def test_lr_groups_set_grouped_convolutions():
    model = build_model(tiny(nf=8, gc=4, lr_groups=4))
    sd = model.state_dict()
    assert sd["decoder.hfeat.0.MFB1.conv1.weight"].shape == (4, 2, 3, 3)
    assert sd["decoder.hfeat.0.MFB1.conv5.weight"].shape == (8, 6, 3, 3)
    assert sd["decoder.mfeat.0.MFB1.conv1.weight"].shape == (4, 8, 3, 3)


# --- project mode ------------------------------------------------------------------------------

@pytest.mark.parametrize("scale", [2, 3, 4, 5, 6, 8])
def test_project_mode_any_integer_scale(scale):
    cfg = tiny(scale=scale, blocks=(0, 1, 1, 0))
    model = build_model(cfg).eval()
    with torch.no_grad():
        out, fused = model(torch.rand(2, 6, 3, 5), torch.rand(2, 3, 3 * scale, 5 * scale))
    assert out.shape == (2, 6, 3 * scale, 5 * scale)
    assert fused.shape == (2, 8, 3 * scale, 5 * scale)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_input_shapes_are_checked():
    model = build_model(tiny())
    with pytest.raises(InputError, match="6 hyperspectral and 3 multispectral"):
        model(torch.rand(1, 5, 4, 4), torch.rand(1, 3, 8, 8))
    with pytest.raises(InputError, match="scale 2"):
        model(torch.rand(1, 6, 4, 4), torch.rand(1, 3, 12, 12))


def test_project_student_drops_unused_stream_and_predicts_residual():
    cfg = tiny(role="student", head="paper")
    model = build_model(cfg).eval()
    assert not any(k.startswith("decoder.hmfeat") for k in model.state_dict())
    with torch.no_grad():
        model.decoder.last.weight.zero_()
        lr = torch.rand(1, 6, 4, 4)
        out, _ = model(lr, torch.rand(1, 3, 8, 8))
    torch.testing.assert_close(out, F.interpolate(lr, scale_factor=2, mode="bilinear", align_corners=False))


def test_light_head_is_cheaper_and_counted_exactly():
    paper = tiny(head="paper", blocks=(0, 0, 0, 0), fusion="sum")
    light = tiny(head="light", blocks=(0, 0, 0, 0), fusion="sum")
    c, m, nf, s = 6, 3, 8, 2
    h = w = 4
    hr = h * s * w * s
    streams = 9 * nf * ((c + m) * hr + (c + m) * h * w + c * h * w + m * hr)
    assert count_macs(build_model(paper), (1, c, h, w), (1, m, h * s, w * s)) == \
        streams + 9 * (nf * c + c * c) * hr
    assert count_macs(build_model(light), (1, c, h, w), (1, m, h * s, w * s)) == \
        streams + (9 * nf * nf + nf * c) * hr


def test_split_hm_entry_moves_the_spectral_convolution_to_the_lr_grid():
    c, m, nf, s, h, w = 6, 3, 8, 2, 4, 4
    hr, lr_px = h * s * w * s, h * w
    convs = dict(blocks=(0, 0, 0, 0), fusion="sum", head="light")
    full, split = tiny(**convs), tiny(hm_entry="split", **convs)
    shapes = ((1, c, h, w), (1, m, h * s, w * s))
    saved = 9 * nf * (c + m) * hr - 9 * nf * (c * lr_px + m * hr)
    assert count_macs(build_model(full), *shapes) - count_macs(build_model(split), *shapes) == saved
    # hm = lrelu(upsample(conv_lr(lr)) + conv_msi(msi)): check it against that formula
    model = build_model(split).eval()
    decoder = model.decoder
    lr, msi = torch.rand(*shapes[0]), torch.rand(*shapes[1])
    seen = {}
    decoder.fuse_att.register_forward_hook(lambda _m, inputs, _o: seen.update(hm=inputs[3]))
    with torch.no_grad():
        model(lr, msi)
        expected = F.leaky_relu(F.interpolate(decoder.hmconv1_lr(lr), scale_factor=s, mode="bilinear")
                                + decoder.hmconv1_msi(msi), 0.2)
    torch.testing.assert_close(seen["hm"], expected)
    with pytest.raises(InputError, match="hm_entry"):
        ModelConfig(6, 3, 4, hm_entry="split")  # paper mode


def test_small_student_preset_is_six_times_cheaper():
    small, default = preset("project_small_student", 224, 4, 3), preset("project_student", 224, 4, 3)
    assert (small.hm_entry, small.blocks, small.nf) == ("split", (0, 2, 2, 0), 16)
    assert macs_per_pixel(default) / macs_per_pixel(small) > 5.5
    assert preset("project_small_teacher", 224, 4, 3) == preset("project_teacher", 224, 4, 3)


def test_attention_macs_and_parameters():
    base = dict(blocks=(0, 0, 0, 0), head="light")
    summed = build_model(tiny(fusion="sum", **base))
    csa = build_model(tiny(fusion="csa_invariant", **base))
    shapes = ((1, 6, 4, 4), (1, 3, 8, 8))
    # q, k, v 1x1 convs nf->64, output 64->nf, gates 4nf->4, and 4 heads * 16^2 * 4 per pixel
    per_pixel = 3 * 8 * 64 + 64 * 8 + 4 * 8 * 4 + 4 * 256 * 4
    assert count_macs(csa, *shapes) - count_macs(summed, *shapes) == per_pixel * 64
    assert count_parameters(csa) - count_parameters(summed) == 3 * (8 * 64 + 64) + 64 * 8 + 8 + 32 * 4 + 4 + 4
    assert macs_per_pixel(tiny(fusion="sum", **base)) == pytest.approx(count_macs(summed, *shapes) / 64)


# --- size-invariant attention ------------------------------------------------------------------

def test_box_mean_matches_explicit_window():
    x = torch.randn(1, 2, 7, 9)
    got = box_mean(x, 5)
    for (i, j) in [(0, 0), (3, 4), (6, 8), (2, 7)]:
        win = x[0, :, max(i - 2, 0):i + 3, max(j - 2, 0):j + 3]
        torch.testing.assert_close(got[0, :, i, j], win.mean(dim=(1, 2)))


def test_local_attention_matches_per_pixel_computation():
    torch.manual_seed(0)
    fusion = CrossSigmoidFusion(8, "local", window=3)
    with torch.no_grad():
        fusion.temperature.copy_(torch.tensor([1.0, 2.0, 0.5, 3.0]))
    h, m, mh = (torch.randn(1, 8, 6, 6) for _ in range(3))
    got = fusion.attend(h, m, mh)
    i, j = 2, 3  # interior pixel: window rows 1..3, cols 2..4
    q = fusion.query_conv(h)[0, :, 1:4, 2:5].reshape(4, 16, 9)
    k = fusion.key_conv(m)[0, :, 1:4, 2:5].reshape(4, 16, 9)
    v = fusion.value_conv(mh)[0, :, i, j].reshape(4, 16)
    heads = []
    for n in range(4):
        cov = q[n] @ k[n].T / 9
        norm = torch.sqrt(torch.outer((q[n] ** 2).mean(1), (k[n] ** 2).mean(1)) + 1e-6)
        attn = torch.softmax(cov / norm * fusion.temperature[n], dim=1)
        heads.append(attn @ v[n])
    expected = fusion.output_conv(torch.cat(heads).view(1, 64, 1, 1))[0, :, 0, 0]
    torch.testing.assert_close(got[0, :, i, j], expected, atol=1e-5, rtol=1e-5)


def test_pooled_attention_matches_per_lr_pixel_computation():
    torch.manual_seed(1)
    s = 2
    fusion = CrossSigmoidFusion(8, "pooled", window=7, scale=s)  # 7 HR px -> 3 LR px
    with torch.no_grad():
        fusion.temperature.copy_(torch.tensor([1.5, 0.5, 2.0, 1.0]))
    h, m, mh = (torch.randn(1, 8, 10, 12) for _ in range(3))
    got = fusion.attend(h, m, mh)
    li, lj = 2, 3  # interior LR pixel: statistics over LR rows 1..3, cols 2..4
    q_lr = F.avg_pool2d(fusion.query_conv(h), s)[0, :, 1:4, 2:5].reshape(4, 16, 9)
    k_lr = F.avg_pool2d(fusion.key_conv(m), s)[0, :, 1:4, 2:5].reshape(4, 16, 9)
    for i, j in [(s * li, s * lj), (s * li + 1, s * lj + 1)]:  # two HR pixels inside that LR pixel
        v = fusion.value_conv(mh)[0, :, i, j].reshape(4, 16)
        heads = []
        for n in range(4):
            cov = q_lr[n] @ k_lr[n].T / 9
            norm = torch.sqrt(torch.outer((q_lr[n] ** 2).mean(1), (k_lr[n] ** 2).mean(1)) + 1e-6)
            heads.append(torch.softmax(cov / norm * fusion.temperature[n], dim=1) @ v[n])
        expected = fusion.output_conv(torch.cat(heads).view(1, 64, 1, 1))[0, :, 0, 0]
        torch.testing.assert_close(got[0, :, i, j], expected, atol=1e-5, rtol=1e-5)


def test_pooled_window_and_attention_radius():
    assert [pooled_window(15, s) for s in (2, 3, 4, 5, 8)] == [7, 5, 3, 3, 1]
    assert attention_radius("local", 15, 3) == 7
    assert attention_radius("pooled", 15, 3) == 9  # LR window 5: 2 LR px beyond its own, 3 HR px each
    assert attention_radius("global", 15, 3) == 0


def test_pooled_attention_macs():
    base = dict(blocks=(0, 0, 0, 0), head="light")
    local = build_model(tiny(fusion="csa_invariant", **base))
    pooled = build_model(tiny(fusion="csa_pooled", **base))
    shapes = ((1, 6, 4, 4), (1, 3, 8, 8))  # 64 HR pixels, 16 LR pixels
    assert count_macs(local, *shapes) - count_macs(pooled, *shapes) == 4 * 256 * (4 * 64 - 3 * 16 - 64)


def _tile_vs_whole(fusion):
    """PSNR (dB) of the fused features of a tile against the whole image's, away from the tile edges."""
    torch.manual_seed(3)
    model = build_model(tiny(fusion=fusion, blocks=(0, 0, 0, 0), attn_window=7)).eval()
    with torch.no_grad():
        # sharpen the attention as training does, so a global statistic shows
        model.decoder.fuse_att.query_conv.weight.mul_(10)
        model.decoder.fuse_att.key_conv.weight.mul_(10)
        lr, msi = torch.rand(1, 6, 40, 40), torch.rand(1, 3, 80, 80)
        _, whole = model(lr, msi)
        o, t = 10, 20  # LR tile at (10, 10), 20x20 LR pixels
        _, tile = model(lr[..., o:o + t, o:o + t], msi[..., 2 * o:2 * (o + t), 2 * o:2 * (o + t)])
    margin = 10  # HR pixels: entry convs, upsampling, 7x7 attention window, head
    ref = whole[..., 2 * o:2 * (o + t), 2 * o:2 * (o + t)][..., margin:-margin, margin:-margin]
    diff = tile[..., margin:-margin, margin:-margin] - ref
    mse = diff.pow(2).mean().item()
    return 10 * math.log10((ref.max() - ref.min()).item() ** 2 / max(mse, 1e-30))


@pytest.mark.parametrize("fusion", ["csa_invariant", "csa_pooled"])
def test_invariant_csa_gives_the_same_output_on_tiles(fusion):
    assert _tile_vs_whole(fusion) > 100.0


def test_global_csa_depends_on_the_tile():
    assert _tile_vs_whole("csa_global") < 50.0


def test_paper_csa_collapses_so_it_is_tile_invariant_too():
    # see test_original_parity: the original's attention reduces to a channel sum of v
    assert _tile_vs_whole("csa") > 100.0
