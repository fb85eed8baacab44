"""The client side: prepare a scene once, send its regions to the workers, assemble the result.

:class:`SceneRun` holds one scene: :meth:`SceneRun.prepare` runs
:func:`csakd_qgis.fusion.plan.prepare` on the client (grids, shift, radiometry,
degradation, the classical method's coefficients: computed once for the whole
scene, so every region is normalised and fused alike) and plans the global tiles and the regions;
:meth:`SceneRun.submit` sends one :func:`.worker.fuse_region` task per
region; :meth:`SceneRun.finish` assembles the region files
(:mod:`.assemble`) and writes the same true-colour ``.qml`` beside the output
as :func:`csakd_qgis.fusion.engine.fuse` (:func:`csakd_qgis.io.style.style_note`).

:class:`ClusterRun` drives the tasks of one or several scenes on a
``distributed.Client`` (:func:`.client.open_client`): it turns the workers' progress events into
``Reporter.update`` calls (the mean over regions of their fraction done)
and, when the reporter says cancel (or a scene fails), sets the scene's
cancel event, waits up to :data:`STOP_GRACE` seconds for its running tasks
to stop, cancels the rest; the caller removes the staging folder.
"""

from __future__ import annotations

import glob
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from rasterio.windows import Window

from csakd_qgis.distributed.assemble import copy_to_geotiff, write_vrt
from csakd_qgis.distributed.client import require_distributed
from csakd_qgis.distributed.regions import (
    REGION_SIZE,
    plan_regions,
    region_file,
    region_side,
    regions_folder,
    staging_folder,
)
from csakd_qgis.distributed.worker import MethodSpec, RegionJob, RegionResult, fuse_region
from csakd_qgis.errors import InputError, OutputExistsError
from csakd_qgis.fusion.blend import Timings
from csakd_qgis.fusion.methods import AUTO, FusionMethod, NetworkMethod
from csakd_qgis.fusion.pipeline import PipelineResult
from csakd_qgis.fusion.plan import prepare
from csakd_qgis.fusion.report import FuseReport
from csakd_qgis.io.read import BLOCK_CACHE_MB, gdal_block_cache
from csakd_qgis.io.style import style_note
from csakd_qgis.io.write import PARTIAL_MARKER, check_destination
from csakd_qgis.models.onnx_runtime import OnnxNetworkMethod
from csakd_qgis.options import FuseOptions, MsiBands
from csakd_qgis.progress import SILENT, Reporter

#: Seconds between two looks at the cluster while waiting (progress and cancel are checked as often).
POLL_INTERVAL = 0.1

#: Seconds running tasks get to notice a cancel before their futures are cancelled.
STOP_GRACE = 60.0


@dataclass(frozen=True)
class ClusterOptions:
    """How each scene is fused and cut into regions.

    ``model`` and ``method`` are those of :func:`csakd_qgis.fusion.engine.fuse`
    (a model must be a name or a path readable on every worker to be loaded
    once per worker, see :class:`.worker.MethodSpec`); ``fuse`` is how
    (``device`` and ``threads`` apply on each worker; ``backend`` must be
    ``auto``: each worker loads the ``.safetensors`` model and picks its
    backend as ``auto`` does on its own machine, onnxruntime on a CPU where
    it is installed, else torch).  ``region_size`` is the requested region
    side in HR pixels (:func:`.regions.region_side`).  ``msi_bands`` says
    what every scene's HR-MSI bands are (see :func:`~csakd_qgis.fusion.engine.fuse`).
    """

    model: object = None
    method: Union[str, FusionMethod] = "auto"
    region_size: int = REGION_SIZE
    fuse: FuseOptions = field(default_factory=FuseOptions)
    msi_bands: Optional[MsiBands] = None

    @classmethod
    def build(cls, *, model: object = None, method: Union[str, FusionMethod] = "auto",
              region_size: int = REGION_SIZE, msi_bands: Optional[MsiBands] = None,
              **fuse_options: Any) -> ClusterOptions:
        """Options from flat keywords: ``fuse_options`` are :class:`~csakd_qgis.options.FuseOptions` fields."""
        return cls(model=model, method=method, region_size=region_size, fuse=FuseOptions(**fuse_options),
                   msi_bands=msi_bands)


