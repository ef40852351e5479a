"""Training: the one engine (:mod:`vatt.train.engine`) and its two tasks, pretraining
(:mod:`vatt.train.pretrain`) and fine-tuning (:mod:`vatt.train.finetune`); configuration,
optimiser/schedule, checkpoints, the run directory.

``vatt.train.pretrain(cfg, sources, run_dir, resume="auto")`` runs (or continues) a pretraining
run, ``vatt.train.finetune(model, train, val, out_dir, config=...)`` a fine-tuning run; both work
in one process or under torchrun (docs/TRAINING.md, docs/EVALUATION.md).
"""

from .config import DataOptions, OptimConfig, RunConfig, TrainConfig, load_train_config
from .engine import Engine, TrainingDiverged, TrainResult
from .finetune import FinetuneConfig, FineTuning, finetune, load_finetune_config
from .pretrain import Pretraining, pretrain

__all__ = ["DataOptions", "Engine", "FineTuning", "FinetuneConfig", "OptimConfig", "Pretraining", "RunConfig",
           "TrainConfig", "TrainResult", "TrainingDiverged", "finetune", "load_finetune_config",
           "load_train_config", "pretrain"]
