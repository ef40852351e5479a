"""Precision and model-FLOPs utilisation (MFU), shared by the training loop and ``benchmarks/``.

MFU = achieved model FLOP/s / peak FLOP/s (nanoGPT's ``estimate_mfu``): the model side counts the
FLOPs of forward + backward of one clip (:func:`train_flops_per_clip`, measured by
``FlopCounterMode`` on the meta device, 2 FLOPs per multiply-add, backward = 2 x forward); the
peak is the card's dense data-sheet figure for known GPUs, else a measured square matmul.
"""

from __future__ import annotations

import contextlib
import functools
import os
import statistics
import time

import torch

PRECISIONS = ("fp32", "bf16", "fp16", "fp64")

# Dense (no sparsity) bf16/fp16 tensor-core peaks, TFLOP/s, from the vendors' data sheets.
BF16_PEAK_TFLOPS = {"H200": 989.4, "H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 PCIe": 756.0,
                    "H100": 989.4, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def autocast(device_type: str, precision: str):
    """The autocast context of a precision name: fp32 / fp64 = none; bf16 / fp16 = autocast to that dtype."""
    if precision in ("fp32", "fp64"):
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def trainer_threads(setting: int, device_type: str, num_workers: int, current: int | None = None,
                    env: dict | None = None) -> int:
    """Intra-op threads for a training process (``RunConfig.cpu_threads``): ``setting`` when > 0;
    else, on the CPU with loader workers, ``current`` (torch's default: the physical cores) less
    one per worker, at least 1 -- the workers decode on the same cores, and two trainer threads
    that wait for each other behind a busy worker are slower than one (docs/DATA.md) -- unless
    ``OMP_NUM_THREADS`` is set (the user's or the launcher's choice); otherwise ``current``."""
    current = torch.get_num_threads() if current is None else current
    env = os.environ if env is None else env
    if setting > 0:
        return setting
    if device_type != "cpu" or num_workers <= 0 or env.get("OMP_NUM_THREADS"):
        return current
    return max(1, current - num_workers)


def card_peak(name: str) -> float | None:
    """Data-sheet dense bf16 FLOP/s of a known GPU name (``torch.cuda.get_device_name``), else None."""
    for key, tflops in BF16_PEAK_TFLOPS.items():  # most specific names first
        if key in name:
            return tflops * 1e12
    return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops(device: torch.device | str, dtype: torch.dtype, n: int, reps: int = 10) -> float:
    """Measured FLOP/s of an ``n x n`` matmul (median of ``reps`` after two warm-ups)."""
    device = torch.device(device)
    gen = torch.Generator(device=device).manual_seed(0)  # never touch the global RNG (runs must reproduce)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    times = []
    for _ in range(reps + 2):
        _sync(device)
        t = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times[2:])


@functools.lru_cache(maxsize=8)
def peak_flops(device: str, precision: str = "fp32") -> tuple[float, str]:
    """``(peak FLOP/s, where it comes from)`` for MFU: a known card's data sheet (bf16/fp16), else a
    measured matmul of the precision's dtype (1024 on CPU, 8192 on GPU; cached per process)."""
    dev = torch.device(device)
    if dev.type == "cuda" and precision in ("bf16", "fp16"):
        peak = card_peak(torch.cuda.get_device_name(dev))
        if peak:
            return peak, "card data sheet"
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}[precision]
    n = 8192 if dev.type == "cuda" else 1024
    return matmul_flops(dev, dtype, n, reps=5 if dev.type == "cpu" else 10), f"measured {n}x{n} matmul"


def train_flops_per_clip(model_cfg, captions: int = 5) -> int:
    """FLOPs of forward + backward (3 x forward) of one training clip at the config's DropToken
    rates: video, audio and ``captions`` 16-word captions."""
    from ..model.flops import forward_flops

    with torch.random.fork_rng(devices=[]):  # building the meta model draws no numbers, but be sure
        full = forward_flops(model_cfg)
        text = forward_flops(model_cfg, modalities=("text",)) if captions > 1 else 0
    return 3 * (full + (captions - 1) * text)
