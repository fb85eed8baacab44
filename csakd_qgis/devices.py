"""Compute devices, CPU threads and the out-of-memory policy.

Device names follow torch: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``,
plus ``"auto"`` (CUDA, then Apple MPS, then CPU).  Asking for a device that is
not there is an :class:`~csakd_qgis.errors.InputError`, never a silent
fallback, so a user who expects the GPU learns that it is not used.

Out-of-memory policy (:class:`OomBackoff`): when a batch does not fit, it is
split in halves (and the smaller batch size kept for the rest of the run);
when a single tile does not fit, :class:`TileTooLarge` asks the engine to
re-plan with half the tile size.  Each step is reported as a message (the
engine passes it on as a progress message and a note in its report).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator, List, Optional

import numpy as np
import torch

from csakd_qgis.errors import InputError, TileTooLarge
from csakd_qgis.options import DEVICES


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    """Turn a user's device name into a :class:`torch.device` that exists here.

    Parameters
    ----------
    name:
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` (case-insensitive).

    Raises
    ------
    InputError
        Unknown name, or a CUDA/MPS device this machine does not have.
    """
    text = str(name).strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        if not _mps_available():
            raise InputError("device 'mps' was asked for but Apple MPS is not available here; use 'cpu' or 'auto'")
        return torch.device("mps")
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise InputError(
                f"device {name!r} was asked for but torch sees no CUDA GPU (torch {torch.__version__}, "
                "CUDA build: " + str(torch.version.cuda) + "); use 'cpu' or 'auto', or install a CUDA build of torch"
            )
        index = text.partition(":")[2]
        if index:
            if not index.isdigit() or int(index) >= torch.cuda.device_count():
                raise InputError(
                    f"device {name!r} does not exist: this machine has {torch.cuda.device_count()} CUDA "
                    "device(s), numbered from 0"
                )
        return torch.device(text)
    raise InputError(f"unknown device {name!r}; use one of {', '.join(DEVICES)} or 'cuda:N'")


def set_threads(n: Optional[int]) -> int:
    """Set the number of CPU threads torch uses (None keeps the current setting); returns it."""
    if n is not None:
        if int(n) < 1:
            raise InputError(f"threads must be >= 1, got {n}")
        torch.set_num_threads(int(n))
    return torch.get_num_threads()


#: Concurrent ``predict`` calls a network runs with on the CPU, each with its share of the threads
#: (:func:`compute_streams`).  On 2 cores, two calls of one thread each fuse 16 % (onnxruntime) and 36 %
#: (torch) more tiles per second than one call of two threads (``bench/streams.py``): one thread per call
#: never waits for a sibling at the end of a parallel operator, and a call loses nothing when the reader or
#: the writer takes a core.  Two, not one per core: each call in flight holds its own working memory
#: (about 300 MB for a 72 x 72 x 224 tile under torch, 240 MB under onnxruntime).
CPU_STREAMS = 2


def compute_streams(device_type: str, network: bool, threads: int) -> int:
    """How many ``predict`` calls the tiled pipeline runs at once.

    :data:`CPU_STREAMS` (at most one per thread) for a network on the CPU;
    one for classical methods (their few large operators already keep the
    threads busy) and for every other device (one call fills a GPU).
    """
    if device_type != "cpu" or not network:
        return 1
    return max(1, min(CPU_STREAMS, threads))


_shares = threading.Lock()
#: ``[runs inside shared_threads, torch's setting before the first of them]``
_shared: List[int] = [0, 0]


@contextmanager
def shared_threads(streams: int) -> Iterator[int]:
    """Give each of ``streams`` concurrent calls its share of torch's threads (at least one) for the duration.

    Yields the threads per call.  torch's setting is process-wide, so runs
    that overlap (e.g. two tasks of one Dask worker) share one count: each
    divides the setting found by the first, and the last to finish
    restores it.  An onnxruntime method follows the setting at each call
    (:class:`~csakd_qgis.models.onnx_runtime.OnnxNetworkMethod`).
    """
    with _shares:
        if _shared[0] == 0:
            _shared[1] = torch.get_num_threads()
        _shared[0] += 1
        share = max(1, _shared[1] // max(1, streams))
        torch.set_num_threads(share)
    try:
        yield share
    finally:
        with _shares:
            _shared[0] -= 1
            if _shared[0] == 0:
                torch.set_num_threads(_shared[1])


def is_out_of_memory(error: BaseException) -> bool:
    """True for ``torch.cuda.OutOfMemoryError`` or a RuntimeError that says out of memory."""
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(error, oom_type):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()



Predict = Callable[[np.ndarray, np.ndarray], np.ndarray]


class OomBackoff:
    """Run batches through ``predict``, halving the batch on out-of-memory errors.

    Parameters
    ----------
    batch_size:
        Starting number of tiles per call (``>= 1``).
    notify:
        Called with a message for each step down (e.g. a progress message).

    Attributes
    ----------
    batch_size:
        The largest batch size that is still allowed (shrinks on OOM).
    """

    def __init__(self, batch_size: int, notify: Optional[Callable[[str], None]] = None) -> None:
        if batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.notify = notify

    def _free(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def run(self, predict: Predict, lr: np.ndarray, msi: np.ndarray) -> np.ndarray:
        """``predict`` over ``lr (B, C, h, w)`` and ``msi (B, m, H, W)`` in chunks that fit.

        Returns the concatenated predictions ``(B, C, H, W)``; when one call
        did it all, that call's own array (no copy: at 224 bands a copy is a
        fresh 60 MB buffer per tile on the CPU, whose page faults cost more
        than copying it).

        Raises
        ------
        TileTooLarge
            When even one tile runs out of memory.
        """
        outputs = []
        start = 0
        while start < lr.shape[0]:
            size = min(self.batch_size, lr.shape[0] - start)
            try:
                outputs.append(predict(lr[start:start + size], msi[start:start + size]))
            except (RuntimeError, MemoryError) as error:
                if not is_out_of_memory(error):
                    raise
                self._free()
                if size == 1:
                    raise TileTooLarge("one tile does not fit in the device memory") from error
                self.batch_size = size // 2
                if self.notify is not None:
                    self.notify(f"out of memory: batch size reduced to {self.batch_size}")
                continue
            start += size
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs, axis=0)
