"""The VATT pretraining objective: NCE (video-audio) and MIL-NCE (video-text), SPEC §3.

For video ``v_i`` and its ``L`` candidates ``o_i,1..L`` (audio: L = 1; text: L = 5 captions),
all L2-normalised, ``s(x, y) = x . y / tau`` and negatives from the global batch (every rank):

    numerator_i   = logsumexp_l  s(v_i, o_i,l)
    denominator_i = logsumexp of [ s(v_i, o_j,l) for all j, l ]  ++  [ s(v_j, o_i,l) for all j, l ]
    loss_i        = denominator_i - numerator_i

(the positive pairs appear in both halves of the denominator, as in the official code).
Samples whose other modality is absent (mask 0, e.g. audio-only clips for the text loss) have
their candidates replaced by -1e9 in every denominator and are left out of the mean; the same
holds for absent video. The symmetric option gives each direction its own softmax (as in CLIP)
and averages the two.

Distributed: each rank computes ``loss_i`` for its own rows against all ranks' rows (gathered
with :func:`vatt.distributed.gather_with_grad`). The returned loss is scaled so that its
**mean over ranks** is the mean over the valid samples of the global batch; this is what DDP's
gradient averaging optimises. In one process it is simply the mean over valid samples.

Gradient accumulation: negatives come from one micro-batch (times the world size), not from the
whole accumulated batch; see docs/TRAINING.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import distributed as D
from .config_engine import ConfigBase, check_choice, check_number
from .errors import InputError
from .model.layers import at_least_fp32

MASKED = -1e9
WEIGHTINGS = ("official", "paper")


@dataclass
class ObjectiveConfig(ConfigBase):
    """Args:
    temperature: tau in s(x, y) = x . y / tau (0.07).
    weighting: "official" -> (L_va + L_vt) / 2 (the official code, default);
        "paper" -> L_va + vt_lambda * L_vt.
    vt_lambda: lambda of the paper's weighting (1.0).
    symmetric: each direction its own softmax (CLIP-style) instead of one joint denominator.
    gather: use negatives from every rank (True, SPEC); False keeps them per rank.
    """

    temperature: float = 0.07
    weighting: str = "official"
    vt_lambda: float = 1.0
    symmetric: bool = False
    gather: bool = True

    def check(self) -> None:
        check_choice(self.weighting, "objective.weighting", WEIGHTINGS)
        check_number(self.temperature, "objective.temperature", low=0, low_open=True)
        check_number(self.vt_lambda, "objective.vt_lambda", low=0)

    @property
    def weights(self) -> tuple[float, float]:
        """(weight of L_va, weight of L_vt)."""
        return (0.5, 0.5) if self.weighting == "official" else (1.0, float(self.vt_lambda))


def _as_candidates(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.dim() == 2:
        return x[:, None, :]
    if x.dim() == 3:
        return x
    raise InputError(f"{name}: expected [B, D] or [B, L, D] embeddings, got {list(x.shape)}")


def contrastive_loss_terms(
    video: torch.Tensor,
    other: torch.Tensor,
    video_mask: torch.Tensor | None = None,
    other_mask: torch.Tensor | None = None,
    *,
    temperature: float = 0.07,
    symmetric: bool = False,
    gather: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample MIL-NCE terms for this rank's rows.

    Args:
        video: ``[B, D]`` video embeddings (not normalised).
        other: ``[B, L, D]`` (or ``[B, D]`` for L = 1) embeddings of the paired modality.
        video_mask, other_mask: ``[B]``, 1 = present (default all present).
    Returns:
        ``loss_i [B]`` (float32; zero where invalid), ``valid [B]`` (bool),
        ``num_valid_global`` (float32 scalar, valid samples over all ranks).
    """
    other = _as_candidates(other, "other")
    if video.dim() != 2 or other.shape[0] != video.shape[0] or other.shape[-1] != video.shape[-1]:
        raise InputError(
            f"expected video [B, D] and other [B, L, D] with the same B and D, "
            f"got {list(video.shape)} and {list(other.shape)}"
        )
    B, L, Dm = other.shape
    dev = video.device
    # The loss runs in float32 whatever the autocast precision (logits / 0.07 overflow fp16); float64 in fp64 runs.
    v = F.normalize(at_least_fp32(video), dim=-1)
    o = F.normalize(at_least_fp32(other), dim=-1)
    vm = torch.ones(B, device=dev) if video_mask is None else video_mask.to(dev, torch.float32).reshape(B)
    om = torch.ones(B, device=dev) if other_mask is None else other_mask.to(dev, torch.float32).reshape(B)

    if gather and D.is_distributed():
        sizes = D.gather_sizes(B, dev)
        v_all, o_all = D.gather_with_grad(v, sizes), D.gather_with_grad(o, sizes)
        vm_all, om_all = D.gather_no_grad(vm, sizes), D.gather_no_grad(om, sizes)
    else:
        v_all, o_all, vm_all, om_all = v, o, vm, om
    N = v_all.shape[0]

    # s(v_i, o_j,l) for local i, global j, l: [B, N, L]; absent o_j masked.
    s_vo = torch.einsum("id,jld->ijl", v, o_all) / temperature
    s_vo = s_vo.masked_fill(om_all[None, :, None] <= 0, MASKED)
    # s(v_j, o_i,l) for global j, local i, l: [B, N, L]; absent v_j masked.
    s_ov = torch.einsum("jd,ild->ijl", v_all, o) / temperature
    s_ov = s_ov.masked_fill(vm_all[None, :, None] <= 0, MASKED)

    positives = torch.einsum("id,ild->il", v, o) / temperature  # [B, L]
    numerator = torch.logsumexp(positives, dim=1)
    if symmetric:
        loss = 0.5 * (torch.logsumexp(s_vo.reshape(B, N * L), 1) + torch.logsumexp(s_ov.reshape(B, N * L), 1))
        loss = loss - numerator
    else:
        denominator = torch.logsumexp(torch.cat([s_vo.reshape(B, N * L), s_ov.reshape(B, N * L)], 1), 1)
        loss = denominator - numerator
    valid = (vm > 0) & (om > 0)
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    num_valid = D.all_reduce_sum(valid.float().sum()) if gather else valid.float().sum()
    return loss, valid, num_valid


