"""The one learning-rate schedule: linear warmup, then a half-cosine to a final rate.

Pretraining (:mod:`vatt.train.optim`, official: 1e-4 -> 5e-5) and fine-tuning
(:mod:`vatt.train.finetune`, cosine to 0) both use :func:`lr_at`.
"""

from __future__ import annotations

import math


def lr_at(step: int, *, peak: float, final: float, warmup_steps: int, total_steps: int) -> float:
    """Learning rate for optimiser step ``step`` (0-based).

    Warmup: ``peak * (step + 1) / warmup_steps`` for ``step < warmup_steps`` (never 0, so the
    first step learns); then ``final + (peak - final) * (1 + cos(pi * t)) / 2`` with ``t`` going
    from 0 at the end of warmup to 1 at ``total_steps``, and ``final`` after that.
    """
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    t = min(max(step - warmup_steps, 0) / span, 1.0)
    return final + (peak - final) * 0.5 * (1.0 + math.cos(math.pi * t))
