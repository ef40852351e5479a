"""Pretraining: configuration, optimiser/schedule, checkpoints, the loop and the demo.

``vatt.train.pretrain(cfg, sources, run_dir, resume="auto")`` runs (or continues) a run; see
:mod:`vatt.train.loop` for the single-process and torchrun commands and docs/TRAINING.md.
"""

from .config import DataOptions, OptimConfig, TrainConfig, load_train_config
from .loop import TrainingDiverged, TrainResult, Trainer, pretrain

__all__ = ["DataOptions", "OptimConfig", "TrainConfig", "TrainResult", "Trainer", "TrainingDiverged",
           "load_train_config", "pretrain"]
