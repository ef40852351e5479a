"""Training configuration: the engine's settings shared by every run (:class:`RunConfig`) and
pretraining's (:class:`TrainConfig`): presets by name, YAML files, ``--set key=value``.

A run directory's ``config.yaml`` starts with the exact command that produced it::

    # vatt pretrain --config tiny --data corpus/ --out runs/tiny
    model: tiny
    ...

``--set`` keys are dotted paths (``optim.lr=3e-4``, ``objective.symmetric=true``); keys under
``model.`` go to the model preset's overrides (``model.video.drop_rate=0.25``), ``model=bbs``
picks the preset. Unknown keys raise :class:`~vatt.errors.ConfigError` naming the nearest one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..config import get_config, list_presets
from ..config_engine import ConfigBase, check_choice, check_number, flatten, parse_overrides, set_dotted
from ..data.config import AugmentConfig
from ..errors import ConfigError, nearest
from ..objective import ObjectiveConfig

from .perf import PRECISIONS


@dataclass
class OptimConfig(ConfigBase):
    """Optimiser and schedule (official defaults; SPEC §5).

    Args:
        optimizer: "adam" (official) or "adamw".
        lr: peak learning rate after warmup (1e-4).
        final_lr: learning rate at the end of the half-cosine (5e-5).
        warmup_steps: linear warmup length in optimiser steps (official 5k; paper 10k).
        schedule_steps: step at which the cosine reaches ``final_lr``; 0 = the run's ``steps``
            (official: 500k).
        beta1, beta2, eps, weight_decay: Adam settings (0.9, 0.999, 1e-7, 0).
        grad_clip: max global gradient norm; 0 = no clipping (official).
        fused: the single-kernel ``fused=True`` Adam (about 3x faster than torch's per-tensor
            default on CPU, where it was a quarter of an MBS-tower step; equal within fp32
            rounding); False = torch's default implementation. Sharded (FSDP) parameters always
            use the default.
    """

    optimizer: str = "adam"
    lr: float = 1e-4
    final_lr: float = 5e-5
    warmup_steps: int = 5000
    schedule_steps: int = 0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-7
    weight_decay: float = 0.0
    grad_clip: float = 0.0
    fused: bool = True

    def check(self) -> None:
        check_choice(self.optimizer, "optim.optimizer", ("adam", "adamw"))
        check_number(self.lr, "optim.lr", low=0, low_open=True, high=10)
        check_number(self.final_lr, "optim.final_lr", low=0, high=10)
        check_number(self.warmup_steps, "optim.warmup_steps", low=0)
        check_number(self.schedule_steps, "optim.schedule_steps", low=0)
        check_number(self.beta1, "optim.beta1", low=0, high=1, high_open=True)
        check_number(self.beta2, "optim.beta2", low=0, high=1, high_open=True)
        check_number(self.eps, "optim.eps", low=0, low_open=True)
        check_number(self.weight_decay, "optim.weight_decay", low=0)
        check_number(self.grad_clip, "optim.grad_clip", low=0)


@dataclass
class DataOptions(ConfigBase):
    """How training batches are made (the clip geometry comes from the model).

    Args:
        num_workers: DataLoader worker processes per rank.
        strict: fail on the first bad file instead of skipping and counting it.
        augment: training augmentation (:class:`vatt.data.config.AugmentConfig`; e.g.
            ``--set data.augment.crop_mode=inception``).
        eval_sources: held-out sources for zero-shot retrieval every ``eval_every`` steps.
        eval_windows: windows per held-out video (4, SPEC §6).
        eval_batch_size: videos per forward at evaluation.
        max_member_mb: shard members larger than this are skipped unread (counted ``too_large``), MiB.
        timeout: seconds a batch may take to arrive from the loader workers before they are
            presumed stuck (e.g. a stopped worker) and restarted; 0 = wait forever.
        max_bad_batches: stop (with a checkpoint) after this many consecutive batches in which
            no sample could be read, e.g. when the data's file system went away.
    """

    num_workers: int = 2
    strict: bool = False
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    eval_sources: list[str] = field(default_factory=list)
    eval_windows: int = 4
    eval_batch_size: int = 8
    max_member_mb: float = 1024.0
    timeout: float = 300.0
    max_bad_batches: int = 20

    def check(self) -> None:
        check_number(self.num_workers, "data.num_workers", low=0, high=1024)
        check_number(self.max_member_mb, "data.max_member_mb", low=0, low_open=True)
        check_number(self.timeout, "data.timeout", low=0)
        check_number(self.max_bad_batches, "data.max_bad_batches", low=1)
        check_number(self.eval_windows, "data.eval_windows", low=1, high=1024)
        check_number(self.eval_batch_size, "data.eval_batch_size", low=1)
        if not all(isinstance(s, str) for s in self.eval_sources):
            raise ConfigError(f"data.eval_sources should be a list of paths, got {self.eval_sources!r}")


@dataclass
class RunConfig(ConfigBase):
    """What the training engine needs of any run, pretraining or fine-tuning
    (:class:`vatt.train.engine.Engine`); :class:`TrainConfig` and
    :class:`vatt.train.finetune.FinetuneConfig` extend it with their recipes.

    Args:
        steps: optimiser steps of the run.
        batch_size: global batch per optimiser step (all ranks x accumulation micro-batches).
            Must divide by ``world_size * grad_accum``.
        grad_accum: micro-batches per optimiser step.
        precision: "fp32", "bf16" (autocast, CPU and GPU), "fp16" (autocast + GradScaler, GPU) or
            "fp64" (weights, inputs and optimiser in float64: a rounding-free reference for numerical
            checks, e.g. the loss-trajectory test; slow).
        activation_checkpointing: recompute transformer blocks in the backward to save memory.
        compile: ``torch.compile`` the model.
        fsdp: shard the model with FSDP2 (``fully_shard``: each transformer block, then the root)
            instead of DDP when there is more than one rank; for the large presets. Checkpoints
            hold full states as in any run.
        device: "auto" (CUDA when available), "cpu", "cuda".
        cpu_threads: torch intra-op threads of the training process; 0 = auto: on the CPU with
            loader workers, torch's default less one per worker (at least 1; unchanged when
            ``OMP_NUM_THREADS`` is set, e.g. by torchrun), elsewhere torch's default. The workers
            decode on the same cores: streaming tiny pretraining on 2 cores with 2 workers took
            0.083-0.092 s a step with 1 thread against 0.100-0.114 s with 2 (docs/DATA.md).
        seed: seeds parameters, data order, augmentation and the random draws of the step.
        log_every: steps between metric lines in ``metrics.jsonl``.
        checkpoint_every: steps between checkpoints (also written at the end and on SIGTERM/SIGINT).
        keep_last: complete checkpoints kept (0 = all).
        eval_every: steps between evaluations (0 = never): zero-shot retrieval on
            ``data.eval_sources`` when pretraining, the multi-view test on the validation set
            when fine-tuning.
        max_bad_steps: consecutive non-finite steps that abort the run.
        max_minutes: stop after this much training time (checkpoint + final model, resumable);
            0 = no limit.
        command: the command line that made this config (written by the CLI).
    """

    steps: int = 500_000
    batch_size: int = 2048
    grad_accum: int = 1
    precision: str = "fp32"
    activation_checkpointing: bool = False
    compile: bool = False
    fsdp: bool = False
    device: str = "auto"
    cpu_threads: int = 0
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 1000
    keep_last: int = 3
    eval_every: int = 0
    max_bad_steps: int = 10
    max_minutes: float = 0.0
    command: str = ""

    def check(self) -> None:
        check_choice(self.precision, "precision", PRECISIONS)
        for name in ("steps", "batch_size", "grad_accum", "log_every", "checkpoint_every", "max_bad_steps"):
            check_number(getattr(self, name), name, low=1)
        for name in ("keep_last", "eval_every", "seed", "cpu_threads"):
            check_number(getattr(self, name), name, low=0)
        check_number(self.max_minutes, "max_minutes", low=0)
        if self.batch_size % self.grad_accum:
            raise ConfigError(f"batch_size={self.batch_size} must be a multiple of grad_accum={self.grad_accum}")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")

    def micro_batch_size(self, world_size: int) -> int:
        """Clips per rank per forward: ``batch_size / (world_size * grad_accum)``."""
        per = self.batch_size // self.grad_accum
        if per % world_size:
            raise ConfigError(
                f"batch_size={self.batch_size} / grad_accum={self.grad_accum} = {per} clips per micro-batch do not "
                f"split over {world_size} ranks"
            )
        return per // world_size


@dataclass
class TrainConfig(RunConfig):
    """One pretraining run: the engine's settings (:class:`RunConfig`: steps, batch_size,
    precision, ...; official batch 2048 for 500k steps) and the pretraining recipe.

    Args:
        model: model preset name (``tiny``, ``bbs``, ``mbs``, ``lbs``, ``ma-medium``).
        model_overrides: dotted model-config overrides (``{"video.drop_rate": 0.25}``).
        objective, optim, data: the contrastive objective, Adam and its schedule, data options.
        grad_accum: (see :class:`RunConfig`) contrastive negatives come from one micro-batch of
            every rank (``batch_size / grad_accum`` clips), not the whole step.
        fsdp: (see :class:`RunConfig`) not with ``eval_every`` (evaluation runs on rank 0).
        vocab: a ``vocab.json``; empty = build from the training captions.
    """

    model: str = "mbs"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataOptions = field(default_factory=DataOptions)
    vocab: str = ""

    def check(self) -> None:
        check_choice(self.model, "model", list_presets())
        super().check()
        self.model_overrides = flatten(self.model_overrides)
        self.model_config()  # fail now on a bad model override, not mid-run

    def model_config(self):
        """The ModelConfig of this run (preset + overrides), validated."""
        return get_config(self.model, self.model_overrides)

    # -- serialisation ---------------------------------------------------------------------------
    def override(self, overrides: Mapping[str, Any] | Sequence[str] | None = None, **kwargs: Any) -> "TrainConfig":
        """A copy with dotted overrides (``{"optim.lr": 3e-4, "model.video.drop_rate": 0}``); keys
        under ``model.`` go to the model preset's overrides, ``model=bbs`` picks the preset."""
        data = self.to_dict()
        for key, value in {**parse_overrides(overrides), **flatten(kwargs)}.items():
            if key == "model" or not key.startswith("model."):
                set_dotted(data, TrainConfig, key, value)
            else:
                data["model_overrides"][key[len("model."):]] = value
        return TrainConfig.from_dict(data)


