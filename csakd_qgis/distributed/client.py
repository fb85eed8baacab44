"""Dask clients: one on a running scheduler, or on a local cluster of worker processes."""

from __future__ import annotations

from contextlib import contextmanager
from types import ModuleType
from typing import Any, Iterator, Optional

from csakd_qgis.errors import InputError, import_optional

#: The pip requirement that provides Dask's distributed scheduler.
PIP_REQUIREMENT = "dask[distributed]"

#: Dask configuration of the local clusters :func:`open_client` starts.  Dask's nannies export
#: ``MALLOC_TRIM_THRESHOLD_=65536`` to their workers; any value of it turns off glibc's dynamic mmap
#: threshold, so every large array is mapped and unmapped afresh: the student ran 2.3x slower per tile
#: (4.93 s against 2.12 s, ``docs/distributed.md``).  None unsets it.
LOCAL_CLUSTER_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}


def require_distributed() -> ModuleType:
    """The ``distributed`` module, or :class:`DependencyError` saying how to install it."""
    return import_optional("distributed", "the distributed mode (Dask)",
                           f'python -m pip install "{PIP_REQUIREMENT}" (in the Python that runs csakd, '
                           'and on every worker)')


@contextmanager
def open_client(scheduler: Optional[str] = None, workers: Optional[int] = None, *,
                threads_per_worker: int = 1) -> Iterator[Any]:
    """A ``distributed.Client`` on a running scheduler, or on a new ``LocalCluster``; closed on exit.

    Parameters
    ----------
    scheduler:
        Address of a running scheduler (``tcp://host:8786``).
    workers:
        Number of worker processes of a new local cluster (one per GPU on
        a multi-GPU machine); exactly one of ``scheduler`` and ``workers``.
    threads_per_worker:
        Tasks each local worker runs at once.

    Raises
    ------
    DependencyError
        Dask is not installed.
    InputError
        Both or neither of ``scheduler`` and ``workers``, ``workers < 1``,
        or the scheduler cannot be reached.
    """
    distributed = require_distributed()
    if (scheduler is None) == (workers is None):
        raise InputError("give either a scheduler address or a number of local workers")
    if scheduler is not None:
        try:
            client = distributed.Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as error:
            raise InputError(f"cannot reach the Dask scheduler at {scheduler!r}: {error}; check the address "
                             "and that 'dask scheduler' runs there") from None
        with client:
            yield client
        return
    if workers is None or workers < 1:  # None cannot reach here: exactly one of the two is given
        raise InputError(f"the number of local workers must be >= 1, got {workers}")
    import dask

    with dask.config.set(LOCAL_CLUSTER_CONFIG):
        cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker,
                                           processes=True, dashboard_address=None)
    with cluster, distributed.Client(cluster) as client:
        yield client
