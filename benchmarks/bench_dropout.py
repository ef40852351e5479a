#!/usr/bin/env python
"""What dropout costs a training step on this CPU (issue 23): the MBS video-tower step, dropout on and off.

    python benchmarks/bench_dropout.py            # about 4 minutes on 2 busy cores; writes results/
    python benchmarks/bench_dropout.py --quick    # smoke run in seconds; prints, writes nothing

Results go to ``benchmarks/results/cpu.json`` under ``dropout`` (and ``cpu.md`` is re-rendered),
with the machine (CPU model, ISA flags, threads, library versions) they were measured on.

* ``tower``: bench_speed's tower step (MBS video tower, 2 of 12 layers, batch 1, 32x224x224,
  DropToken 0.5, attention dropout 0, fp32, fused Adam, every other fast path on) in four variants,
  timed in turn (a, b, c, d, a, ...), medians of ``--reps``, wall clock and process CPU time:
  ``off`` (dropout 0), ``default`` (dropout 0.1, this code's CPU dropout, ``cpu_dropout="bits"``),
  ``torch`` (dropout 0.1 through ``F.dropout``, ``cpu_dropout="torch"``) and ``issue14`` (dropout
  0.1 as issue 14 made it, reproduced below: masks from torch's generator, ``x * scale`` then
  ``masked_fill_``, the residual added apart). Each variant's time over ``off`` is 1 + dropout's
  cost; the goal is the official TensorFlow code's (issue 23: 0.91 s / 0.85 s = 1.07 on an Intel Xeon).
* ``ops``: one dropout forward + backward at the tower's MLP-hidden shape (785 x 4096) and on a
  residual branch (785 x 1024, with the residual add), per implementation, against no dropout;
  and the random bits alone (torch's MT19937 vs numpy's SFC64, 16 bits per element). On
  ``--op-threads`` (default 1): the work itself, without two threads waiting for each other.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from results_file import machine_info, publish

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

GOAL = 1.07  # the official code's step with dropout over without (issue 23, Intel Xeon, 2 threads)
HIDDEN, RESIDUAL = (785, 4096), (785, 1024)  # 784 kept tokens + AGG; MLP hidden and model width


def log(msg: str) -> None:
    print(f"[bench_dropout {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def interleaved(fns: dict, reps: int, warmup: int = 1) -> dict:
    """Median wall and process-CPU seconds of each function, timed in turn (a, b, a, b, ...). CPU
    time is the steadier figure on a shared machine (a preempted step waits, it does not work)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    wall: dict = {k: [] for k in fns}
    cpu: dict = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in fns}


# -- the issue-14 CPU dropout, kept here as the reference it was ---------------------------------------
class _Issue14MaskScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, drop, scale):
        ctx.save_for_backward(drop)
        ctx.scale = scale
        return x.mul(scale).masked_fill_(drop, 0)

    @staticmethod
    def backward(ctx, grad):
        (drop,) = ctx.saved_tensors
        return grad.mul(ctx.scale).masked_fill_(drop, 0), None, None


class Issue14Dropout(nn.Dropout):
    """Dropout as commit aa9968b made it: 16 bits of torch's generator per element, ``x * scale``
    then ``masked_fill_`` (forward and backward), and the residual add as a separate pass."""

    def forward(self, x):
        if not (self.training and 0 < self.p < 1):
            return F.dropout(x, self.p, self.training)
        n = x.numel()
        bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2 ** 63), None)
        drop = bits.view(torch.int16)[:n].view(x.shape) < (round(self.p * 65536) - 32768)
        return _Issue14MaskScale.apply(x, drop, 1.0 / (1.0 - self.p))


def with_issue14_dropout(module: nn.Module) -> nn.Module:
    for m in module.modules():
        if isinstance(m, nn.Dropout):
            m.__class__ = Issue14Dropout
    return module


# -- workloads --------------------------------------------------------------------------------------
def tower_steps(quick: bool) -> dict:
    from bench_speed import tower

    steps = {"off": tower(quick, dropout=0.0), "default": tower(quick, dropout=0.1),
             "torch": tower(quick, dropout=0.1, cpu_dropout="torch"), "issue14": tower(quick, dropout=0.1)}
    with_issue14_dropout(steps["issue14"].model)
    return steps


