"""Transformer building blocks shared by the VATT backbones.

* :class:`Attention`, :class:`MLP`, :class:`TransformerBlock`, :class:`TransformerEncoder`:
  the pre-LayerNorm ViT-style encoder used for video, audio and the shared (modality-agnostic)
  model. Attention uses ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels).
* :class:`RMSNorm`, :class:`T5RelativeBias`, :class:`T5Block`: the T5-style text encoder pieces
  (no biases, no ``1/sqrt(d)`` scaling, a relative position bias added in every layer).

The CPU fast paths (oneDNN linears, one-pass dropout, the fused QKV projection that
:meth:`Attention.fuse_qkv` provides) are chosen in :mod:`vatt.model.fast_paths`.

All shapes are ``[B, N, D]`` (batch, tokens, width) unless stated otherwise.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import EncoderConfig
from .fast_paths import residual_dropout


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32, or as it is when it is float64 (``precision=fp64`` runs): the parts that
    must not run in bf16/fp16 (norm statistics, the loss) keep a float64 model's precision."""
    return x if x.dtype == torch.float64 else x.float()


def glorot_linear(in_dim: int, out_dim: int, bias: bool = True) -> nn.Linear:
    """``nn.Linear`` initialised as the official Keras Dense: Glorot-uniform kernel, zero bias."""
    layer = nn.Linear(in_dim, out_dim, bias=bias)
    nn.init.xavier_uniform_(layer.weight)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


