import numpy as np
import pytest
import torch

from csakd_qgis.devices import OomBackoff, compute_streams, is_out_of_memory, resolve_device, shared_threads
from csakd_qgis.errors import InputError, TileTooLarge
from csakd_qgis.fusion.methods import BicubicMethod, NetworkMethod, make_method
from csakd_qgis.models import ModelConfig, build_model
from csakd_qgis.models.receptive_field import network_halo

torch.set_num_threads(1)


def test_bicubic_interpolates_at_lr_pixel_centres():
    # with s = 3 and pixel centres aligned, HR pixel 3i + 1 has its centre on LR pixel i
    s = 3
    lr = np.random.default_rng(0).random((1, 2, 6, 7), dtype=np.float32)
    out = BicubicMethod(s).predict(lr, np.zeros((1, 1, 18, 21), np.float32))
    assert out.shape == (1, 2, 18, 21)
    np.testing.assert_allclose(out[:, :, 1::3, 1::3], lr, atol=1e-5)
    flat = BicubicMethod(s).predict(np.full((1, 1, 4, 4), 7.0, np.float32), np.zeros((1, 1, 12, 12), np.float32))
    np.testing.assert_allclose(flat, 7.0, atol=1e-5)


def _block_mean(x, s):
    *lead, h, w = x.shape
    return x.reshape(*lead, h // s, s, w // s, s).mean(axis=(-3, -1))


def test_make_method_builds_networks_and_bicubic_only():
    # classical methods and "auto" need the scene sample: csakd_qgis.fusion.plan.prepare fits them
    for name in ("gsa", "glp", "subspace", "subspace_bp", "auto"):
        with pytest.raises(InputError, match="fitted on the scene"):
            make_method(name, scale=2)
    assert make_method("bicubic", scale=2).scale == 2


def test_network_halo_counts_the_deepest_path():
    # LR stream: 1 + 15 x 2 + 3 = 34 LR px = 136 HR px at s = 4; fusion 15 // 2 = 7; light head 1 -> 144 / 4 = 36
    cfg = ModelConfig(bands=4, msi_bands=2, scale=4, nf=8, gc=4, blocks=(0, 2, 1, 1), fusion="csa_invariant",
                      paper_mode=False, upsample="bilinear", head="light", role="student")
    assert network_halo(cfg) == 36
    # teacher: hm runs 3 blocks in HR px (1 + 45 + 8 = 54) < LR path 1 + 15 + 3 = 19 LR = 57 HR; paper head 2
    teacher = ModelConfig(bands=4, msi_bands=2, scale=3, nf=8, gc=4, blocks=(3, 1, 1, 1), fusion="csa_invariant",
                          attn_window=9, paper_mode=False, upsample="bilinear")
    assert network_halo(teacher) == -(-(57 + 4 + 2) // 3)
    # csa_pooled at s = 4: window 15 HR -> 3 LR px, reaching (1 + 1) x 4 = 8 HR px -> (136 + 8 + 1) / 4
    pooled = ModelConfig(bands=4, msi_bands=2, scale=4, nf=8, gc=4, blocks=(0, 2, 1, 1), fusion="csa_pooled",
                         paper_mode=False, upsample="bilinear", head="light", role="student")
    assert network_halo(pooled) == -(-(136 + 8 + 1) // 4)


@pytest.mark.slow
def test_derived_halo_makes_tiles_exact():
    torch.manual_seed(0)
    cfg = ModelConfig(bands=3, msi_bands=2, scale=2, nf=4, gc=2, blocks=(0, 1, 1, 0), fusion="csa_invariant",
                      attn_window=3, paper_mode=False, upsample="bilinear", head="light", role="student")
    net = build_model(cfg).eval()
    torch.nn.init.normal_(net.decoder.head.proj.weight, std=0.5)
    rng = np.random.default_rng(3)
    lr = rng.random((1, 3, 64, 64), dtype=np.float32)
    msi = rng.random((1, 2, 128, 128), dtype=np.float32)
    method = NetworkMethod(net, scale=2)
    halo = method.halo
    whole = method.predict(lr, msi)[0]
    # a tile centred on LR pixel 32 with exactly `halo` context: its centre pixel must match the whole image
    c = 32
    tile = method.predict(lr[:, :, c - halo:c + halo + 1, c - halo:c + halo + 1],
                          msi[:, :, 2 * (c - halo):2 * (c + halo + 1), 2 * (c - halo):2 * (c + halo + 1)])[0]
    centre = tile[:, 2 * halo:2 * halo + 2, 2 * halo:2 * halo + 2]
    np.testing.assert_allclose(centre, whole[:, 2 * c:2 * c + 2, 2 * c:2 * c + 2], atol=1e-5)
    short = 1  # too little context: the same pixel differs
    cut = method.predict(lr[:, :, c - short:c + short + 1, c - short:c + short + 1],
                         msi[:, :, 2 * (c - short):2 * (c + short + 1), 2 * (c - short):2 * (c + short + 1)])[0]
    assert np.abs(cut[:, 2 * short:2 * short + 2, 2 * short:2 * short + 2]
                  - whole[:, 2 * c:2 * c + 2, 2 * c:2 * c + 2]).max() > 1e-5


class _Toy(torch.nn.Module):
    """hr = nearest-upsampled lr * w + mean msi; returns (hr, feature) like the DTS networks."""

    def __init__(self, scale):
        super().__init__()
        self.scale = scale
        self.w = torch.nn.Parameter(torch.tensor(2.0))

    def forward(self, lr, msi):
        up = torch.nn.functional.interpolate(lr, scale_factor=self.scale, mode="nearest")
        hr = up * self.w + msi.mean(dim=1, keepdim=True)
        return hr, hr[:, :1]


def test_network_method_runs_the_model_without_grad():
    rng = np.random.default_rng(2)
    lr = rng.random((2, 3, 4, 4), dtype=np.float32)
    msi = rng.random((2, 2, 8, 8), dtype=np.float32)
    method = make_method("csakd", _Toy(2), device="cpu", scale=2)
    assert isinstance(method, NetworkMethod) and method.halo == 8  # no cfg: the default
    out = method.predict(lr, msi)
    expected = np.repeat(np.repeat(lr, 2, axis=2), 2, axis=3) * 2.0 + msi.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert out.dtype == np.float32


def test_make_method_rejects_unknown_and_scale_less():
    with pytest.raises(InputError, match="unknown method"):
        make_method("nearest", scale=2)
    with pytest.raises(InputError, match="scale"):
        make_method("bicubic")
    with pytest.raises(InputError, match="scale"):
        make_method("csakd", _Toy(2))


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(InputError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA"):
            resolve_device("cuda")


def _oom_above(limit, calls):
    def predict(lr, msi):
        calls.append(lr.shape[0])
        if lr.shape[0] > limit:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return lr * 3.0

    return predict


def test_oom_backoff_halves_the_batch_and_keeps_it():
    calls, messages = [], []
    backoff = OomBackoff(8, messages.append)
    lr = np.arange(8 * 2, dtype=np.float32).reshape(8, 2, 1, 1)
    out = backoff.run(_oom_above(2, calls), lr, lr)
    np.testing.assert_array_equal(out, lr * 3.0)
    assert calls == [8, 4, 2, 2, 2, 2]  # 8 fails, 4 fails, then four batches of 2
    assert backoff.batch_size == 2
    assert messages == ["out of memory: batch size reduced to 4", "out of memory: batch size reduced to 2"]


def test_oom_on_one_tile_asks_for_smaller_tiles_and_other_errors_pass():
    with pytest.raises(TileTooLarge):
        OomBackoff(4).run(_oom_above(0, []), np.ones((2, 1, 1, 1), np.float32), np.ones((2, 1, 1, 1), np.float32))

    def broken(lr, msi):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape"):
        OomBackoff(4).run(broken, np.ones((2, 1, 1, 1), np.float32), np.ones((2, 1, 1, 1), np.float32))
    assert is_out_of_memory(RuntimeError("CUDA out of memory"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_compute_streams_and_shared_threads():
    assert compute_streams("cpu", True, 2) == 2 and compute_streams("cpu", True, 16) == 2
    assert compute_streams("cpu", True, 1) == 1 and compute_streams("cpu", False, 8) == 1
    assert compute_streams("cuda", True, 8) == 1
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        with shared_threads(2) as share:
            assert share == torch.get_num_threads() == 1
        with shared_threads(1) as share:
            assert share == 3
        with pytest.raises(ValueError), shared_threads(3):
            assert torch.get_num_threads() == 1
            raise ValueError("restored on errors too")
        assert torch.get_num_threads() == 3
        # overlapping runs (two tasks of one process): each shares the first one's setting, the last restores it
        first, second = shared_threads(2), shared_threads(3)
        assert first.__enter__() == 1 and second.__enter__() == 1
        first.__exit__(None, None, None)
        assert torch.get_num_threads() == 1
        second.__exit__(None, None, None)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_oom_backoff_hands_back_a_single_call_s_array_without_copying():
    made = []

    def predict(lr, msi):
        made.append(lr * 2.0)
        return made[-1]

    lr = np.ones((3, 2, 1, 1), np.float32)
    assert OomBackoff(4).run(predict, lr, lr) is made[0]
    np.testing.assert_array_equal(OomBackoff(2).run(predict, lr, lr), lr * 2.0)  # two calls: concatenated
