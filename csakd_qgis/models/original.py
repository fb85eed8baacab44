"""Load the CSAKD authors' checkpoints (paper mode).

The authors publish ``.pth`` state dicts of their ``Teacher`` and ``Student``
wrappers (keys ``decoder.*``).  :func:`load_original` reads one with
``torch.load(..., weights_only=True)`` (no arbitrary unpickling), infers the
configuration from the tensor shapes alone (:func:`infer_config`), builds the
paper-mode :class:`~csakd_qgis.models.dts.DTSNet` and loads strictly.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping, Optional, Tuple, Union, cast

import torch

from csakd_qgis.errors import CheckpointError
from csakd_qgis.models.config import ModelConfig
from csakd_qgis.models.dts import DTSNet

#: Prefixes added by ``torch.compile`` and ``nn.DataParallel``.
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")
#: Keys under which training scripts commonly nest the state dict.
_NESTING_KEYS = ("state_dict", "model", "model_state_dict", "net", "params")
_STREAMS = ("hm", "mh", "h", "m")

StateDict = Mapping[str, torch.Tensor]


def _unwrap(obj: object, origin: str) -> StateDict:
    """The tensor mapping inside a loaded checkpoint object."""
    if isinstance(obj, Mapping):
        for key in _NESTING_KEYS:
            if isinstance(obj.get(key), Mapping):
                return _unwrap(obj[key], origin)
        if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
            return obj
    raise CheckpointError(f"{origin} is not a CSAKD state dict (a mapping of parameter names to "
                          f"tensors, possibly under one of {list(_NESTING_KEYS)}); got {type(obj).__name__}")


def normalise_keys(state_dict: StateDict) -> dict:
    """Strip ``_orig_mod.`` / ``module.`` prefixes and add ``decoder.`` where missing."""
    out = {}
    for key, value in state_dict.items():
        stripped = True
        while stripped:
            stripped = False
            for prefix in _WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, stripped = key[len(prefix):], True
        if not key.startswith("decoder."):
            key = "decoder." + key
        out[key] = value
    return out


def _shape(sd: StateDict, key: str, origin: str) -> torch.Size:
    if key not in sd:
        raise CheckpointError(f"{origin} lacks '{key}': it is not a CSAKD Teacher/Student state dict")
    return sd[key].shape


def _groups(sd: StateDict, stream: str, nf: int) -> int:
    """Convolution groups of a stream's CLRA blocks (1 when it has none)."""
    key = f"decoder.{stream}feat.0.MFB1.conv1.weight"
    return nf // sd[key].shape[1] if key in sd else 1


def infer_config(state_dict: StateDict, role: Optional[str] = None, origin: str = "state dict") -> ModelConfig:
    """Paper-mode configuration of an original checkpoint, from its shapes alone.

    Parameters
    ----------
    state_dict : mapping of str to torch.Tensor
        Keys as written by the original ``Teacher`` / ``Student`` (after
        :func:`normalise_keys`).
    role : {'teacher', 'student'}, optional
        Shapes cannot tell a teacher from a student whose LR-HSI stream is
        not grouped; by default a grouped LR-HSI stream (the original student
        groups it by ``nf // 2``) means student, otherwise teacher.
    origin : str
        Name of the checkpoint for messages.

    Raises
    ------
    CheckpointError
        If a required key is missing or a layer has a layout the original
        code cannot produce with this package's options.
    """
    sd = state_dict
    nf, bands = _shape(sd, "decoder.hconv1.weight", origin)[:2]
    msi_bands = _shape(sd, "decoder.mconv1.weight", origin)[1]
    blocks = []
    gc = None
    for stream in _STREAMS:
        pattern = re.compile(rf"decoder\.{stream}feat\.(\d+)\.")
        indices = {int(m.group(1)) for m in map(pattern.match, sd) if m}
        if indices != set(range(len(indices))):
            raise CheckpointError(f"{origin}: blocks of stream '{stream}' are not numbered 0..n-1")
        blocks.append(len(indices))
        if indices:
            gc = sd[f"decoder.{stream}feat.0.MFB1.conv1.weight"].shape[0]
    for stream in ("hm", "mh", "m"):
        if _groups(sd, stream, nf) != 1:
            raise CheckpointError(f"{origin}: stream '{stream}' uses grouped convolutions, which this "
                                  "loader does not support (only the LR-HSI stream may be grouped)")
    if _shape(sd, "decoder.fuse.weight", origin)[1] != nf:
        raise CheckpointError(f"{origin}: the head convolution 'fuse' is grouped, which this loader "
                              "does not support")
    lr_groups = _groups(sd, "h", nf)
    if "decoder.fuse_att.weights" in sd:
        fusion = "sigmoid"
    elif "decoder.fuse_att.attention_conv.weight" in sd:
        fusion = "concat"
    elif "decoder.fuse_att.attention_weights.weight" in sd:
        fusion = "csa"
    elif "decoder.fuse_att.query_conv.weight" in sd:
        fusion = "mhca"
    else:
        fusion = "sum"
    if role is None:
        role = "student" if lr_groups > 1 else "teacher"
    return ModelConfig(bands=int(bands), msi_bands=int(msi_bands), scale=4, nf=int(nf),
                       gc=int(gc if gc is not None else nf), blocks=cast(Tuple[int, int, int, int], tuple(blocks)),
                       lr_groups=int(lr_groups), role=role, fusion=fusion, paper_mode=True)


def read_state_dict(path: Union[str, Path]) -> StateDict:
    """Read a ``.pth`` checkpoint safely (``weights_only=True``) and return its state dict.

    Raises
    ------
    CheckpointError
        If the file cannot be read, holds anything but tensors and plain
        containers, or holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist or is not a file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise CheckpointError(f"cannot read checkpoint '{path}' as plain tensors "
                              f"(weights_only=True refuses code objects): {exc}") from exc
    return _unwrap(obj, f"checkpoint '{path}'")


def load_original(source: Union[str, Path, StateDict], role: Optional[str] = None) -> DTSNet:
    """Build the paper-mode network of an original CSAKD checkpoint and load it strictly.

    Parameters
    ----------
    source : path or mapping
        A ``.pth`` file of the authors' ``Teacher`` / ``Student`` (read with
        ``weights_only=True``) or an already loaded state dict, possibly
        nested under ``'state_dict'`` / ``'model'`` and with ``_orig_mod.``
        or ``module.`` prefixes.
    role : {'teacher', 'student'}, optional
        Overrides the role inferred by :func:`infer_config`.

    Returns
    -------
    DTSNet
        The model in eval mode on the CPU; ``model(lr_hsi, hr_msi)`` returns
        ``(hr_hsi, fused_feature)``.

    Raises
    ------
    CheckpointError
        If the source is not a state dict, or its keys or shapes do not match
        the inferred architecture (the message lists the differences).
    """
    if isinstance(source, (str, Path)):
        origin = f"checkpoint '{source}'"
        state_dict = read_state_dict(source)
    else:
        origin = "state dict"
        state_dict = _unwrap(source, origin)
    state_dict = normalise_keys(state_dict)
    model = DTSNet(infer_config(state_dict, role, origin))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state_dict) if expected[k].shape != state_dict[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(f"{origin} does not match the CSAKD architecture inferred from it "
                              f"({model.cfg}): missing keys {missing[:5]}, unknown keys {unexpected[:5]}, "
                              f"wrong shapes {wrong[:5]} (first five of each shown)")
    model.load_state_dict(state_dict, strict=True)
    return model.eval()
