"""The CSAKD joint losses for the teacher and the distilled student.

All images are ``(B, C, H, W)`` float tensors in normalised units (each input
divided by its robust level, see :mod:`csakd_qgis.fusion.radiometry`).

Teacher (paper, "joint loss")::

    L_T = SmoothL1(T, Y) + 0.1 * SAM(T, Y) + 0.1 * BW(T, Y)

Student::

    L_S = SmoothL1(S, Y) + 0.1 * SmoothL1(S, T) + 0.1 * BCE(a(F_S), sigmoid(F_T))
          + 0.1 * BW(S, Y) + 0.1 * SAM(S, Y)

with ``Y`` the reference, ``T``/``S`` the teacher's/student's output (``T``
detached), ``F_T``/``F_S`` their fused features (``F_T`` detached), ``a`` the
identity or, when the student has fewer feature channels than the teacher, a
1x1 convolution (:class:`FeatureAdapter`) trained with the student and not
saved with it, and

* ``SAM(X, Y) = 1 - mean over pixels of cos(X_p, Y_p)`` (cosine of the
  spectra, an ``epsilon`` in the denominator);
* ``BW(X, Y) = mean over b, c of  mean_p huber(X - Y) / mean_p(Y^2 + 0.1)``,
  the band-wise error: each band's SmoothL1 (beta 1) error divided by that
  band's mean energy, so dark bands weigh as much as bright ones.  The
  authors' ``BandWiseMSE`` subtracts a constant 0.5 inside the Huber term
  (``0.5 d^2 + relu(d - 1) - 0.5``); the constant does not change gradients
  for ``|d| < 1`` and is dropped here so the loss is zero at a perfect fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

#: Weights of the auxiliary terms (the paper uses 0.1 for each).
AUX_WEIGHT = 0.1


def sam_loss(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``1 - mean cosine`` between the spectra of ``x`` and ``y`` (B, C, H, W); a 0-d tensor."""
    num = (x * y).sum(dim=1)
    den = x.norm(dim=1) * y.norm(dim=1) + eps
    return 1.0 - (num / den).mean()


def bandwise_error(x: torch.Tensor, y: torch.Tensor, offset: float = 0.1) -> torch.Tensor:
    """Band-wise SmoothL1 error of ``x`` vs ``y`` (B, C, H, W); each band divided by mean(y^2 + offset)."""
    energy = (y * y + offset).mean(dim=(2, 3))
    err = F.smooth_l1_loss(x, y, reduction="none", beta=1.0).mean(dim=(2, 3))
    return (err / energy).mean()


class FeatureAdapter(nn.Module):
    """1x1 convolution lifting the student's fused feature to the teacher's channel count.

    Parameters
    ----------
    student_nf, teacher_nf:
        Channel counts of the student's and the teacher's fused features.
        It exists only during KD training; the exported student does not
        contain it.
    """

    def __init__(self, student_nf: int, teacher_nf: int):
        super().__init__()
        self.conv = nn.Conv2d(student_nf, teacher_nf, kernel_size=1, bias=True)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """(B, student_nf, H, W) -> (B, teacher_nf, H, W)."""
        return self.conv(feature)


def _value(t: torch.Tensor) -> float:
    return float(t.detach())


@dataclass(frozen=True)
class LossParts:
    """The total loss and its named terms (floats, for logging)."""

    total: torch.Tensor
    terms: Dict[str, float]


def teacher_loss(out: torch.Tensor, ref: torch.Tensor, aux_weight: float = AUX_WEIGHT) -> LossParts:
    """Compute the teacher joint loss ``SmoothL1 + w*SAM + w*BW`` (also for a student trained alone)."""
    l1 = F.smooth_l1_loss(out, ref)
    sam = sam_loss(out, ref)
    bw = bandwise_error(out, ref)
    total = l1 + aux_weight * sam + aux_weight * bw
    return LossParts(total, {"l1": _value(l1), "sam": _value(sam), "bandwise": _value(bw)})


def student_loss(out: torch.Tensor, ref: torch.Tensor, teacher_out: torch.Tensor,
                 feature: torch.Tensor, teacher_feature: torch.Tensor,
                 adapter: Optional[nn.Module] = None, aux_weight: float = AUX_WEIGHT) -> LossParts:
    """Compute the distilled student joint loss.

    Parameters
    ----------
    out, ref, teacher_out:
        Student output, reference and teacher output, (B, C, H, W).
    feature, teacher_feature:
        Fused features (B, nf_s, H, W) and (B, nf_t, H, W).
    adapter:
        Maps ``feature`` to nf_t channels when nf_s != nf_t (:class:`FeatureAdapter`).
    aux_weight:
        Weight of each auxiliary term (0.1 in the paper).
    """
    teacher_out = teacher_out.detach()
    teacher_feature = teacher_feature.detach()
    if adapter is not None:
        feature = adapter(feature)
    if feature.shape != teacher_feature.shape:
        raise ValueError(
            f"student feature {tuple(feature.shape)} and teacher feature {tuple(teacher_feature.shape)} "
            "differ; pass a FeatureAdapter"
        )
    l1 = F.smooth_l1_loss(out, ref)
    kd_out = F.smooth_l1_loss(out, teacher_out)
    kd_feat = F.binary_cross_entropy_with_logits(feature.float(), torch.sigmoid(teacher_feature.float()))
    bw = bandwise_error(out, ref)
    sam = sam_loss(out, ref)
    total = l1 + aux_weight * (kd_out + kd_feat + bw + sam)
    return LossParts(total, {"l1": _value(l1), "kd_output": _value(kd_out), "kd_feature": _value(kd_feat),
                             "bandwise": _value(bw), "sam": _value(sam)})
