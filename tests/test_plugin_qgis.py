"""The plugin as QGIS sees it: metadata, classFactory, provider registration, the GUI entries."""

import configparser
import importlib
import importlib.util
from pathlib import Path
from unittest import mock

import pytest

pytestmark = pytest.mark.qgis
pytest.importorskip("qgis.core")

ROOT = Path(__file__).resolve().parents[1]
REQUIRED_METADATA = ("name", "qgisMinimumVersion", "description", "about", "version", "author", "email",
                     "repository", "tracker", "homepage", "tags", "icon", "hasProcessingProvider", "license")


def test_metadata_has_every_field_the_plugin_repository_requires():
    parser = configparser.ConfigParser()
    parser.read(ROOT / "metadata.txt", encoding="utf-8")
    general = parser["general"]
    missing = [key for key in REQUIRED_METADATA if not general.get(key, "").strip()]
    assert missing == []
    assert general["qgisMinimumVersion"] == "3.22"
    assert general["hasProcessingProvider"] == "yes"
    assert (ROOT / general["icon"]).is_file()
    import csakd_qgis

    assert general["version"] == csakd_qgis.__version__


def test_class_factory_registers_the_provider_with_fuse():
    from qgis.core import QgsApplication
    from qgis_app import registered_plugin

    registered_plugin()
    provider = QgsApplication.processingRegistry().providerById("csakd")
    assert provider is not None
    assert "fuse" in [alg.name() for alg in provider.algorithms()]
    fuse = QgsApplication.processingRegistry().algorithmById("csakd:fuse")
    assert fuse.shortHelpString().startswith("<p>Fuses a low-resolution hyperspectral image")


def test_gui_adds_menu_and_toolbar_entries_and_unload_removes_them():
    from qgis.core import QgsApplication
    from qgis_app import plugin_package, qgis_app

    qgis_app()
    iface = mock.MagicMock()
    iface.mainWindow.return_value = None
    plugin = plugin_package().classFactory(iface)
    plugin.initGui()
    assert len(plugin.actions) == 1
    iface.addPluginToRasterMenu.assert_called_once()
    iface.addRasterToolBarIcon.assert_called_once()
    plugin.unload()
    iface.removePluginRasterMenu.assert_called_once()
    assert plugin.actions == []
    assert QgsApplication.processingRegistry().providerById("csakd") is not None  # the shared one stays


def test_missing_torch_is_explained_with_install_commands(monkeypatch):
    from qgis_app import plugin_package

    dependencies = importlib.import_module(plugin_package().__name__ + ".algorithms.dependencies")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else real_find_spec(name, *a))
    missing = dependencies.missing_packages()
    assert missing == ["torch"]
    message = dependencies.install_instructions(missing)
    assert "torch" in message.splitlines()[0]
    for platform in ("Debian/Ubuntu", "Windows (OSGeo4W Shell", "macOS"):
        assert platform in message
