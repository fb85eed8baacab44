"""torch's runtime defaults: set only where the user said nothing, and only before torch loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from csakd_qgis.runtime import DEFAULTS, apply_defaults

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_fill_only_what_the_user_left_unset():
    env = {}
    assert apply_defaults(env) == DEFAULTS == {"THP_MEM_ALLOC_ENABLE": "1"} and env == DEFAULTS
    env = {"THP_MEM_ALLOC_ENABLE": "0"}
    assert apply_defaults(env) == {} and env == {"THP_MEM_ALLOC_ENABLE": "0"}
    env = {}
    assert apply_defaults(env, torch_loaded=True) == {} and env == {}


def _child(code: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in DEFAULTS}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                          timeout=120).stdout.strip()


def test_importing_the_engine_sets_them_before_torch_and_not_after():
    show = "import os; print(os.environ.get('THP_MEM_ALLOC_ENABLE'))"
    assert _child("import csakd_qgis; " + show) == "1"
    assert _child("import torch, csakd_qgis, csakd_qgis.runtime as r; " + show + "; print(r.APPLIED)") \
        == "None\n{}"
