"""Checkpoints: one ``.safetensors`` file holding weights and the model card.

File layout (the safetensors format): 8 bytes little-endian header length N,
N bytes of JSON header, then the raw tensor bytes.  The header's
``__metadata__`` (str -> str) holds the :class:`~csakd_qgis.models.card.ModelCard`
as JSON under the key :data:`CARD_KEY`, so :func:`read_card` reads only the
header and the file is the single thing to share.  No sidecar is written;
``csakd models --card FILE`` prints the card.

Security properties
-------------------
* Nothing here unpickles.  A pickle, a PyTorch zip checkpoint (``.pth``,
  ``.pt``, ``.ckpt``) or anything else that is not a safetensors file is
  refused with :class:`~csakd_qgis.errors.CheckpointError`; the authors'
  checkpoints go through ``csakd convert-original``, which uses
  ``torch.load(weights_only=True)``.
* The header is validated before any large allocation: its length is capped
  at :data:`MAX_HEADER_BYTES`, every tensor's byte range must lie inside the
  file and match its dtype and shape.
* ``weights_sha256`` in the card is checked against the tensors on load, and
  the state dict is loaded strictly after a by-name comparison of keys and
  shapes against the network the card's config builds.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Mapping, Optional, Tuple, Union

import torch

from csakd_qgis.errors import CheckpointError
from csakd_qgis.models.card import ModelCard

if TYPE_CHECKING:
    from csakd_qgis.models.config import ModelConfig

#: Metadata key of the JSON model card in the safetensors header.
CARD_KEY = "csakd_card"

#: Largest header accepted (bytes); real cards and headers are a few hundred kB.
MAX_HEADER_BYTES = 100 * 1024 * 1024

#: Bytes per element of the safetensors dtypes this project writes or reads.
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
               "U8": 1, "BOOL": 1}

_PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".pkl", ".pickle", ".bin", ".tar")

PathLike = Union[str, "os.PathLike[str]"]


def _not_ours(path: Path, why: str) -> CheckpointError:
    return CheckpointError(
        f"{path} is not a csakd model file ({why}). csakd only loads its own .safetensors format, "
        "which cannot run code when opened; if this is one of the CSAKD authors' PyTorch checkpoints, "
        f"convert it once with: csakd convert-original {path} OUT.safetensors"
    )


def _diagnose(path: Path, head: bytes, n: int, size: int) -> str:
    """Say why a file that failed to parse as safetensors is not one."""
    if head[:2] == b"PK" or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5) \
            or path.suffix.lower() in _PICKLE_SUFFIXES:
        return "it is a PyTorch/pickle file, which can run code when loaded"
    if n < 0:
        return "it is shorter than a safetensors header"
    if n > MAX_HEADER_BYTES or 8 + n > size:
        return f"its header claims {n} bytes, the file has {size}"
    return "its header is not JSON"


def read_header(path: PathLike) -> Tuple[Dict[str, dict], Dict[str, str], int]:
    """Read and validate the safetensors header without touching the tensor bytes.

    Parameters
    ----------
    path:
        The checkpoint file.

    Returns
    -------
    (tensors, metadata, data_start)
        ``tensors`` maps each key to ``{"dtype", "shape", "data_offsets"}``
        (offsets relative to ``data_start``), ``metadata`` is the
        ``__metadata__`` dict and ``data_start`` = 8 + header length.

    Raises
    ------
    CheckpointError
        When the file is missing, a pickle / zip, has an oversized header or a
        header whose tensors do not fit the file.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        with open(p, "rb") as fh:
            head = fh.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            raw = fh.read(n) if 0 <= n <= MAX_HEADER_BYTES and 8 + n <= size else None
    except FileNotFoundError as exc:
        raise CheckpointError(f"model file {p} does not exist") from exc
    except IsADirectoryError as exc:
        raise CheckpointError(f"model file {p} is a folder, not a .safetensors file") from exc
    try:
        header = json.loads(raw.decode("utf-8")) if raw is not None else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if header is None:
        raise _not_ours(p, _diagnose(p, head, n, size))
    if not isinstance(header, dict):
        raise _not_ours(p, "its header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{p}: the safetensors metadata must map strings to strings")
    data_len = size - 8 - n
    for key, spec in header.items():
        try:
            dtype, shape, (begin, end) = spec["dtype"], spec["shape"], spec["data_offsets"]
            count = 1
            for dim in shape:
                if int(dim) < 0:
                    raise ValueError("negative dimension")
                count *= int(dim)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{p}: tensor {key!r} has a malformed header entry") from exc
        if dtype not in DTYPE_BYTES:
            raise CheckpointError(f"{p}: tensor {key!r} has unsupported dtype {dtype!r}")
        if not (0 <= begin <= end <= data_len) or end - begin != count * DTYPE_BYTES[dtype]:
            raise CheckpointError(
                f"{p}: tensor {key!r} claims bytes {begin}..{end} for shape {shape} {dtype}, but the file "
                f"holds {data_len} data bytes; the file is truncated or damaged"
            )
    return header, metadata, 8 + n


