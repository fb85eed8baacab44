"""The ``csakd`` Processing provider: a list of the plugin's algorithms."""

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .base import ICON_FILE
from .coregister import CoregisterAlgorithm
from .evaluate import EvaluateAlgorithm
from .fuse import FuseAlgorithm
from .simulate import SimulateAlgorithm
from .train import TrainAlgorithm

ALGORITHMS = (FuseAlgorithm, CoregisterAlgorithm, TrainAlgorithm, SimulateAlgorithm, EvaluateAlgorithm)


class CsakdProvider(QgsProcessingProvider):
    """Provider id ``csakd``; algorithms are ``csakd:fuse`` and friends."""

    def id(self):
        """Provider id, the prefix of every algorithm id."""
        return "csakd"

    def name(self):
        """Name shown in the Toolbox."""
        return "CSAKD hyperspectral fusion"

    def icon(self):
        """The plugin icon."""
        return QIcon(ICON_FILE)

    def supportedOutputRasterLayerExtensions(self):  # noqa: N802
        """The engine writes tiled, compressed GeoTIFF only."""
        return ["tif"]

    def defaultRasterFileExtension(self):  # noqa: N802
        """GeoTIFF, also for temporary outputs."""
        return "tif"

    def loadAlgorithms(self):  # noqa: N802
        """Register one instance of each algorithm."""
        for algorithm in ALGORITHMS:
            self.addAlgorithm(algorithm())
