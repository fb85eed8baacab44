"""What every CSAKD Processing algorithm shares.

:class:`CsakdAlgorithm` gives ``name``/``displayName``/group, the help text
from ``resources/help.yaml``, ``createInstance`` and :meth:`run_engine`, which
calls an engine function with QGIS feedback wired to the engine's progress and
cancel callbacks and turns engine errors into one clear
``QgsProcessingException`` (never a traceback).
"""

import functools
import os
import traceback

from qgis.core import QgsProcessingAlgorithm, QgsProcessingException
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from .dependencies import PLUGIN_DIR, ensure_engine_importable, install_instructions, missing_packages

HELP_FILE = os.path.join(PLUGIN_DIR, "resources", "help.yaml")
ICON_FILE = os.path.join(PLUGIN_DIR, "resources", "icon.png")


@functools.lru_cache(maxsize=1)
def _help_texts():
    """Help texts keyed by algorithm id, read once from ``resources/help.yaml``."""
    import yaml

    with open(HELP_FILE, encoding="utf-8") as stream:
        return yaml.safe_load(stream)


class CsakdAlgorithm(QgsProcessingAlgorithm):
    """Base class: subclasses set ``ID`` and ``DISPLAY`` and implement the parameters and body."""

    ID = ""
    DISPLAY = ""

    def name(self):
        """Algorithm id inside the ``csakd`` provider."""
        return self.ID

    def displayName(self):  # noqa: N802
        """Name shown in the Toolbox."""
        return self.tr(self.DISPLAY)

    def group(self):
        """Toolbox group."""
        return self.tr("Hyperspectral fusion")

    def groupId(self):  # noqa: N802
        """Toolbox group id."""
        return "fusion"

    def icon(self):
        """The plugin icon."""
        return QIcon(ICON_FILE)

    def shortHelpString(self):  # noqa: N802
        """Help text from ``resources/help.yaml``."""
        return self.tr(_help_texts().get(self.ID, ""))

    def helpUrl(self):  # noqa: N802
        """Link to the README's section on this algorithm."""
        return "https://github.com/csakd-qgis/csakd_fusion#readme"

    def createInstance(self):  # noqa: N802
        """A fresh instance, as Processing requires."""
        return type(self)()

    def tr(self, text):
        """Translate ``text`` in the plugin's context."""
        return QCoreApplication.translate("CsakdFusion", text)

    @staticmethod
    def engine():
        """Import and return the engine package, or raise a message naming what to install."""
        missing = missing_packages()
        if missing:
            raise QgsProcessingException(install_instructions(missing))
        ensure_engine_importable()
        import csakd_qgis

        return csakd_qgis

    def run_engine(self, feedback, function, *args, **kwargs):
        """Call ``function(*args, reporter=..., **kwargs)`` with feedback wired in.

        Engine errors become a ``QgsProcessingException`` carrying the engine's
        message; a cancel becomes one that says nothing was written.
        """
        self.engine()
        from csakd_qgis.errors import Cancelled, CsakdError
        from csakd_qgis.progress import Reporter

        state = {"message": None}

        def progress(fraction, message):
            feedback.setProgress(100.0 * fraction)
            if message and message != state["message"]:
                state["message"] = message
                feedback.setProgressText(message)

        reporter = Reporter(progress=progress, is_cancelled=feedback.isCanceled)
        try:
            return function(*args, reporter=reporter, **kwargs)
        except Cancelled:
            raise QgsProcessingException(self.tr("Cancelled: nothing was written.")) from None
        except CsakdError as exc:
            raise QgsProcessingException(str(exc)) from None
        except MemoryError:
            raise QgsProcessingException(
                self.tr("Out of memory: choose a smaller tile size or batch size.")
            ) from None
        except Exception as exc:  # a bug, not a bad input: one message, the traceback only in debug info
            feedback.pushDebugInfo(traceback.format_exc())
            raise QgsProcessingException(
                f"Unexpected error in CSAKD Fusion ({type(exc).__name__}: {exc}). "
                "Please report it with the Processing log."
            ) from None
