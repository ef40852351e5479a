"""Optimiser and learning-rate schedule of VATT pretraining (SPEC §5).

Official: Adam (beta 0.9 / 0.999, eps 1e-7, no weight decay), linear warmup to 1e-4 over 5k
steps, then a half-cosine from 1e-4 down to 5e-5 at 500k steps (the paper says 10k warmup; both
are settings of :class:`vatt.train.config.OptimConfig`). No gradient clipping by default.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..schedule import lr_at  # noqa: F401 (the one LR schedule; re-exported)

OPTIMIZERS = ("adam", "adamw")


class WarmupCosineSchedule:
    """Sets ``lr`` of every parameter group before each optimiser step.

    Its state is one integer (the next step), so it is saved as JSON, not pickled.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, peak: float, final: float, warmup_steps: int,
                 total_steps: int):
        self.optimizer = optimizer
        self.kw = dict(peak=peak, final=final, warmup_steps=warmup_steps, total_steps=total_steps)
        self.step_count = 0
        self._apply()

    @property
    def lr(self) -> float:
        return lr_at(self.step_count, **self.kw)

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr

    def step(self) -> None:
        """Advance to the next optimiser step."""
        self.step_count += 1
        self._apply()

    def state_dict(self) -> dict:
        return {"step": self.step_count, **self.kw}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step"])
        self._apply()


def build_optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    """Adam / AdamW over the trainable parameters, from an ``OptimConfig``.

    Weight decay (0 by default, as official) applies to every parameter when set.
    """
    if cfg.optimizer not in OPTIMIZERS:
        raise ConfigError(f"optim.optimizer must be one of {OPTIMIZERS}, got {cfg.optimizer!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    # the fused kernel takes plain CPU / CUDA tensors (not sharded DTensors)
    fused = getattr(cfg, "fused", False) and all(type(p.data) is torch.Tensor and p.device.type in ("cpu", "cuda")
                                                 for p in params)
    return cls(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, weight_decay=cfg.weight_decay,
               **({"fused": True} if fused else {}))


def build_schedule(optimizer: torch.optim.Optimizer, cfg, total_steps: int) -> WarmupCosineSchedule:
    return WarmupCosineSchedule(
        optimizer, peak=cfg.lr, final=cfg.final_lr, warmup_steps=cfg.warmup_steps,
        total_steps=cfg.schedule_steps or total_steps,
    )
