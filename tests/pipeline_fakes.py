"""In-memory stand-ins for the pipeline's input pair and output sink, shared by the pipeline tests."""

import numpy as np


class ArraySource:
    """A ``PairSource`` over in-memory ``(C, H, W)`` arrays; every pixel valid."""

    def __init__(self, lr, msi):
        self.lr, self.msi = lr, msi

    def _cut(self, array, w):
        part = array[:, w.row_off:w.row_off + w.height, w.col_off:w.col_off + w.width]
        return part, np.ones(part.shape[1:], bool)

    def read_lr(self, window):
        return self._cut(self.lr, window)

    def read_msi(self, window):
        return self._cut(self.msi, window)


class RecordingSink:
    """A ``Sink`` that stores float32 values into ``out`` ``(C, H, W)`` and records each window as
    ``(col_off, row_off, width, height)``."""

    def __init__(self, shape):
        self.out = np.full(shape, np.nan, np.float32)
        self.windows = []

    def encode(self, data):
        return np.asarray(data, np.float32)

    def write_stored(self, stored, window):
        self.windows.append((int(window.col_off), int(window.row_off), int(window.width), int(window.height)))
        self.out[:, window.row_off:window.row_off + window.height,
                 window.col_off:window.col_off + window.width] = stored