@dataclass(frozen=True)
class DistributedReport:
    """What a distributed fusion of one scene did.

    ``fuse`` is the single-process report's content for the whole scene:
    its ``tiles_total`` is the global plan's tile count and its
    ``tiles_recomputed`` every extra prediction (region borders; column
    blocks carry their seams, ``tiles_carried``); its stage ``timings`` are summed over regions (worker-seconds),
    ``total`` is wall-clock.  ``tiles_computed`` counts each tile once per
    region it reaches, so ``border_overhead = tiles_computed / tiles_total - 1``
    is the work added by cutting the output into regions.
    """

    fuse: FuseReport
    scheduler: str
    workers: int
    regions: int
    region_size: int
    tiles_computed: int
    hosts: Tuple[str, ...]
    assemble_seconds: float
    notes: Tuple[str, ...] = field(default_factory=tuple)

    @property
    def border_overhead(self) -> float:
        """Fraction of extra tile predictions caused by region borders."""
        return self.tiles_computed / max(self.fuse.tiles_total, 1) - 1.0

    def to_dict(self) -> Dict[str, object]:
        """JSON-ready dict: the fuse report's keys plus a ``cluster`` entry."""
        data = self.fuse.to_dict()
        data["cluster"] = {"scheduler": self.scheduler, "workers": self.workers, "regions": self.regions,
                           "region_size": self.region_size, "tiles_computed": self.tiles_computed,
                           "border_overhead": self.border_overhead, "hosts": list(self.hosts),
                           "assemble_seconds": self.assemble_seconds}
        return data

    def summary_lines(self) -> List[str]:
        """The fuse report's lines and one line about the cluster."""
        return self.fuse.summary_lines() + [
            f"cluster {self.scheduler}: {self.workers} workers, {self.regions} regions of {self.region_size} px "
            f"on {len(self.hosts)} worker processes; {self.tiles_computed} tile predictions for "
            f"{self.fuse.tiles_total} tiles (+{100 * self.border_overhead:.1f} % at region borders); "
            f"assembled in {self.assemble_seconds:.1f} s"]


def method_spec(fusion: FusionMethod, options: ClusterOptions) -> MethodSpec:
    """How workers get ``fusion``: a checkpoint path for a network named by the user, else the object itself."""
    if isinstance(fusion, OnnxNetworkMethod):
        raise InputError("ONNX models run on this machine only (csakd fuse without --scheduler/--workers); "
                         "give a cluster the .safetensors model")
    named = isinstance(options.method, str) and (options.model in AUTO or isinstance(options.model, (str, os.PathLike)))
    if isinstance(fusion, NetworkMethod) and named:
        from csakd_qgis.models.store import resolve_model

        name = fusion.model_name if options.model in AUTO else str(options.model)
        path = str(resolve_model(name)[0].resolve())
        return MethodSpec(fusion.name, model_path=path)
    return MethodSpec(fusion.name, ready=fusion)


def _local_path(path: str) -> str:
    """``path`` made absolute when it names a local file (GDAL strings such as ``/vsicurl/...`` stay as given)."""
    return os.path.abspath(path) if os.path.exists(path) else str(path)


