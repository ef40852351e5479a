"""CPU fast paths of the model's layers: same parameters, state dicts and results (within fp32
rounding; dropout: the same distribution), less time on CPUs.

* :class:`FastLinear`: ``nn.Linear`` whose fp32 CPU GEMMs (forward and both gradients) run on
  oneDNN (``cpu_linear="onednn"``).
* :class:`FastDropout` / :func:`residual_dropout`: dropout from 16 random bits per element,
  applied in one pass per direction and fused with the residual add of a transformer block
  (``cpu_dropout="bits"``).
* :func:`use_fast_paths`: applies the switches (and :meth:`Attention.fuse_qkv`, ``fused_qkv``) to
  every layer of a module; :func:`choose_fast_paths` does it from a :class:`~vatt.config.ModelConfig`
  when a backbone is built. The switches are runtime choices of the machine that runs the model,
  not architecture: ``save_pretrained`` leaves them out of ``config.json``
  (:data:`vatt.config.RUNTIME_FIELDS`).
* :func:`flop_counter`: ``FlopCounterMode`` that also counts the oneDNN GEMMs (torch's counter
  knows only its own matmul ops and counted a fast-path step as 0 FLOPs).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


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


def resolve_cpu_linear(choice: str) -> str:
    """``"auto"`` -> the faster fp32 GEMM of this CPU, from its instruction set (deterministic: the
    same machine always picks the same path, so runs and resumes on it round alike):

    * AVX-512: ``"onednn"``. On a 2-core AVX-512 AMD EPYC oneDNN ran the transformer's GEMMs at
      ~2x torch's default (MKL) GEMM (785x1024->4096: 430 vs 198 GFLOP/s).
    * otherwise (AVX2): ``"torch"``. On a 2-core AVX2 AMD EPYC (Zen 3) the MBS video-tower
      training step took 1.29 s with oneDNN linears and 1.10 s with torch's GEMM
      (``benchmarks/bench_speed.py``, ``onednn_only`` against ``baseline``).

    Intel CPUs were not measured; an AVX-512 Intel CPU gets oneDNN, as every CPU did before.
    ``"onednn"`` and ``"torch"`` are returned as they are."""
    if choice != "auto":
        return choice
    return "onednn" if torch.backends.cpu.get_cpu_capability().startswith("AVX512") else "torch"


def use_fast_paths(module: nn.Module, fused_qkv: bool = False, cpu_linear: str = "torch",
                   cpu_dropout: str = "torch") -> nn.Module:
    """Apply the CPU speed switches to every attention layer (``fuse_qkv``), ``nn.Linear`` and ``nn.Dropout`` in ``module``.

    ``fused_qkv``: one ``[3D, D]`` projection instead of q, k, v (see ``vatt.model.layers.Attention.fuse_qkv``).
    ``cpu_linear``: ``"onednn"`` runs fp32 CPU linears (forward and backward) on oneDNN
    (:class:`FastLinear`), ``"torch"`` on torch's default GEMM, ``"auto"`` picks one for this CPU
    (:func:`resolve_cpu_linear`). Parameters, state dict and outputs (within fp32 rounding) are
    unchanged either way.
    ``cpu_dropout``: ``"bits"`` makes CPU dropout masks from 16 random bits per element
    (:class:`FastDropout`; same distribution, other masks), ``"torch"`` uses ``F.dropout``.
    Every switch can be flipped back.
    """
    if cpu_linear not in ("auto", "torch", "onednn"):
        raise ValueError(f"cpu_linear must be 'auto', 'torch' or 'onednn', got {cpu_linear!r}")
    cpu_linear = resolve_cpu_linear(cpu_linear)
    if cpu_dropout not in ("torch", "bits"):
        raise ValueError(f"cpu_dropout must be 'torch' or 'bits', got {cpu_dropout!r}")
    for m in module.modules():
        if type(m) in (nn.Dropout, FastDropout):
            m.__class__ = FastDropout if cpu_dropout == "bits" else nn.Dropout
    for m in module.modules():
        if hasattr(m, "fuse_qkv"):  # layers.Attention (not imported: layers imports this module)
            m.fuse_qkv(fused_qkv)
    for m in module.modules():
        if type(m) in (nn.Linear, FastLinear):
            m.__class__ = FastLinear if cpu_linear == "onednn" else nn.Linear
    return module


def choose_fast_paths(module: nn.Module, cfg) -> nn.Module:
    """The fast paths of ``cfg`` (a :class:`~vatt.config.ModelConfig`: ``fused_qkv``,
    ``cpu_linear``, ``cpu_dropout``) for every layer of a freshly built ``module``."""
    return use_fast_paths(module, cfg.fused_qkv, cfg.cpu_linear, cfg.cpu_dropout)


def _onednn_linear_flops(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of ``mkldnn._linear_pointwise(x [.., K], W [N, K])``: 2 per multiply-add."""
    return 2 * math.prod(x_shape[:-1]) * x_shape[-1] * w_shape[0]


def flop_counter(**kwargs):
    """``torch.utils.flop_counter.FlopCounterMode(**kwargs)`` that also counts the oneDNN linears
    of :class:`FastLinear` (forward and both gradients), so a step counts the same FLOPs on the
    fast and the portable path. (The counter looks ops up by overload packet.)"""
    from torch.utils.flop_counter import FlopCounterMode

    return FlopCounterMode(custom_mapping={torch.ops.mkldnn._linear_pointwise: _onednn_linear_flops}, **kwargs)
