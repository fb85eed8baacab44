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
* :class:`BicubicMethod`: bicubic upsampling of the LR-HSI (pixel centres
  aligned, ``align_corners=False``); ignores the MSI.  Needs 2 LR pixels of
  context.
* :class:`GSAMethod`: component substitution (Gram-Schmidt adaptive, GSA)
  with the mean MSI band as the sharpening image.  Its coefficients are fitted
  once on a sample of the whole scene (:meth:`GSAMethod.fit`) and then applied
  per tile, so tiles cannot seam.
* :class:`NetworkMethod`: a torch model whose ``forward(lr, msi)`` returns
  ``(hr, fused_feature)`` (the CSAKD teacher or student).
"""

from __future__ import annotations

from typing import Optional, Protocol, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError, ModelMismatchError
from .raster_io import BandInfo

METHODS = ("csakd", "student", "teacher", "bicubic", "gsa")

#: LR pixels of context read around each tile for a network whose card gives none.
DEFAULT_NETWORK_HALO = 8


class FusionMethod(Protocol):
    """What the tiled engine needs from a fusion method."""

    name: str
    scale: int
    halo: int

    def predict(self, lr: np.ndarray, msi: np.ndarray) -> np.ndarray:
        """Fuse ``lr (B, C, h, w)`` and ``msi (B, m, h*s, w*s)`` into ``(B, C, h*s, w*s)``, float32."""


def bicubic_upsample(lr: np.ndarray, scale: int) -> np.ndarray:
    """Bicubic upsampling of ``(B, C, h, w)`` float32 by an integer ``scale`` (pixel centres aligned)."""
    with torch.inference_mode():
        out = F.interpolate(torch.from_numpy(np.ascontiguousarray(lr, dtype=np.float32)),
                            scale_factor=scale, mode="bicubic", align_corners=False)
    return out.numpy()


def block_mean(msi: np.ndarray, scale: int) -> np.ndarray:
    """Average ``(..., H, W)`` over non-overlapping ``scale`` x ``scale`` blocks -> ``(..., H/s, W/s)``."""
    *lead, h, w = msi.shape
    return msi.reshape(*lead, h // scale, scale, w // scale, scale).mean(axis=(-3, -1))


class BicubicMethod:
    """Bicubic upsampling of the LR-HSI; the MSI is not used."""

    name = "bicubic"
    halo = 2

    def __init__(self, scale: int) -> None:
        self.scale = int(scale)

    def predict(self, lr: np.ndarray, msi: np.ndarray) -> np.ndarray:
        """See :class:`FusionMethod`."""
        return bicubic_upsample(lr, self.scale)


class GSAMethod:
    """Gram-Schmidt adaptive (GSA) component substitution with scene-wide coefficients.

    With ``P`` the mean of the MSI bands, the fit regresses the block-mean of
    ``P`` on the LR bands (``I = sum_k a_k L_k + a_0``) and sets per-band gains
    ``g_k = cov(L_k, I) / var(I)`` on the LR grid.  Per tile the output is
    ``up(L)_k + g_k (P - sum_j a_j up(L)_j - a_0)``, with ``up`` the bicubic
    upsampling.
    """

    name = "gsa"
    halo = 2

    def __init__(self, scale: int) -> None:
        self.scale = int(scale)
        self.weights: Optional[np.ndarray] = None  # (C + 1,) a_1..a_C, a_0
        self.gains: Optional[np.ndarray] = None  # (C,)

    def fit(self, lr: np.ndarray, msi_lr: np.ndarray) -> GSAMethod:
        """Fit the coefficients on pixel samples of the whole scene.

        Parameters
        ----------
        lr:
            ``(C, N)`` LR-HSI values (normalised), N valid pixels.
        msi_lr:
            ``(m, N)`` MSI averaged over each LR pixel's footprint (same pixels).
        """
        if lr.ndim != 2 or msi_lr.ndim != 2 or lr.shape[1] != msi_lr.shape[1] or lr.shape[1] < lr.shape[0] + 2:
            raise InputError(
                f"GSA needs more valid pixels than bands to fit; got {lr.shape[-1]} pixels for "
                f"{lr.shape[0]} bands (use a larger area or another method)"
            )
        x = np.vstack([lr, np.ones((1, lr.shape[1]))]).astype(np.float64)
        pan = msi_lr.astype(np.float64).mean(axis=0)
        self.weights = np.linalg.lstsq(x.T, pan, rcond=None)[0]
        intensity = self.weights @ x
        centred = intensity - intensity.mean()
        variance = float(centred @ centred)
        if variance <= 0.0:
            raise InputError("GSA cannot be fitted: the scene is spectrally flat (constant intensity)")
        self.gains = (lr - lr.mean(axis=1, keepdims=True)) @ centred / variance
        return self

    def predict(self, lr: np.ndarray, msi: np.ndarray) -> np.ndarray:
        """See :class:`FusionMethod`; :meth:`fit` must have been called."""
        if self.weights is None or self.gains is None:
            raise InputError("GSAMethod.predict called before fit(); fit it on a scene sample first")
        up = bicubic_upsample(lr, self.scale).astype(np.float64)
        intensity = np.einsum("c,bchw->bhw", self.weights[:-1], up) + self.weights[-1]
        detail = msi.astype(np.float64).mean(axis=1) - intensity
        return (up + self.gains[None, :, None, None] * detail[:, None]).astype(np.float32)


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
    amp:
        On CUDA, run under autocast with ``amp_dtype`` (bfloat16 by default);
        ignored elsewhere.
    channels_last:
        Use the channels-last memory format (often faster on GPUs).
    halo:
        LR context per side; None uses :data:`DEFAULT_NETWORK_HALO`.
    name:
        Reported method name (e.g. ``"student"``).
    """

    def __init__(self, model: torch.nn.Module, *, scale: int, device: Union[str, torch.device] = "cpu",
                 amp: bool = False, amp_dtype: torch.dtype = torch.bfloat16, channels_last: bool = False,
                 halo: Optional[int] = None, name: str = "csakd") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.scale = int(scale)
        self.amp = bool(amp) and self.device.type == "cuda"
        self.amp_dtype = amp_dtype
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.halo = DEFAULT_NETWORK_HALO if halo is None else int(halo)
        self.name = name

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        return tensor.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)

    def predict(self, lr: np.ndarray, msi: np.ndarray) -> np.ndarray:
        """See :class:`FusionMethod`."""
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            hr = self.model(self._tensor(lr), self._tensor(msi))[0]
        return hr.float().cpu().numpy()