class SceneRun:
    """One scene on the cluster: plan, staging folder, region tasks, assembly.

    Parameters
    ----------
    lr_hsi, hr_msi, output:
        As for :func:`csakd_qgis.fusion.engine.fuse`; ``output`` ending in ``.vrt``
        keeps the region files in ``NAME_regions/`` beside it and writes a
        VRT, any other name one GeoTIFF (COG with ``options.cog``).
    options:
        The job's options.
    lr_mask, msi_mask:
        Masks of the inputs (nonzero = exclude), as for ``fuse``.
    """

    def __init__(self, lr_hsi: str, hr_msi: str, output: str, options: ClusterOptions,
                 lr_mask: Optional[str] = None, msi_mask: Optional[str] = None) -> None:
        self.lr_hsi, self.hr_msi = _local_path(str(lr_hsi)), _local_path(str(hr_msi))
        self.lr_mask = None if lr_mask is None else _local_path(str(lr_mask))
        self.msi_mask = None if msi_mask is None else _local_path(str(msi_mask))
        self.output = os.path.abspath(str(output))
        self.options = options
        self.is_vrt = self.output.lower().endswith(".vrt")
        self.folder = staging_folder(self.output)
        self.started = time.perf_counter()
        self.results: Dict[int, RegionResult] = {}
        self.regions: Tuple[Window, ...] = ()

    def prepare(self, reporter: Reporter = SILENT) -> None:
        """Check the output, then plan grids, shift, radiometry, method, tiles and regions (on the client)."""
        options = self.options.fuse
        check_destination(self.output, overwrite=options.overwrite, inputs=(self.lr_hsi, self.hr_msi))
        if self.is_vrt and os.path.exists(regions_folder(self.output)) and not options.overwrite:
            raise OutputExistsError(f"folder {regions_folder(self.output)!r} exists; choose another output name or "
                                    "allow overwriting (--overwrite)")
        if options.backend != "auto":
            raise InputError("the inference backend applies to fusion on this machine; the workers of a cluster "
                             "load the .safetensors model and choose their backend as 'auto' does")
        with gdal_block_cache(BLOCK_CACHE_MB):  # torch on the client: the method only names the workers' model
            self.plan, fusion = prepare(self.lr_hsi, self.hr_msi, model=self.options.model,
                                        method=self.options.method, device="cpu",
                                        options=replace(options, backend="torch"),
                                        reporter=reporter, lr_mask=self.lr_mask, msi_mask=self.msi_mask,
                                        msi_bands=self.options.msi_bands)
        self.spec = method_spec(fusion, self.options)
        self.tiles = self.plan.tiles(options.tile, options.tile_overlap)
        grid = self.plan.grids.output
        self.regions = plan_regions(grid.width, grid.height, scale=self.plan.grids.scale,
                                    block=options.output_block, size=self.options.region_size)

    def submit(self, client: Any, cancel_event: str, topic: str) -> List[Any]:
        """Empty the staging folder and submit one task per region; returns the futures."""
        self.abort()
        os.makedirs(self.folder)
        job = RegionJob(plan=self.plan, method=self.spec, options=self.options.fuse, folder=self.folder,
                        cancel_event=cancel_event, topic=topic)
        token = uuid.uuid4().hex[:12]
        return [client.submit(fuse_region, job, index, region, key=f"csakd-region-{token}-{index}", pure=False)
                for index, region in enumerate(self.regions)]

    def record(self, result: RegionResult) -> None:
        """Keep one finished region's result."""
        self.results[result.index] = result

    @property
    def complete(self) -> bool:
        """True when every region's file is written."""
        return bool(self.regions) and len(self.results) == len(self.regions)

    def finish(self, client: Any) -> DistributedReport:
        """Assemble the region files into the output, style it as fuse does (``.qml``) and report.

        Removes the staging folder.
        """
        start = time.perf_counter()
        for stray in glob.glob(os.path.join(self.folder, f".*{PARTIAL_MARKER}*")):
            os.remove(stray)  # a worker that died while writing left its temporary file
        options, grid = self.options.fuse, self.plan.grids.output
        if self.is_vrt:
            final = regions_folder(self.output)
            if os.path.exists(final):
                shutil.rmtree(final)
            os.replace(self.folder, final)
            write_vrt(self.output, grid.width, grid.height, [(r, region_file(final, r)) for r in self.regions])
        else:
            vrt = os.path.join(self.folder, "mosaic.vrt")
            write_vrt(vrt, grid.width, grid.height, [(r, region_file(self.folder, r)) for r in self.regions])
            copy_to_geotiff(vrt, self.output, self.plan, compress=options.compress, blocksize=options.output_block,
                            block_width=options.block_width, cog=options.cog, overwrite=options.overwrite)
            self.abort()
        style = style_note(self.output, self.plan.lr_info.bands)  # as fuse's: the same .qml beside the output
        return self._report(client, time.perf_counter() - start, () if style is None else (style,))

    def abort(self) -> None:
        """Remove the staging folder and whatever is in it."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def _report(self, client: Any, assemble_seconds: float, extra_notes: Tuple[str, ...] = ()) -> DistributedReport:
        results = [self.results[i] for i in range(len(self.regions))]
        parts = [r.result for r in results]
        visits = sum(p.tiles + p.recomputed for p in parts)
        skipped = set().union(*(p.skipped_tiles for p in parts))
        timings = Timings(read=sum(p.timings.read for p in parts), infer=sum(p.timings.infer for p in parts),
                          blend=sum(p.timings.blend for p in parts), write=sum(p.timings.write for p in parts))
        combined = PipelineResult(tiles=len(self.tiles), skipped=len(skipped), recomputed=visits - len(self.tiles),
                                  batch_size=min(p.batch_size for p in parts), timings=timings,
                                  carried=sum(p.carried for p in parts))
        notes = self.plan.notes + tuple(dict.fromkeys(n for r in results for n in r.notes)) + extra_notes
        tile = min(r.tile for r in results)
        report = self.plan.report(self.output, combined, tile=tile,
                                  device=", ".join(sorted({r.device for r in results})),
                                  seconds=time.perf_counter() - self.started, notes=notes)
        return DistributedReport(fuse=report, scheduler=str(client.scheduler.address), workers=len(client.nthreads()),
                                 regions=len(self.regions),
                                 region_size=region_side(self.options.region_size, self.plan.grids.scale,
                                                         self.options.fuse.output_block),
                                 tiles_computed=sum(p.tiles for p in parts),
                                 hosts=tuple(sorted({r.host for r in results})), assemble_seconds=assemble_seconds)


class ClusterRun:
    """The tasks of one job on a client: progress events in, one cancel event per scene out.

    Parameters
    ----------
    client:
        A ``distributed.Client``.
    reporter:
        Receives the fraction done while waiting (:meth:`wait_some`); its
        cancel raises :class:`~csakd_qgis.errors.Cancelled` there.
    """

    def __init__(self, client: Any, reporter: Reporter = SILENT) -> None:
        self.distributed = require_distributed()
        self.client, self.reporter = client, reporter
        self.topic = f"csakd-progress-{uuid.uuid4().hex[:12]}"
        self.events: Dict[int, Any] = {}
        self.fractions: Dict[str, float] = {}
        self.futures: List[Any] = []
        self.finished = 0
        self.pending = self.distributed.as_completed()
        client.subscribe_topic(self.topic, self._on_event)

    def _on_event(self, event: Tuple[float, Dict[str, Any]]) -> None:
        message = event[1]
        key = str(message["key"])
        self.fractions[key] = max(self.fractions.get(key, 0.0), float(message["fraction"]))

    def submit(self, scene: SceneRun) -> List[Any]:
        """Submit ``scene``'s regions with a cancel event of its own; returns their futures."""
        event = self.distributed.Event(f"csakd-cancel-{uuid.uuid4().hex[:12]}", client=self.client)
        self.events[id(scene)] = event
        futures = scene.submit(self.client, event.name, self.topic)
        self.futures.extend(futures)
        for future in futures:
            self.pending.add(future)
        return futures

    def progress(self, futures: Optional[Sequence[Any]] = None) -> float:
        """Mean fraction done over ``futures`` (default: all submitted), 1 for each finished one."""
        futures = self.futures if futures is None else futures
        if not futures:
            return 0.0
        done = sum(1.0 if f.done() else self.fractions.get(str(f.key), 0.0) for f in futures)
        return done / len(futures)

    def wait_some(self, fraction: Optional[Callable[[], float]] = None) -> List[Any]:
        """Futures that finished (with a result or an error) since the last call; [] when none is left.

        Reports ``fraction()`` (default :meth:`progress`) and checks for
        cancellation every :data:`POLL_INTERVAL` seconds while waiting.

        Raises
        ------
        Cancelled
            When the reporter says so.
        """
        fraction = fraction or self.progress
        while not self.pending.is_empty():
            self.reporter.update(fraction(), f"{self.finished}/{len(self.futures)} regions fused")
            if self.pending.has_ready():
                batch = self.pending.next_batch(block=False)
                self.finished += len(batch)
                return batch
            time.sleep(POLL_INTERVAL)
        return []

    def stop(self, scene: SceneRun, futures: Sequence[Any], grace: float = STOP_GRACE) -> None:
        """Stop ``scene``'s ``futures``: set its cancel event, give running tasks ``grace`` s, cancel the rest.

        Tasks that see the event raise :class:`~csakd_qgis.errors.Cancelled`
        at their next batch (their writers remove their temporary files);
        tasks not started yet stop as they start.
        """
        event = self.events.get(id(scene))
        if event is None or not futures:
            return
        event.set()
        try:
            self.distributed.wait(list(futures), timeout=grace)
        except TimeoutError:
            pass
        self.client.cancel(list(futures))

    def close(self) -> None:
        """Stop listening to progress events and forget the cancel events."""
        self.client.unsubscribe_topic(self.topic)
        for event in self.events.values():
            event.clear()


