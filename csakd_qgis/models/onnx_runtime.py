"""Run exported fusion networks with onnxruntime: reading ``.onnx`` files and the fusion method.

An exported network (:func:`csakd_qgis.models.onnx_export.export_onnx`) is one
``.onnx`` file whose ``metadata_props`` hold the same JSON model card a
``.safetensors`` checkpoint carries in its header (key
:data:`csakd_qgis.models.checkpoint.CARD_KEY`), so the engine checks bands, MSI
bands, wavelengths and scale exactly as for a checkpoint.  Its graph has two
inputs and one output, all float32 with dynamic batch, height and width:

* :data:`LR_INPUT` ``(B, C, h, w)``: normalised LR-HSI;
* :data:`MSI_INPUT` ``(B, m, h*s, w*s)``: normalised HR-MSI;
* :data:`OUTPUT` ``(B, C, h*s, w*s)``: fused HR-HSI (the network's first output).

Security
--------
An ONNX file is a protobuf of operators and tensors; parsing it runs no code.
:func:`read_onnx` parses it with the ``onnx`` package and refuses, with
:class:`~csakd_qgis.errors.CheckpointError` and before any inference session
exists, a file that is not ONNX, has no csakd card or an invalid one, keeps
tensors in external files, uses operators outside the standard ONNX domain
(custom-operator libraries are never registered) or whose inputs and outputs
do not match the card.  The session is then built from the bytes already
checked, never by re-opening the path.

onnxruntime and onnx are optional: they are imported when first needed and
their absence raises :class:`~csakd_qgis.errors.DependencyError` naming the
``pip`` command.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from csakd_qgis.errors import CheckpointError, DependencyError, InputError, import_optional
from csakd_qgis.models.card import ModelCard
from csakd_qgis.models.checkpoint import CARD_KEY, card_config
from csakd_qgis.models.receptive_field import network_halo

#: File-name suffix of exported networks.
SUFFIX = ".onnx"

#: Graph input and output names written by the exporter and required by the reader.
LR_INPUT, MSI_INPUT, OUTPUT = "lr_hsi", "hr_msi", "hr_hsi"

#: Operator domains an accepted file may use: the standard ONNX operator set (two spellings).
STANDARD_DOMAINS = ("", "ai.onnx")

_PIP = "pip install onnx onnxruntime  (or: pip install 'csakd-qgis[onnx]')"

PathLike = Union[str, "os.PathLike[str]"]


def is_onnx(model: object) -> bool:
    """True when ``model`` is a path (str or path-like) whose name ends in ``.onnx`` (any case)."""
    return isinstance(model, (str, os.PathLike)) and os.fspath(model).lower().endswith(SUFFIX)


def import_onnx() -> ModuleType:
    """The ``onnx`` package; :class:`DependencyError` with the install command when it is missing."""
    return import_optional("onnx", "reading or writing .onnx models", _PIP)


def import_onnxruntime() -> ModuleType:
    """The ``onnxruntime`` package; :class:`DependencyError` with the install command when it is missing."""
    return import_optional("onnxruntime", "the onnxruntime backend",
                           f"{_PIP}; for NVIDIA GPUs use onnxruntime-gpu instead of onnxruntime")


def _static_dim(value_info: Any, axis: int) -> Optional[int]:
    """The fixed size of ``axis`` of a graph input/output, None when it is dynamic or absent.

    ``value_info`` is an ``onnx.ValueInfoProto`` (``Any``: onnx is optional and untyped).
    """
    dims = value_info.type.tensor_type.shape.dim
    if axis >= len(dims) or not dims[axis].HasField("dim_value"):
        return None
    return int(dims[axis].dim_value)


def parse_onnx(data: bytes, source: str = "the ONNX model") -> ModelCard:
    """Check a serialised ONNX model and return its csakd card; nothing is executed.

    Parameters
    ----------
    data:
        The file's bytes.
    source:
        How to name the model in messages (normally its path).

    Returns
    -------
    ModelCard
        The card stored under :data:`~csakd_qgis.models.checkpoint.CARD_KEY` in the
        model's ``metadata_props``; its ``config`` is a valid
        :class:`~csakd_qgis.models.ModelConfig` whose bands, MSI bands and
        scale agree with the card and with the graph's channel dimensions.

    Raises
    ------
    CheckpointError
        Not an ONNX model, no card or an invalid one, external tensor data,
        a non-standard operator domain, or inputs/outputs other than
        ``lr_hsi (B, C, h, w)``, ``hr_msi (B, m, H, W)`` -> ``hr_hsi (B, C, H, W)``.
    DependencyError
        The ``onnx`` package is not installed.
    """
    onnx = import_onnx()
    from google.protobuf.message import DecodeError

    try:
        proto = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{source} is not an ONNX model ({exc}); export one with 'csakd export-onnx'"
                              ) from exc
    meta = {p.key: p.value for p in proto.metadata_props}
    if CARD_KEY not in meta:
        raise CheckpointError(f"{source} is an ONNX model without a csakd model card; it was not written by "
                              "'csakd export-onnx', so its bands, scale and normalisation are unknown. "
                              "Export the .safetensors checkpoint with 'csakd export-onnx'")
    card = ModelCard.from_json(meta[CARD_KEY])
    cfg = _card_config(card, source)
    external = [t.name for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise CheckpointError(f"{source} keeps tensors in external files ({', '.join(external[:3])}); "
                              "csakd loads single-file ONNX models only")
    used = {o.domain for o in proto.opset_import} | {n.domain for n in proto.graph.node}
    domains = sorted(used - set(STANDARD_DOMAINS))
    if domains:
        raise CheckpointError(f"{source} uses operators outside the standard ONNX set (domains {domains}); "
                              "csakd runs standard operators only")
    inputs = {v.name: v for v in proto.graph.input}
    outputs = {v.name: v for v in proto.graph.output}
    expected = ((inputs, LR_INPUT, cfg.bands), (inputs, MSI_INPUT, cfg.msi_bands), (outputs, OUTPUT, cfg.bands))
    for values, name, channels in expected:
        if name not in values or len(values[name].type.tensor_type.shape.dim) != 4 \
                or _static_dim(values[name], 1) not in (None, channels):
            raise CheckpointError(
                f"{source}: the graph must have inputs {LR_INPUT!r}, {MSI_INPUT!r} and output {OUTPUT!r} "
                f"shaped (B, {cfg.bands}, h, w), (B, {cfg.msi_bands}, H, W) and (B, {cfg.bands}, H, W) as its "
                f"card says; found inputs {sorted(inputs)} and outputs {sorted(outputs)}. Re-export it with "
                "'csakd export-onnx'"
            )
    return card


def _card_config(card: ModelCard, source: str):
    """The card's :class:`~csakd_qgis.models.ModelConfig`, checked against the card's bands and scale."""
    cfg = card_config(card, source)
    if (cfg.bands, cfg.msi_bands, cfg.scale) != (card.lr_bands.count, card.msi.count, card.scale):
        raise CheckpointError(
            f"{source}: the model card contradicts itself: its config has {cfg.bands} HSI bands, "
            f"{cfg.msi_bands} MSI bands and scale {cfg.scale}, its band lists {card.lr_bands.count} and "
            f"{card.msi.count} and its scale {card.scale}; the file was edited"
        )
    return cfg


def read_onnx(path: PathLike) -> Tuple[bytes, ModelCard]:
    """Read an exported network: ``(file bytes, card)`` after the checks of :func:`parse_onnx`.

    Raises
    ------
    CheckpointError
        The file is missing, a folder, or fails :func:`parse_onnx`.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError as exc:
        raise CheckpointError(f"model file {p} does not exist") from exc
    except IsADirectoryError as exc:
        raise CheckpointError(f"model file {p} is a folder, not an .onnx file") from exc
    return data, parse_onnx(data, str(p))