def op_runs(shape, residual: bool) -> dict:
    """Forward + backward of one dropout (``residual``: ``r + drop(y)``) per implementation."""
    from vatt.model.fast_paths import FastDropout, residual_dropout

    y0 = torch.randn(shape, requires_grad=True)
    r0 = torch.randn(shape, requires_grad=True)
    g = torch.randn(shape)
    p = 0.1

    def run(drop):
        def fn():
            y = y0 * 1.0  # a fresh activation, as in the model
            out = residual_dropout(drop, r0, y) if residual else drop(y)
            out.backward(g)
            y0.grad = r0.grad = None
        return fn

    return {"none": run(nn.Identity()), "default": run(FastDropout(p).train()), "torch": run(nn.Dropout(p).train()),
            "issue14": run(Issue14Dropout(p).train())}


def generator_runs(n: int) -> dict:
    from vatt.model.fast_paths import random_bits16

    return {"torch_mt19937": lambda: torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2 ** 63), None),
            "numpy_sfc64": lambda: random_bits16(n)}


def ms(pair) -> dict:
    return {"wall_ms": round(pair[0] * 1e3, 2), "cpu_ms": round(pair[1] * 1e3, 2)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--reps", type=int, default=9)
    p.add_argument("--op-reps", type=int, default=25)
    p.add_argument("--threads", type=int, default=int(os.environ.get("BENCH_THREADS", "2")))
    p.add_argument("--op-threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    reps, op_reps = (2, 3) if args.quick else (args.reps, args.op_reps)
    t0 = time.time()
    res: dict = {"env": {"machine": machine_info(), "threads": torch.get_num_threads(),
                         "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "reps": reps,
                         "load_average_start": [round(x, 2) for x in os.getloadavg()]}}
    log(f"dropout ops on {args.op_threads} thread(s): MLP hidden and residual shapes, and the random bits alone")
    torch.set_num_threads(args.op_threads)
    scale = 16 if args.quick else 1
    hidden, resid = (HIDDEN[0] // scale, HIDDEN[1]), (RESIDUAL[0] // scale, RESIDUAL[1])
    ops: dict = {}
    for name, shape, residual in (("mlp_hidden", hidden, False), ("residual_branch", resid, True)):
        times = interleaved(op_runs(shape, residual), op_reps)
        ops[name] = {"shape": list(shape), **{k: ms(v) for k, v in times.items()}}
        for k in ("default", "torch", "issue14"):  # the dropout's own cost: over no dropout
            ops[name][k]["over_none_cpu_ms"] = round((times[k][1] - times["none"][1]) * 1e3, 2)
    times = interleaved(generator_runs(hidden[0] * hidden[1]), op_reps)
    ops["random_bits_mlp_hidden"] = {k: ms(v) for k, v in times.items()}
    res["ops"] = {"threads": args.op_threads, **ops}
    log(f"  {ops}")
    torch.set_num_threads(args.threads)
    log("MBS video-tower train step: dropout off / default / torch / issue14, in turn")
    steps = tower_steps(args.quick)
    times = interleaved(steps, reps)
    off_wall, off_cpu = times["off"]
    tw: dict = {"workload": "MBS video tower (width 1024, 16 heads, MLP 4096), 2 of 12 layers, batch 1, 32x224x224, "
                            "DropToken 0.5 (784 tokens + AGG), attention dropout 0, fp32, fused Adam, oneDNN linears, "
                            "fused QKV; dropout 0.1 (8 dropouts: positions, 3 per layer, final) or 0",
                "goal_over_off": GOAL}
    for k, (wall, cpu) in times.items():
        tw[f"{k}_s"] = round(wall, 4)
        tw[f"{k}_cpu_s"] = round(cpu, 4)
        if k != "off":
            tw[f"{k}_over_off"] = round(wall / off_wall, 3)
            tw[f"{k}_over_off_cpu"] = round(cpu / off_cpu, 3)
    tw["met"] = tw["default_over_off"] <= GOAL and tw["default_over_off_cpu"] <= GOAL
    res["tower"] = tw
    log(f"  {tw}")
    res["env"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    res["env"]["seconds"] = round(time.time() - t0, 1)
    return publish("dropout", res, args.quick, log)


if __name__ == "__main__":
    sys.exit(main())
