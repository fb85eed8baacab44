"""What runs on a Dask worker: one region of one scene per task.

A task (:func:`fuse_region`) gets a :class:`RegionJob` (the scene's
:class:`~csakd_qgis.fusion.plan.FusionPlan`, the fuse options and how to get
the method) and one region.  It opens the inputs itself through GDAL (no
pixel travels through the client or the scheduler), runs the engine's
pipeline restricted to the region (:func:`csakd_qgis.fusion.engine.run_plan`
with ``region=``, which also halves a tile that does not fit the device)
and writes the region as its own tiled GeoTIFF, atomically
(:class:`~csakd_qgis.io.write.RasterWriter`: a temporary name, renamed when
complete), under a name fixed by the region (:func:`.regions.region_file`).
It returns only counts and timings.

Models are loaded once per worker process: :func:`worker_method` keeps each
network (by role, checkpoint path and device) for the worker's lifetime.

Progress and cancellation cross the cluster through the scheduler: a task
logs ``{"key", "fraction"}`` events on the job's topic (at most every
:data:`SIGNAL_INTERVAL` seconds) and polls the job's ``distributed.Event``
as often; when it is set the pipeline raises
:class:`~csakd_qgis.errors.Cancelled` at its next batch and the writer
removes its temporary file.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from rasterio.windows import Window

from csakd_qgis.devices import resolve_device, set_threads
from csakd_qgis.distributed.regions import region_file
from csakd_qgis.fusion.engine import run_plan
from csakd_qgis.fusion.methods import FusionMethod, make_method
from csakd_qgis.fusion.pipeline import PipelineResult
from csakd_qgis.fusion.plan import FusionPlan
from csakd_qgis.options import FuseOptions
from csakd_qgis.progress import Reporter

#: Seconds between two progress events, and between two cancel checks, of one task.
SIGNAL_INTERVAL = 0.5

_CACHE: Dict[Tuple[str, str, str], FusionMethod] = {}
_CACHE_LOCK = threading.Lock()


@dataclass(frozen=True)
class MethodSpec:
    """How a worker gets its fusion method.

    Attributes
    ----------
    name:
        ``"student"``, ``"teacher"``, ``"bicubic"`` or ``"gsa"`` (the method's own name).
    model_path:
        Checkpoint a network is loaded from, once per worker; it must be
        readable at this path on every worker (a shared file system).
        Empty when ``ready`` is given.
    ready:
        A picklable method object sent with each task (bicubic, a fitted
        GSA, or an object the caller built); None for a checkpoint.
    """

    name: str
    model_path: str = ""
    ready: Optional[FusionMethod] = None


@dataclass(frozen=True)
class RegionJob:
    """One scene as its tasks see it (picklable; sent with every task).

    Attributes
    ----------
    plan:
        Grids, shift, radiometry and output format, decided once on the client.
    method:
        How to get the fusion method.
    options:
        How to fuse (tiles, device and threads on the worker, output blocks, compression).
    folder:
        Staging folder the region files go to.
    cancel_event, topic:
        Names of the job's ``distributed.Event`` (set = cancel) and event topic (progress).
    """

    plan: FusionPlan
    method: MethodSpec
    options: FuseOptions
    folder: str
    cancel_event: str
    topic: str


@dataclass(frozen=True)
class RegionResult:
    """What a task returns: the region, its file, the pipeline's counts and who ran it."""

    index: int
    region: Tuple[int, int, int, int]  # HR (col_off, row_off, width, height)
    path: str
    result: PipelineResult
    tile: int
    device: str
    host: str
    seconds: float
    notes: Tuple[str, ...]


def worker_device(name: str) -> torch.device:
    """Resolve ``name`` on this worker; ``"auto"`` spreads workers over the GPUs.

    With several CUDA devices visible, a worker whose name is an integer
    (a ``LocalCluster``'s are 0, 1, ...) takes ``cuda:(name mod count)``;
    other workers take the default CUDA device (give each worker its GPU
    with ``CUDA_VISIBLE_DEVICES``, as ``dask-cuda`` does).
    """
    device = resolve_device(name)
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if str(name).strip().lower() == "auto" and count > 1:
        from distributed import get_worker

        worker_name = get_worker().name
        if isinstance(worker_name, int) or str(worker_name).isdigit():
            device = torch.device("cuda", int(worker_name) % count)
    return device


def worker_method(spec: MethodSpec, plan: FusionPlan, options: FuseOptions) -> Tuple[FusionMethod, str]:
    """``(method, device name)`` for a task: the ``ready`` object, or the network cached on this worker."""
    set_threads(options.threads)
    if spec.ready is not None:
        return spec.ready, str(getattr(spec.ready, "device", "cpu"))
    device = worker_device(options.device)
    key = (spec.name, spec.model_path, str(device))
    with _CACHE_LOCK:
        method = _CACHE.get(key)
        if method is None:
            method = make_method(spec.name, spec.model_path, device=device, scale=plan.grids.scale,
                                 lr_bands=plan.lr_info.bands, msi_bands=plan.msi_info.count,
                                 msi_wavelengths=[b.wavelength_nm for b in plan.msi_info.bands],
                                 precision=options.precision)
            _CACHE[key] = method
    return method, str(device)


class ClusterSignals:
    """A task's progress events and the job's cancel flag, both throttled to :data:`SIGNAL_INTERVAL`.

    Parameters
    ----------
    job:
        The job (names of its cancel event and progress topic).
    key:
        The task's key, sent with each progress event.
    """

    def __init__(self, job: RegionJob, key: str) -> None:
        from distributed import Event, get_worker

        self._event = Event(job.cancel_event)
        self._worker = get_worker()
        self._topic, self._key = job.topic, key
        self._checked = self._sent = float("-inf")
        self._cancelled = False

    def is_cancelled(self) -> bool:
        """True once the client set the job's cancel event (asked at most every interval)."""
        now = time.monotonic()
        if not self._cancelled and now - self._checked >= SIGNAL_INTERVAL:
            self._checked = now
            self._cancelled = bool(self._event.is_set())
        return self._cancelled

    def progress(self, fraction: float, message: str) -> None:
        """Log the task's fraction done on the job's topic (at most every interval, always at 1)."""
        now = time.monotonic()
        if fraction >= 1.0 or now - self._sent >= SIGNAL_INTERVAL:
            self._sent = now
            self._worker.log_event(self._topic, {"key": self._key, "fraction": float(fraction)})


def fuse_region(job: RegionJob, index: int, region: Window) -> RegionResult:
    """Fuse ``region`` (HR window) of ``job``'s scene into its region file; run as a Dask task.

    Raises
    ------
    Cancelled
        The job's cancel event was set (the region file is not written).
    CsakdError
        As :func:`csakd_qgis.fusion.pipeline.run_pipeline` and the method raise them.
    """
    from distributed import get_worker

    started = time.perf_counter()
    key = str(get_worker().get_current_task())
    signals = ClusterSignals(job, key)
    reporter = Reporter(signals.progress, signals.is_cancelled)
    reporter.check()
    method, device = worker_method(job.method, job.plan, job.options)
    notes: List[str] = []
    path = region_file(job.folder, region)
    result, tile = run_plan(job.plan, method, job.options, path, region=region, reporter=reporter,
                            notify=notes.append)
    return RegionResult(index=index, region=(int(region.col_off), int(region.row_off), int(region.width),
                                             int(region.height)),
                        path=path, result=result, tile=tile, device=device,
                        host=f"{socket.gethostname()}:{os.getpid()}",
                        seconds=time.perf_counter() - started, notes=tuple(notes))
