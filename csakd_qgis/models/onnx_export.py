"""Export fusion networks to ONNX with dynamic batch and tile size, model card included.

The exported graph computes the network's first output (the fused HR-HSI)
from ``lr_hsi (B, C, h, w)`` and ``hr_msi (B, m, h*s, w*s)``, float32, with
``B``, ``h``, ``w`` (and so ``h*s``, ``w*s``) dynamic; names and checks are in
:mod:`csakd_qgis.models.onnx_runtime`.  The model card goes into the ONNX model's
``metadata_props`` under :data:`csakd_qgis.models.checkpoint.CARD_KEY`, as the same
JSON a ``.safetensors`` header carries.  Its ``weights_sha256`` is the source
checkpoint's digest (it names the weights the graph was made from; ONNX
initialisers are folded and renamed, so it is not re-verified on load).

Exporter
--------
torch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``)
is used: it needs only the ``onnx`` package, handles every fusion of
:data:`csakd_qgis.models.config.FUSIONS` (including the running-sum box
filter of ``csa_invariant``: ``CumSum``, ``Range`` and ``Gather`` over the
dynamic sizes) and its graphs match torch to float rounding at tile sizes
other than the traced one.  The torch.export-based exporter, torch's default
since 2.9, needs ``onnxscript`` in addition.

Every export is traced on one size and, unless ``verify=False``, checked
against torch at :data:`VERIFY_SHAPES` (other batch and tile sizes, a
non-square one among them) before the file is published; the file is
written atomically (temporary file, then rename).
"""

from __future__ import annotations

import io
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
import torch

from csakd_qgis.errors import CheckpointError, InputError
from csakd_qgis.models import ModelConfig
from csakd_qgis.models.card import ModelCard
from csakd_qgis.models.checkpoint import CARD_KEY
from csakd_qgis.models.onnx_runtime import LR_INPUT, MSI_INPUT, OUTPUT, OnnxNetworkMethod, import_onnx

#: ONNX operator set written by default (onnxruntime 1.14 and later run it).
DEFAULT_OPSET = 17

#: LR-HSI ``(batch, height, width)`` the graph is traced with: neither square nor batch 1, so no size is baked in.
TRACE_SHAPE = (2, 9, 10)

#: LR-HSI ``(batch, height, width)`` at which an export is compared with torch.
VERIFY_SHAPES = ((1, 7, 7), (3, 12, 5))