# -- presets ---------------------------------------------------------------------------------------
def _official(model: str) -> TrainConfig:
    return TrainConfig(model=model)


def _tiny() -> TrainConfig:
    # CPU demo/tests: small batch and a short schedule; lr raised for the 2M-parameter model.
    # No dropout: on CPU it costs ~25% of a step (and attention dropout disables the fused
    # attention kernel); DropToken still regularises.
    return TrainConfig(
        model="tiny", model_overrides={"dropout": 0.0, "attention_dropout": 0.0},
        steps=2000, batch_size=32, precision="fp32", device="cpu",
        optim=OptimConfig(lr=5e-4, final_lr=5e-5, warmup_steps=100),
        log_every=10, checkpoint_every=200, keep_last=2, eval_every=0,
        data=DataOptions(num_workers=1),
    )


TRAIN_PRESETS = {"tiny": _tiny, "bbs": lambda: _official("bbs"), "mbs": lambda: _official("mbs"),
                 "lbs": lambda: _official("lbs"), "ma-medium": lambda: _official("ma-medium")}


def load_train_config(name_or_path: str, overrides: Sequence[str] | Mapping[str, Any] | None = None) -> TrainConfig:
    """A preset name (``tiny``, ``mbs`` ...) or a YAML file, then ``key=value`` overrides."""
    if name_or_path in TRAIN_PRESETS:
        cfg = TRAIN_PRESETS[name_or_path]()
    elif Path(name_or_path).is_file() or name_or_path.endswith((".yaml", ".yml", ".json")):
        cfg = TrainConfig.load(name_or_path)
    else:
        raise ConfigError(f"--config expects a preset or a YAML file; got {name_or_path!r}"
                          + nearest(name_or_path, TRAIN_PRESETS))
    return cfg.override(overrides) if overrides else cfg
