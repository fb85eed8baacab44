"""Many scene pairs as one job on the same workers, each with its own result.

The pair list is a CSV file with a header row naming the columns
``lr_hsi``, ``hr_msi`` and ``output`` (other columns are ignored) or a JSON
list of objects with those keys; relative paths are relative to the list's
folder.  :func:`fuse_batch` prepares each pair on the client and submits its
regions as soon as it is prepared, so workers start on the first pair while
the client prepares the next.  A pair that fails (bad input, a task error,
a region whose workers kept dying) is reported with its message, its
staging folder is removed and its other tasks are stopped; the other pairs
go on.
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, cast

from csakd_qgis.distributed.runner import ClusterOptions, ClusterRun, DistributedReport, SceneRun
from csakd_qgis.errors import Cancelled, InputError
from csakd_qgis.progress import SILENT, Reporter

#: Columns (CSV) or keys (JSON) of a pair list.
PAIR_FIELDS = ("lr_hsi", "hr_msi", "output")

#: Optional columns or keys: the inputs' masks (nonzero = exclude; empty: none).
MASK_FIELDS = ("lr_mask", "msi_mask")


@dataclass(frozen=True)
class ScenePair:
    """One scene to fuse: LR-HSI, HR-MSI and the output (see :func:`~.runner.fuse_distributed`)."""

    lr_hsi: str
    hr_msi: str
    output: str
    lr_mask: Optional[str] = None
    msi_mask: Optional[str] = None


def _pair(entry: Dict[str, object], where: str, folder: str) -> ScenePair:
    missing = [key for key in PAIR_FIELDS if not str(entry.get(key) or "").strip()]
    if missing:
        raise InputError(f"{where}: missing {', '.join(missing)}; every pair needs {', '.join(PAIR_FIELDS)}")
    paths = [os.path.join(folder, str(entry[key]).strip()) for key in PAIR_FIELDS]
    masks = [os.path.join(folder, str(entry[key]).strip()) if str(entry.get(key) or "").strip() else None
             for key in MASK_FIELDS]
    return ScenePair(*paths, *masks)


def read_pair_list(path: str) -> Tuple[ScenePair, ...]:
    """Read a CSV (with a header) or JSON (``.json``) list of pairs.

    Raises
    ------
    InputError
        The file cannot be read or parsed, an entry lacks a field, the list
        is empty, or two pairs name the same output.
    """
    folder = os.path.dirname(os.path.abspath(path))
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            if path.lower().endswith(".json"):
                entries = json.load(handle)
                if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
                    raise InputError(f"{path}: expected a JSON list of objects with keys {', '.join(PAIR_FIELDS)}")
                pairs = [_pair(e, f"{path} item {i + 1}", folder) for i, e in enumerate(entries)]
            else:
                reader = csv.DictReader(handle)
                if not set(PAIR_FIELDS) <= set(reader.fieldnames or ()):
                    raise InputError(f"{path}: the first row must name the columns {', '.join(PAIR_FIELDS)}")
                pairs = [_pair(row, f"{path} line {reader.line_num}", folder) for row in reader]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as error:
        raise InputError(f"cannot read the pair list {path!r}: {error}") from None
    if not pairs:
        raise InputError(f"{path}: no pairs listed")
    outputs = [os.path.abspath(p.output) for p in pairs]
    repeated = sorted({o for o in outputs if outputs.count(o) > 1})
    if repeated:
        raise InputError(f"{path}: several pairs write {', '.join(repeated)}; give each pair its own output")
    return tuple(pairs)


@dataclass(frozen=True)
class PairResult:
    """One pair's outcome: its report, or the error that stopped it (``ok`` False)."""

    pair: ScenePair
    ok: bool
    error: str
    seconds: float
    report: Optional[DistributedReport] = None

    def to_dict(self) -> Dict[str, object]:
        """JSON-ready dict."""
        return {"lr_hsi": self.pair.lr_hsi, "hr_msi": self.pair.hr_msi, "output": self.pair.output,
                "ok": self.ok, "error": self.error, "seconds": self.seconds,
                "report": self.report.to_dict() if self.report else None}


