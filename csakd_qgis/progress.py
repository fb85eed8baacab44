"""Progress and cancellation callbacks shared by the engine, CLI and QGIS.

Engine functions take an optional :class:`Reporter`.  A reporter wraps two
plain callables so that no caller has to know about the other side:

* ``progress(fraction, message)`` with ``fraction`` in ``[0, 1]``;
* ``is_cancelled() -> bool``, polled once per tile, batch or training step.

The QGIS algorithms wire ``QgsProcessingFeedback`` into these, the command
line a text progress bar and Ctrl-C.  :meth:`Reporter.phase` splits the
``[0, 1]`` range into consecutive phases (read, infer, write, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from csakd_qgis.errors import Cancelled

ProgressFn = Callable[[float, str], None]
CancelFn = Callable[[], bool]


@dataclass(frozen=True)
class Reporter:
    """Progress sink and cancel source mapped onto ``[start, end]`` of the caller's range."""

    progress: Optional[ProgressFn] = None
    is_cancelled: Optional[CancelFn] = None
    start: float = 0.0
    end: float = 1.0

    def update(self, fraction: float, message: str = "") -> None:
        """Report ``fraction`` (0..1) of this reporter's phase done; raise if cancelled."""
        self.check()
        if self.progress is not None:
            fraction = min(max(float(fraction), 0.0), 1.0)
            self.progress(self.start + (self.end - self.start) * fraction, message)

    def check(self) -> None:
        """Raise :class:`~csakd_qgis.errors.Cancelled` when the user asked to stop."""
        if self.is_cancelled is not None and self.is_cancelled():
            raise Cancelled("cancelled by the user")

    def phase(self, start: float, end: float) -> Reporter:
        """A child reporter covering ``[start, end]`` (fractions of this one's range)."""
        span = self.end - self.start
        return Reporter(self.progress, self.is_cancelled,
                        self.start + span * start, self.start + span * end)


SILENT = Reporter()
