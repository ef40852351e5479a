#!/usr/bin/env python
"""CPU speed paths (issue 14): GEMM backends at the model's shapes, and today's path vs the fast one.

    python benchmarks/bench_speed.py            # about 5 minutes on 2 busy cores; writes results/
    python benchmarks/bench_speed.py --quick    # smoke run in seconds; prints, writes nothing

Results go to ``benchmarks/results/cpu.json`` under ``speed`` (and ``cpu.md`` is re-rendered).
Every comparison runs in one process, interleaved (A, B, A, B, ...), medians of ``--reps``:

* ``gemm``: fp32 / bf16 ``x @ W^T`` at the MBS video tower's shapes (785 = 784 kept tokens + AGG,
  width 1024, qkv 3072, MLP 4096) and the tiny model's (width 128), on every backend reachable
  here: ``torch`` (``F.linear``, torch's default CPU GEMM: MKL sgemm), ``onednn``
  (``torch.ops.mkldnn._linear_pointwise``, the kernel ``torch.compile`` with freezing uses too),
  and ``numpy`` (numpy's BLAS, in a child process with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset;
  the kernel threadpoolctl reports is recorded). Each figure names its backend.
* ``train_step.mbs_video_tower``: fwd + bwd + Adam, 2 of 12 layers, batch 1, 32x224x224, DropToken
  0.5, fp32, for ``baseline`` (``fused_qkv=False, cpu_linear="torch", cpu_dropout="torch"``: the path before issue 14)
  and ``fast`` (the defaults; the MBS dropout 0.1 stays on), with the best fp32 GEMM (largest GFLOP/s over backends at the tower's
  MLP shape) timed alongside: ``fraction_of_best_gemm`` = step GFLOP/s / that GEMM's GFLOP/s.
* ``train_step.tiny_model``: the tiny model as the demo trains it (dropout 0), batch 32, real objective,
  Adam, baseline vs fast.
* ``inference.mbs_batch1``: the full MBS model, eval, batch 1, paper inputs (32x224x224 video,
  10 s audio, 5 captions), ``torch.no_grad``, baseline vs fast.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from results_file import machine_info, native_bf16, publish

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from vatt.model.fast_paths import flop_counter, resolve_cpu_linear  # noqa: E402

BASELINE = {"fused_qkv": False, "cpu_linear": "torch", "cpu_dropout": "torch"}
FAST: dict = {}  # the ModelConfig defaults
# Adam: the baseline is torch's default (per-tensor) implementation, the fast path the training
# loop's default (OptimConfig.fused)
TOWER_TOKENS = 785


def log(msg: str) -> None:
    print(f"[bench_speed {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def interleaved(fns: dict, reps: int, warmup: int = 1) -> dict:
    """Median seconds of each function, timed in turn (a, b, a, b, ...): bench_model's helper."""
    from bench_model import interleaved_seconds

    return interleaved_seconds(fns, reps, warmup)


# -- GEMM backends ----------------------------------------------------------------------------------
def gemm_shapes(quick: bool) -> dict:
    if quick:
        return {"tower_mlp_fc1": (97, 256, 1024)}
    return {"tower_qkv": (TOWER_TOKENS, 1024, 3072), "tower_mlp_fc1": (TOWER_TOKENS, 1024, 4096),
            "tower_mlp_fc2": (TOWER_TOKENS, 4096, 1024), "tower_full_tokens_fc1": (1569, 1024, 4096),
            "tiny_mlp_fc1": (32 * 65, 128, 512)}


def torch_gemms(m: int, k: int, n: int, dtype: torch.dtype) -> dict:
    """The backends that run this GEMM here (oneDNN has no bf16 inner product without AVX-512 BF16
    or AMX, e.g. on an AVX2 Zen 3)."""
    x, w = torch.randn(m, k, dtype=dtype), torch.randn(n, k, dtype=dtype)
    lin = torch.ops.mkldnn._linear_pointwise
    fns = {"torch": lambda: F.linear(x, w), "onednn": lambda: lin(x, w, None, "none", [], "")}
    return {name: fn for name, fn in fns.items() if _runs(fn)}


