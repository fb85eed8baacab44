"""Run every benchmark in turn (``make bench``); each rewrites its own section of its document.

docs/benchmarks.md: quality on the EnMAP test block, on Indian Pines and
AVIRIS-NG, engine memory/throughput, the headline scenario, the ONNX Runtime
backend; docs/distributed.md: the Dask scaling measurements.  About 1.5 hours
on a 2-core machine.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = (["quality.py"], ["quality_scenes.py"], ["engine_memory.py"], ["headline.py"], ["onnx_speed.py", "--write"],
           ["distributed_scaling.py"])


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
