r"""Screenshot of the ``csakd:fuse`` dialog in a real QGIS desktop window (for the README).

Runs inside QGIS (``qgis --code``) on a virtual screen::

    xvfb-run -a -s "-screen 0 1280x900x24" env QGIS_PLUGINPATH=$PWD/.qgis/plugins \\
        PYTHONPATH=$(ls -d .venv/lib/python3*/site-packages) \\
        qgis --nologo --noversioncheck --profiles-path .qgis/profile --code scripts/screenshot_fuse_dialog.py

The dialog is opened as the plugin's menu entry opens it, filled with the
bundled sample, grabbed to ``docs/fuse_dialog.png``, and QGIS quits.
"""

import os

import processing
from qgis.core import QgsApplication
from qgis.PyQt.QtCore import QTimer
from qgis.utils import iface

ROOT = os.getcwd()
SAMPLE = os.path.join(ROOT, "resources", "sample")


def grab_and_quit():
    """Save the dialog's pixels and leave QGIS."""
    DIALOG.grab().save(os.path.join(ROOT, "docs", "fuse_dialog.png"))
    QgsApplication.exit(0)


DIALOG = processing.createAlgorithmDialog("csakd:fuse", {
    "LR_HSI": os.path.join(SAMPLE, "enmap_lr_hsi.tif"),
    "HR_MSI": os.path.join(SAMPLE, "s2_hr_msi.tif"),
    "OUTPUT": os.path.join(ROOT, "out", "fused.tif"),
})
DIALOG.resize(1000, 760)
DIALOG.show()
iface.mainWindow().showMaximized()
QTimer.singleShot(4000, grab_and_quit)