def _runs(fn) -> bool:
    try:
        fn()
        return True
    except RuntimeError:
        return False


NUMPY_CHILD = r"""
import json, sys, time, statistics, numpy as np, threadpoolctl
shapes, reps = json.loads(sys.argv[1]), int(sys.argv[2])
info = threadpoolctl.threadpool_info()
out = {"threadpoolctl": [{k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads")} for i in info]}
for name, (m, k, n) in shapes.items():
    x, w = np.random.rand(m, k).astype(np.float32), np.random.rand(k, n).astype(np.float32)
    x @ w
    t = []
    for _ in range(reps):
        t0 = time.perf_counter(); x @ w; t.append(time.perf_counter() - t0)
    out[name] = 2 * m * k * n / statistics.median(t) / 1e9
print(json.dumps(out))
"""


def numpy_gemms(shapes: dict, reps: int, threads: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env["OMP_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    out = subprocess.run([sys.executable, "-c", NUMPY_CHILD, json.dumps(shapes), str(reps)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def gemm_backends(quick: bool, reps: int, threads: int) -> dict:
    shapes = gemm_shapes(quick)
    res: dict = {"shapes": {k: list(v) for k, v in shapes.items()}, "fp32": {}, "bf16": {}}
    if native_bf16() and not quick:
        res["bf16"]["skipped"] = native_bf16()
    for dname, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        if dname == "bf16" and "skipped" in res["bf16"]:
            continue
        for name, (m, k, n) in shapes.items():
            fns = torch_gemms(m, k, n, dtype)
            times = interleaved(fns, reps)
            res[dname][name] = {b: round(2 * m * k * n / s / 1e9, 1) for b, s in times.items()}
            if len(fns) < 2:
                res[dname][name]["unsupported"] = [b for b in ("torch", "onednn") if b not in fns]
    npres = numpy_gemms(shapes, reps, threads)
    res["numpy_blas"] = npres.pop("threadpoolctl")
    for name, gflops in npres.items():
        res["fp32"][name]["numpy"] = round(gflops, 1)
    for dname in ("fp32", "bf16"):
        for name, row in res[dname].items():
            if name == "skipped":
                continue
            figures = {b: v for b, v in row.items() if b != "unsupported"}
            row["best_backend"] = max(figures, key=figures.get)
    res["note"] = ("GFLOP/s of x[M,K] @ W[N,K]^T; backends: torch = F.linear (torch's default CPU GEMM), "
                   "onednn = torch.ops.mkldnn._linear_pointwise (also what torch.compile with freezing "
                   "emits), numpy = numpy matmul (fp32 only; BLAS in numpy_blas)")
    return res


# -- models ---------------------------------------------------------------------------------------
class Step:
    def __init__(self, model, inputs: dict, loss_fn, fused_adam: bool, bf16: bool = False):
        self.model, self.inputs, self.loss_fn, self.bf16 = model, inputs, loss_fn, bf16
        self.opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4, eps=1e-7,
                                    **({"fused": True} if fused_adam else {}))

    def forward_backward(self):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):  # precision=bf16 in training
            loss = self.loss_fn(self.model(**self.inputs))
        loss.backward()

    def __call__(self):
        self.forward_backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def flops(self) -> int:
        with flop_counter(display=False) as counter:
            self.forward_backward()
        self.opt.zero_grad(set_to_none=True)
        return int(counter.get_total_flops())


def fused_adam(switches: dict) -> bool:
    from vatt.train.config import OptimConfig

    return switches != BASELINE and OptimConfig().fused


def tower(quick: bool, adam: bool | None = None, bf16: bool = False, **switches):
    from vatt.config import get_config
    from vatt.model.backbones import VideoTransformer

    frames, crop = (8, 112) if quick else (32, 224)
    cfg = get_config("mbs", **{"video.num_frames": frames, "video.crop_size": crop,
                               "video_encoder.num_layers": 1 if quick else 2, "video.drop_rate": 0.5,
                               "attention_dropout": 0.0, "validate_inputs": False, **switches})
    torch.manual_seed(0)
    model = VideoTransformer(cfg).train()
    video = torch.rand(1, frames, crop, crop, 3, generator=torch.Generator().manual_seed(1)) * 2 - 1
    return Step(model, {"x": video}, lambda agg: agg.float().pow(2).mean(),
                fused_adam(switches) if adam is None else adam, bf16=bf16)


