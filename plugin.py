"""The plugin object QGIS creates: registers the provider, menu and toolbar entries."""

from qgis.core import Qgis, QgsApplication, QgsMessageLog
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from .algorithms.base import ICON_FILE
from .algorithms.dependencies import install_instructions, missing_packages
from .algorithms.provider import CsakdProvider

MENU = "&CSAKD Fusion"


class CsakdPlugin:
    """Registers the ``csakd`` provider (also for ``qgis_process``) and, in the GUI, a menu and toolbar."""

    def __init__(self, iface):
        self.iface = iface
        self.provider = None
        self.actions = []

    def initProcessing(self):  # noqa: N802
        """Register the provider; QGIS calls this for the desktop and for ``qgis_process``."""
        if self.provider is not None:
            return
        provider = CsakdProvider()
        if QgsApplication.processingRegistry().addProvider(provider):
            self.provider = provider

    def initGui(self):  # noqa: N802
        """Provider, menu/toolbar entry that opens the fuse dialog, and a warning if packages are missing."""
        self.initProcessing()
        action = QAction(QIcon(ICON_FILE), "Fuse hyperspectral and multispectral images…",
                         self.iface.mainWindow())
        action.triggered.connect(self.open_fuse_dialog)
        self.iface.addPluginToRasterMenu(MENU, action)
        self.iface.addRasterToolBarIcon(action)
        self.actions.append(action)
        missing = missing_packages()
        if missing:
            message = install_instructions(missing)
            QgsMessageLog.logMessage(message, "CSAKD Fusion", Qgis.Warning)
            self.iface.messageBar().pushMessage(
                "CSAKD Fusion", message.splitlines()[0] + " See the Log Messages panel (CSAKD Fusion) for the "
                "command to install them.", level=Qgis.Warning, duration=0)

    def open_fuse_dialog(self):
        """Open the Processing dialog of ``csakd:fuse``."""
        import processing

        processing.execAlgorithmDialog("csakd:fuse", {})

    def unload(self):
        """Remove everything :meth:`initGui` / :meth:`initProcessing` added."""
        for action in self.actions:
            self.iface.removePluginRasterMenu(MENU, action)
            self.iface.removeRasterToolBarIcon(action)
        self.actions = []
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None


