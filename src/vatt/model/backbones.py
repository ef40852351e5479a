"""The VATT backbones: each maps raw input to the AGG feature (the final hidden state of the
learned aggregation token, prepended after positions and DropToken).

* :class:`VideoTransformer`  ``[B, T, H, W, 3]`` -> ``[B, D]`` (ViT over voxels)
* :class:`AudioTransformer`  ``[B, S]``          -> ``[B, D]`` (WaT over waveform patches)
* :class:`TextTransformer`   ``[N, W]`` ids       -> ``[N, D]`` (T5-style encoder over words)
* :class:`ModalityAgnosticTransformer`: one shared encoder run once per modality.
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .fast_paths import choose_fast_paths
from .layers import RMSNorm, T5Block, T5RelativeBias, TransformerEncoder, glorot_linear
from .tokenizers import AudioTokenizer, SpatioTemporalPositions, TemporalPositions, VideoTokenizer

MASK_VALUE = -1e9  # the official additive mask value for padded keys


def _agg_token(width: int) -> nn.Parameter:
    # Official: Keras glorot_normal on a [D] vector (fan_in = fan_out = D): a normal of std
    # D^-0.5 / 0.8796 truncated at 2 std, so that the *truncated* std is D^-0.5.
    token = torch.empty(width)
    std = width**-0.5 / 0.87962566103423978
    nn.init.trunc_normal_(token, std=std, a=-2 * std, b=2 * std)
    return nn.Parameter(token)


def prepend(token: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``[D]`` and ``[B, N, D]`` -> ``[B, 1 + N, D]``."""
    return torch.cat([token.to(x.dtype).expand(x.shape[0], 1, -1), x], dim=1)


