"""A network's forward traced per input shape, so that a CPU call runs without Python's lock (issue 16).

Eager PyTorch returns to the interpreter between each of a network's many
small operators, and it needs the global interpreter lock (GIL) each time.
In the engine the reader and writer threads, and the second compute thread,
want that lock too, so every operator of a call waits its turn.  On the
bundled student at one thread per call and the headline's tile (87² LR px
x 224 bands), a call took 1.5 s alone and 3.5 s beside one thread running
Python; traced, 1.4-1.6 s either way, because TorchScript's interpreter runs
the whole graph with the lock released (``docs/engine.md``, "Traced forward").

A trace records the values the forward derives from its inputs' shapes as
constants, so :class:`TracedForward` keeps one graph per pair of input
shapes.  A shape is traced at its second call and run eagerly at its first:
tracing costs one more forward pass, which a shape met once (a scene's edge
tiles) never repays.  Tracing runs the same operators as the eager forward,
so on the CPU the outputs are the same bit for bit (tested).  Where tracing
fails (a module it cannot record, or a torch without ``torch.jit``), the
module runs eagerly from then on and :attr:`TracedForward.failure` says why.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any, Dict, Optional, Set, Tuple

import torch

#: Most graphs kept per model; calls of further shapes run eagerly.
MAX_SHAPES = 8
#: A shape is traced at this call of it (earlier calls run eagerly).
TRACE_AT_CALL = 2

Shapes = Tuple[Tuple[int, ...], Tuple[int, ...]]


class TracedForward:
    """``model(lr, msi)`` through a TorchScript trace of it per input shape (see the module notes).

    Safe to call from several threads at once: a shape is traced by one
    thread while the others run it eagerly, and the graphs themselves take
    concurrent calls.
    """

    def __init__(self, model: torch.nn.Module, max_shapes: int = MAX_SHAPES) -> None:
        self.model = model
        self.max_shapes = int(max_shapes)
        #: Why tracing was given up (``"TypeError: ..."``); None while it works.
        self.failure: Optional[str] = None
        self._graphs: Dict[Shapes, Any] = {}
        self._calls: Dict[Shapes, int] = {}
        self._tracing: Set[Shapes] = set()
        self._lock = threading.Lock()

    @property
    def traced_shapes(self) -> Tuple[Shapes, ...]:
        """The input shapes ``((B, C, h, w), (B, m, H, W))`` that have a graph."""
        with self._lock:
            return tuple(self._graphs)

    def __call__(self, lr: torch.Tensor, msi: torch.Tensor) -> Any:
        """The model's outputs for ``lr`` and ``msi`` (whatever its ``forward`` returns)."""
        key = (tuple(lr.shape), tuple(msi.shape))
        with self._lock:
            graph = self._graphs.get(key)
            calls = self._calls[key] = self._calls.get(key, 0) + 1
            trace = (graph is None and self.failure is None and calls >= TRACE_AT_CALL
                     and key not in self._tracing and len(self._graphs) < self.max_shapes)
            if trace:
                self._tracing.add(key)
        if trace:
            graph = self._trace(key, lr, msi)
        return (graph if graph is not None else self.model)(lr, msi)

    def _trace(self, key: Shapes, lr: torch.Tensor, msi: torch.Tensor) -> Any:
        """Trace the model on copies of ``lr`` and ``msi``; store and return the graph (None on failure)."""
        graph, failure = None, None
        try:
            # tensors made in inference mode cannot be recorded: trace on ordinary copies, without autograd
            with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit's deprecation notice and its shape warnings
                graph = torch.jit.trace(self.model, (lr.clone(), msi.clone()), check_trace=False)
        except Exception as error:  # any failure leaves the eager forward, which is always right
            failure = f"{type(error).__name__}: {error}"
        with self._lock:
            self._tracing.discard(key)
            if graph is not None:
                self._graphs[key] = graph
            elif self.failure is None:
                self.failure = failure
        return graph