def tiny(batch: int, **switches):
    import vatt
    from vatt.objective import ObjectiveConfig, VattObjective

    torch.manual_seed(0)
    # the demo's training config (vatt.train.config tiny preset): no dropout
    model = vatt.create_model("tiny", validate_inputs=False, dropout=0.0, attention_dropout=0.0, **switches).train()
    cfg = model.config
    g = torch.Generator().manual_seed(1)
    inputs = {
        "video": torch.rand(batch, cfg.video.num_frames, cfg.video.crop_size, cfg.video.crop_size, 3, generator=g) * 2 - 1,
        "audio": torch.rand(batch, cfg.audio.num_samples, generator=g) * 2 - 1,
        "text": torch.randint(1, cfg.text.vocab_size, (batch, 5, cfg.text.max_words), generator=g),
    }
    objective = VattObjective(ObjectiveConfig())
    return Step(model, inputs, lambda out: objective({k: v.float() for k, v in out.items()})["loss"],
                fused_adam(switches))


def mbs_inference(quick: bool, **switches):
    import vatt

    name = "tiny" if quick else "mbs"
    torch.manual_seed(0)
    model = vatt.create_model(name, validate_inputs=False, **switches).eval()
    cfg = model.config
    g = torch.Generator().manual_seed(1)
    inputs = {
        "video": torch.rand(1, cfg.video.num_frames, cfg.video.crop_size, cfg.video.crop_size, 3, generator=g) * 2 - 1,
        "audio": torch.rand(1, cfg.audio.num_samples, generator=g) * 2 - 1,
        "text": torch.randint(1, cfg.text.vocab_size, (1, 5, cfg.text.max_words), generator=g),
    }

    def run():
        with torch.no_grad():
            return model(**inputs)
    return run


