"""Training scenes and random patch sampling with consistent augmentation.

A :class:`Scene` is one co-registered training triple in normalised units:

* ``lr``  (C, h, w) float32, the LR-HSI divided by its robust level;
* ``msi`` (m, h*s, w*s) float32, the HR-MSI divided by its own level;
* ``ref`` (C, h*s, w*s) float32, the target divided by the LR-HSI's level;
* ``valid`` (h*s, w*s) bool, True where all three are valid.

:class:`PatchSampler` draws HR patches of ``patch`` x ``patch`` pixels
(``patch`` a multiple of the scale ``s``) at LR-aligned positions, so the LR
patch is exactly the ``patch/s`` block under it, and applies the same random
flip and 90-degree rotation to LR, MSI and reference.  Only windows free of
invalid pixels are drawn (found once, up front, with a summed-area table).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

from csakd_qgis.errors import InputError


@dataclass(frozen=True)
class Scene:
    """One normalised training triple (see module docstring for shapes)."""

    lr: np.ndarray
    msi: np.ndarray
    ref: np.ndarray
    valid: np.ndarray
    scale: int

    def __post_init__(self) -> None:
        c, h, w = self.lr.shape
        s = self.scale
        if self.msi.shape[1:] != (h * s, w * s) or self.ref.shape != (c, h * s, w * s) \
                or self.valid.shape != (h * s, w * s):
            raise InputError(
                f"training scene shapes do not agree with scale {s}: LR {self.lr.shape}, "
                f"MSI {self.msi.shape}, reference {self.ref.shape}, mask {self.valid.shape}"
            )

    @property
    def hr_shape(self) -> Tuple[int, int]:
        """(H, W) of the HR grid."""
        return self.ref.shape[1], self.ref.shape[2]


def augment(arrays: Sequence[np.ndarray], rotations: int, flip: bool) -> List[np.ndarray]:
    """Apply the same rotation by ``rotations`` x 90 degrees and optional left-right flip.

    Each array is (..., H, W); the last two axes are spatial.  Returns
    contiguous copies.
    """
    out = []
    for a in arrays:
        b = np.rot90(a, k=rotations, axes=(-2, -1))
        if flip:
            b = b[..., ::-1]
        out.append(np.ascontiguousarray(b))
    return out


def valid_origins(valid: np.ndarray, patch: int, scale: int) -> np.ndarray:
    """LR (row, col) origins of every ``patch`` x ``patch`` HR window of ``valid`` (H, W) that is all True.

    Windows start at multiples of ``scale`` (LR-aligned).  Uses a summed-area
    table of the invalid pixels, so it costs O(H W).  Returns ``(N, 2)`` int64.
    """
    bad = np.pad((~valid).astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    h, w = valid.shape
    rows = np.arange(0, h - patch + 1, scale)
    cols = np.arange(0, w - patch + 1, scale)
    r, c = np.meshgrid(rows, cols, indexing="ij")
    count = bad[r + patch, c + patch] - bad[r, c + patch] - bad[r + patch, c] + bad[r, c]
    ok = count == 0
    return np.stack([r[ok] // scale, c[ok] // scale], axis=1)


class PatchSampler:
    """Random, augmented patches from a list of scenes.

    Parameters
    ----------
    scenes:
        Training scenes, all with the same band counts and scale.
    patch:
        HR patch size in pixels; a positive multiple of the scale that fits every scene.
    seed:
        Seed of the sampler's own generator (deterministic sampling).
    """

    def __init__(self, scenes: Sequence[Scene], patch: int, seed: int = 0):
        if not scenes:
            raise InputError("no training scenes were given")
        s = scenes[0].scale
        if patch <= 0 or patch % s:
            raise InputError(f"patch size {patch} must be a positive multiple of the scale {s}")
        for i, sc in enumerate(scenes):
            if min(sc.hr_shape) < patch:
                raise InputError(
                    f"training scene {i} ({sc.hr_shape[0]}x{sc.hr_shape[1]} HR pixels) is smaller than "
                    f"the patch size {patch}; use a smaller --patch or a larger scene"
                )
        self.scenes = list(scenes)
        self.patch = patch
        self.scale = s
        self.rng = np.random.default_rng(seed)
        self.origins = [valid_origins(sc.valid, patch, s) for sc in self.scenes]
        self.usable = [k for k, o in enumerate(self.origins) if len(o)]
        if not self.usable:
            raise InputError(
                f"no {patch}x{patch} patch of the training scenes is free of nodata; the scenes are mostly "
                "nodata, or the patch size is too large for their valid area"
            )

    def _one(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        s, p = self.scale, self.patch
        q = p // s
        k = self.usable[int(self.rng.integers(len(self.usable)))]
        sc, origins = self.scenes[k], self.origins[k]
        i, j = (int(v) for v in origins[int(self.rng.integers(len(origins)))])
        lr = sc.lr[:, i:i + q, j:j + q]
        msi = sc.msi[:, i * s:i * s + p, j * s:j * s + p]
        ref = sc.ref[:, i * s:i * s + p, j * s:j * s + p]
        rotations = int(self.rng.integers(4))
        flip = bool(self.rng.integers(2))
        lr, msi, ref = augment((lr, msi, ref), rotations, flip)
        return lr, msi, ref

    def batch(self, size: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``size`` patches: LR (B, C, p/s, p/s), MSI (B, m, p, p), reference (B, C, p, p), float32."""
        items = [self._one() for _ in range(size)]
        return tuple(np.stack([it[k] for it in items]).astype(np.float32, copy=False) for k in range(3))


def fill_empty_bands(cube: np.ndarray) -> np.ndarray:
    """Set bands with no finite value at all (bad bands delivered as nodata, e.g. EnMAP's) to 0.

    ``cube`` is ``(C, H, W)``; a copy is returned.  Such bands carry no
    information, so they must not make every pixel invalid; the networks
    learn to output 0 there and the engine writes them as nodata.
    """
    out = np.array(cube, dtype=np.float64)
    empty = ~np.isfinite(out).any(axis=(1, 2))
    out[empty] = 0.0
    return out

