"""Transformer building blocks shared by the VATT backbones.

* :class:`Attention`, :class:`MLP`, :class:`TransformerBlock`, :class:`TransformerEncoder`:
  the pre-LayerNorm ViT-style encoder used for video, audio and the shared (modality-agnostic)
  model. Attention uses ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels).
* :class:`RMSNorm`, :class:`T5RelativeBias`, :class:`T5Block`: the T5-style text encoder pieces
  (no biases, no ``1/sqrt(d)`` scaling, a relative position bias added in every layer).
* :func:`use_fast_paths`: CPU speed switches (fused QKV projection, oneDNN linears, one-pass
  dropout from random bits, fused with the residual add by :func:`residual_dropout`); outputs equal
  within fp32 rounding (dropout: equal in distribution), state dicts unchanged
  (``ModelConfig.fused_qkv`` / ``cpu_linear`` / ``cpu_dropout``).

All shapes are ``[B, N, D]`` (batch, tokens, width) unless stated otherwise.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import EncoderConfig


def glorot_linear(in_dim: int, out_dim: int, bias: bool = True) -> nn.Linear:
    """``nn.Linear`` initialised as the official Keras Dense: Glorot-uniform kernel, zero bias."""
    layer = nn.Linear(in_dim, out_dim, bias=bias)
    nn.init.xavier_uniform_(layer.weight)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


def _onednn_ok(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """The oneDNN path applies to fp32 CPU tensors outside autocast (bf16 autocast already runs on
    oneDNN; meta tensors, e.g. FLOP counting, take the ordinary path) and outside ``torch.compile``
    (which chooses its own GEMMs: with ``freezing`` its prepacked oneDNN linears)."""
    return (not torch.compiler.is_compiling() and x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu") and torch.backends.mkldnn.is_available())


class _OneDNNLinearFn(torch.autograd.Function):
    """``F.linear`` whose three GEMMs (forward, input and weight gradients) run on oneDNN.

    On the AMD EPYC CPUs we run on, torch's default fp32 GEMM (MKL) reaches about half of what
    oneDNN reaches at the transformer's shapes (``benchmarks/results/cpu.md``). Results equal
    ``F.linear`` within fp32 rounding (another summation order), not bit for bit.
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        x2 = x.reshape(-1, x.shape[-1])
        y = torch.ops.mkldnn._linear_pointwise(x2, weight, bias, "none", [], "")
        return y.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        g2 = grad.reshape(-1, grad.shape[-1])
        lin = torch.ops.mkldnn._linear_pointwise
        dx = dw = db = None
        if ctx.needs_input_grad[0]:  # dx = g @ W = linear(g, W^T); oneDNN reads the transposed view
            # (a .contiguous() copy of W^T cost 14 ms of a 0.53 s MBS tower step: fresh pages each time)
            dx = lin(g2, weight.t(), None, "none", [], "").view(x.shape)
        if ctx.needs_input_grad[1]:
            x2 = x.reshape(-1, x.shape[-1])
            # The GEMM's input (its first operand) is made contiguous: copy fewer elements. Either
            # g^T (N x O), or x^T (N x I) plus dW^T back to [O, I] (3% of the tiny model's step).
            (n, i), o = x2.shape, g2.shape[1]
            if n * i + i * o < n * o:  # dW^T = x^T @ g = linear(x^T, g^T), transposed back
                dw = lin(x2.t().contiguous(), g2.t(), None, "none", [], "").t().contiguous()
            else:  # dW = g^T @ x = linear(g^T, x^T)
                dw = lin(g2.t().contiguous(), x2.t(), None, "none", [], "")
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = g2.sum(0)
        return dx, dw, db


