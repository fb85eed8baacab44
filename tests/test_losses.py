import math

import pytest
import torch

from csakd_qgis.training.losses import FeatureAdapter, bandwise_error, sam_loss, student_loss, teacher_loss


def _img(values):
    """(C, W) nested list -> (1, C, 1, W) tensor."""
    return torch.tensor(values, dtype=torch.float64)[None, :, None, :]


def test_sam_loss_hand_worked():
    # pixel 0: (1,0) vs (1,0) -> cos 1; pixel 1: (1,0) vs (0,1) -> cos 0; mean cos 0.5
    x = _img([[1.0, 1.0], [0.0, 0.0]])
    y = _img([[1.0, 0.0], [0.0, 1.0]])
    assert float(sam_loss(x, y)) == pytest.approx(0.5, abs=1e-7)
    # (3,4) vs (4,3): cos = 24/25
    x = _img([[3.0], [4.0]])
    y = _img([[4.0], [3.0]])
    assert float(sam_loss(x, y)) == pytest.approx(1 - 24 / 25, abs=1e-7)
    # scale invariance: a spectrum times 7 has the same angle
    assert float(sam_loss(7 * x, y)) == pytest.approx(1 - 24 / 25, abs=1e-7)


def test_bandwise_error_hand_worked():
    # band 0: y = [1, 0], x = [1.5, 3] -> huber 0.125 and 2.5, mean 1.3125; energy (1.1 + 0.1)/2 = 0.6
    # band 1: exact -> 0.  Mean over bands: 1.3125 / 0.6 / 2
    x = _img([[1.5, 3.0], [2.0, 2.0]])
    y = _img([[1.0, 0.0], [2.0, 2.0]])
    assert float(bandwise_error(x, y)) == pytest.approx(1.3125 / 0.6 / 2)


def test_bandwise_error_weights_dark_bands_up():
    # the same absolute error costs more in a dark band than in a bright one
    y = _img([[0.1, 0.1], [2.0, 2.0]])
    dark = y.clone()
    dark[0, 0] += 0.2
    bright = y.clone()
    bright[0, 1] += 0.2
    assert float(bandwise_error(dark, y)) > 3 * float(bandwise_error(bright, y))


def test_teacher_loss_weights():
    x = _img([[1.5, 3.0], [2.0, 2.0]])
    y = _img([[1.0, 0.0], [2.0, 2.0]])
    l1 = (0.125 + 2.5) / 4
    sam = float(sam_loss(x, y))
    bw = 1.3125 / 0.6 / 2
    parts = teacher_loss(x, y)
    assert float(parts.total) == pytest.approx(l1 + 0.1 * sam + 0.1 * bw)
    assert parts.terms["l1"] == pytest.approx(l1)


def test_student_loss_perfect_output_leaves_only_bce_entropy():
    y = torch.rand(2, 3, 4, 4, dtype=torch.float64) + 0.5
    feat = torch.zeros(2, 5, 4, 4, dtype=torch.float64)
    parts = student_loss(y.clone(), y, y.clone(), feat, feat.clone())
    # BCE(logit 0, target sigmoid(0) = 0.5) = log 2; every other term is 0
    assert float(parts.total) == pytest.approx(0.1 * math.log(2), abs=1e-7)
    assert parts.terms["kd_feature"] == pytest.approx(math.log(2))


def test_student_loss_terms_and_weights():
    torch.manual_seed(0)
    out = torch.rand(1, 3, 4, 4, dtype=torch.float64)
    ref = torch.rand(1, 3, 4, 4, dtype=torch.float64)
    tout = torch.rand(1, 3, 4, 4, dtype=torch.float64)
    f = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    tf = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    p = torch.sigmoid(tf)
    bce = float(-(p * torch.log(torch.sigmoid(f)) + (1 - p) * torch.log(1 - torch.sigmoid(f))).mean())
    d = (out - ref).abs()
    l1 = float(torch.where(d < 1, 0.5 * d * d, d - 0.5).mean())
    d2 = (out - tout).abs()
    kd = float(torch.where(d2 < 1, 0.5 * d2 * d2, d2 - 0.5).mean())
    expect = l1 + 0.1 * (kd + bce + float(bandwise_error(out, ref)) + float(sam_loss(out, ref)))
    parts = student_loss(out, ref, tout, f, tf)
    assert float(parts.total) == pytest.approx(expect)
    assert parts.terms["kd_feature"] == pytest.approx(bce)


def test_student_loss_does_not_backpropagate_into_teacher():
    out = torch.rand(1, 2, 4, 4, requires_grad=True)
    tout = torch.rand(1, 2, 4, 4, requires_grad=True)
    f = torch.randn(1, 3, 4, 4, requires_grad=True)
    tf = torch.randn(1, 3, 4, 4, requires_grad=True)
    student_loss(out, torch.rand(1, 2, 4, 4), tout, f, tf).total.backward()
    assert out.grad is not None and f.grad is not None
    assert tout.grad is None and tf.grad is None


def test_feature_adapter_maps_channels_and_is_required_when_they_differ():
    f = torch.randn(1, 3, 4, 4)
    tf = torch.randn(1, 6, 4, 4)
    x = torch.rand(1, 2, 4, 4)
    with pytest.raises(ValueError, match="FeatureAdapter"):
        student_loss(x, x, x, f, tf)
    adapter = FeatureAdapter(3, 6)
    parts = student_loss(x, x, x, f, tf, adapter=adapter)
    parts.total.backward()
    assert adapter.conv.weight.grad is not None and adapter.conv.weight.shape == (6, 3, 1, 1)
