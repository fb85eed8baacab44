"""The fusion engine on a Dask cluster (``dask.distributed``): large scenes and many scenes.

One scene (:func:`fuse_distributed`): the client runs
:func:`csakd_qgis.fusion.engine.prepare` once (grids, shift, radiometry, GSA
coefficients), keeps the scene's *global* tile plan and cuts the output
into regions aligned to LR pixels and to the output's GeoTIFF blocks
(:mod:`.regions`).  Each region is one task (:mod:`.worker`): the worker
loads the model once, reads its own inputs through GDAL, predicts every
global tile that reaches the region, blends only the region's pixels and
writes the region as its own tiled GeoTIFF, atomically, under a name fixed
by the region (a retried task overwrites it).  The client assembles the
regions into a VRT with the output's georeferencing and band metadata,
optionally copied into one GeoTIFF or COG (:mod:`.assemble`).  Tiles on a
region border are predicted by each region they reach, so the output
equals the single-process :func:`csakd_qgis.fusion.engine.fuse` to float rounding,
region borders included.

Many scenes (:func:`fuse_batch`): pairs from a CSV or JSON list run as one
job on the same workers; each pair gets its own result, and one pair's
failure does not stop the others.

Dask is optional: nothing here imports it until a function needs it
(:func:`.client.require_distributed` raises
:class:`~csakd_qgis.errors.DependencyError` with the pip command).
"""

from csakd_qgis.distributed.batch import BatchReport, PairResult, ScenePair, fuse_batch, read_pair_list
from csakd_qgis.distributed.client import open_client, require_distributed
from csakd_qgis.distributed.regions import REGION_SIZE, plan_regions
from csakd_qgis.distributed.runner import ClusterOptions, DistributedReport, fuse_distributed

__all__ = [
    "REGION_SIZE",
    "BatchReport",
    "ClusterOptions",
    "DistributedReport",
    "PairResult",
    "ScenePair",
    "fuse_batch",
    "fuse_distributed",
    "open_client",
    "plan_regions",
    "read_pair_list",
    "require_distributed",
]