class FastLinear(nn.Linear):
    """``nn.Linear`` (same parameters and state dict) that runs fp32 CPU GEMMs on oneDNN.

    :func:`use_fast_paths` turns existing ``nn.Linear`` modules into this class in place.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _onednn_ok(x, self.weight):
            return _OneDNNLinearFn.apply(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)


def _fast_dropout_ok(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.is_floating_point() and not torch.compiler.is_compiling()


_ZERO = torch.zeros(())  # the broadcast 0 of ``addcmul(0, x, keep, value=scale)``: x * keep * scale in one pass


def random_bits16(n: int) -> torch.Tensor:
    """``n`` uniformly random int16 values (16 random bits each), CPU.

    The bits come from numpy's SFC64 generator seeded by one draw from torch's generator, so they
    follow ``torch.manual_seed`` (and a checkpoint's saved RNG state) like every other random
    number of the model. SFC64 makes 64 bits in ~2 ns where torch's CPU generator (MT19937, one
    thread) takes ~4 ns: the generator was a third of a dropout's cost (docs/MODEL.md).
    """
    seed = int(torch.randint(0, 2 ** 62, (), dtype=torch.int64))
    raw = np.random.SFC64(seed).random_raw((n + 3) // 4)
    return torch.from_numpy(raw.view(np.int16)[:n])


def keep_mask(shape: torch.Size | tuple, p: float) -> torch.Tensor:
    """A dropout keep mask ``[shape]``, uint8 1 (kept) or 0 (dropped), from 16 random bits per element.

    An element is dropped with probability ``round(p * 65536) / 65536`` (p quantised to 1/65536,
    e.g. 0.1000061 for 0.1), independently of every other. Not the masks ``F.dropout`` draws for
    the same seed.
    """
    bits = random_bits16(math.prod(shape)).view(shape)
    return (bits >= round(p * 65536) - 32768).view(torch.uint8)  # a bool's bytes, read as 0/1 numbers


def _apply_keep(base: torch.Tensor, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
    """``base + x * keep * scale`` in one pass (``addcmul``). The mask is first widened to x's dtype
    in the output's own buffer (no extra allocation: fresh pages cost page faults): mixed-dtype
    arithmetic and ``masked_fill`` run element by element, several times slower than a vectorised
    pass, and uint8 -> float converts vectorised where bool -> float does not."""
    out = keep.to(x.dtype)
    return torch.addcmul(base, x, out, value=scale, out=out)


class _DropoutFn(torch.autograd.Function):
    """``x * keep * scale`` forward and ``grad * keep * scale`` backward, one pass each; saves the
    one-byte mask only."""

    @staticmethod
    def forward(ctx, x, keep, scale):
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return _apply_keep(_ZERO.to(x.dtype), x, keep, scale)

    @staticmethod
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        return _apply_keep(_ZERO.to(grad.dtype), grad, keep, ctx.scale), None, None


class _ResidualDropoutFn(torch.autograd.Function):
    """``x + y * keep * scale`` (a residual branch's dropout and the residual add) in one pass;
    backward: ``grad`` to x, ``grad * keep * scale`` to y."""

    @staticmethod
    def forward(ctx, x, y, keep, scale):
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return _apply_keep(x, y, keep, scale)

    @staticmethod
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        return grad, _apply_keep(_ZERO.to(grad.dtype), grad, keep, ctx.scale), None, None


def bits_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Training-mode dropout of ``x`` with a :func:`keep_mask`; kept elements are scaled by
    ``1 / (1 - p)`` as in ``F.dropout``, and gradients pass through them with the same scale."""
    return _DropoutFn.apply(x, keep_mask(x.shape, p), 1.0 / (1.0 - p))


def residual_dropout(drop: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x + drop(y)``: a residual add after a dropout module. A :class:`FastDropout` in training
    does both in one pass over memory (forward and backward); any other module runs as written."""
    if type(drop) is FastDropout and drop._applies(y) and x.shape == y.shape and x.dtype == y.dtype:
        return _ResidualDropoutFn.apply(x, y, keep_mask(y.shape, drop.p), 1.0 / (1.0 - drop.p))
    return x + drop(y)


class FastDropout(nn.Dropout):
    """``nn.Dropout`` (same module, no parameters) that makes its CPU masks with :func:`keep_mask`
    and applies them in one pass (:func:`bits_dropout`; with the residual add: :func:`residual_dropout`).

    :func:`use_fast_paths` turns existing ``nn.Dropout`` modules into this class in place. Other
    devices, ``p`` of 0 or 1, eval mode and ``torch.compile`` take ``F.dropout``.
    """

    def _applies(self, x: torch.Tensor) -> bool:
        return self.training and 0.0 < self.p < 1.0 and _fast_dropout_ok(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._applies(x):
            return bits_dropout(x, self.p)
        return F.dropout(x, self.p, self.training, self.inplace)


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


def use_fast_paths(module: nn.Module, fused_qkv: bool = False, cpu_linear: str = "torch",
                   cpu_dropout: str = "torch") -> nn.Module:
    """Apply the CPU speed switches to every :class:`Attention`, ``nn.Linear`` and ``nn.Dropout`` in ``module``.

    ``fused_qkv``: one ``[3D, D]`` projection instead of q, k, v (see :meth:`Attention.fuse_qkv`).
    ``cpu_linear``: ``"onednn"`` runs fp32 CPU linears (forward and backward) on oneDNN
    (:class:`FastLinear`), ``"torch"`` on torch's default GEMM. Parameters, state dict and outputs
    (within fp32 rounding) are unchanged either way.
    ``cpu_dropout``: ``"bits"`` makes CPU dropout masks from 16 random bits per element
    (:class:`FastDropout`; same distribution, other masks), ``"torch"`` uses ``F.dropout``.
    Every switch can be flipped back.
    """
    if cpu_linear not in ("torch", "onednn"):
        raise ValueError(f"cpu_linear must be 'torch' or 'onednn', got {cpu_linear!r}")
    if cpu_dropout not in ("torch", "bits"):
        raise ValueError(f"cpu_dropout must be 'torch' or 'bits', got {cpu_dropout!r}")
    for m in module.modules():
        if type(m) in (nn.Dropout, FastDropout):
            m.__class__ = FastDropout if cpu_dropout == "bits" else nn.Dropout
    for m in module.modules():
        if isinstance(m, Attention):
            m.fuse_qkv(fused_qkv)
    for m in module.modules():
        if type(m) in (nn.Linear, FastLinear):
            m.__class__ = FastLinear if cpu_linear == "onednn" else nn.Linear
    return module


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
        var = x.float().pow(2).mean(-1, keepdim=True)
        return self.weight * (x.float() * torch.rsqrt(var + self.eps)).to(x.dtype)


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
