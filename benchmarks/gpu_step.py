"""One prepared GPU check (issue #6): an MBS pretraining step at batch 32 in bf16 with torch.compile.

Run it on a machine with one CUDA GPU (under 5 minutes):

    python benchmarks/gpu_step.py                      # mbs, batch 32, bf16 autocast, torch.compile
    python benchmarks/gpu_step.py --no-compile         # eager, for comparison

It records clips/s, model FLOP/s, MFU against the card's dense bf16 peak (from a table of known
cards, else the measured bf16 matmul peak, which is recorded as well), the SDPA backends enabled, and
the peak GPU memory, merged into ``benchmarks/results/gpu-<card>.json``. The step is the real one:
model forward on video + audio + 5 captions per clip, the VATT objective, backward and Adam.
FLOPs per step are counted once by ``torch.utils.flop_counter`` on an eager step (forward + backward).

``--smoke`` runs the same code on the CPU with the ``tiny`` preset (a test calls it so the script
cannot rot on machines without a GPU).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

import torch

from results_file import RESULTS, machine_info, merge_results

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import vatt  # noqa: E402
from vatt.model.fast_paths import flop_counter  # noqa: E402
from vatt.objective import VattObjective  # noqa: E402
from vatt.train.perf import card_peak, matmul_flops  # noqa: E402  (the helpers training's MFU uses)

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_batch(cfg, batch: int, device: torch.device) -> dict:
    g = torch.Generator().manual_seed(0)
    v, a, t = cfg.video, cfg.audio, cfg.text
    return {
        "video": (torch.rand(batch, v.num_frames, v.crop_size, v.crop_size, 3, generator=g) * 2 - 1).to(device),
        "audio": (torch.rand(batch, a.num_samples, generator=g) * 2 - 1).to(device),
        "text": torch.randint(1, t.vocab_size, (batch, 5, t.max_words), generator=g).to(device),
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="mbs")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--steps", type=int, default=10, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", type=Path, default=None, help="results file (default results/gpu-<card>.json)")
    p.add_argument("--smoke", action="store_true", help="tiny preset on CPU, batch 2, no compile, 2 steps")
    args = p.parse_args(argv)
    if args.smoke:
        args.preset, args.batch, args.compile, args.steps, args.warmup, args.device = "tiny", 2, False, 2, 1, "cpu"
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_step.py: no CUDA device here (use --smoke to check the script on a CPU)")
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    amp_dtype = torch.bfloat16 if args.dtype == "bf16" else None

    torch.manual_seed(0)
    model = vatt.create_model(args.preset, validate_inputs=False).to(device).train()
    objective = VattObjective()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, eps=1e-7)
    batch = make_batch(model.config, args.batch, device)

    def step(m) -> torch.Tensor:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            out = m(**batch)
        loss = objective(out)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    with flop_counter(display=False) as counter:  # eager fwd + bwd of the real step
        step(model)
    step_flops = counter.get_total_flops()

    run = torch.compile(model) if args.compile else model
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        step(run)
    sync(device)
    warmup_s = time.perf_counter() - t0
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        loss = step(run)
        sync(device)
        times.append(time.perf_counter() - t)
    step_s = statistics.median(times)

    measured_peak = matmul_flops(device, torch.bfloat16 if amp_dtype else torch.float32, 8192 if device.type == "cuda" else 512)
    peak = card_peak(card) if amp_dtype is not None and device.type == "cuda" else None
    result = {
        "card": card,
        "preset": args.preset,
        "batch": args.batch,
        "dtype": args.dtype,
        "compile": args.compile,
        "step_seconds_median": round(step_s, 4),
        "warmup_seconds": round(warmup_s, 1),
        "clips_per_second": round(args.batch / step_s, 2),
        "step_gflop": round(step_flops / 1e9, 1),
        "model_tflops_per_s": round(step_flops / step_s / 1e12, 2),
        "peak_tflops_card": round(peak / 1e12, 1) if peak else None,
        "peak_tflops_matmul_measured": round(measured_peak / 1e12, 2),
        "mfu": round(step_flops / step_s / (peak or measured_peak), 3),
        "mfu_against": "card bf16 data-sheet peak" if peak else "measured matmul peak",
        "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
        "sdpa_backends": {"flash": torch.backends.cuda.flash_sdp_enabled(),
                          "mem_efficient": torch.backends.cuda.mem_efficient_sdp_enabled()},
        "final_loss": round(float(loss.detach()), 4),
        "torch": torch.__version__,
        "host": machine_info(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    slug = re.sub(r"[^a-z0-9]+", "-", card.lower()).strip("-")
    out = args.out or RESULTS / f"gpu-{slug}.json"
    key = f"{args.preset}_b{args.batch}_{args.dtype}{'_compile' if args.compile else ''}"
    merge_results({key: result}, path=out)
    print(f"{key}: {result['clips_per_second']} clips/s, MFU {result['mfu']} ({result['mfu_against']}), "
          f"peak memory {result['peak_memory_gib']} GiB -> {out}")
    return result


if __name__ == "__main__":
    main()
