"""File names of csakd models: the one place that knows the ``.safetensors`` naming rules.

* A model file ends in :data:`SUFFIX`; a model's *name* is its file name
  without it (``potsdam.safetensors`` is the model ``potsdam``).  A file
  without the suffix is named by its whole file name.
* Knowledge-distillation training saves the teacher beside the student:
  ``<name>.safetensors`` -> ``<name>.teacher.safetensors``.
* The optimiser state kept for ``--resume`` goes beside it as well:
  ``<name>.optim.safetensors``.

These are rules on names only: nothing here reads or writes a file, and this
module imports neither torch nor safetensors.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

#: A file path as str or path object.
PathLike = Union[str, "os.PathLike[str]"]

#: Suffix of a csakd model file (case-sensitive, as written by csakd).
SUFFIX = ".safetensors"


def model_name(path: PathLike) -> str:
    """The model name of ``path``: its file name without :data:`SUFFIX`.

    ``"models/potsdam.safetensors"`` -> ``"potsdam"``; ``"models/potsdam"``
    -> ``"potsdam"``; ``"a.teacher.safetensors"`` -> ``"a.teacher"``.
    """
    return strip_suffix(Path(path).name)


def strip_suffix(name_or_path: str) -> str:
    """``name_or_path`` without a trailing :data:`SUFFIX` (folders kept): how a user's model name is read."""
    return name_or_path[: -len(SUFFIX)] if name_or_path.endswith(SUFFIX) else name_or_path


def beside(path: PathLike, kind: str) -> Path:
    """The ``<name>.<kind>.safetensors`` file in the folder of model file ``path``.

    ``beside("out/m.safetensors", "teacher")`` -> ``out/m.teacher.safetensors``;
    a ``path`` without the suffix keeps its whole name (``out/m`` ->
    ``out/m.teacher.safetensors``).
    """
    p = Path(path)
    return p.with_name(f"{model_name(p)}.{kind}{SUFFIX}")


def teacher_path_for(path: PathLike) -> Path:
    """Where knowledge-distillation training saves the teacher of student ``path``.

    ``model.safetensors`` -> ``model.teacher.safetensors`` (see :func:`beside`).
    """
    return beside(path, "teacher")


def optimizer_path_for(path: PathLike) -> Path:
    """Where training keeps the optimiser state of model ``path`` for ``--resume``.

    ``model.safetensors`` -> ``model.optim.safetensors`` (see :func:`beside`).
    """
    return beside(path, "optim")