def compare(fns: dict, reps: int) -> dict:
    times = interleaved(fns, reps)
    res = {f"{k}_s": round(v, 4) for k, v in times.items()}
    res["speedup"] = round(times["baseline"] / times["fast"], 3)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--threads", type=int, default=int(os.environ.get("BENCH_THREADS", "2")))
    p.add_argument("--skip", nargs="*", default=[], choices=["gemm", "tower", "tiny", "inference"])
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    reps = 2 if args.quick else args.reps
    t0 = time.time()
    from vatt.config import ModelConfig

    defaults = ModelConfig()
    res: dict = {"env": {"threads": torch.get_num_threads(), "capability": torch.backends.cpu.get_cpu_capability(),
                         "machine": machine_info(),
                         "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                         "reps": reps, "load_average_start": [round(x, 2) for x in os.getloadavg()]},
                 "variants": {"baseline": dict(BASELINE), "fast": {k: resolve_cpu_linear(getattr(defaults, k)) if k == "cpu_linear" else getattr(defaults, k)
                                       for k in BASELINE}}}  # what the defaults pick on this CPU
    if "gemm" not in args.skip:
        log("GEMM backends")
        res["gemm"] = gemm_backends(args.quick, reps, args.threads)
        log(f"  {json.dumps(res['gemm']['fp32'])}")
    ts: dict = {}
    if "tower" not in args.skip:
        log("MBS video tower train step: baseline vs fast, best GEMM alongside")
        base, fast = tower(args.quick, **BASELINE), tower(args.quick, **FAST)
        flops = base.flops()
        m, k, n = gemm_shapes(args.quick)["tower_mlp_fc1"]
        gemm = torch_gemms(m, k, n, torch.float32)
        bf16 = not args.quick and not native_bf16()  # emulated bf16 would take most of the run
        gemm_bf16 = torch_gemms(m, k, n, torch.bfloat16) if bf16 else {}
        if not args.quick:  # also the ablations: each switch alone
            fns = {"baseline": base, "fast": fast,  # and each of the three changes alone
                   "fused_qkv_only": tower(False, adam=False, **{**BASELINE, "fused_qkv": True}),
                   "onednn_only": tower(False, adam=False, **{**BASELINE, "cpu_linear": "onednn"}),
                   "bits_dropout_only": tower(False, adam=False, **{**BASELINE, "cpu_dropout": "bits"}),
                   "fused_adam_only": tower(False, adam=True, **BASELINE),
                   **({"bf16_autocast": tower(False, bf16=True, **FAST)} if bf16 else {})}  # not fp32: outside the targets
        else:
            fns = {"baseline": base, "fast": fast}
        fns.update({f"gemm_{b}": f for b, f in gemm.items()})
        fns.update({f"gemmbf16_{b}": f for b, f in gemm_bf16.items()})
        times = interleaved(fns, reps)
        gemm_gflops = {b: 2 * m * k * n / times[f"gemm_{b}"] / 1e9 for b in gemm}
        bf16_gflops = {b: 2 * m * k * n / times[f"gemmbf16_{b}"] / 1e9 for b in gemm_bf16}
        best = max(gemm_gflops, key=gemm_gflops.get)
        r = {"workload": "MBS video tower (width 1024, 16 heads, MLP 4096), 2 of 12 layers, batch 1, 32x224x224, "
                         "DropToken 0.5 (784 tokens + AGG), attention dropout 0, fp32, Adam",
             "gflop_per_step": round(flops / 1e9, 2)}
        for key in fns:
            if not key.startswith(("gemm_", "gemmbf16_")):
                r[f"{key}_s"] = round(times[key], 4)
                r[f"{key}_gflop_s"] = round(flops / times[key] / 1e9, 1)
        r["speedup"] = round(times["baseline"] / times["fast"], 3)
        r["gemm_alongside_gflop_s"] = {b: round(v, 1) for b, v in gemm_gflops.items()}
        r["best_gemm_backend"] = best
        r["fraction_of_best_gemm"] = round(flops / times["fast"] / 1e9 / gemm_gflops[best], 3)
        r["baseline_fraction_of_best_gemm"] = round(flops / times["baseline"] / 1e9 / gemm_gflops[best], 3)
        if bf16_gflops:
            r["bf16_gemm_alongside_gflop_s"] = {b: round(v, 1) for b, v in bf16_gflops.items()}
            r["bf16_autocast_fraction_of_best_bf16_gemm"] = round(
                flops / times["bf16_autocast"] / 1e9 / max(bf16_gflops.values()), 3)
            r["bf16_autocast_speedup_over_fast"] = round(times["fast"] / times["bf16_autocast"], 3)
        ts["mbs_video_tower"] = r
        log(f"  {r}")
        del base, fast, fns
    if "tiny" not in args.skip:
        log("tiny model train step, batch 32: baseline vs fast")
        batch = 4 if args.quick else 32
        ts["tiny_model"] = {"workload": f"full tiny model as the demo trains it (video, audio, 5 captions, dropout 0), batch {batch}, real objective, Adam, fp32",
                            **compare({"baseline": tiny(batch, **BASELINE), "fast": tiny(batch, **FAST)}, reps)}
        log(f"  {ts['tiny_model']}")
    if ts:
        ts["adam"] = {"baseline": "torch.optim.Adam default (per-tensor)", "fast": "torch.optim.Adam(fused=True)"}
        res["train_step"] = ts
    if "inference" not in args.skip:
        log("full MBS inference, batch 1: baseline vs fast")
        res["inference"] = {"mbs_batch1": {
            "workload": "full MBS model, eval, batch 1, 32x224x224 video + 10 s audio + 5 captions, no_grad, fp32",
            **compare({"baseline": mbs_inference(args.quick, **BASELINE), "fast": mbs_inference(args.quick, **FAST)},
                      max(3, reps - 2))}}
        log(f"  {res['inference']}")
    res["env"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    res["env"]["seconds"] = round(time.time() - t0, 1)
    return publish("speed", res, args.quick, log)


if __name__ == "__main__":
    sys.exit(main())
