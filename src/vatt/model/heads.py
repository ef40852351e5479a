"""Common-space projection heads: AGG features -> the video-audio (S_va) and video-text (S_vt) spaces.

Official placement (default, it produced the published checkpoints)::

    z_v,va = BN(Linear(512->512)(ReLU(BN(Linear(Dv->512)(v)))))      (linears without bias)
    z_v,vt = BN(Linear(512->256)(ReLU(z_v,va)))
    z_a,va = Linear(Da->512)(a)                                        (with bias)
    z_t,vt = Linear(Dt->256)(t)                                        (with bias)

``bn_placement="paper"``: the paper's "BN after every linear": the audio and text heads become
Linear (no bias) -> BN too. Outputs are not L2-normalised (the loss and retrieval do that).

BatchNorm running variance: in training, PyTorch updates ``running_var`` with the *unbiased*
batch variance (``n / (n - 1)`` times the biased one), Keras (official) with the *biased* one.
Inference uses the stored statistics, so converted official checkpoints give the official
outputs exactly; only the statistics a long training run accumulates differ, by that factor
(1.0002 at the paper's batch 4096 per BN call, larger for small batches). We keep PyTorch's rule.

:func:`classifier_head` is the fine-tuning classification layer (official initialisation).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ClassifierConfig, HeadConfig
from .layers import glorot_linear


class _LinearBN(nn.Module):
    """Linear (no bias) -> BatchNorm1d; accepts ``[..., D]`` (BN statistics over all leading dims)."""

    def __init__(self, in_dim: int, out_dim: int, cfg: HeadConfig):
        super().__init__()
        self.linear = glorot_linear(in_dim, out_dim, bias=False)
        self.bn = nn.BatchNorm1d(out_dim, eps=cfg.bn_eps, momentum=cfg.bn_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return self.bn(y.reshape(-1, y.shape[-1])).reshape(y.shape)


class CommonSpaceHeads(nn.Module):
    """The three projection heads.

    Args:
        video_dim, audio_dim, text_dim: AGG feature sizes of the backbones.
        cfg: head sizes (512 / 256) and BN placement.
    """

    def __init__(self, video_dim: int, audio_dim: int, text_dim: int, cfg: HeadConfig):
        super().__init__()
        self.video_va1 = _LinearBN(video_dim, cfg.va_dim, cfg)
        self.video_va2 = _LinearBN(cfg.va_dim, cfg.va_dim, cfg)
        self.video_vt = _LinearBN(cfg.va_dim, cfg.vt_dim, cfg)
        if cfg.bn_placement == "paper":
            self.audio_va: nn.Module = _LinearBN(audio_dim, cfg.va_dim, cfg)
            self.text_vt: nn.Module = _LinearBN(text_dim, cfg.vt_dim, cfg)
        else:
            self.audio_va = glorot_linear(audio_dim, cfg.va_dim, bias=True)
            self.text_vt = glorot_linear(text_dim, cfg.vt_dim, bias=True)

    def video(self, agg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, Dv]`` -> ``(z_va [B, 512], z_vt [B, 256])``."""
        va = self.video_va2(F.relu(self.video_va1(agg)))
        return va, self.video_vt(F.relu(va))

    def audio(self, agg: torch.Tensor) -> torch.Tensor:
        """``[B, Da]`` -> ``[B, 512]``."""
        return self.audio_va(agg)

    def text(self, agg: torch.Tensor) -> torch.Tensor:
        """``[..., Dt]`` -> ``[..., 256]``."""
        return self.text_vt(agg)

    def project(self, agg: torch.Tensor, modality: str) -> dict[str, torch.Tensor]:
        """The common-space embeddings of one modality's AGG feature, by output name:
        ``video_va``/``video_vt``, ``audio_va`` or ``text_vt``."""
        if modality == "video":
            va, vt = self.video(agg)
            return {"video_va": va, "video_vt": vt}
        if modality == "audio":
            return {"audio_va": self.audio(agg)}
        return {"text_vt": self.text(agg)}


def classifier_head(in_dim: int, cfg: ClassifierConfig) -> nn.Linear:
    """``Linear(in_dim -> num_classes)`` initialised as the official fine-tuning heads.

    Official (followed here): video classification uses a Glorot-*normal* kernel (Keras: a
    normal truncated at 2 std, std ``sqrt(2 / (fan_in + fan_out))``) and zero bias; audio
    (multi-label) uses a Glorot-*uniform* kernel and bias ``-log(C - 1)``, so every sigmoid
    starts near the prior ``1 / C``.
    """
    head = nn.Linear(in_dim, cfg.num_classes)
    init_classifier_(head, cfg.multilabel)
    return head


def init_classifier_(head: nn.Linear, multilabel: bool) -> None:
    """Official initialisation of a classification ``head`` in place (see :func:`classifier_head`)."""
    c = head.out_features
    with torch.no_grad():
        if multilabel:
            nn.init.xavier_uniform_(head.weight)
            head.bias.fill_(-math.log(c - 1) if c > 1 else 0.0)
        else:
            std = (2.0 / (head.in_features + c)) ** 0.5 / 0.87962566103423978
            nn.init.trunc_normal_(head.weight, std=std, a=-2 * std, b=2 * std)
            head.bias.zero_()