def read_card(path: PathLike) -> ModelCard:
    """Read only the model card of a checkpoint (no tensor is loaded).

    Raises
    ------
    CheckpointError
        When the file is not a csakd checkpoint, has no card, or the card is malformed.
    """
    _, metadata, _ = read_header(path)
    if CARD_KEY not in metadata:
        raise CheckpointError(
            f"{path} is a safetensors file without a csakd model card; it was not written by csakd "
            "(use csakd convert-original for the authors' weights)"
        )
    return ModelCard.from_json(metadata[CARD_KEY])


def weights_digest(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the tensors in sorted key order.

    Each tensor contributes its key (UTF-8), dtype, shape and its raw
    little-endian bytes (contiguous, row-major), so a renamed, reshaped or
    altered tensor changes the digest.
    """
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().to("cpu").contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(path: PathLike, model: torch.nn.Module, card: ModelCard) -> ModelCard:
    """Write ``model``'s weights and ``card`` to one ``.safetensors`` file, atomically.

    The tensors are written to a temporary file beside ``path`` which then
    replaces ``path`` (``os.replace``), so a crash never leaves a half file.

    Parameters
    ----------
    path:
        Destination, normally ``*.safetensors``; its folder must exist.
    model:
        The network; its ``state_dict()`` is saved (CPU copies).
    card:
        The model card; ``weights_sha256`` is recomputed.

    Returns
    -------
    ModelCard
        The card as written (with the digest).
    """
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    card = replace(card, weights_sha256=weights_digest(state))
    dest = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent or ".")
    os.close(fd)
    try:
        save_file(state, tmp, metadata={CARD_KEY: card.to_json()})
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return card


def read_state(path: PathLike) -> Tuple[Dict[str, torch.Tensor], ModelCard]:
    """Load the tensors (CPU) and card of a checkpoint after validating the header and digest."""
    from safetensors.torch import load_file

    card = read_card(path)
    try:
        state = load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own SafetensorError type
        raise CheckpointError(f"{path}: the weights could not be read ({exc})") from exc
    digest = weights_digest(state)
    if card.weights_sha256 and digest != card.weights_sha256:
        raise CheckpointError(
            f"{path}: the weights do not match the digest in the model card (file altered or damaged); "
            "download or export the model again"
        )
    return state, card


def check_state(state: Mapping[str, torch.Tensor], model: torch.nn.Module, source: str) -> None:
    """Compare a state dict with ``model``'s by name and shape.

    Raises
    ------
    CheckpointError
        Listing missing keys, unexpected keys and shape mismatches.
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in sorted(set(state) & set(expected)) if state[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if items:
                shown = ", ".join(items[:8]) + (f" (+{len(items) - 8} more)" if len(items) > 8 else "")
                parts.append(f"{label}: {shown}")
        raise CheckpointError(
            f"{source}: the weights do not fit the network its card describes ({'; '.join(parts)}); "
            "the file was edited or written by an incompatible release"
        )


def card_config(card: ModelCard, source: str) -> ModelConfig:
    """The card's :class:`~csakd_qgis.models.ModelConfig`; :class:`CheckpointError` naming ``source`` when invalid."""
    from csakd_qgis.models import ModelConfig

    try:
        return ModelConfig.from_dict(card.config)
    except (TypeError, ValueError, KeyError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{source}: the model card's config is not valid ({exc})") from exc


def load_checkpoint(path: PathLike, device: Union[str, torch.device] = "cpu"
                    ) -> Tuple[torch.nn.Module, ModelCard]:
    """Build the network from the card's config and load its weights strictly.

    Parameters
    ----------
    path:
        A csakd ``.safetensors`` checkpoint.
    device:
        Where to put the model (``"cpu"``, ``"cuda"``, ...).

    Returns
    -------
    (model, card)
        ``model`` in eval mode on ``device``.

    Raises
    ------
    CheckpointError
        Not a csakd file (pickles are refused), malformed card, digest or
        key/shape mismatch.
    """
    state, card = read_state(path)
    from csakd_qgis.models import build_model

    model = build_model(card_config(card, str(path)))
    check_state(state, model, str(path))
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), card


def save_optimizer_state(path: PathLike, optimizers: Mapping[str, torch.optim.Optimizer],
                         scalars: Mapping[str, object],
                         modules: Optional[Mapping[str, torch.nn.Module]] = None) -> None:
    """Save optimiser states (and helper modules) for resuming, without pickle.

    Tensors go into a safetensors file as ``<name>/state/<param index>/<key>``
    (and ``module/<name>/<key>`` for ``modules``, e.g. the KD feature adapter);
    everything else (param groups, non-tensor state, ``scalars`` such as the
    step count) into its JSON metadata under ``csakd_optim``.
    """
    from safetensors.torch import save_file

    tensors: Dict[str, torch.Tensor] = {}
    saved: Dict[str, object] = {}
    meta: Dict[str, object] = {"scalars": dict(scalars), "optimizers": saved}
    for name, opt in optimizers.items():
        sd = opt.state_dict()
        plain: Dict[str, Dict[str, object]] = {}
        for idx, entry in sd["state"].items():
            for key, value in entry.items():
                if torch.is_tensor(value):
                    tensors[f"{name}/state/{idx}/{key}"] = value.detach().to("cpu").contiguous().clone()
                else:
                    plain.setdefault(str(idx), {})[key] = value
        saved[name] = {"param_groups": sd["param_groups"], "plain": plain}
    for name, module in (modules or {}).items():
        for key, value in module.state_dict().items():
            tensors[f"module/{name}/{key}"] = value.detach().to("cpu").contiguous().clone()
    dest = Path(path)
    tmp = dest.with_name(f".{dest.name}.partial")
    try:
        save_file(tensors, str(tmp), metadata={"csakd_optim": json.dumps(meta)})
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_optimizer_state(path: PathLike, optimizers: Mapping[str, torch.optim.Optimizer],
                         modules: Optional[Mapping[str, torch.nn.Module]] = None) -> Dict[str, object]:
    """Restore what :func:`save_optimizer_state` wrote; return its ``scalars``.

    Raises
    ------
    CheckpointError
        When the file is not an optimiser state or does not fit ``optimizers``.
    """
    from safetensors.torch import load_file

    _, metadata, _ = read_header(path)
    if "csakd_optim" not in metadata:
        raise CheckpointError(f"{path} is not a csakd optimiser state")
    meta = json.loads(metadata["csakd_optim"])
    tensors = load_file(str(path), device="cpu")
    try:
        for name, opt in optimizers.items():
            saved = meta["optimizers"][name]
            state: Dict[int, Dict[str, object]] = {}
            for key, value in tensors.items():
                parts = key.split("/")
                if parts[0] == name and parts[1] == "state":
                    state.setdefault(int(parts[2]), {})[parts[3]] = value
            for idx, entry in saved["plain"].items():
                state.setdefault(int(idx), {}).update(entry)
            opt.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
        for name, module in (modules or {}).items():
            prefix = f"module/{name}/"
            module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    except (KeyError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path}: the optimiser state does not fit this run ({exc}); resume with the same mode and preset"
        ) from exc
    return dict(meta["scalars"])
