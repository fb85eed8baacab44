"""Helpers shared by the benchmark scripts: machine description, markdown sections, synthetic rasters, networks."""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, TypeVar

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
BENCHMARKS = ROOT / "docs" / "benchmarks.md"

#: Georeferencing of the synthetic LR-HSI: 30 m UTM 33N pixels.
LR_TRANSFORM = Affine(30.0, 0, 366000.0, 0, -30.0, 5810000.0)

#: The bundled default model (absent until trained).
BUNDLED = ROOT / "resources" / "models" / "enmap_s2_x3.safetensors"


def machine() -> str:
    """One line naming the CPU, core count, RAM, Python and torch versions, and the load average."""
    cpu = "unknown CPU"
    if Path("/proc/cpuinfo").exists():
        found = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        cpu = found.group(1).strip() if found else cpu
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import torch

    load = os.getloadavg()[0]
    return (f"{cpu}, {os.cpu_count()} cores, {ram:.0f} GiB RAM, Python {platform.python_version()}, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), load average {load:.1f} at start")


def _section(heading: str) -> re.Pattern:
    """Pattern of the section under ``heading``: to the next heading of the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    return re.compile(rf"^{re.escape(heading)}\n.*?(?=^#{{1,{level}}} |\Z)", re.S | re.M)


def _replaced(text: str, heading: str, body: str) -> str:
    """``text`` with ``body`` under ``heading``, the section appended at the end when missing."""
    block = f"{heading}\n\n{body.strip()}\n\n"
    pattern = _section(heading)
    return pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block


def replace_section(heading: str, body: str, path: Path = BENCHMARKS, within: Optional[str] = None) -> None:
    """Write ``body`` under ``heading`` (a ``## `` or ``### `` line) in ``path``, keeping every other section.

    A section ends at the next heading of the same or a higher level.  ``within``: the heading of the section
    ``heading`` is a subsection of (created empty at the end if missing); only that section is searched.
    """
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if within is None:
        path.write_text(_replaced(text, heading, body))
        return
    if _section(within).search(text) is None:
        text = text.rstrip() + f"\n\n{within}\n\n"
    start, end = _section(within).search(text).span()
    path.write_text(text[:start] + _replaced(text[start:end], heading, body) + text[end:])


def publish(heading: str, body: str, write: bool) -> None:
    """Print ``body``; with ``write``, also put it under ``heading`` in docs/benchmarks.md (:func:`replace_section`)."""
    print(body)
    if write:
        replace_section(heading, body)


def mean_std(values: Sequence[float]) -> str:
    """``"mean ± std"`` of ``values`` to 2 decimals (sample standard deviation; 0 for a single value)."""
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.2f}"


def write_synthetic(path: Path, bands: int, size: int, transform: Affine, seed: int,
                    width: Optional[int] = None, interleave: str = "band") -> None:
    """A smooth random float32 raster of ``bands`` x ``size`` rows x ``width`` (default ``size``) columns.

    Values about 0.1-0.5; tiled (256 px), ZSTD, stored by band (``interleave="pixel"``:
    every band in each block, GDAL's default), written in strips.
    """
    rng = np.random.default_rng(seed)
    weights = rng.random((bands, 3)).astype(np.float32)
    width = size if width is None else width
    with rasterio.open(path, "w", driver="GTiff", width=width, height=size, count=bands, dtype="float32",
                       crs="EPSG:32633", transform=transform, tiled=True, blockxsize=256, blockysize=256,
                       compress="zstd", zstd_level=1, interleave=interleave) as ds:
        step = 256
        x = np.linspace(0, 6 * width / size, width, dtype=np.float32)
        for row in range(0, size, step):
            h = min(step, size - row)
            y = np.linspace(row, row + h, h, dtype=np.float32)[:, None] * (6.0 / size)
            base = np.stack([np.sin(x + y), np.cos(2 * x - y), np.sin(3 * y) * np.cos(x)])
            ds.write(0.3 + 0.1 * np.einsum("bk,khw->bhw", weights, base), window=Window(0, row, width, h))


def network_spec(bands: int = 128, scale: int = 3) -> Tuple[str, int, int]:
    """``(description, bands, scale)`` of :func:`load_network`'s network (the given ones for the random one)."""
    if BUNDLED.exists():
        from csakd_qgis.models.checkpoint import read_card

        card = read_card(BUNDLED)
        return f"bundled {card.name}", int(card.config["bands"]), int(card.scale)
    return "random project_student", bands, scale


def load_network(bands: int = 128, scale: int = 3):
    """The bundled model as a ``NetworkMethod`` when present, else a random ``project_student`` (seed 0)."""
    import torch

    from csakd_qgis.fusion.methods import NetworkMethod

    if BUNDLED.exists():
        from csakd_qgis.models.checkpoint import load_checkpoint

        model, card = load_checkpoint(BUNDLED)
        return NetworkMethod(model, scale=card.scale, name="student", model_name=card.name)
    from csakd_qgis.models import build_model
    from csakd_qgis.models.config import preset

    torch.manual_seed(0)
    return NetworkMethod(build_model(preset("project_student", bands, 4, scale)).eval(), scale=scale)


def calls_at_once(call: Callable[[], object], streams: int, seconds: float) -> Tuple[int, float]:
    """``(calls, elapsed s)`` of ``streams`` threads running ``call`` at once, as the engine runs a network.

    Each thread gets its share of torch's threads
    (:func:`csakd_qgis.devices.shared_threads`; an onnxruntime method makes
    a session for that count), makes one warm-up call, then calls until it
    has made at least 5 calls and ``seconds`` have passed.
    """
    from csakd_qgis.devices import shared_threads

    def loop(deadline: float) -> int:
        calls = 0
        while calls < 5 or time.perf_counter() < deadline:
            call()
            calls += 1
        return calls

    with shared_threads(streams), ThreadPoolExecutor(streams) as pool:
        list(pool.map(lambda _: call(), range(streams)))
        start = time.perf_counter()
        calls = sum(pool.map(loop, [start + seconds] * streams))
        return calls, time.perf_counter() - start


def run_child(child: str, args: Sequence[object]) -> Dict[str, Any]:
    """Run ``child`` (Python source) with ``args`` in a fresh interpreter, this project and bench/ on its path.

    Returns the JSON object on the last line of its output; raises RuntimeError with its error output on failure.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "bench")])}
    done = subprocess.run([sys.executable, "-c", child, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          env=env)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB: ``VmHWM``, which starts afresh at ``exec``.

    ``ru_maxrss`` is not used: Linux carries it over from the parent across
    fork and exec, so a child started by a big benchmark process would report
    the parent's peak.
    """
    status = Path("/proc/self/status")
    if status.exists():
        found = re.search(r"VmHWM:\s*(\d+) kB", status.read_text())
        if found:
            return int(found.group(1)) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def add_rerun_options(parser: argparse.ArgumentParser) -> None:
    """``--folder``, ``--from-log`` and ``--no-doc`` of the drivers that run ``fuse`` in child processes."""
    parser.add_argument("--folder", type=Path, default=None, help="build (or reuse) the inputs here")
    parser.add_argument("--from-log", type=Path, default=None,
                        help="run nothing: make the tables from the lines an earlier run printed")
    parser.add_argument("--no-doc", action="store_true", help="print the section instead of writing it")


def run_measured(args: Sequence[str], env: Dict[str, str], cwd: Path = ROOT) -> Dict[str, float]:
    """Run a command to its end in ``cwd``: ``wall``, ``user`` and ``sys`` seconds, ``faults`` (minor), ``rss`` (MB).

    The CPU times, faults and peak come from the child's rusage
    (``os.wait4``).  Linux folds the parent's peak into a child's
    ``ru_maxrss`` at ``exec`` (see :func:`peak_rss_mb`), so ``rss`` is the
    child's own only while the parent stays smaller, as it does in the
    drivers that use this.  Raises ``RuntimeError`` with the end of the
    child's standard error when it fails.
    """
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(list(args), env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            err.seek(0)
            raise RuntimeError(f"{' '.join(args[:4])} ... failed:\n{err.read().decode(errors='replace')[-3000:]}")
    return {"wall": wall, "user": usage.ru_utime, "sys": usage.ru_stime, "faults": usage.ru_minflt,
            "rss": usage.ru_maxrss / 1024.0}


def spread(values: Sequence[float], fmt: str = "{:.1f}") -> str:
    """``median (lowest-highest)`` of ``values``, each number written with ``fmt``."""
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def rotations(cases: Sequence[T], rounds: int) -> Iterator[Tuple[int, List[T]]]:
    """``(round, cases)`` for each round, the order rotated by one case per round."""
    cases = list(cases)
    for r in range(rounds):
        yield r, cases[r % len(cases):] + cases[:r % len(cases)]
