"""Training: one engine for every method.

``engine`` (:func:`train`: the loop and its parts), ``config`` (the run's :class:`TrainConfig`),
``budget`` (progress, schedule, validation rhythm, stop test), ``state`` (the loop's state and
checkpoints), ``runlog`` (log.txt, metrics.csv, progress.png), ``sampling`` and ``augmentation``
(patches from the cache), ``distributed`` (torchrun).
"""
from .config import OPTIMIZERS, TrainConfig
from .engine import best_validation, train

__all__ = ["OPTIMIZERS", "TrainConfig", "best_validation", "train"]
