"""The set-up script's choices for the two Debian releases QGIS machines run (12: Python 3.11, 13: 3.13)."""

import os
import subprocess
from pathlib import Path

import pytest

SETUP = Path(__file__).resolve().parents[1] / "scripts" / "setup.sh"


def plan(**env):
    done = subprocess.run(["bash", str(SETUP)], env={**os.environ, "CSAKD_SETUP_PLAN": "1", **env},
                          capture_output=True, text=True, check=True)
    return dict(line.split(": ", 1) for line in done.stdout.strip().splitlines())


@pytest.mark.parametrize("pyver, numpy, torch, pyrsr", [
    ("3.11", "1.24.2", "torch==2.13.0", "pyrsr<0.8"),   # Debian 12: the CPU wheel on disk; pyrsr 0.8 needs numpy 2
    ("3.13", "2.2.4", "torch", "pyrsr"),                # Debian 13: torch from PyPI; current pyrsr
])
def test_release_specific_choices(pyver, numpy, torch, pyrsr, monkeypatch):
    monkeypatch.delenv("TORCH_SPEC", raising=False)
    assert plan(PYVER=pyver, NUMPY_VERSION=numpy) == {"torch": torch, "pyrsr": pyrsr}


def test_torch_spec_override_for_cuda_users():
    chosen = plan(PYVER="3.11", NUMPY_VERSION="1.24.2", TORCH_SPEC="torch==2.13.0+cu126")
    assert chosen["torch"] == "torch==2.13.0+cu126"
