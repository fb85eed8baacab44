"""Training: KD co-training, losses, patch sampling, scene-adaptive training and its data.

The short public names::

    from csakd_qgis.training import TrainConfig, TrainingData, teacher_path_for, train

Modules: :mod:`~csakd_qgis.training.config` (options), :mod:`~csakd_qgis.training.data`
(scenes), :mod:`~csakd_qgis.training.loop` (:func:`train`), :mod:`~csakd_qgis.training.networks`,
:mod:`~csakd_qgis.training.validation`, :mod:`~csakd_qgis.training.report`,
:mod:`~csakd_qgis.training.losses`, :mod:`~csakd_qgis.training.patches`,
:mod:`~csakd_qgis.training.scene_adaptive`.
"""

from csakd_qgis.models.files import teacher_path_for
from csakd_qgis.training.config import TrainConfig
from csakd_qgis.training.data import TrainingData
from csakd_qgis.training.loop import train
from csakd_qgis.training.report import TrainReport

__all__ = ["TrainConfig", "TrainReport", "TrainingData", "teacher_path_for", "train"]