def _load_network(model, method: str, device: torch.device, lr_bands: Sequence[BandInfo], msi_bands: int,
                  msi_wavelengths: Optional[Sequence[Optional[float]]], scale: Optional[int]):
    """``(module, card or None)`` for a module, a checkpoint path or name, or the auto-selected model."""
    if isinstance(model, torch.nn.Module):
        return model, None
    from .checkpoint import load_checkpoint
    from .model_store import auto_select, mismatches, resolve_model

    if model is None:
        if scale is None or not lr_bands:
            raise InputError("choosing a model needs the inputs' LR-HSI bands and scale")
        path, card = auto_select(lr_bands, msi_bands, msi_wavelengths, scale,
                                 "student" if method == "csakd" else method)
    else:
        path, card = resolve_model(str(model))
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
                    + ". Pick another model (csakd models) or train one for these sensors"
                )
    return load_checkpoint(path, device)


def make_method(method: str = "csakd", model=None, *, device: Union[str, torch.device] = "cpu",
                scale: Optional[int] = None, lr_bands: Sequence[BandInfo] = (), msi_bands: int = 0,
                msi_wavelengths: Optional[Sequence[Optional[float]]] = None, amp: bool = False,
                channels_last: bool = False, halo: Optional[int] = None) -> FusionMethod:
    """Build the fusion method a user asked for.

    Parameters
    ----------
    method:
        ``"csakd"`` (a network: the given model, or the bundled student that
        fits), ``"student"``, ``"teacher"``, ``"bicubic"`` or ``"gsa"``.
    model:
        For networks: a ``torch.nn.Module``, a checkpoint path, a model name
        (resolved by :func:`csakd_qgis.model_store.resolve_model`) or None to
        pick an installed model that fits the inputs
        (:func:`csakd_qgis.model_store.auto_select`).
    device, amp, channels_last, halo:
        See :class:`NetworkMethod`.
    scale:
        HR/LR ratio of the inputs; required for bicubic/GSA and for a bare
        module; checked against a checkpoint's card.
    lr_bands, msi_bands, msi_wavelengths:
        The LR-HSI's band metadata, the MSI band count and the MSI centre
        wavelengths (nm), used to select and check a model.

    Raises
    ------
    InputError
        Unknown method or missing scale.
    CheckpointError, ModelMismatchError
        The model cannot be found or loaded, or its role, bands or scale do
        not fit the inputs.
    """
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    if method in ("bicubic", "gsa"):
        if scale is None:
            raise InputError(f"method {method!r} needs the scale (HR/LR pixel-size ratio)")
        return BicubicMethod(scale) if method == "bicubic" else GSAMethod(scale)
    device = torch.device(device)
    network, card = _load_network(model, method, device, lr_bands, msi_bands, msi_wavelengths, scale)
    if card is None:
        if scale is None:
            raise InputError("a model given as a torch module needs the scale (HR/LR pixel-size ratio)")
        return NetworkMethod(network, scale=scale, device=device, amp=amp, channels_last=channels_last,
                             halo=halo, name=method)
    return NetworkMethod(network, scale=card.scale, device=device, amp=amp, channels_last=channels_last,
                         halo=halo, name=card.name)
