"""Fusion methods behind one interface, so the tiled engine is written once.

Every method takes normalised, NaN-free batches (the engine divides each
input by its robust level, fills invalid pixels and restores nodata
afterwards) and returns the fused HR-HSI batch:

``predict(lr (B, C, h, w) float32, msi (B, m, h*s, w*s) float32) -> (B, C, h*s, w*s) float32``

``halo`` is the LR context (pixels per side) a method needs so that a tile's
output does not depend on where the tile was cut; the engine reads it around
every tile and crops it away afterwards.

Methods
-------
* :class:`BicubicMethod`: :func:`csakd_qgis.classical.baselines.bicubic_upsample` of
  the LR-HSI; ignores the MSI.  Needs 2 LR pixels of context.
* :class:`csakd_qgis.classical.ClassicalMethod`: PSF-matched GSA, MTF-GLP or
  subspace-projected GSA, fitted once on the scene sample with the degradation
  estimated from the pair (:func:`csakd_qgis.fusion.plan.prepare`) and
  applied per tile, so tiles cannot seam.
* :class:`NetworkMethod`: a torch model whose ``forward(lr, msi)`` returns
  ``(hr, fused_feature)`` (the CSAKD teacher or student); its halo is the
  receptive field of its configuration (:func:`network_halo`).
* :class:`csakd_qgis.models.onnx_runtime.OnnxNetworkMethod`: the same network
  exported to ONNX (:func:`csakd_qgis.models.onnx_export.export_onnx`) and run by
  onnxruntime (optional dependency).

Backends
--------
:func:`make_method` runs networks with torch or onnxruntime (``backend``):
``"auto"`` is onnxruntime for an ``.onnx`` model file, and also for a
checkpoint with a card (a ``.safetensors`` file, a model name or an
auto-selected model) on the CPU when ``onnx`` and ``onnxruntime`` are
installed: :func:`_backend`.  Measured on the bundled student
(``docs/benchmarks.md``, "ONNX Runtime backend"): onnxruntime ran 1.6-2.7x
faster than torch on a 2-core CPU with outputs within 1.1e-5; the in-memory
export takes about 1.3 s.  Torch otherwise: GPUs (torch's CUDA path has the
mixed precision), bare modules (no card to export with) and bicubic.
``"onnxruntime"`` with a checkpoint exports it to ONNX in memory first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Protocol, Sequence, Tuple, Union, cast

import numpy as np
import torch

from csakd_qgis.classical.baselines import bicubic_upsample
from csakd_qgis.errors import DependencyError, InputError, ModelMismatchError
from csakd_qgis.io.bands import BandInfo
from csakd_qgis.models.card import CLASSICAL_GAIN_KEY, ModelCard
from csakd_qgis.models.onnx_runtime import (
    OnnxNetworkMethod,
    PathLike,
    import_onnx,
    import_onnxruntime,
    is_onnx,
    read_onnx,
    read_onnx_card,
)
from csakd_qgis.models.receptive_field import network_halo
from csakd_qgis.options import BACKENDS, METHODS

#: LR pixels of context for a network given as a bare module without a ``cfg`` (no config to derive it from).
DEFAULT_NETWORK_HALO = 8

#: LR pixels of context of bicubic interpolation (its 4-tap kernel reaches 2 LR pixels).
BICUBIC_HALO = 2

#: Methods that run a trained network.
NETWORKS = ("csakd", "student", "teacher")

#: Names ``model`` may take to ask for automatic selection.
AUTO = (None, "", "auto")


class FusionMethod(Protocol):
    """What the tiled engine needs from a fusion method."""

    name: str
    scale: int
    halo: int

    def predict(self, lr: np.ndarray, msi: np.ndarray) -> np.ndarray:
        """Fuse ``lr (B, C, h, w)`` and ``msi (B, m, h*s, w*s)`` into ``(B, C, h*s, w*s)``, float32.

        The result is the caller's: a writable array that no one else holds
        (the engine scales each tile's part in place).
        """


def _upsample(lr: np.ndarray, scale: int) -> torch.Tensor:
    """Bicubic upsampling of a float32 ``(B, C, h, w)`` batch, kept float32."""
    return bicubic_upsample(torch.from_numpy(np.ascontiguousarray(lr, dtype=np.float32)), scale)



class BicubicMethod:
    """Bicubic upsampling of the LR-HSI; the MSI is not used."""

    name = "bicubic"
    halo = BICUBIC_HALO

    def __init__(self, scale: int) -> None:
        self.scale = int(scale)

    def predict(self, lr: np.ndarray, msi: np.ndarray) -> np.ndarray:
        """See :class:`FusionMethod`."""
        return _upsample(lr, self.scale).numpy()


class NetworkMethod:
    """A torch fusion network run in batches on one device.

    Parameters
    ----------
    model:
        ``forward(lr (B, C, h, w), msi (B, m, h*s, w*s)) -> (hr (B, C, h*s, w*s), feature)``.
    scale:
        The integer HR/LR ratio the model was built for.
    device:
        Where to run; the model is moved there and set to eval mode.
    precision:
        ``"float32"``, or on CUDA autocast to ``"bfloat16"``/``"float16"``
        (:data:`~csakd_qgis.options.PRECISIONS`); other devices always
        compute in float32 (:attr:`precision` says what is used).
    halo:
        LR context per side; None derives it from ``model.cfg``
        (:func:`network_halo`), or :data:`DEFAULT_NETWORK_HALO` for a module
        without one.
    name:
        Reported method: ``"student"`` or ``"teacher"`` (None: the config's role).
    model_name:
        Reported model (checkpoint name; empty for an unnamed module).
    card:
        The checkpoint's model card (None for a bare module).
    """

    def __init__(self, model: torch.nn.Module, *, scale: int, device: Union[str, torch.device] = "cpu",
                 precision: str = "float32", halo: Optional[int] = None, name: Optional[str] = None,
                 model_name: str = "", card: Optional[ModelCard] = None) -> None:
        self.card = card
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.scale = int(scale)
        self.precision = precision if self.device.type == "cuda" else "float32"
        self.amp = self.precision != "float32"
        self.amp_dtype = getattr(torch, self.precision)
        cfg = getattr(model, "cfg", None)
        if halo is not None:
            self.halo = int(halo)
        else:
            self.halo = network_halo(cfg) if cfg is not None else DEFAULT_NETWORK_HALO
        self.name = cast(str, name or getattr(cfg, "role", "csakd"))  # a config's role is a str
        self.model_name = model_name

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        return tensor.to(self.device, non_blocking=True)

    def predict(self, lr: np.ndarray, msi: np.ndarray) -> np.ndarray:
        """See :class:`FusionMethod`."""
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            hr = self.model(self._tensor(lr), self._tensor(msi))[0]
        return hr.float().cpu().numpy()


#: Method classes that run a trained network (torch or onnxruntime), e.g. for the engine's halo cap.
NETWORK_METHODS = (NetworkMethod, OnnxNetworkMethod)


def _auto_model(role: str, lr_bands: Sequence[BandInfo], msi_bands: int,
                msi_wavelengths: Optional[Sequence[Optional[float]]], scale: int) -> Path:
    """Installed model of ``role`` that fits; a teacher may also be the one saved beside a fitting student."""
    from csakd_qgis.models.files import teacher_path_for
    from csakd_qgis.models.store import auto_select

    if role == "student":
        return auto_select(lr_bands, msi_bands, msi_wavelengths, scale, "student")[0]
    try:
        return auto_select(lr_bands, msi_bands, msi_wavelengths, scale, "teacher")[0]
    except ModelMismatchError as no_teacher:
        try:
            student = auto_select(lr_bands, msi_bands, msi_wavelengths, scale, "student")[0]
        except ModelMismatchError:
            raise no_teacher from None
        beside = teacher_path_for(student)
        if not beside.is_file():
            raise no_teacher from None
        return beside


def _check_card(card: ModelCard, method: str, lr_bands: Sequence[BandInfo], msi_bands: int,
                msi_wavelengths: Optional[Sequence[Optional[float]]], scale: Optional[int]) -> None:
    """Raise :class:`ModelMismatchError` unless ``card``'s role fits ``method`` and its bands and scale the inputs."""
    from csakd_qgis.models.store import mismatches, training_hint

    if method in ("student", "teacher") and card.role != method:
        raise ModelMismatchError(
            f"model {card.name!r} is a {card.role}, but method {method!r} was asked for; "
            "use method 'csakd' or another model"
        )
    if scale is not None and lr_bands:
        why = mismatches(card, [b.wavelength_nm for b in lr_bands], msi_bands, msi_wavelengths, scale)
        if why:
            raise ModelMismatchError(
                f"model {card.name!r} does not fit the inputs: it expects " + "; ".join(why)
                + ". Pick another model (csakd models) or train one for these sensors. " + training_hint()
            )


def _load_network(model: object, method: str, device: torch.device, lr_bands: Sequence[BandInfo], msi_bands: int,
                  msi_wavelengths: Optional[Sequence[Optional[float]]], scale: Optional[int]):
    """``(module, card or None)`` for a module, a checkpoint path or name, or the auto-selected model."""
    if isinstance(model, torch.nn.Module):
        return model, None
    from csakd_qgis.models.checkpoint import load_checkpoint
    from csakd_qgis.models.store import resolve_model

    role = "teacher" if method == "teacher" else "student"
    if model in AUTO:
        if scale is None or not lr_bands:
            raise InputError("choosing a model needs the inputs' LR-HSI bands and scale")
        return load_checkpoint(_auto_model(role, lr_bands, msi_bands, msi_wavelengths, scale), device)
    path, card = resolve_model(str(model))
    _check_card(card, method, lr_bands, msi_bands, msi_wavelengths, scale)
    return load_checkpoint(path, device)


def _onnx_installed() -> bool:
    """True when both ``onnx`` (to export) and ``onnxruntime`` (to run) can be imported."""
    try:
        import_onnx()
        import_onnxruntime()
    except DependencyError:
        return False
    return True


def _backend(backend: str, model: object, method: str = "csakd", device: Union[str, torch.device] = "cpu") -> str:
    """``"torch"`` or ``"onnxruntime"`` for the requested ``backend``, ``model``, ``method`` and ``device``.

    ``"auto"``: onnxruntime for an ``.onnx`` file, and for a network with a
    card on the CPU when onnx and onnxruntime are installed (see the module
    notes); torch otherwise.
    """
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if is_onnx(model):
        if backend == "torch":
            raise InputError(f"model {str(model)!r} is an ONNX export, which runs with onnxruntime only; "
                             "use backend 'onnxruntime' or 'auto', or pass the .safetensors checkpoint")
        return "onnxruntime"
    if backend != "auto":
        return backend
    exportable = method in NETWORKS and not isinstance(model, torch.nn.Module)
    on_cpu = torch.device(device).type == "cpu"
    return "onnxruntime" if exportable and on_cpu and _onnx_installed() else "torch"


def _onnx_method(model: object, method: str, device: torch.device, lr_bands: Sequence[BandInfo], msi_bands: int,
                 msi_wavelengths: Optional[Sequence[Optional[float]]], scale: Optional[int]) -> OnnxNetworkMethod:
    """An :class:`OnnxNetworkMethod` from an ``.onnx`` file, or from a checkpoint exported in memory."""
    name = None if method == "csakd" else method
    if is_onnx(model):
        data, card = read_onnx(cast(PathLike, model))  # is_onnx: a str or os.PathLike
        _check_card(card, method, lr_bands, msi_bands, msi_wavelengths, scale)
        return OnnxNetworkMethod(data, device=device, name=name)
    if isinstance(model, torch.nn.Module):
        raise InputError("backend 'onnxruntime' needs a model with a card: a .safetensors checkpoint, a model "
                         "name or an .onnx export (csakd export-onnx), not a bare torch module")
    from csakd_qgis.models.onnx_export import onnx_bytes

    network, card = _load_network(model, method, torch.device("cpu"), lr_bands, msi_bands, msi_wavelengths, scale)
    return OnnxNetworkMethod(onnx_bytes(network, card), device=device, name=name)


def pays_off(card: ModelCard) -> bool:
    """True when ``card`` shows the network beating the classical methods on validation (:data:`CLASSICAL_GAIN_KEY`)."""
    return float(card.metrics.get(CLASSICAL_GAIN_KEY, float("-inf"))) > 0.0


def auto_network(model: object, lr_bands: Sequence[BandInfo], msi_bands: int,
                 msi_wavelengths: Optional[Sequence[Optional[float]]], scale: int) -> Tuple[object, str]:
    """``(model, reason)`` for ``method="auto"``: the network to use, or None and why the classical floor is used.

    ``model`` is the user's (None/``"auto"``: the installed student that
    fits).  A network is used only when it fits the inputs and its card
    shows it beating the classical methods (:func:`pays_off`).

    Raises
    ------
    ModelMismatchError
        A model the user named does not fit the inputs (an installed model
        that does not fit is simply not used).
    """
    from csakd_qgis.models.store import auto_select, resolve_model

    if isinstance(model, torch.nn.Module):
        return model, "the given network"
    path: object  # an installed checkpoint's Path, or the model as the user gave it
    if model in AUTO:
        try:
            path, card = auto_select(lr_bands, msi_bands, msi_wavelengths, scale, "student")
        except ModelMismatchError as error:
            return None, f"no installed network fits the inputs ({str(error).split(';')[0]})"
    else:
        path, card = (model, read_onnx_card(cast(PathLike, model))) if is_onnx(model) else resolve_model(str(model))
        _check_card(card, "csakd", lr_bands, msi_bands, msi_wavelengths, scale)
    if not pays_off(card):
        return None, (f"model {card.name!r} fits, but its card does not show it beating the classical methods "
                      f"on validation ({CLASSICAL_GAIN_KEY} missing or <= 0)")
    return str(path), f"model {card.name!r}: +{card.metrics[CLASSICAL_GAIN_KEY]:.2f} dB over classical on validation"


def model_scales(model: object, method: str) -> Optional[Tuple[int, ...]]:
    """Scales the method can fuse at: a network's card or config scale; None for any integer or auto-selection."""
    if method not in NETWORKS + ("auto",) or model in AUTO:
        return None
    if is_onnx(model):
        return (int(read_onnx_card(cast(PathLike, model)).scale),)  # is_onnx: a str or os.PathLike
    if isinstance(model, torch.nn.Module):
        cfg = getattr(model, "cfg", None)
        return (int(cfg.scale),) if cfg is not None else None
    from csakd_qgis.models.store import resolve_model

    return (int(resolve_model(str(model))[1].scale),)


def make_method(method: str = "csakd", model: object = None, *, device: Union[str, torch.device] = "cpu",
                scale: Optional[int] = None, lr_bands: Sequence[BandInfo] = (), msi_bands: int = 0,
                msi_wavelengths: Optional[Sequence[Optional[float]]] = None, backend: str = "auto",
                precision: str = "float32") -> FusionMethod:
    """Build the fusion method a user asked for.

    Parameters
    ----------
    method:
        ``"csakd"`` (a network: the given model, or the installed student that
        fits), ``"student"``, ``"teacher"`` or ``"bicubic"`` (the classical
        methods and ``"auto"`` need the scene: :func:`csakd_qgis.fusion.plan.prepare`).
    model:
        For networks: a ``torch.nn.Module``, a checkpoint path, an ``.onnx``
        export path, a model name (resolved by
        :func:`csakd_qgis.models.store.resolve_model`), or None / ``"auto"``
        to pick an installed model that fits the inputs
        (:func:`csakd_qgis.models.store.auto_select`; for ``"teacher"`` also
        the ``<name>.teacher.safetensors`` saved beside a fitting student,
        :func:`csakd_qgis.models.files.teacher_path_for`).
    device, precision:
        See :class:`NetworkMethod` (``precision`` is torch-only; the
        onnxruntime backend takes its CPU threads from torch's setting, see
        :class:`~csakd_qgis.models.onnx_runtime.OnnxNetworkMethod`).
    scale:
        HR/LR ratio of the inputs; required for bicubic and for a bare
        module; checked against a checkpoint's card.
    lr_bands, msi_bands, msi_wavelengths:
        The LR-HSI's band metadata, the MSI band count and the MSI centre
        wavelengths (nm), used to select and check a model.
    backend:
        For networks: ``"torch"``, ``"onnxruntime"`` or ``"auto"``
        (onnxruntime for an ``.onnx`` model, and for a checkpoint on the CPU
        when onnx and onnxruntime are installed; else torch); see the module
        docstring.  Bicubic runs with torch only.

    Raises
    ------
    InputError
        Unknown method or backend, missing scale, an ``.onnx`` model with
        backend ``"torch"``, onnxruntime asked for bicubic or a bare module.
    CheckpointError, ModelMismatchError
        The model cannot be found or loaded, or its role, bands or scale do
        not fit the inputs (the model store's message when nothing fits).
    DependencyError
        The onnxruntime backend is needed but onnx/onnxruntime are not installed.
    """
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    if method not in NETWORKS + ("bicubic",):
        raise InputError(f"method {method!r} is not built here; use one of {', '.join(NETWORKS)} or bicubic "
                         "(the others are fitted on the scene by csakd_qgis.fusion.plan.prepare)")
    runner = _backend(backend, model, method, device)
    if method == "bicubic":
        if runner == "onnxruntime":
            raise InputError("method 'bicubic' is not a network and runs with torch only; "
                             "use backend 'auto' or 'torch'")
        if scale is None:
            raise InputError("method 'bicubic' needs the scale (HR/LR pixel-size ratio)")
        return BicubicMethod(scale)
    device = torch.device(device)
    if runner == "onnxruntime":
        return _onnx_method(model, method, device, lr_bands, msi_bands, msi_wavelengths, scale)
    network, card = _load_network(model, method, device, lr_bands, msi_bands, msi_wavelengths, scale)
    if card is None:
        cfg = getattr(network, "cfg", None)
        scale = int(cfg.scale) if cfg is not None else scale
        if scale is None:
            raise InputError("a model given as a torch module needs the scale (HR/LR pixel-size ratio)")
        return NetworkMethod(network, scale=scale, device=device, precision=precision,
                             name=None if method == "csakd" else method,
                             model_name=type(network).__name__)
    return NetworkMethod(network, scale=card.scale, device=device, precision=precision, name=card.role,
                         model_name=card.name, card=card)
