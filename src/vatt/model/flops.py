"""Parameter counts and forward FLOPs of VATT models, measured, not computed from a formula.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` over a real forward pass on the
``meta`` device (no memory, no arithmetic, so even the Large model is counted in a second).
Conventions:

* A multiply-add counts as **2 FLOPs** (FlopCounterMode's convention). Only matrix products,
  convolutions and attention are counted; norms, activations and softmax are not.
* The multimodal forward is one clip: video, audio and one 16-word caption, batch 1, in
  training mode so that DropToken applies at the given rate (BatchNorm in eval mode so a batch
  of one is allowed; this changes no FLOP count).
"""

from __future__ import annotations

from typing import Any

import torch

from ..config import ModelConfig, get_config
from .fast_paths import flop_counter
from .vatt import VATT

DROP_RATES = (0.0, 0.25, 0.5, 0.75)


def build_meta(cfg: ModelConfig) -> VATT:
    """The model on the ``meta`` device: real structure and shapes, no storage."""
    with torch.device("meta"):
        return VATT(cfg)


def parameter_counts(model: VATT) -> dict[str, int]:
    """Parameters per part: ``video``, ``audio``, ``text`` (without the word table),
    ``text_word_table``, ``heads``, ``total``; for a modality-agnostic model the
    per-modality parts exclude the shared encoder, counted as ``shared``."""

    def count(module) -> int:
        return sum(p.numel() for p in module.parameters())

    if model.config.modality_agnostic:
        b = model.backbone
        table = b.text.embed.weight.numel()
        counts = {
            "video": count(b.video),
            "audio": count(b.audio),
            "text": count(b.text) - table,
            "text_word_table": table,
            "shared": count(b.encoder),
        }
    else:
        table = model.text_backbone.words.weight.numel()
        counts = {
            "video": count(model.video_backbone),
            "audio": count(model.audio_backbone),
            "text": count(model.text_backbone) - table,
            "text_word_table": table,
        }
    counts["heads"] = count(model.heads)
    counts["total"] = count(model)
    assert sum(v for k, v in counts.items() if k != "total") == counts["total"]
    return counts


def example_inputs(cfg: ModelConfig, batch: int = 1, device: str | torch.device = "meta") -> dict[str, torch.Tensor]:
    """Inputs of the model's configured geometry: video, audio and one caption per clip."""
    v, a, t = cfg.video, cfg.audio, cfg.text
    return {
        "video": torch.zeros(batch, v.num_frames, v.crop_size, v.crop_size, 3, device=device),
        "audio": torch.zeros(batch, a.num_samples, device=device),
        "text": torch.ones(batch, t.max_words, dtype=torch.long, device=device),
    }


def forward_flops(cfg: ModelConfig, drop_rate: float | None = None, modalities=("video", "audio", "text")) -> int:
    """FLOPs of one training-mode forward of one clip at ``drop_rate`` (None: the config's)."""
    if drop_rate is not None:
        cfg = cfg.override({"video.drop_rate": drop_rate, "audio.drop_rate": drop_rate})
    model = build_meta(cfg).train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.eval()
    inputs = {k: v for k, v in example_inputs(cfg).items() if k in modalities}
    with flop_counter(display=False) as counter:
        model(**inputs, validate=False)
    return int(counter.get_total_flops())


def model_info(preset: str | ModelConfig, drop_rates=DROP_RATES, progress=None) -> dict[str, Any]:
    """``{"preset", "params": {...}, "gflops": {"0.0": ..., ...}}`` as printed by ``vatt model-info --json``.

    The paper presets' configured geometry is the paper input (32x224x224 video, 153,600 audio
    samples, 16 words); ``tiny`` is measured on its own small geometry. ``progress``: one unit
    per drop rate (:mod:`vatt.progress`).
    """
    from ..progress import track

    cfg = preset if isinstance(preset, ModelConfig) else get_config(preset)
    rates = track(progress, drop_rates, desc=f"counting FLOPs ({cfg.name})", unit="rate")
    return {
        "preset": cfg.name,
        "params": parameter_counts(build_meta(cfg)),
        "gflops": {str(float(r)): round(forward_flops(cfg, r) / 1e9, 3) for r in rates},
    }