#: Largest accepted ``max |onnxruntime - torch|`` on inputs uniform in [0, 1] (normalised reflectance).
PARITY_TOLERANCE = 1e-4

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_onnx` wrote.

    ``parity`` holds ``((batch, h, w), max |onnxruntime - torch|)`` per
    checked LR-HSI shape (empty when not verified); ``seconds`` is the
    wall-clock time of tracing, verification and writing.
    """

    path: str
    card: ModelCard
    opset: int
    bytes: int
    seconds: float
    parity: Tuple[Tuple[Tuple[int, int, int], float], ...]

    def to_dict(self) -> dict:
        """JSON-ready summary (the card by name and role)."""
        return {"path": self.path, "model": self.card.name, "role": self.card.role, "opset": self.opset,
                "bytes": self.bytes, "seconds": self.seconds,
                "parity": [{"shape": list(shape), "max_abs_diff": diff} for shape, diff in self.parity]}


class _FusedOnly(torch.nn.Module):
    """``model(lr, msi)[0]``: the fused HR-HSI without the distillation feature."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, lr_hsi: torch.Tensor, hr_msi: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)``, ``(B, m, h*s, w*s)`` -> ``(B, C, h*s, w*s)``."""
        return self.model(lr_hsi, hr_msi)[0]


def _inputs(card: ModelCard, shape: Tuple[int, int, int], device: torch.device, seed: int
            ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Uniform [0, 1) inputs of LR-HSI ``shape`` ``(batch, h, w)`` for the card's bands and scale."""
    b, h, w = shape
    s = card.scale
    gen = torch.Generator().manual_seed(seed)
    lr = torch.rand((b, card.lr_bands.count, h, w), generator=gen)
    msi = torch.rand((b, card.msi.count, h * s, w * s), generator=gen)
    return lr.to(device), msi.to(device)


def _device(model: torch.nn.Module) -> torch.device:
    return next(iter(model.parameters()), torch.empty(0)).device


def onnx_bytes(model: torch.nn.Module, card: ModelCard, opset: int = DEFAULT_OPSET) -> bytes:
    """Trace ``model`` into a serialised ONNX model carrying ``card``.

    Parameters
    ----------
    model:
        ``forward(lr (B, C, h, w), msi (B, m, h*s, w*s)) -> (hr, ...)``
        float32, for ``C``, ``m``, ``s`` of ``card``; traced in eval mode on
        its own device (its training flag is restored afterwards).
    card:
        The model card to store.
    opset:
        ONNX operator set version.

    Returns
    -------
    bytes
        The ONNX model (inputs ``lr_hsi``, ``hr_msi``, output ``hr_hsi``,
        dynamic batch, height and width).
    """
    onnx = import_onnx()
    buffer = io.BytesIO()
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # shape checks in forward() become trace-time constants (TracerWarning), harmless here because
            # every size they compare is dynamic in the graph; the legacy exporter warns that it is legacy
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            warnings.filterwarnings("ignore", message="The feature will be removed.*")
            # constant folding skips strided Slice nodes (opset >= 10); the graph is correct, only less folded
            warnings.filterwarnings("ignore", message="Constant folding - Only steps=1.*")
            torch.onnx.export(  # the TorchScript exporter also writes to file objects
                _FusedOnly(model), _inputs(card, TRACE_SHAPE, _device(model), seed=0),
                buffer,  # type: ignore[arg-type]
                dynamo=False,
                opset_version=int(opset), input_names=[LR_INPUT, MSI_INPUT], output_names=[OUTPUT],
                dynamic_axes={LR_INPUT: {0: "batch", 2: "lr_height", 3: "lr_width"},
                              MSI_INPUT: {0: "batch", 2: "height", 3: "width"},
                              OUTPUT: {0: "batch", 2: "height", 3: "width"}},
            )
    finally:
        model.train(was_training)
    proto = onnx.load_model_from_string(buffer.getvalue())
    entry = proto.metadata_props.add()
    entry.key, entry.value = CARD_KEY, card.to_json()
    proto.doc_string = f"csakd {card.role} {card.name!r}: {card.description}".strip()
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def parity(data: bytes, model: torch.nn.Module, card: ModelCard
           ) -> Tuple[Tuple[Tuple[int, int, int], float], ...]:
    """``max |onnxruntime - torch|`` of the first output at each of :data:`VERIFY_SHAPES` (CPU, inputs in [0, 1))."""
    runner = OnnxNetworkMethod(data, device="cpu")
    cpu = torch.device("cpu")
    was_training = model.training
    model.eval()
    results = []
    try:
        for i, shape in enumerate(VERIFY_SHAPES):
            lr, msi = _inputs(card, shape, cpu, seed=1 + i)
            with torch.no_grad():
                expected = model(lr.to(_device(model)), msi.to(_device(model)))[0].float().cpu().numpy()
            got = runner.predict(lr.numpy(), msi.numpy())
            results.append((shape, float(np.abs(got - expected).max())))
    finally:
        model.train(was_training)
    return tuple(results)


def _source(model: Union[torch.nn.Module, PathLike], card: Optional[ModelCard]) -> Tuple[torch.nn.Module, ModelCard]:
    """The module and card to export from a module (+ card) or a checkpoint path or model name (+ card)."""
    if not isinstance(model, torch.nn.Module):
        from csakd_qgis.models.checkpoint import load_checkpoint
        from csakd_qgis.models.store import resolve_model

        model, file_card = load_checkpoint(resolve_model(os.fspath(model))[0], "cpu")
        card = card or file_card
    if card is None:
        raise InputError("exporting a torch module needs its model card (card=...); "
                         "or pass the .safetensors checkpoint instead")
    cfg = getattr(model, "cfg", None)
    if cfg is not None and ModelConfig.from_dict(card.config) != cfg:
        raise InputError(f"the card {card.name!r} describes another network than the module "
                         f"(card config {dict(card.config)}, module config {cfg.to_dict()})")
    return model, card


def export_onnx(model: Union[torch.nn.Module, PathLike], output_path: PathLike, *, card: Optional[ModelCard] = None,
                opset: int = DEFAULT_OPSET, verify: bool = True, overwrite: bool = False) -> ExportReport:
    """Export a fusion network to one ``.onnx`` file with its model card.

    Parameters
    ----------
    model:
        A csakd ``.safetensors`` checkpoint path or installed model name
        (:func:`csakd_qgis.models.store.resolve_model`), or a torch module
        (then ``card`` is required and must describe its config).
    output_path:
        Destination file, normally ``*.onnx``; its folder must exist.
    card:
        Model card to store; default: the checkpoint's.
    opset:
        ONNX operator set version (:data:`DEFAULT_OPSET`).
    verify:
        Compare onnxruntime with torch at :data:`VERIFY_SHAPES` and refuse
        to write when they differ by more than :data:`PARITY_TOLERANCE`.
    overwrite:
        Replace an existing ``output_path``.

    Returns
    -------
    ExportReport

    Raises
    ------
    InputError
        ``output_path`` exists without ``overwrite``, its folder is missing,
        or a module comes without a fitting card.
    CheckpointError
        The checkpoint cannot be loaded, or the export differs from torch.
    DependencyError
        ``onnx`` (or, to verify, ``onnxruntime``) is not installed.
    """
    started = time.perf_counter()
    dest = Path(output_path)
    if dest.exists() and not overwrite:
        raise InputError(f"{dest} exists; choose another name or allow overwriting (--overwrite)")
    if not dest.parent.is_dir():
        raise InputError(f"cannot write {dest}: folder {dest.parent} does not exist; create it first")
    module, card = _source(model, card)
    data = onnx_bytes(module, card, opset)
    checked = parity(data, module, card) if verify else ()
    worst = max((diff for _, diff in checked), default=0.0)
    if worst > PARITY_TOLERANCE:
        raise CheckpointError(
            f"the ONNX export of {card.name!r} differs from torch by up to {worst:.3g} (tolerance "
            f"{PARITY_TOLERANCE:g}) at LR shapes {[shape for shape, _ in checked]}; nothing was written. "
            f"Try another opset (now {opset}) or use the torch backend"
        )
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return ExportReport(str(dest), card, int(opset), len(data), time.perf_counter() - started, checked)
