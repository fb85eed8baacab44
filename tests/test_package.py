"""The plugin ZIP for desktop users: contents, and loading in a QGIS whose Python lacks torch."""

import subprocess
import textwrap
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.qgis
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def plugin_zip(tmp_path_factory):
    out = subprocess.run(["bash", str(ROOT / "scripts" / "package.sh")], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
    return ROOT / out


def test_zip_holds_the_plugin_and_no_development_files(plugin_zip):
    names = zipfile.ZipFile(plugin_zip).namelist()
    assert all(name.startswith("csakd_fusion/") for name in names)
    for needed in ("metadata.txt", "__init__.py", "plugin.py", "LICENSE", "algorithms/provider.py",
                   "csakd_qgis/fusion/engine.py", "resources/icon.png", "resources/help.yaml"):
        assert f"csakd_fusion/{needed}" in names
    assert not [n for n in names if n.startswith(("csakd_fusion/tests/", "csakd_fusion/.venv/",
                                                   "csakd_fusion/bench/")) or "__pycache__" in n]


def test_plugin_loads_without_torch_and_says_what_to_install(plugin_zip, tmp_path):
    """Debian's /usr/bin/python3 (outside the venv) has QGIS but no torch: the ZIP must still load."""
    if subprocess.run(["/usr/bin/python3", "-c", "import torch"], capture_output=True).returncode == 0:
        pytest.skip("the system Python has torch; cannot show the missing-torch path here")
    zipfile.ZipFile(plugin_zip).extractall(tmp_path)
    script = textwrap.dedent(f"""
        import os, sys
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
        sys.path.append("/usr/share/qgis/python/plugins")
        sys.path.insert(0, {str(tmp_path)!r})
        from qgis.core import QgsApplication, QgsProcessingException, QgsProcessingContext, QgsProcessingFeedback
        QgsApplication.setPrefixPath("/usr", True)
        app = QgsApplication([], False); app.initQgis()
        import csakd_fusion
        plugin = csakd_fusion.classFactory(None)
        plugin.initProcessing()
        alg = QgsApplication.processingRegistry().algorithmById("csakd:fuse")
        print("ALGORITHM", alg is not None)
        try:
            alg.processAlgorithm({{}}, QgsProcessingContext(), QgsProcessingFeedback())
        except QgsProcessingException as exc:
            print("MESSAGE", str(exc).replace(chr(10), " | "))
    """)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "QT_QPA_PLATFORM": "offscreen"}
    result = subprocess.run(["/usr/bin/python3", "-c", script], capture_output=True, text=True, env=env,
                            timeout=120)
    assert "ALGORITHM True" in result.stdout, result.stderr
    message = result.stdout.split("MESSAGE", 1)[1]
    assert "torch" in message and "are missing" in message
    assert "pip install" in message and "OSGeo4W" in message
