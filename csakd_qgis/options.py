"""How a scene is fused: the one validated :class:`FuseOptions`, and the choice lists every front end shares.

The command line (``csakd fuse``, ``csakd batch``), the QGIS algorithm
``csakd:fuse``, :func:`csakd_qgis.fusion.engine.fuse` and the Dask runner
all build a :class:`FuseOptions`; it checks every value once, when it is
made, so a bad value is refused before any input is read, with the same
message everywhere.  This module imports neither torch nor GDAL: the QGIS
algorithms read the choice lists when the plugin loads.

Units: tile sizes, overlaps and halos are in LR-HSI pixels; column blocks
and output blocks in output (HR) pixels.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple, Union

from csakd_qgis.errors import InputError

#: Classical methods, fitted on each scene with the degradation estimated from the pair
#: (:mod:`csakd_qgis.classical`): PSF-matched GSA, MTF-GLP, and PSF-matched GSA
#: with its output projected onto the LR-HSI's signal subspace (``subspace``) or back-projected onto the
#: LR-HSI in that subspace (``subspace_bp``).
CLASSICAL_METHODS = ("gsa", "glp", "subspace", "subspace_bp")

#: Fusion methods: ``auto`` (a network whose model card shows it beats the classical methods, else the classical
#: method that suits the scene's noise), networks (``csakd`` = the installed or given model, ``student``,
#: ``teacher``), ``bicubic`` and the :data:`CLASSICAL_METHODS`.
METHODS = ("auto", "csakd", "student", "teacher", "bicubic") + CLASSICAL_METHODS

#: Inference backends of networks; ``auto``: onnxruntime for ``.onnx`` files and, on the CPU with onnx and
#: onnxruntime installed, for checkpoints; torch otherwise (:func:`csakd_qgis.fusion.methods._backend`).
BACKENDS = ("auto", "torch", "onnxruntime")

#: Device names (``cuda:N`` also accepted); ``auto``: CUDA, then Apple MPS, then the CPU.
DEVICES = ("auto", "cpu", "cuda", "mps")

#: Output data types; ``same``: the LR-HSI's.
DTYPES = ("float32", "int16", "uint16", "same")

#: Network arithmetic on CUDA: ``float32``, or autocast to ``bfloat16``/``float16`` (faster, less exact).
PRECISIONS = ("float32", "bfloat16", "float16")

#: Default tile core (LR pixels).
TILE = 64

#: Default tile overlap (LR pixels) when the tile allows it (see :attr:`FuseOptions.tile_overlap`).
OVERLAP = 8

#: Default tiles per network call on a CPU and on a GPU (CUDA, MPS).  On a CPU a
#: larger batch is no faster per tile (bundled student, 224 bands, one thread:
#: torch 0.76 s per tile alone against 1.15 s in fours, onnxruntime 0.54 against
#: 0.58 s) and holds the forward pass of every tile at once (326 against 777 MB
#: under torch); ``bench/batch_size.py``, explained in ``docs/engine.md``.
CPU_BATCH_SIZE, GPU_BATCH_SIZE = 1, 4

#: Largest tile core (LR pixels) and batch (tiles) a run accepts.
MAX_TILE, MAX_BATCH = 4096, 256

#: Default width (output pixels) of a column block (:mod:`csakd_qgis.fusion.pipeline`).
BLOCK_WIDTH = 1024

#: Default side (output pixels) of the output GeoTIFF's blocks.
OUTPUT_BLOCK = 256

#: MSI sensors whose band names ``MsiBands.bands`` may use (centre wavelengths in
#: :data:`csakd_qgis.simulation.srf.BAND_TABLES`).
SENSORS = ("sentinel2", "sentinel2b", "landsat8", "landsat9")

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def default_batch_size(device_type: str) -> int:
    """Tiles per network call when none is given, for a torch device type ('cpu', 'cuda', 'mps')."""
    return GPU_BATCH_SIZE if device_type in ("cuda", "mps") else CPU_BATCH_SIZE


def _refuse(condition: bool, message: str) -> None:
    if condition:
        raise InputError(message)


@dataclass(frozen=True)
class FuseOptions:
    """How one scene is fused (not what: the inputs, the method and the model are :func:`fuse`'s arguments).

    Attributes
    ----------
    tile:
        Tile core size, LR pixels (1 to :data:`MAX_TILE`).
    overlap:
        Overlap of neighbouring tiles, LR pixels, at most ``tile // 4``;
        None: :data:`OVERLAP` or ``tile // 4`` when that is smaller.
    batch_size:
        Tiles per network call (1 to :data:`MAX_BATCH`); None: the
        device's default (:func:`default_batch_size`).  Halved on
        out-of-memory errors, then the tile.
    halo:
        LR context per tile side: pixels, ``"exact"`` (the method's
        receptive-field bound) or None (the method's default,
        :func:`csakd_qgis.fusion.plan.tile_halo`).
    device, threads:
        :data:`DEVICES` or ``cuda:N``; CPU threads for torch and onnxruntime
        (None: torch's default), shared by the calls a network on the CPU
        makes at once (:func:`csakd_qgis.devices.compute_streams`).
    backend:
        :data:`BACKENDS`.
    precision:
        :data:`PRECISIONS`; applies to torch networks on CUDA, the CPU
        always computes in float32.
    shift_correction:
        Estimate the LR-HSI's sub-pixel shift relative to the HR-MSI and correct it.
    scale:
        HR/LR pixel-size ratio; None derives it (a network's own scale).
    dtype, output_scale:
        :data:`DTYPES`; the physical value of one stored unit of an integer
        output (None: the LR-HSI's band scale, 1 when it has none).
    compress, cog, overwrite:
        GeoTIFF compression (None: none), Cloud Optimized GeoTIFF, replace an existing output.
    guard:
        Check the output against its inputs after fusing and refuse it when
        they disagree (:mod:`csakd_qgis.quality.guard`).
    block_width, output_block:
        Column-block width and output block side, output pixels
        (``output_block`` a multiple of 16; ``block_width`` is rounded down
        to a multiple of it, at least one block).

    Raises
    ------
    InputError
        On the first value out of range, naming the command-line option.
    """

    tile: int = TILE
    overlap: Optional[int] = None
    batch_size: Optional[int] = None
    halo: Union[int, str, None] = None
    device: str = "auto"
    threads: Optional[int] = None
    backend: str = "auto"
    precision: str = "float32"
    shift_correction: bool = True
    scale: Optional[int] = None
    dtype: str = "float32"
    output_scale: Optional[float] = None
    compress: Optional[str] = "zstd"
    cog: bool = False
    overwrite: bool = False
    guard: bool = True
    block_width: int = BLOCK_WIDTH
    output_block: int = OUTPUT_BLOCK

    def __post_init__(self) -> None:
        """Check every value (see the class's Raises)."""
        _refuse(not 1 <= self.tile <= MAX_TILE,
                f"tile size must be between 1 and {MAX_TILE} LR pixels (--tile-size), got {self.tile}")
        if self.overlap is not None:
            _refuse(self.overlap < 0, f"tile overlap must be >= 0 LR pixels (--overlap), got {self.overlap}")
            _refuse(self.overlap > self.tile // 4,
                    f"tile overlap {self.overlap} is more than a quarter of the tile ({self.tile} LR pixels): "
                    f"use --overlap {self.tile // 4} or less, or a larger --tile-size")
        _refuse(self.batch_size is not None and not 1 <= self.batch_size <= MAX_BATCH,
                f"batch size must be between 1 and {MAX_BATCH} tiles (--batch-size), got {self.batch_size}")
        _refuse(self.halo is not None and self.halo != "exact"
                and (isinstance(self.halo, bool) or not isinstance(self.halo, int) or self.halo < 0),
                f"halo must be a number of LR pixels >= 0 or 'exact', got {self.halo!r}")
        _refuse(not isinstance(self.device, str) or not _DEVICE.match(self.device),
                f"unknown device {self.device!r}; use {', '.join(DEVICES)} or cuda:N")
        _refuse(self.threads is not None and self.threads < 1,
                f"threads must be >= 1 (--threads), got {self.threads}")
        _refuse(self.backend not in BACKENDS, f"unknown backend {self.backend!r}; use one of {', '.join(BACKENDS)}")
        _refuse(self.precision not in PRECISIONS,
                f"unknown precision {self.precision!r}; use one of {', '.join(PRECISIONS)}")
        _refuse(self.scale is not None and (int(self.scale) != self.scale or self.scale < 1),
                f"the scale must be a positive integer (--scale), got {self.scale!r}")
        _refuse(self.dtype not in DTYPES, f"unknown output dtype {self.dtype!r}; use one of {', '.join(DTYPES)}")
        _refuse(self.output_scale is not None and not self.output_scale > 0,
                f"the output scale must be > 0 (--output-scale), got {self.output_scale}")
        _refuse(self.output_block < 16 or self.output_block % 16 != 0,
                f"the output block side must be a multiple of 16 pixels, got {self.output_block}")
        _refuse(self.block_width < 1, f"the column-block width must be >= 1 pixel, got {self.block_width}")

    @property
    def tile_overlap(self) -> int:
        """The overlap used: :attr:`overlap`, or :data:`OVERLAP` capped at ``tile // 4`` when it is None."""
        return min(OVERLAP, self.tile // 4) if self.overlap is None else self.overlap

    def replace(self, **changes: Any) -> FuseOptions:
        """A copy with ``changes`` applied, checked again."""
        return dataclasses.replace(self, **changes)


def _numbers(values: Union[str, Sequence[float], None], option: str) -> Tuple[float, ...]:
    """``"490,560"`` or a sequence -> floats; refuses anything else naming ``option``."""
    if values is None or values == "":
        return ()
    items = values.split(",") if isinstance(values, str) else list(values)
    try:
        return tuple(float(v) for v in items)
    except (TypeError, ValueError):
        raise InputError(f"{option} takes numbers in nm separated by commas, e.g. 490,560,665,842; "
                         f"got {values!r}") from None


@dataclass(frozen=True)
class MsiBands:
    """What the HR-MSI's bands are, for a raster whose metadata does not say (or says it in another order).

    Give a known ``sensor`` and its ``bands`` in the raster's order
    (``sensor="sentinel2", bands=("B4", "B3", "B2", "B8")``), or the
    ``wavelengths_nm`` of a custom camera (optionally with ``fwhm_nm``).
    Built from text with :meth:`parse` (``--msi-sensor``, ``--msi-bands``,
    ``--msi-wavelengths``, ``--msi-fwhm``).

    Raises
    ------
    InputError
        A sensor without bands or bands without a sensor, an unknown sensor,
        both a sensor and wavelengths, or FWHMs that do not pair with the
        wavelengths.
    """

    sensor: str = ""
    bands: Tuple[str, ...] = ()
    wavelengths_nm: Tuple[float, ...] = ()
    fwhm_nm: Tuple[float, ...] = ()

    def __post_init__(self) -> None:
        """Check the combination (see the class's Raises)."""
        _refuse(bool(self.sensor) != bool(self.bands),
                "--msi-sensor and --msi-bands go together: name the sensor and its bands in the raster's "
                "order, e.g. --msi-sensor sentinel2 --msi-bands B2,B3,B4,B8")
        _refuse(bool(self.sensor) and self.sensor not in SENSORS,
                f"unknown MSI sensor {self.sensor!r}; use one of {', '.join(SENSORS)}, or give the band "
                "centres with --msi-wavelengths")
        _refuse(bool(self.sensor) and bool(self.wavelengths_nm),
                "give either --msi-sensor/--msi-bands or --msi-wavelengths, not both")
        _refuse(bool(self.fwhm_nm) and len(self.fwhm_nm) != len(self.wavelengths_nm),
                f"--msi-fwhm needs one value per --msi-wavelengths value ({len(self.wavelengths_nm)}), "
                f"got {len(self.fwhm_nm)}")
        _refuse(any(not w > 0 for w in self.wavelengths_nm + self.fwhm_nm),
                "MSI wavelengths and FWHMs must be positive numbers of nanometres")

    @classmethod
    def parse(cls, sensor: Optional[str] = None, bands: Union[str, Sequence[str], None] = None,
              wavelengths: Union[str, Sequence[float], None] = None,
              fwhm: Union[str, Sequence[float], None] = None) -> Optional[MsiBands]:
        """The identity the options give, or None when they give none (``bands`` as ``"B2,B3"`` or a list)."""
        names = tuple(b.strip() for b in (bands.split(",") if isinstance(bands, str) else bands or ()) if b.strip())
        found = cls((sensor or "").strip().lower(), names, _numbers(wavelengths, "--msi-wavelengths"),
                    _numbers(fwhm, "--msi-fwhm"))
        return found if found.given else None

    @property
    def given(self) -> bool:
        """True when a sensor or wavelengths were given."""
        return bool(self.sensor or self.wavelengths_nm)

    @property
    def count(self) -> int:
        """Number of bands described."""
        return len(self.bands) or len(self.wavelengths_nm)
