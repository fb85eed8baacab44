"""The traced forward: the eager outputs bit for bit, one graph per shape, eager where tracing fails."""

import threading

import numpy as np
import torch

from csakd_qgis.fusion.methods import NetworkMethod
from csakd_qgis.models import build_model
from csakd_qgis.models.config import preset
from csakd_qgis.models.tracing import TRACE_AT_CALL, TracedForward


def _student():
    torch.manual_seed(0)
    return build_model(preset("project_student", 6, 3, 3)).eval()


def _inputs(rng, size):
    return (torch.from_numpy(rng.random((1, 6, size, size), dtype=np.float32)),
            torch.from_numpy(rng.random((1, 3, 3 * size, 3 * size), dtype=np.float32)))


def test_traced_forward_equals_the_eager_one_bit_for_bit_per_shape():
    model = _student()
    traced = TracedForward(model)
    rng = np.random.default_rng(1)
    for size in (12, 17):
        for call in range(TRACE_AT_CALL + 1):
            lr, msi = _inputs(rng, size)
            with torch.inference_mode():
                got, want = traced(lr, msi)[0], model(lr, msi)[0]
            assert torch.equal(got, want)
            has_graph = ((1, 6, size, size), (1, 3, 3 * size, 3 * size)) in traced.traced_shapes
            assert has_graph == (call + 1 >= TRACE_AT_CALL)
    assert len(traced.traced_shapes) == 2 and traced.failure is None


def test_shapes_beyond_the_limit_run_eagerly():
    model = _student()
    traced = TracedForward(model, max_shapes=1)
    rng = np.random.default_rng(2)
    for size in (12, 12, 15, 15, 15):
        lr, msi = _inputs(rng, size)
        with torch.inference_mode():
            assert torch.equal(traced(lr, msi)[0], model(lr, msi)[0])
    assert traced.traced_shapes == (((1, 6, 12, 12), (1, 3, 36, 36)),)


class _Untraceable(torch.nn.Module):
    """Returns a string beside its tensor, which a trace cannot record."""

    def forward(self, lr, msi):
        return lr * 2.0, "not a tensor"


def test_a_model_that_cannot_be_traced_runs_eagerly_and_says_why():
    traced = TracedForward(_Untraceable())
    lr, msi = torch.ones(1, 2, 3, 3), torch.ones(1, 2, 6, 6)
    for _ in range(TRACE_AT_CALL + 1):
        with torch.inference_mode():
            assert torch.equal(traced(lr, msi)[0], lr * 2.0)
    assert traced.traced_shapes == () and traced.failure is not None


def test_concurrent_calls_share_the_graphs_and_give_the_eager_outputs():
    model = _student()
    traced = TracedForward(model)
    rng = np.random.default_rng(3)
    pairs = [_inputs(rng, 12) for _ in range(6)]
    with torch.inference_mode():
        want = [model(lr, msi)[0] for lr, msi in pairs]
    got = [None] * len(pairs)

    def work(index):
        with torch.inference_mode():
            got[index] = traced(*pairs[index])[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(pairs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(torch.equal(g, w) for g, w in zip(got, want))
    assert len(traced.traced_shapes) == 1


def test_network_method_traces_on_the_cpu_unless_told_not_to():
    model = _student()
    traced, eager = NetworkMethod(model, scale=3), NetworkMethod(model, scale=3, trace=False)
    assert isinstance(traced.forward, TracedForward) and eager.forward is eager.model
    rng = np.random.default_rng(4)
    lr, msi = (t.numpy() for t in _inputs(rng, 12))
    outputs = [traced.predict(lr, msi) for _ in range(TRACE_AT_CALL + 1)]
    assert traced.forward.traced_shapes
    assert all(np.array_equal(out, eager.predict(lr, msi)) for out in outputs)