def mil_nce_loss(
    video: torch.Tensor,
    other: torch.Tensor,
    video_mask: torch.Tensor | None = None,
    other_mask: torch.Tensor | None = None,
    *,
    temperature: float = 0.07,
    symmetric: bool = False,
    gather: bool = True,
) -> torch.Tensor:
    """MIL-NCE over ``L`` candidates per clip (L = 1 is plain NCE); a float32 scalar.

    The value's mean over ranks is the mean of ``loss_i`` over the valid samples of the global
    batch (0 when no sample is valid). Shapes as in :func:`contrastive_loss_terms`.
    """
    loss, _, num_valid = contrastive_loss_terms(
        video, other, video_mask, other_mask, temperature=temperature, symmetric=symmetric, gather=gather
    )
    world = D.get_world_size() if gather else 1
    return loss.sum() * world / num_valid.clamp_min(1.0)


def nce_loss(video, audio, video_mask=None, audio_mask=None, **kw) -> torch.Tensor:
    """NCE between video ``[B, D]`` and audio ``[B, D]`` embeddings (MIL-NCE with L = 1)."""
    return mil_nce_loss(video, audio, video_mask, audio_mask, **kw)


class VattObjective(torch.nn.Module):
    """``VattObjective(cfg)(outputs, batch) -> {"loss", "loss_va", "loss_vt"}``.

    ``outputs`` is the model's forward dict (``video_va`` [B, 512], ``audio_va`` [B, 512],
    ``video_vt`` [B, 256], ``text_vt`` [B, 5, 256]); ``batch`` may carry ``video_mask``,
    ``audio_mask``, ``text_mask`` [B] (1 = present). A pair whose embeddings are missing from
    ``outputs`` contributes 0.
    """

    def __init__(self, cfg: ObjectiveConfig | None = None):
        super().__init__()
        self.cfg = cfg or ObjectiveConfig()

    def forward(self, outputs: dict, batch: dict | None = None) -> dict[str, torch.Tensor]:
        batch = batch or {}
        kw = dict(temperature=self.cfg.temperature, symmetric=self.cfg.symmetric, gather=self.cfg.gather)
        zero = None
        for key in ("video_va", "video_vt"):
            if key in outputs:
                zero = outputs[key].float().sum() * 0.0
        if zero is None:
            raise InputError(f"the objective needs video embeddings; outputs has {sorted(outputs)}")
        vmask = batch.get("video_mask")
        if "video_va" in outputs and "audio_va" in outputs:
            loss_va = nce_loss(outputs["video_va"], outputs["audio_va"], vmask, batch.get("audio_mask"), **kw)
        else:
            loss_va = zero
        if "video_vt" in outputs and "text_vt" in outputs:
            loss_vt = mil_nce_loss(outputs["video_vt"], outputs["text_vt"], vmask, batch.get("text_mask"), **kw)
        else:
            loss_vt = zero
        w_va, w_vt = self.cfg.weights
        return {"loss": w_va * loss_va + w_vt * loss_vt, "loss_va": loss_va, "loss_vt": loss_vt}
