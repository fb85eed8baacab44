"""Process-wide settings of torch's CPU runtime that the engine makes before torch loads (issue 16).

Importing :mod:`csakd_qgis` sets, for the whole process and only where the
environment does not already say otherwise, ``THP_MEM_ALLOC_ENABLE=1``:
torch's CPU allocator then aligns buffers of 2 MB or more to 2 MB and asks
the kernel for transparent huge pages on them (``madvise``).  An HR tile of
224 bands is ~40 MB per tensor, and in 4 KB pages each allocation costs
~10,000 page faults (glibc maps buffers over 32 MB afresh every time).  It
changes nothing where the kernel's THP mode is ``always`` or ``never``.

Measured and not set: ``OMP_WAIT_POLICY=PASSIVE`` (torch's OpenMP threads
sleep at once instead of spinning when they run out of work).  It cut the
user CPU of the classical default method by a fifth but not its time, and
slowed the network with torch by 6-11 %: waking sleeping threads for each
of its many small parallel regions costs more than the spinning did.

torch reads the variable once, at its first large allocation.  A process
that loaded torch before importing the engine keeps what it had; the
setting is then recorded as not applied.  ``bench/process_env.py`` measures them
(``docs/benchmarks.md``, "torch's runtime settings against the engine's
threads"); ``docs/engine.md`` explains the choice.
"""

from __future__ import annotations

import os
import sys
from typing import Dict, MutableMapping

#: Environment defaults set by :func:`apply_defaults`, by variable.
DEFAULTS: Dict[str, str] = {"THP_MEM_ALLOC_ENABLE": "1"}


def apply_defaults(environ: MutableMapping[str, str] = os.environ, torch_loaded: bool = False) -> Dict[str, str]:
    """Set each of :data:`DEFAULTS` that is not set in ``environ``.

    Returns the variables set.  With ``torch_loaded`` nothing is set: torch
    may have read the variable already, and a variable set then would only
    mislead whoever reads the environment.
    """
    if torch_loaded:
        return {}
    applied = {}
    for name, value in DEFAULTS.items():
        if name not in environ:
            environ[name] = applied[name] = value
    return applied


#: What importing the engine set in this process (empty when torch was loaded first or the user set them).
APPLIED = apply_defaults(torch_loaded="torch" in sys.modules)