@dataclass(frozen=True)
class BatchReport:
    """Every pair's result, in the list's order, and the job's wall-clock seconds."""

    results: Tuple[PairResult, ...]
    seconds: float

    @property
    def failed(self) -> Tuple[PairResult, ...]:
        """The pairs that did not produce an output."""
        return tuple(r for r in self.results if not r.ok)

    def to_dict(self) -> Dict[str, object]:
        """JSON-ready dict: ``pairs``, ``succeeded``, ``failed``, ``seconds``."""
        return {"pairs": [r.to_dict() for r in self.results], "succeeded": len(self.results) - len(self.failed),
                "failed": len(self.failed), "seconds": self.seconds}

    def summary_lines(self) -> List[str]:
        """One line per pair and a total."""
        lines = []
        for r in self.results:
            if r.ok:
                grid = cast(DistributedReport, r.report).fuse.grid  # an ok result has its report
                lines.append(f"ok      {r.pair.output}: {grid.width} x {grid.height} px, {r.seconds:.1f} s")
            else:
                lines.append(f"FAILED  {r.pair.output}: {r.error}")
        done = len(self.results) - len(self.failed)
        return lines + [f"{done} of {len(self.results)} pairs fused in {self.seconds:.1f} s"]


def _message(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def fuse_batch(pairs: Sequence[ScenePair], *, client: Any, options: Optional[ClusterOptions] = None,
               reporter: Optional[Reporter] = None) -> BatchReport:
    """Fuse every pair on the cluster; one pair's failure is reported, not raised.

    Parameters
    ----------
    pairs:
        The scenes (:func:`read_pair_list`).
    client:
        A ``distributed.Client``.
    options:
        Shared by every pair (:class:`~.runner.ClusterOptions`).
    reporter:
        Progress: the mean over pairs of their fraction done; cancel stops
        every unfinished pair (finished outputs stay) and raises.

    Raises
    ------
    Cancelled
        When the reporter says so.
    """
    started = time.perf_counter()
    options = options or ClusterOptions()
    run = ClusterRun(client, reporter or SILENT)
    outcome: Dict[int, PairResult] = {}
    scenes: Dict[int, SceneRun] = {}
    futures: Dict[int, List[Any]] = {}
    owner: Dict[str, int] = {}

    def fail(index: int, error: BaseException) -> None:
        scene = scenes.get(index)
        if scene is not None:
            run.stop(scene, [f for f in futures.get(index, ()) if not f.done()])
            scene.abort()
        outcome[index] = PairResult(pairs[index], False, _message(error),
                                    time.perf_counter() - (scene.started if scene else started))

    def handle(future: Any) -> None:
        index = owner[str(future.key)]
        if index in outcome:
            return
        scene = scenes[index]
        try:
            scene.record(future.result())
            if scene.complete:
                report = scene.finish(client)
                outcome[index] = PairResult(pairs[index], True, "", time.perf_counter() - scene.started, report)
        except Cancelled:
            raise
        except Exception as error:  # one pair's failure, whatever it is, must not stop the others
            fail(index, error)

    def fraction() -> float:
        running = sum(run.progress(futures[i]) for i in futures if i not in outcome)
        return (len(outcome) + running) / len(pairs)

    try:
        for index, pair in enumerate(pairs):
            scene = SceneRun(pair.lr_hsi, pair.hr_msi, pair.output, options, pair.lr_mask, pair.msi_mask)
            try:
                scene.prepare()
            except Exception as error:  # reported with the pair; the others go on
                outcome[index] = PairResult(pair, False, _message(error), time.perf_counter() - scene.started)
                continue
            scenes[index] = scene
            futures[index] = run.submit(scene)
            owner.update({str(f.key): index for f in futures[index]})
            run.reporter.update(fraction(), f"pair {index + 1}/{len(pairs)} submitted")
        while len(outcome) < len(pairs):
            batch = run.wait_some(fraction)
            if not batch:
                break
            for future in batch:
                handle(future)
    except BaseException:
        for index, scene in scenes.items():
            if index not in outcome:
                run.stop(scene, futures[index])
                scene.abort()
        raise
    finally:
        run.close()
    return BatchReport(tuple(outcome[i] for i in range(len(pairs))), time.perf_counter() - started)
