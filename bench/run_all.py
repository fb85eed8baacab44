"""Run every benchmark in turn (``make bench``); each rewrites its own section of docs/benchmarks.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = (["quality.py"], ["engine_memory.py"])


def main() -> int:
    """Run the scripts with this interpreter; stop at the first failure."""
    for script in SCRIPTS:
        print(f"== {' '.join(script)}", flush=True)
        status = subprocess.call([sys.executable, str(HERE / script[0]), *script[1:]], cwd=HERE.parent)
        if status:
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main())