class Attention(nn.Module):
    """Multi-head self-attention with separate q/k/v/o projections.

    :meth:`fuse_qkv` replaces q, k and v by one ``qkv`` projection (weight ``[3D, D]``: one larger
    GEMM instead of three). The state dict keeps the q/k/v layout either way (hooks split and
    join the fused tensors), so weights, checkpoints and the official converter are unaffected;
    only the optimiser state, keyed by parameter, follows the fused layout.

    Args:
        width: model width ``D``.
        num_heads: number of heads; the head dimension is ``D / num_heads`` (64 in VATT).
        bias: whether the four projections have biases (ViT: yes; T5: no).
        scaled: divide the scores by ``sqrt(head_dim)`` (ViT: yes; T5: no).
        dropout: dropout on the attention probabilities (official: 0.1, training only).
    """

    def __init__(self, width: int, num_heads: int, bias: bool = True, scaled: bool = True, dropout: float = 0.0):
        super().__init__()
        if width % num_heads:
            raise ValueError(f"width {width} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = width // num_heads
        self.scale = 1.0 / math.sqrt(self.head_dim) if scaled else 1.0
        self.dropout = dropout
        self.q = glorot_linear(width, width, bias)
        self.k = glorot_linear(width, width, bias)
        self.v = glorot_linear(width, width, bias)
        self.o = glorot_linear(width, width, bias)

        self.fused = False
        self._register_state_dict_hook(_split_qkv_state)
        self.register_load_state_dict_pre_hook(_join_qkv_state)
        self.register_load_state_dict_post_hook(_report_qkv_keys)
        self._qkv_absent: list = []

    def fuse_qkv(self, fused: bool = True) -> None:
        """Switch between one fused ``qkv`` projection and separate q/k/v (values kept exactly)."""
        if fused == self.fused:
            return
        if fused:
            q, k, v = self.q, self.k, self.v
            qkv = torch.nn.utils.skip_init(type(q), q.in_features, 3 * q.out_features, bias=q.bias is not None,
                                           device=q.weight.device, dtype=q.weight.dtype)  # draws no random numbers
            with torch.no_grad():
                qkv.weight.copy_(torch.cat([q.weight, k.weight, v.weight]))
                if q.bias is not None:
                    qkv.bias.copy_(torch.cat([q.bias, k.bias, v.bias]))
            qkv.weight.requires_grad_(q.weight.requires_grad)
            if q.bias is not None:
                qkv.bias.requires_grad_(q.bias.requires_grad)
            del self.q, self.k, self.v
            self.qkv = qkv
        else:
            qkv = self.qkv
            d = qkv.out_features // 3
            for i, name in enumerate("qkv"):
                lin = torch.nn.utils.skip_init(type(qkv), qkv.in_features, d, bias=qkv.bias is not None,
                                               device=qkv.weight.device, dtype=qkv.weight.dtype)
                with torch.no_grad():
                    lin.weight.copy_(qkv.weight[i * d:(i + 1) * d])
                    if qkv.bias is not None:
                        lin.bias.copy_(qkv.bias[i * d:(i + 1) * d])
                lin.weight.requires_grad_(qkv.weight.requires_grad)
                if qkv.bias is not None:
                    lin.bias.requires_grad_(qkv.bias.requires_grad)
                setattr(self, name, lin)
            del self.qkv
        # projections first, as built (named_parameters and state_dict order)
        order = ["qkv"] if fused else ["q", "k", "v"]
        self._modules = {**{n: self._modules[n] for n in order},
                         **{n: m for n, m in self._modules.items() if n not in order}}
        self.fused = fused

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` [B, N, D]; ``mask`` an additive float mask broadcastable to [B, heads, N, N]."""
        b, n, d = x.shape
        if self.fused:
            qkv = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
        else:
            q, k, v = self._heads(self.q(x)), self._heads(self.k(x)), self._heads(self.v(x))
        if mask is not None:
            mask = mask.to(q.dtype)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0, scale=self.scale
        )
        return self.o(y.transpose(1, 2).reshape(b, n, d))


def _split_qkv_state(module: Attention, state: dict, prefix: str, local_metadata) -> None:
    """State-dict hook: a fused ``qkv`` is saved as the q/k/v tensors of the unfused layout."""
    if not module.fused:
        return
    own = [k for k in state if k.startswith(prefix)]  # this module's keys come last: rebuild them in order
    items = [(k, state.pop(k)) for k in own]
    parts: dict = {}
    for key, value in items:
        kind = key[len(prefix):].removeprefix("qkv.")
        if key.startswith(f"{prefix}qkv."):
            for name, part in zip("qkv", value.chunk(3)):
                parts[f"{prefix}{name}.{kind}"] = part.clone()
    for name in "qkv":
        for kind in ("weight", "bias"):
            key = f"{prefix}{name}.{kind}"
            if key in parts:
                state[key] = parts[key]
    for key, value in items:
        if not key.startswith(f"{prefix}qkv."):
            state[key] = value


def _join_qkv_state(module: Attention, state: dict, prefix: str, local_metadata, strict, missing, unexpected,
                    errors) -> None:
    """Load-state-dict pre-hook: q/k/v tensors (the saved layout) load into a fused ``qkv``."""
    module._qkv_absent = []
    if not module.fused:
        return
    for kind in ("weight", "bias"):
        keys = [f"{prefix}{name}.{kind}" for name in "qkv"]
        if all(k in state for k in keys):
            state[f"{prefix}qkv.{kind}"] = torch.cat([state.pop(k) for k in keys])
        elif any(k in state for k in keys):  # partial: report by the saved names, after loading
            module._qkv_absent.append((f"{prefix}qkv.{kind}", [k for k in keys if k not in state],
                                       [k for k in keys if k in state]))


def _report_qkv_keys(module: Attention, incompatible) -> None:
    """Load-state-dict post-hook: keys missing from a fused module's q/k/v are named as saved."""
    for fused_key, absent, present in module._qkv_absent:
        incompatible.missing_keys[:] = [k for k in incompatible.missing_keys if k != fused_key] + absent
        incompatible.unexpected_keys[:] = [k for k in incompatible.unexpected_keys if k not in present]
    module._qkv_absent = []


class MLP(nn.Module):
    """Linear -> exact GELU -> dropout -> Linear (the ViT / T5 GELU feed-forward)."""

    def __init__(self, width: int, hidden: int, bias: bool = True, dropout: float = 0.0):
        super().__init__()
        self.fc1 = glorot_linear(width, hidden, bias)
        self.fc2 = glorot_linear(hidden, width, bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(F.gelu(self.fc1(x))))


class CheckpointableBlock(nn.Module):
    """A transformer block that can recompute its activations in the backward pass.

    ``grad_checkpointing = True`` (set through ``VATT.set_grad_checkpointing``) runs
    :meth:`block_forward` under ``torch.utils.checkpoint`` in training with gradients on: the
    block's activations are not stored but recomputed, trading ~30% more compute for memory.
    Outputs and gradients are unchanged; the state dict too.
    """

    grad_checkpointing: bool = False

    def block_forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            return checkpoint(self.block_forward, x, mask, use_reentrant=False)
        return self.block_forward(x, mask)


class TransformerBlock(CheckpointableBlock):
    """Pre-LN block: ``x + drop(attn(LN(x)))`` then ``x + drop(mlp(LN(x)))`` (LayerNorm eps 1e-6)."""

    def __init__(self, cfg: EncoderConfig, dropout: float = 0.1, eps: float = 1e-6, attention_dropout: float = 0.1):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, eps=eps)
        self.attn = Attention(cfg.width, cfg.num_heads, bias=True, scaled=True, dropout=attention_dropout)
        self.norm2 = nn.LayerNorm(cfg.width, eps=eps)
        self.mlp = MLP(cfg.width, cfg.mlp_dim, bias=True, dropout=dropout)
        self.drop = nn.Dropout(dropout)

    def block_forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = residual_dropout(self.drop, x, self.attn(self.norm1(x), mask))
        return residual_dropout(self.drop, x, self.mlp(self.norm2(x)))


class TransformerEncoder(nn.Module):
    """A stack of :class:`TransformerBlock` followed by a final LayerNorm and dropout.

    Input and output ``[B, N, D]``; ``mask`` is an additive float mask ``[B, 1, 1, N]`` (0 keep,
    large negative drop) or None.
    """

    def __init__(self, cfg: EncoderConfig, dropout: float = 0.1, eps: float = 1e-6, attention_dropout: float = 0.1):
        super().__init__()
        self.blocks = nn.ModuleList(
            TransformerBlock(cfg, dropout, eps, attention_dropout) for _ in range(cfg.num_layers)
        )
        self.norm = nn.LayerNorm(cfg.width, eps=eps)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, mask)
        return self.drop(self.norm(x))


class RMSNorm(nn.Module):
    """T5 layer norm: ``w * x / sqrt(mean(x^2) + eps)`` (no mean subtraction, no bias)."""

    def __init__(self, width: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = at_least_fp32(x)
        var = x32.pow(2).mean(-1, keepdim=True)
        return self.weight * (x32 * torch.rsqrt(var + self.eps)).to(x.dtype)


def relative_position_bucket(relative: torch.Tensor, num_buckets: int = 32, max_distance: int = 64) -> torch.Tensor:
    """T5 bidirectional bucketing of ``relative = key_pos - query_pos`` into ``[0, num_buckets)``.

    Half the buckets hold keys before the query, half after; within each half, distances below
    ``num_buckets / 4`` get their own bucket and larger ones share log-spaced buckets up to
    ``max_distance``.
    """
    half = num_buckets // 2
    bucket = (relative > 0).long() * half
    n = relative.abs()
    exact = half // 2
    is_small = n < exact
    large = exact + (
        torch.log(n.float().clamp(min=1) / exact) / math.log(max_distance / exact) * (half - exact)
    ).long()
    large = large.clamp(max=half - 1)
    return bucket + torch.where(is_small, n, large)


class T5RelativeBias(nn.Module):
    """Learned per-head bias of the bucketed relative position, ``[1, heads, N, N]``.

    Computed once (the official code owns it in layer 0) and added to the scores of every layer.
    """

    def __init__(self, num_heads: int, num_buckets: int = 32, max_distance: int = 64):
        super().__init__()
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.embedding = nn.Embedding(num_buckets, num_heads)
        nn.init.uniform_(self.embedding.weight, -0.05, 0.05)  # Keras Embedding default

    def forward(self, n: int) -> torch.Tensor:
        pos = torch.arange(n, device=self.embedding.weight.device)
        buckets = relative_position_bucket(pos[None, :] - pos[:, None], self.num_buckets, self.max_distance)
        return self.embedding(buckets).permute(2, 0, 1).unsqueeze(0)


class T5Block(CheckpointableBlock):
    """T5 encoder layer as in the official VATT text model.

    ``x + drop(attn(RMSNorm(x), bias))`` with unscaled, bias-free attention, then
    ``x + drop(mlp(LayerNorm(x)))`` with a bias-free GELU MLP. (The official code uses the T5
    RMSNorm before attention but a standard Keras LayerNorm before the feed-forward; we follow it.)
    """

    def __init__(self, cfg: EncoderConfig, dropout: float = 0.1, eps: float = 1e-6, attention_dropout: float = 0.1):
        super().__init__()
        self.norm1 = RMSNorm(cfg.width, eps)
        self.attn = Attention(cfg.width, cfg.num_heads, bias=False, scaled=False, dropout=attention_dropout)
        self.norm2 = nn.LayerNorm(cfg.width, eps=eps)
        self.mlp = MLP(cfg.width, cfg.mlp_dim, bias=False, dropout=dropout)
        self.drop = nn.Dropout(dropout)

    def block_forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = residual_dropout(self.drop, x, self.attn(self.norm1(x), bias))
        return residual_dropout(self.drop, x, self.mlp(self.norm2(x)))