def fuse_distributed(lr_hsi: str, hr_msi: str, output: str, *, client: Any, options: Optional[ClusterOptions] = None,
                     reporter: Optional[Reporter] = None, lr_mask: Optional[str] = None,
                     msi_mask: Optional[str] = None) -> DistributedReport:
    """Fuse one scene on a Dask cluster; the output equals :func:`csakd_qgis.fusion.engine.fuse`'s.

    Parameters
    ----------
    lr_hsi, hr_msi:
        Input rasters or products; every worker must be able to open them
        (products: the files written for them in the client's product cache)
        under these names (a shared file system or URLs GDAL reads).
    lr_mask, msi_mask:
        Masks of the inputs (nonzero = exclude), as for ``fuse``.
    output:
        A GeoTIFF (``.tif``; COG with ``options.cog``), or a ``.vrt`` over
        region files kept in ``NAME_regions/`` beside it.  Written
        atomically; the region files are staged in a hidden folder beside it.
    client:
        A ``distributed.Client`` (:func:`open_client`).
    options:
        :class:`ClusterOptions` (defaults: those of :func:`~csakd_qgis.fusion.engine.fuse`).
    reporter:
        Progress (prepare 0-5 %, regions 5-95 %, assembly) and cancellation.

    Returns
    -------
    DistributedReport

    Raises
    ------
    InputError, GridError, RasterReadError, RasterWriteError, CheckpointError, ModelMismatchError
        As :func:`~csakd_qgis.fusion.engine.fuse`, from the client or re-raised from a worker.
    Cancelled
        Nothing is left at ``output`` nor in the staging folder.
    """
    reporter = reporter or SILENT
    scene = SceneRun(lr_hsi, hr_msi, output, options or ClusterOptions(), lr_mask, msi_mask)
    scene.prepare(reporter.phase(0.0, 0.05))
    run = ClusterRun(client, reporter.phase(0.05, 0.95))
    futures: List[Any] = []
    try:
        futures = run.submit(scene)
        while not scene.complete:
            for future in run.wait_some():
                scene.record(future.result())
        reporter.update(0.95, "assembling the regions")
        report = scene.finish(client)
    except BaseException:
        run.stop(scene, futures)
        scene.abort()
        raise
    finally:
        run.close()
    reporter.update(1.0, "done")
    return report