def padding_mask(ids: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive key mask ``[N, 1, 1, 1 + W]`` for ``ids`` [N, W]: pad (id 0) keys get -1e9; the
    prepended AGG position is never masked."""
    pad = torch.cat([torch.zeros_like(ids[:, :1], dtype=torch.bool), ids == 0], dim=1)
    return torch.zeros(pad.shape, dtype=dtype, device=ids.device).masked_fill(pad, MASK_VALUE)[:, None, None, :]


class _Backbone(nn.Module):
    """What every tower offers: ``forward(x) -> [B, D]`` (the AGG feature),
    ``forward_features(x) -> [B, 1 + N, D]`` (every output token, AGG first) and
    ``transformer_blocks()``."""

    encoder: TransformerEncoder

    def transformer_blocks(self) -> Iterator[nn.Module]:
        """The transformer blocks, input to output (used by activation checkpointing and FSDP)."""
        return iter(self.encoder.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[:, 0]


class _Tower(_Backbone):
    """Video or audio tower: tokenizer (DropToken in training), AGG token, encoder, and for
    agnostic fine-tunes the official pre/post projections (``pre_proj``/``post_proj_dim``)."""

    drop_rate: float

    def __init__(self, cfg: ModelConfig, modality: str, tokenizer: nn.Module, enc):
        super().__init__()
        geometry = getattr(cfg, modality)
        self.drop_rate = geometry.drop_rate
        self.per_sample_drop = cfg.droptoken == "sample"
        self.tokenizer = tokenizer
        self.pre_proj = glorot_linear(enc.width, enc.width) if geometry.pre_proj else None
        self.agg = _agg_token(enc.width)
        self.encoder = TransformerEncoder(enc, cfg.dropout, cfg.layer_norm_eps, cfg.attention_dropout)
        self.post_proj = glorot_linear(enc.width, geometry.post_proj_dim) if geometry.post_proj_dim else None
        self.width = geometry.post_proj_dim or enc.width
        choose_fast_paths(self, cfg)

    def _rate(self) -> float:
        """The DropToken rate now: ``drop_rate`` in training mode, 0 in eval mode."""
        return self.drop_rate if self.training else 0.0

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        project = (lambda t: F.gelu(self.pre_proj(t))) if self.pre_proj is not None else None
        tokens = self.tokenizer(x, self._rate(), self.per_sample_drop, project=project)
        out = self.encoder(prepend(self.agg, tokens))
        return F.gelu(self.post_proj(out)) if self.post_proj is not None else out


class VideoTransformer(_Tower):
    """ViT over voxels. ``forward(video [B, T, H, W, 3]) -> [B, D]`` (the AGG feature).

    DropToken at ``cfg.video.drop_rate`` runs in training mode only.
    """

    def __init__(self, cfg: ModelConfig):
        enc = cfg.video_encoder
        tokenizer = VideoTokenizer(cfg.video.patch_size, cfg.video.grid, enc.width, cfg.dropout, cfg.layer_norm_eps,
                                   resample=cfg.position_resample, keep_rule=cfg.droptoken_keep)
        super().__init__(cfg, "video", tokenizer, enc)


class AudioTransformer(_Tower):
    """WaT over raw waveform patches. ``forward(audio [B, S]) -> [B, D]``."""

    def __init__(self, cfg: ModelConfig):
        enc = cfg.audio_encoder
        tokenizer = AudioTokenizer(cfg.audio.patch_size, cfg.audio.num_tokens, enc.width, cfg.dropout,
                                   cfg.layer_norm_eps, resample=cfg.position_resample, keep_rule=cfg.droptoken_keep)
        super().__init__(cfg, "audio", tokenizer, enc)


def _word_table(cfg: ModelConfig) -> nn.Embedding:
    table = nn.Embedding(cfg.text.vocab_size, cfg.text.word_dim)
    std = cfg.text.word_dim**-0.5
    nn.init.trunc_normal_(table.weight, std=std, a=-2 * std, b=2 * std)
    table.weight.requires_grad_(cfg.text.trainable_word_table)
    return table


class TextTransformer(_Backbone):
    """T5-style text encoder (official VATT text model). ``forward(ids [N, W]) -> [N, D]``.

    Words are looked up in a ``vocab x word_dim`` table (official: frozen word2vec, 2^16 x 300;
    ours is learned unless ``text.trainable_word_table`` is off), a learned AGG vector is
    prepended in that word space, then Linear(word_dim -> D, no bias) + GELU, then T5 layers with
    one relative position bias (computed once, added in every layer), a final RMSNorm and dropout.
    Padding (id 0) is masked as attention keys; the AGG token never is.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        enc = cfg.text_encoder
        self.width = enc.width
        self.words = _word_table(cfg)
        self.agg = _agg_token(cfg.text.word_dim)
        self.proj = glorot_linear(cfg.text.word_dim, enc.width, bias=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.relative_bias = T5RelativeBias(enc.num_heads, cfg.text.num_buckets, cfg.text.max_distance)
        self.blocks = nn.ModuleList(
            T5Block(enc, cfg.dropout, cfg.layer_norm_eps, cfg.attention_dropout) for _ in range(enc.num_layers)
        )
        self.norm = RMSNorm(enc.width, cfg.layer_norm_eps)
        choose_fast_paths(self, cfg)

    def transformer_blocks(self) -> Iterator[nn.Module]:
        return iter(self.blocks)

    def forward_features(self, ids: torch.Tensor) -> torch.Tensor:
        x = prepend(self.agg, self.words(ids))
        x = self.drop(F.gelu(self.proj(x)))
        bias = self.relative_bias(x.shape[1]) + padding_mask(ids)  # [N, heads, 1+W, 1+W]
        for block in self.blocks:
            x = block(x, bias)
        return self.drop(self.norm(x))


class _Stem(nn.Module):
    """Per-modality parts of the modality-agnostic model: raw -> embedding, pre-projection
    Linear(->D)+GELU, positions, AGG token, and post-projection Linear(D->post)+GELU."""

    def __init__(self, embed: nn.Module, embed_dim: int, positions: nn.Module, width: int, post_dim: int):
        super().__init__()
        self.embed = embed
        self.pre_proj = glorot_linear(embed_dim, width)
        self.positions = positions
        self.agg = _agg_token(width)
        self.post_proj = glorot_linear(width, post_dim)


class ModalityAgnosticTransformer(nn.Module):
    """One shared Transformer encoder, run separately per modality (official "UniversalVATT").

    ``forward(x, modality)`` with ``modality`` in {"video", "audio", "text"} returns ``[B, post]``
    (the post-projected AGG feature); ``forward_features`` every post-projected token
    ``[B, 1 + N, post]``. DropToken applies to video and audio in training.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        enc = cfg.shared_encoder
        d, eps, p = enc.width, cfg.layer_norm_eps, cfg.dropout
        rs, keep = cfg.position_resample, cfg.droptoken_keep
        self.width = cfg.post_proj_dim
        self.drop_rates = {"video": cfg.video.drop_rate, "audio": cfg.audio.drop_rate}
        self.per_sample_drop = cfg.droptoken == "sample"
        self.video = _Stem(
            VideoTokenizer(cfg.video.patch_size, cfg.video.grid, d, p, eps, with_positions=False, keep_rule=keep),
            d, SpatioTemporalPositions(cfg.video.grid, d, p, eps, rs), d, cfg.post_proj_dim,
        )
        self.audio = _Stem(
            AudioTokenizer(cfg.audio.patch_size, cfg.audio.num_tokens, d, p, eps, with_positions=False, keep_rule=keep),
            d, TemporalPositions(cfg.audio.num_tokens, d, p, eps, rs), d, cfg.post_proj_dim,
        )
        self.text = _Stem(
            _word_table(cfg), cfg.text.word_dim, TemporalPositions(cfg.text.max_words, d, p, eps, rs), d,
            cfg.post_proj_dim,
        )
        self.encoder = TransformerEncoder(enc, p, eps, cfg.attention_dropout)
        choose_fast_paths(self, cfg)

    def transformer_blocks(self) -> Iterator[nn.Module]:
        return iter(self.encoder.blocks)

    def _tokens(self, x: torch.Tensor, modality: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Embedded, pre-projected, position-encoded tokens (DropToken applied) and the key mask."""
        stem: _Stem = getattr(self, modality)
        if modality == "text":
            return stem.positions(F.gelu(stem.pre_proj(stem.embed(x)))), padding_mask(x)
        rate = self.drop_rates.get(modality, 0.0) if self.training else 0.0
        tokens = stem.embed(x, rate, self.per_sample_drop, project=lambda t: F.gelu(stem.pre_proj(t)),
                            positions=stem.positions)
        return tokens, None

    def forward_features(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        tokens, mask = self._tokens(x, modality)
        stem = getattr(self, modality)
        return F.gelu(stem.post_proj(self.encoder(prepend(stem.agg, tokens), mask)))

    def forward(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        tokens, mask = self._tokens(x, modality)
        stem = getattr(self, modality)
        out = self.encoder(prepend(stem.agg, tokens), mask)
        return F.gelu(stem.post_proj(out[:, 0]))