def read_onnx_card(path: PathLike) -> ModelCard:
    """The model card of an exported network (see :func:`read_onnx`)."""
    return read_onnx(path)[1]


def providers(device: Union[str, torch.device]) -> List[object]:
    """Execution providers of onnxruntime for a torch device: CPU, or CUDA with CPU for leftover nodes.

    Raises
    ------
    InputError
        A device onnxruntime cannot use here (Apple MPS).
    DependencyError
        ``cuda`` asked for but this onnxruntime has no CUDA provider.
    """
    device = torch.device(device)
    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    if device.type != "cuda":
        raise InputError(f"the onnxruntime backend cannot run on device {str(device)!r}; "
                         "use device 'cpu' or the torch backend")
    available = import_onnxruntime().get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise DependencyError(
            f"device {str(device)!r} was asked for but this onnxruntime has no CUDA provider (it has "
            f"{', '.join(available)}); install onnxruntime-gpu in place of onnxruntime, or use device 'cpu'"
        )
    return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]


class OnnxNetworkMethod:
    """An exported fusion network run by onnxruntime; the :class:`~csakd_qgis.fusion.methods.FusionMethod` protocol.

    Parameters
    ----------
    model:
        An ``.onnx`` path, or the bytes of one (as :func:`csakd_qgis.models.onnx_export.onnx_bytes`
        returns); checked by :func:`parse_onnx` before the session is made.
    device:
        ``"cpu"`` or ``"cuda[:N]"`` (see :func:`providers`); CUDA needs the
        ``onnxruntime-gpu`` package.
    threads:
        Intra-operator CPU threads; None follows torch's setting at each
        call (one session per thread count, made on first use), so
        :func:`csakd_qgis.devices.set_threads` and
        :func:`~csakd_qgis.devices.shared_threads` govern both backends.
    halo:
        LR context per side; None derives it from the card's config
        (:func:`csakd_qgis.models.receptive_field.network_halo`).
    name:
        Reported method (None: the card's role).

    Attributes
    ----------
    card:
        The model card read from the file.
    session:
        The ``onnxruntime.InferenceSession`` made with the method (all graph
        optimisations, one inter-operator thread, sequential execution, no
        memory pattern); calls with another thread count use a session of
        their own made the same way.  Sessions may be called from several
        threads at once.
    """

    def __init__(self, model: Union[PathLike, bytes], *, device: Union[str, torch.device] = "cpu",
                 threads: Optional[int] = None, halo: Optional[int] = None, name: Optional[str] = None) -> None:

        data, card = (bytes(model), parse_onnx(bytes(model))) if isinstance(model, (bytes, bytearray)) \
            else read_onnx(model)
        chosen = providers(device)
        #: The torch device the session runs on (its inputs stay NumPy arrays).
        self.device = torch.device(device)
        self._data, self._providers, self._threads = data, chosen, threads
        self._sessions: Dict[int, Any] = {}
        self._lock = threading.Lock()
        self.session = self._session()
        self.card = card
        self.scale = int(card.scale)
        self.halo = int(halo) if halo is not None else network_halo(_card_config(card, card.name))
        self.name = name or card.role
        self.model_name = card.name

    def predict(self, lr: np.ndarray, msi: np.ndarray) -> np.ndarray:
        """Fuse ``lr (B, C, h, w)`` and ``msi (B, m, h*s, w*s)`` into ``(B, C, h*s, w*s)``, float32.

        Raises
        ------
        InputError
            When the band counts or sizes do not fit the card.
        """
        b, c, h, w = lr.shape if lr.ndim == 4 else (0, -1, 0, 0)
        want = (b, self.card.msi.count, h * self.scale, w * self.scale)
        if c != self.card.lr_bands.count or tuple(msi.shape) != want:
            raise InputError(f"model {self.model_name!r} expects LR-HSI (B, {self.card.lr_bands.count}, h, w) and "
                             f"HR-MSI {want}, got {tuple(lr.shape)} and {tuple(msi.shape)}")
        feeds = {LR_INPUT: np.ascontiguousarray(lr, dtype=np.float32),
                 MSI_INPUT: np.ascontiguousarray(msi, dtype=np.float32)}
        return self._session().run([OUTPUT], feeds)[0]

    def _session(self) -> Any:
        """The session for the thread count in force (fixed ``threads``, else torch's setting), made once."""
        count = int(self._threads) if self._threads is not None else torch.get_num_threads()
        with self._lock:
            if count not in self._sessions:
                self._sessions[count] = self._new_session(count)
            return self._sessions[count]

    def _new_session(self, threads: int) -> Any:
        """An ``onnxruntime.InferenceSession`` of the model with ``threads`` intra-operator threads."""
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # no memory pattern: it plans a buffer per input shape (edge tiles differ), which cost 1 GB of peak RSS
        # on the headline scene (2503 against 3475 MB at 900x900 output, same speed; docs/benchmarks.md)
        options.enable_mem_pattern = False
        session = ort.InferenceSession(self._data, sess_options=options, providers=self._providers)
        chosen = self._providers
        wanted = chosen[0][0] if isinstance(chosen[0], tuple) else chosen[0]
        if session.get_providers()[0] != wanted:
            raise DependencyError(f"onnxruntime could not start {wanted} (it fell back to "
                                  f"{session.get_providers()[0]}); check the CUDA and cuDNN libraries "
                                  "onnxruntime-gpu needs, or use device 'cpu'")
        return session
