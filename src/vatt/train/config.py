"""Pretraining configuration: one dataclass, presets by name, YAML files, ``--set key=value``.

A run directory's ``config.yaml`` starts with the exact command that produced it::

    # vatt pretrain --config tiny --data corpus/ --out runs/tiny
    model: tiny
    ...

``--set`` keys are dotted paths (``optim.lr=3e-4``, ``objective.symmetric=true``); keys under
``model.`` go to the model preset's overrides (``model.video.drop_rate=0.25``), ``model=bbs``
picks the preset. Unknown keys raise :class:`~vatt.errors.ConfigError` naming the nearest one.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..config import _build, _dataclass_of, _field_types, _flatten, get_config, list_presets, parse_override
from ..atomic_io import atomic_write_text
from ..errors import ConfigError, nearest
from ..objective import ObjectiveConfig

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class OptimConfig:
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


@dataclass
class DataOptions:
    """How training batches are made (the clip geometry comes from the model).

    Args:
        num_workers: DataLoader worker processes per rank.
        strict: fail on the first bad file instead of skipping and counting it.
        augment: DataConfig overrides for training (e.g. ``{"crop_mode": "inception"}``).
        eval_sources: held-out sources for zero-shot retrieval every ``eval_every`` steps.
        eval_windows: windows per held-out video (4, SPEC §6).
        eval_batch_size: videos per forward at evaluation.
    """

    num_workers: int = 2
    strict: bool = False
    augment: dict = field(default_factory=dict)
    eval_sources: list = field(default_factory=list)
    eval_windows: int = 4
    eval_batch_size: int = 8


@dataclass
class TrainConfig:
    """One pretraining run.

    Args:
        model: model preset name (``tiny``, ``bbs``, ``mbs``, ``lbs``, ``ma-medium``).
        model_overrides: dotted model-config overrides (``{"video.drop_rate": 0.25}``).
        steps: optimiser steps of the run.
        batch_size: global batch per optimiser step (all ranks x accumulation micro-batches);
            official 2048. Must divide by ``world_size * grad_accum``.
        grad_accum: micro-batches per optimiser step. Contrastive negatives come from one
            micro-batch of every rank (``batch_size / grad_accum`` clips), not the whole step.
        precision: "fp32", "bf16" (autocast, CPU and GPU) or "fp16" (autocast + GradScaler, GPU).
        activation_checkpointing: recompute transformer blocks in the backward to save memory.
        compile: ``torch.compile`` the model.
        fsdp: shard the model with FSDP2 (``fully_shard``: each transformer block, then the root)
            instead of DDP when there is more than one rank; for the large presets. Checkpoints
            hold full states as in any run. Not with ``eval_every`` (evaluation runs on rank 0).
        device: "auto" (CUDA when available), "cpu", "cuda".
        seed: seeds parameters, data order, augmentation and DropToken.
        log_every: steps between metric lines in ``metrics.jsonl``.
        checkpoint_every: steps between checkpoints (also written at the end and on SIGTERM/SIGINT).
        keep_last: complete checkpoints kept (0 = all).
        eval_every: steps between zero-shot retrievals on ``data.eval_sources`` (0 = never).
        max_bad_steps: consecutive non-finite steps that abort the run.
        max_minutes: stop after this much training time (checkpoint + final model, resumable);
            0 = no limit.
        vocab: a ``vocab.json``; empty = build from the training captions.
        command: the command line that made this config (written by the CLI).
    """

    model: str = "mbs"
    model_overrides: dict = field(default_factory=dict)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataOptions = field(default_factory=DataOptions)
    steps: int = 500_000
    batch_size: int = 2048
    grad_accum: int = 1
    precision: str = "fp32"
    activation_checkpointing: bool = False
    compile: bool = False
    fsdp: bool = False
    device: str = "auto"
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 1000
    keep_last: int = 3
    eval_every: int = 0
    max_bad_steps: int = 10
    max_minutes: float = 0.0
    vocab: str = ""
    command: str = ""

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        if self.model not in list_presets():
            raise ConfigError(f"unknown model preset {self.model!r}{nearest(self.model, list_presets())}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}"
                              + nearest(str(self.precision), PRECISIONS))
        for name in ("steps", "batch_size", "grad_accum", "log_every", "checkpoint_every", "max_bad_steps"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size % self.grad_accum:
            raise ConfigError(f"batch_size={self.batch_size} must be a multiple of grad_accum={self.grad_accum}")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")

    def model_config(self):
        """The ModelConfig of this run (preset + overrides), validated."""
        return get_config(self.model, self.model_overrides)

    def micro_batch_size(self, world_size: int) -> int:
        """Clips per rank per forward: ``batch_size / (world_size * grad_accum)``."""
        per = self.batch_size // self.grad_accum
        if per % world_size:
            raise ConfigError(
                f"batch_size={self.batch_size} / grad_accum={self.grad_accum} = {per} clips per micro-batch do not "
                f"split over {world_size} ranks"
            )
        return per // world_size

    # -- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        data = dict(data)
        if isinstance(data.get("model_overrides"), Mapping):
            data["model_overrides"] = _flatten(data["model_overrides"])
        cfg = _build(cls, data, prefix="")
        cfg.model_config()  # fail now on a bad model override, not mid-run
        return cfg

    def to_yaml(self) -> str:
        head = f"# {self.command}\n" if self.command else ""
        return head + yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, self.to_yaml())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TrainConfig":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"training config not found: {path}")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path} is not a valid YAML config: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path} should hold a mapping of config keys, got {type(data).__name__}")
        return cls.from_dict(data)

    def override(self, overrides: Mapping[str, Any]) -> "TrainConfig":
        """A copy with dotted overrides (``{"optim.lr": 3e-4, "model.video.drop_rate": 0}``)."""
        data = self.to_dict()
        for key, value in overrides.items():
            if key == "model" or not key.startswith("model."):
                _set_dotted(data, TrainConfig, key, value)
            else:
                data["model_overrides"][key[len("model."):]] = value
        return TrainConfig.from_dict(data)


def _set_dotted(data: dict, cls, key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for i, part in enumerate(parts):
        types = _field_types(cls)
        if part not in types:
            path = ".".join(parts[:i])
            valid = [f"{path}.{k}" if path else k for k in types] + ["model.<model key>"]
            raise ConfigError(f"unknown training config key {key!r}{nearest(key, valid)}")
        if i == len(parts) - 1:
            node[part] = value
            return
        sub = _dataclass_of(types[part])
        if sub is None:
            raise ConfigError(f"training config key {'.'.join(parts[: i + 1])!r} is a value, not a group; got {key!r}")
        node, cls = node[part], sub


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


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


def load_train_config(name_or_path: str, overrides: list[str] | Mapping[str, Any] | None = None) -> TrainConfig:
    """A preset name (``tiny``, ``mbs`` ...) or a YAML file, then ``key=value`` overrides."""
    if name_or_path in TRAIN_PRESETS:
        cfg = TRAIN_PRESETS[name_or_path]()
    elif Path(name_or_path).is_file() or name_or_path.endswith((".yaml", ".yml", ".json")):
        cfg = TrainConfig.load(name_or_path)
    else:
        raise ConfigError(f"--config expects a preset or a YAML file; got {name_or_path!r}"
                          + nearest(name_or_path, TRAIN_PRESETS))
    if overrides:
        if not isinstance(overrides, Mapping):
            overrides = dict(parse_override(o) for o in overrides)
        cfg = cfg.override(overrides)
    return cfg
