"""Multiply-add (MAC) and parameter counts of a network on given input shapes.

:func:`count_macs` runs one forward pass with hooks on every
``nn.Conv2d`` and ``nn.Linear`` and on modules that report their own
matrix products through a ``matmul_macs(pixels)`` method (the cross
attention of :mod:`csakd_qgis.models.fusion`).  Element-wise operations,
activations and resampling are not counted.
"""

from __future__ import annotations

from typing import Any, Sequence, Tuple

import torch
from torch import nn


def _conv_macs(module: nn.Conv2d, output: torch.Tensor) -> int:
    kh, kw = module.kernel_size
    return output.numel() * (module.in_channels // module.groups) * kh * kw


def count_macs(model: nn.Module, lr_shape: Sequence[int], msi_shape: Sequence[int]) -> int:
    """Multiply-adds of one forward pass of ``model(lr_hsi, hr_msi)``.

    Parameters
    ----------
    model : nn.Module
        A fusion network taking ``(lr_hsi, hr_msi)``.
    lr_shape, msi_shape : sequence of int
        ``(B, C, h, w)`` and ``(B, m, h*s, w*s)`` of the inputs (zeros are
        fed, on the model's device, without gradients).

    Returns
    -------
    int
        Total multiply-adds over the batch.
    """
    total = [0]

    def conv_hook(module: nn.Conv2d, _inputs: Tuple[Any, ...], output: torch.Tensor) -> None:
        total[0] += _conv_macs(module, output)

    def linear_hook(module: nn.Linear, _inputs: Tuple[Any, ...], output: torch.Tensor) -> None:
        total[0] += output.numel() * module.in_features

    def attention_hook(module: Any, inputs: Tuple[torch.Tensor, ...], _output: Any) -> None:
        b, _, height, width = inputs[0].shape
        total[0] += b * module.matmul_macs(height * width)

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
        elif hasattr(module, "matmul_macs"):
            handles.append(module.register_forward_hook(attention_hook))
    param = next(model.parameters())
    try:
        with torch.no_grad():
            model(torch.zeros(tuple(lr_shape), device=param.device, dtype=param.dtype),
                  torch.zeros(tuple(msi_shape), device=param.device, dtype=param.dtype))
    finally:
        for handle in handles:
            handle.remove()
    return total[0]


def count_parameters(model: nn.Module) -> int:
    """Number of registered parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())
