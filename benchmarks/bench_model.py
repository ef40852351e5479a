#!/usr/bin/env python
"""Model benchmarks on this CPU: matmul peak, train-step MFU, DropToken speed-up, vs timm, memory.

    bash benchmarks/run.sh                          # all benchmarks, writes benchmarks/results/
    python benchmarks/bench_model.py                # the model part only (about 6 minutes, 2 cores)
    python benchmarks/bench_model.py --quick        # smoke run in seconds; prints, writes nothing

Every timing is the median of ``--reps`` (default 5) repetitions after one warm-up, each
comparison measured inside the same run. Results are merged into ``benchmarks/results/cpu.json``
under the keys ``matmul_peak_gflops``, ``train_step``, ``droptoken_speedup``, ``vs_timm``,
``memory`` and ``model_bench_env`` (keys written by ``benchmarks/data_bench.py`` are kept), and
``benchmarks/results/cpu.md`` is rendered from the merged file.

Workloads (documented in the output too):

* *MBS video tower*: the MBS video backbone's shapes (width 1024, 16 heads, MLP 4096,
  32x224x224 clips = 1568 tokens, DropToken 0.5 -> 784) with ``--tower-layers`` (default 2) of its
  12 layers, batch 1, Adam; a loss on the AGG feature. Attention dropout is 0 so that
  ``scaled_dot_product_attention`` stays on the fused CPU kernel (the cost of the official 0.1 is
  measured separately as ``train_step.attention_dropout_cost``).
* *tiny model*: the full ``tiny`` preset (video, audio, 5 captions) with the real objective.
* FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` over one real forward and
  backward (2 FLOPs per multiply-add); MFU = achieved FLOP/s / the dtype's matmul peak (best square size), re-measured in turn with
  the steps so that both see the same load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_file import describe_machine, machine_info, merge_results, native_bf16

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from vatt.model.fast_paths import flop_counter  # noqa: E402  (also counts the oneDNN fast-path GEMMs)
from vatt.train import perf  # noqa: E402  (autocast and MFU helpers shared with the training loop)

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
MODEL_KEYS = ("matmul_peak_gflops", "train_step", "droptoken_speedup", "vs_timm", "memory", "model_bench_env")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
CLIP = {"frames": 32, "crop": 224}  # the paper geometry; --quick shrinks it


def log(msg: str) -> None:
    print(f"[bench_model {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median_seconds(fn, reps: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_seconds(fns: dict, reps: int, warmup: int = 1) -> dict:
    """Median seconds of each function, timed in turn (a, b, a, b, ...) so that a load change on
    a shared machine hits every contender alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def autocast(dtype: str):
    return perf.autocast("cpu", dtype)  # the training loop's own precision helper


# -- 1. matmul peak ---------------------------------------------------------------------------
def matmul_peak(sizes, reps: int, small_sizes=None) -> dict:
    """Peak matmul GFLOP/s per dtype: the best per-size median over square sizes ``sizes``
    (``small_sizes`` for bf16 where this CPU emulates it: see ``results_file.native_bf16``)."""
    out: dict = {"by_size": {}}
    why = native_bf16()
    if why and small_sizes:
        out["bf16_note"] = f"{why}; bf16 measured at n = {', '.join(map(str, small_sizes))} only"
    for name, dtype in DTYPES.items():
        for n in (small_sizes if name == "bf16" and why and small_sizes else sizes):
            a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
            s = median_seconds(lambda: torch.mm(a, b), reps)
            out["by_size"].setdefault(name, {})[str(n)] = round(2 * n**3 / s / 1e9, 1)
        out[name] = max(out["by_size"][name].values())
    return out


# -- 2./3. train steps ------------------------------------------------------------------------
class Step:
    """One training step (forward, backward, Adam) of a model on fixed inputs."""

    def __init__(self, model, inputs: dict, loss_fn, dtype: str):
        self.model, self.inputs, self.loss_fn, self.dtype = model, inputs, loss_fn, dtype
        self.opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4, eps=1e-7)

    def forward_backward(self):
        with autocast(self.dtype):
            out = self.model(**self.inputs)
        self.loss_fn(out).backward()

    def __call__(self):
        self.forward_backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def flops(self) -> int:
        with flop_counter(display=False) as counter:
            self.forward_backward()
        self.opt.zero_grad(set_to_none=True)
        return int(counter.get_total_flops())


def tower_config(layers: int, drop: float, attention_dropout: float = 0.0):
    from vatt.config import get_config

    return get_config("mbs", **{
        "video.num_frames": CLIP["frames"], "video.crop_size": CLIP["crop"],
        "video_encoder.num_layers": layers, "video.drop_rate": drop,
        "attention_dropout": attention_dropout, "validate_inputs": False,
    })


def video_tower(layers: int, drop: float, attention_dropout: float = 0.0):
    from vatt.model.backbones import VideoTransformer

    torch.manual_seed(0)
    return VideoTransformer(tower_config(layers, drop, attention_dropout)).train()


def tower_step(layers: int, batch: int, drop: float, dtype: str) -> Step:
    video = torch.rand(batch, CLIP["frames"], CLIP["crop"], CLIP["crop"], 3) * 2 - 1
    return Step(video_tower(layers, drop), {"x": video}, lambda agg: agg.float().pow(2).mean(), dtype)


def measure_step(step: Step, reps: int, peak: dict | None) -> dict:
    """Median step time; with ``peak``, MFU against the matmul peak re-measured in turn with the
    steps (at the size that gave the peak), so both see the same load on a shared machine."""
    flops = step.flops()  # also the warm-up
    fns = {"step": step}
    if peak:
        by_size = peak["by_size"][step.dtype]
        n = int(max(by_size, key=by_size.get))
        a, b = (torch.randn(n, n, dtype=DTYPES[step.dtype]) for _ in range(2))
        fns["matmul"] = lambda: torch.mm(a, b)
    times = interleaved_seconds(fns, reps, warmup=0)
    s = times["step"]
    res = {"step_s": round(s, 3), "gflop_per_step": round(flops / 1e9, 2), "gflop_s": round(flops / s / 1e9, 1)}
    if peak:
        mm_gflops = 2 * n**3 / times["matmul"] / 1e9
        res["matmul_gflop_s_alongside"] = round(mm_gflops, 1)
        res["mfu"] = round(flops / s / 1e9 / mm_gflops, 3)
        if step.dtype == "bf16" and native_bf16():  # autocast keeps some ops in fp32: above 1 against emulated bf16
            res["mfu"] = None
            res["mfu_note"] = "not meaningful: bf16 is emulated on this CPU"
    return res


def tiny_step(batch: int, dtype: str) -> Step:
    import vatt
    from vatt.objective import ObjectiveConfig, VattObjective

    torch.manual_seed(0)
    model = vatt.create_model("tiny", validate_inputs=False).train()
    cfg = model.config
    inputs = {
        "video": torch.rand(batch, cfg.video.num_frames, cfg.video.crop_size, cfg.video.crop_size, 3) * 2 - 1,
        "audio": torch.rand(batch, cfg.audio.num_samples) * 2 - 1,
        "text": torch.randint(1, cfg.text.vocab_size, (batch, 5, cfg.text.max_words)),
    }
    objective = VattObjective(ObjectiveConfig())
    return Step(model, inputs, lambda out: objective({k: v.float() for k, v in out.items()})["loss"], dtype)


def attention_dropout_cost(reps: int) -> dict:
    """fwd+bwd of one SDPA call at the MBS kept-token shape, attention dropout 0 vs 0.1 (fp32)."""
    q = torch.randn(1, 16, 785, 64, requires_grad=True)

    def run(p):
        return lambda: F.scaled_dot_product_attention(q, q, q, dropout_p=p).sum().backward()

    fused, math = median_seconds(run(0.0), reps), median_seconds(run(0.1), reps)
    return {"sdpa_fused_s": round(fused, 4), "sdpa_dropout_0.1_s": round(math, 4), "slowdown": round(math / fused, 2)}


# -- 4. vs timm -------------------------------------------------------------------------------
def import_timm_vit():
    """timm's VisionTransformer, or (None, reason). timm imports torchvision at package import
    (transforms, FrozenBatchNorm2d) though its ViT never calls it; when torchvision cannot be
    imported we satisfy those imports with inert stand-ins, in this process only."""
    try:
        import timm.models.vision_transformer as vit

        return vit.VisionTransformer, "timm imported normally"
    except ImportError as first:
        reason = f"{type(first).__name__}: {first}"
    for name in [m for m in sys.modules if m == "timm" or m.startswith("timm.")]:
        del sys.modules[name]
    _install_torchvision_stub()
    try:
        import timm
        import timm.models.vision_transformer as vit

        return vit.VisionTransformer, f"timm {timm.__version__} with torchvision stubbed ({reason})"
    except Exception as e:  # noqa: BLE001 - report any failure as 'unavailable'
        return None, f"timm unavailable: {reason}; with a torchvision stub: {type(e).__name__}: {e}"


def _install_torchvision_stub() -> None:
    import importlib.abc
    import importlib.machinery
    import types

    class AnyMeta(type):
        def __getattr__(cls, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return AnyMeta(name, (), {})

    class StubModule(types.ModuleType):
        __path__: list = []

        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return AnyMeta(name, (), {"__init__": lambda self, *a, **k: None})

    class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path, target=None):
            if name == "torchvision" or name.startswith("torchvision."):
                return importlib.machinery.ModuleSpec(name, self, is_package=True)
            return None

        def create_module(self, spec):
            return StubModule(spec.name)

        def exec_module(self, module):
            pass

    sys.meta_path.insert(0, Finder())


def vs_timm(layers: int, reps: int, dtypes) -> dict:
    VisionTransformer, how = import_timm_vit()
    if VisionTransformer is None:
        return {"available": False, "reason": how}
    ours = video_tower(layers, drop=0.0)  # timm has no DropToken: compare at the full token count
    t, side = CLIP["frames"] // 4, CLIP["crop"] // 16
    tokens = t * side * side
    # Same depth, width, heads, MLP, token count (a side x (t * side) patch grid + 1 class token)
    # and patch-embedding work (4 frames x 3 channels stacked as 12 input channels per 16x16 patch).
    theirs = VisionTransformer(
        img_size=(CLIP["crop"], CLIP["crop"] * t), patch_size=16, in_chans=12, num_classes=0, global_pool="token",
        embed_dim=1024, depth=layers, num_heads=16, mlp_ratio=4.0, qkv_bias=True, class_token=True,
        pos_drop_rate=0.1, proj_drop_rate=0.1, attn_drop_rate=0.0,
    ).train()
    video = torch.rand(1, CLIP["frames"], CLIP["crop"], CLIP["crop"], 3) * 2 - 1
    image = torch.rand(1, 12, CLIP["crop"], CLIP["crop"] * t) * 2 - 1
    res = {"available": True, "how": how, "layers": layers, "tokens": tokens + 1,
           "params_ours": sum(p.numel() for p in ours.parameters()),
           "params_timm": sum(p.numel() for p in theirs.parameters())}
    for dtype in dtypes:
        def step(model, x):
            def run():
                with autocast(dtype):
                    y = model(x)
                y.float().pow(2).mean().backward()
                model.zero_grad(set_to_none=True)
            return run

        times = interleaved_seconds({"ours": step(ours, video), "timm": step(theirs, image)}, reps)
        t_ours, t_timm = times["ours"], times["timm"]
        res[dtype] = {"ours_s": round(t_ours, 3), "timm_s": round(t_timm, 3), "ratio": round(t_timm / t_ours, 3)}
    return res


# -- 6. memory --------------------------------------------------------------------------------
def memory_child(batch: int) -> None:
    """Run in a fresh process: a few tiny-model training steps; print peak RSS in bytes."""
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    step = tiny_step(batch, "fp32")
    for _ in range(3):
        step()
    print(peak_rss_bytes())


def peak_rss_bytes() -> int:
    """This process's peak resident memory. VmHWM, not ru_maxrss: after fork + exec the latter
    still includes the parent's memory at fork time."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_per_clip(small: int, large: int) -> dict:
    def peak(batch):
        out = subprocess.run([sys.executable, __file__, "--memory-child", str(batch)], check=True,
                             capture_output=True, text=True)
        return int(out.stdout.strip().splitlines()[-1])

    lo, hi = peak(small), peak(large)
    return {
        "geometry": "tiny (8x64x64 video, 12800 audio samples, 5x16 words), fp32 training with Adam",
        f"peak_rss_mb_batch{small}": round(lo / 2**20, 1),
        f"peak_rss_mb_batch{large}": round(hi / 2**20, 1),
        "per_clip_mb": round((hi - lo) / (large - small) / 2**20, 2),
    }


# -- results ----------------------------------------------------------------------------------
TARGETS = (  # (label, path in cpu.json, comparison, target) from issue #6
    ("train-step MFU, fp32, MBS video tower", ("train_step", "mfu"), ">=", 0.65),
    ("DropToken speed-up (drop 0% / 50%)", ("droptoken_speedup", "speedup"), ">=", 1.8),
    ("vs timm ViT, fp32 (throughput ratio)", ("vs_timm", "fp32", "ratio"), ">=", 1.0),
    ("paper-geometry clips/s per core, prepared data (issue #10)", ("data", "per_core", "paper", "prepared_clips_s"), ">=", 25),
    ("prepared vs naive decoder, paper geometry (issue #10)", ("data", "per_core", "paper", "prepared_vs_naive"), ">=", 8),
    ("data wait fraction, streaming tiny pretrain (issue #10)", ("data", "data_wait_fraction"), "<", 0.05),
    ("uint8 loader vs naive decoder on the same prepared bytes, paper geometry, 2 workers, wall clock (issue 21)",
     ("data", "loader_2_workers", "paper", "uint8_loader_vs_naive_prepared"), ">=", 1.0),
    ("uint8 loader vs naive decoder on the source, paper geometry, 2 workers, wall clock (issue 21)",
     ("data", "loader_2_workers", "paper", "uint8_loader_vs_naive_source"), ">=", 8),
)


def _get(data: dict, path):
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def render_data(d: dict) -> list[str]:
    """The data part of cpu.md (results of data_bench.py)."""
    env = d.get("env", {})
    lines = ["## Data pipeline", "", f"Sources: {d.get('sources')}. Measured {env.get('date')}, load average "
             f"{env.get('load_average_start')} -> {env.get('load_average_end')} on {env.get('cpu_count')} shared cores.", ""]
    pc = d.get("per_core")
    if pc:
        lines += ["| clips per CPU-second (= per core; 1 process, 1 torch thread) | demo geometry | paper geometry |",
                  "|---|---:|---:|"]
        for label, key in (("web-like source (decode + augment)", "raw_clips_s"),
                           ("prepared with `--train-format` (decode + augment)", "prepared_clips_s"),
                           ("naive decoder (every frame, source size, RGB + audio; no augment)", "naive_clips_s"),
                           ("prepared / naive (median of per-repetition ratios)", "prepared_vs_naive"),
                           ("prepared / web-like source", "prepared_vs_raw"),
                           ("decode share of the prepared clip", "prepared_decode_share")):
            lines.append(f"| {label} | {_get(pc, ('demo', key))} | {_get(pc, ('paper', key))} |")
        wall = [_get(pc, (g, "wall_clock_clips_s", "prepared")) for g in ("demo", "paper")]
        lines.append(f"| prepared, by the wall clock on this shared machine | {wall[0]} | {wall[1]} |")
        lines.append("")
    prof = _get(d, ("profile", "paper"))
    if prof:
        names = list(prof["prepared"]["parts_ms"])
        lines += ["| paper clip profile, CPU ms per clip | " + " | ".join(names) + " | total |", "|---|" + "---:|" * (len(names) + 1)]
        for kind in ("raw", "prepared"):
            r = prof[kind]
            lines.append(f"| {kind} | " + " | ".join(str(r["parts_ms"][n]) for n in names) + f" | {r['ms_per_clip']} |")
        lines.append("")
    ld = d.get("loader_2_workers")
    if ld:
        lines += ["| 2 workers / 2 processes (one per core), clips/s by the wall clock | demo geometry | paper geometry |",
                  "|---|---:|---:|"]
        for label, key in (("DataLoader, web-like source", "raw_clips_s"), ("DataLoader, prepared, float clips (CPU run)", "prepared_clips_s"),
                           ("DataLoader, prepared, uint8 clips (accelerator run)", "prepared_uint8_clips_s"),
                           ("naive decoder, web-like source", "naive_source_2_processes_clips_s"),
                           ("naive decoder, the same prepared bytes", "naive_prepared_2_processes_clips_s"),
                           ("uint8 loader / naive on the prepared bytes", "uint8_loader_vs_naive_prepared"),
                           ("uint8 loader / naive on the source", "uint8_loader_vs_naive_source")):
            if _get(ld, ("demo", key)) is not None or _get(ld, ("paper", key)) is not None:
                lines.append(f"| {label} | {_get(ld, ('demo', key))} | {_get(ld, ('paper', key))} |")
        lines.append("")
    run = d.get("training_run")
    if run:
        lines += [f"Training run: {run.get('workload')}.", ""]
        for kind in ("raw", "prepared"):
            r = run.get(kind, {})
            if "data_wait_fraction" in r:
                lines.append(f"- {kind}: data wait {r['data_wait_fraction']} of step time (mean {r['data_wait_mean']}), "
                             f"step {r['step_s']} s")
            elif r:
                lines.append(f"- {kind}: failed: {r.get('error')}")
        if "model_only_step_s" in run:
            lines.append(f"- model-only step {run['model_only_step_s']} s: {run['clips_s_needed']} clips/s needed, "
                         f"{run['cores_needed_prepared']} cores of prepared decoding ({run['cores_available']} cores here, "
                         f"shared with the step)")
        lines.append("")
    g = d.get("gpu_node_estimate")
    if g:
        lines += [f"GPU node (estimate, not measured): an MBS step at {g['assumed_mfu']} MFU of {g['assumed_bf16_peak_tflops']} "
                  f"TFLOP/s bf16 trains ~{g['clips_s_per_gpu']} clips/s per GPU ({g['mbs_forward_gflop_per_clip_drop50']} "
                  f"GFLOP forward per clip at DropToken 0.5, x3 for training): **{g['cores_per_gpu_prepared']} cores per GPU** "
                  f"from prepared data, {g['cores_per_gpu_raw_360p']} from 360p web video.", ""]
    return lines


def render_markdown(data: dict) -> str:
    lines = ["# CPU benchmarks", "", "`bash benchmarks/run.sh` writes this file and `cpu.json`.", "",
             "| target | measured | goal | met |", "|---|---:|---:|:---:|"]
    for label, path, op, goal in TARGETS:
        value = _get(data, path)
        if value is not None:
            met = value >= goal if op == ">=" else value < goal
            lines.append(f"| {label} | {value} | {op} {goal} | {'yes' if met else 'no'} |")
    lines.append("")
    env = data.get("model_bench_env", {})
    if env:
        machine = describe_machine(env["machine"]) if "machine" in env else (
            f"{env.get('cpu')} cores ({env.get('capability')}), {env.get('threads')} threads, torch {env.get('torch')}")
        lines += [f"Machine: {machine}; measured {env.get('date')}, load average "
                  f"{env.get('load_average_start')} -> {env.get('load_average_end')} (shared machine).", ""]
    peak = data.get("matmul_peak_gflops")
    if peak:
        lines += ["| matmul GFLOP/s (square n x n) | fp32 | bf16 |", "|---|---:|---:|"]
        sizes = list(dict.fromkeys([*peak["by_size"]["bf16"], *peak["by_size"]["fp32"]]))
        for n in sorted(sizes, key=int):
            lines.append(f"| n = {n} | {peak['by_size']['fp32'].get(n, '–')} | {peak['by_size']['bf16'].get(n, '–')} |")
        lines += [f"| **peak** (best) | **{peak['fp32']}** | **{peak['bf16']}** |", ""]
        if peak.get("bf16_note"):
            lines += [f"- {peak['bf16_note']}", ""]
    ts = data.get("train_step")
    if ts:
        lines += ["| train step (fwd+bwd+Adam) | dtype | step s | GFLOP/step | GFLOP/s | MFU |", "|---|---|---:|---:|---:|---:|"]
        for key in ("mbs_video_tower", "tiny_model"):
            part = ts.get(key, {})
            for dtype in ("fp32", "bf16"):
                r = part.get(dtype)
                if r and "skipped" in r:
                    lines.append(f"| {key} | {dtype} | skipped: {r['skipped']} | | | |")
                elif r:
                    lines.append(f"| {key} | {dtype} | {r['step_s']} | {r['gflop_per_step']} | {r['gflop_s']} | {r.get('mfu') if r.get('mfu') is not None else '–'} |")
        lines.append("")
        for key in ("mbs_video_tower", "tiny_model"):
            if ts.get(key, {}).get("workload"):
                lines.append(f"- {key}: {ts[key]['workload']}")
        cost = ts.get("attention_dropout_cost")
        if cost:
            lines.append(f"- official attention dropout 0.1 makes one SDPA fwd+bwd {cost['slowdown']}x slower on CPU "
                         f"(math path instead of the fused kernel)")
        lines.append("")
    ds = data.get("droptoken_speedup")
    if ds:
        lines += [f"DropToken speed-up (step time at drop 0% / 50%, MBS video tower, {ds.get('dtype')}): "
                  f"**{ds['speedup']}x** ({ds['step_s_drop0']} s vs {ds['step_s_drop50']} s; FLOP ratio {ds['flop_ratio']}).", ""]
    vt = data.get("vs_timm")
    if vt:
        if vt.get("available"):
            lines += ["| vs timm ViT (fwd+bwd, same shapes) | ours s | timm s | throughput ratio |", "|---|---:|---:|---:|"]
            for dtype in ("fp32", "bf16"):
                if dtype in vt:
                    r = vt[dtype]
                    lines.append(f"| {dtype}, {vt['layers']} layers, {vt['tokens']} tokens | {r['ours_s']} | {r['timm_s']} | {r['ratio']} |")
            lines += ["", f"- {vt['how']}", ""]
        else:
            lines += [f"vs timm: unavailable ({vt.get('reason')})", ""]
    mem = data.get("memory")
    if mem:
        lines += [f"Memory: {mem['per_clip_mb']} MB peak RSS per clip in training ({mem['geometry']}).", ""]
    d = data.get("data")
    if isinstance(d, dict):
        lines += render_data(d)
    lines += render_dropout(data.get("dropout"))
    lines += render_speed(data.get("speed"))
    lines += render_versions(data.get("versions"))
    other = {k: v for k, v in data.items() if k not in MODEL_KEYS + ("data", "dropout", "speed", "versions")}
    if other:
        lines += ["## Other results", ""]
        for key, value in other.items():
            lines.append(f"- `{key}`: `{json.dumps(value)}`")
        lines.append("")
    return "\n".join(lines)


SPEED_TARGETS = (  # issue 14: (label, path in speed, target)
    ("MBS video-tower train step / best fp32 GEMM (fraction)", ("train_step", "mbs_video_tower", "fraction_of_best_gemm"), 0.85),
    ("full MBS batch-1 inference, fast / previous path (speed-up)", ("inference", "mbs_batch1", "speedup"), 1.25),
    ("tiny-model train step (demo, batch 32), fast / previous path", ("train_step", "tiny_model", "speedup"), 1.3),
)


def _measured(section: dict) -> str:
    env = section.get("env", {})
    threads = "" if env.get("machine") else f"; {env.get('threads')} threads"  # the machine line names them
    return (f"Measured {env.get('date')} on {describe_machine(env.get('machine'))}{threads}, "
            f"load average {env.get('load_average_start')} -> {env.get('load_average_end')}")


def render_dropout(d) -> list:
    """The ``dropout`` section written by ``benchmarks/bench_dropout.py`` (issue 23)."""
    if not d:
        return []
    tw = d["tower"]
    lines = ["## What dropout costs (`benchmarks/bench_dropout.py`, issue 23)", "",
             f"{_measured(d)}. Variants timed in turn, medians of {d['env'].get('reps')}; wall clock and process "
             "CPU time (the steadier figure on a shared machine).", "",
             "| MBS video-tower train step | wall s | / off | CPU s | / off | goal |", "|---|---:|---:|---:|---:|---:|"]
    labels = {"off": "dropout off (0)", "default": "dropout 0.1, default (`cpu_dropout=bits`)",
              "torch": "dropout 0.1, `F.dropout` (`cpu_dropout=torch`)", "issue14": "dropout 0.1, issue-14 implementation"}
    for key, label in labels.items():
        if f"{key}_s" in tw:
            goal = f"<= {tw['goal_over_off']}" if key == "default" else ""
            lines.append(f"| {label} | {tw[f'{key}_s']} | {tw.get(f'{key}_over_off', 1.0)} | {tw[f'{key}_cpu_s']} | "
                         f"{tw.get(f'{key}_over_off_cpu', 1.0)} | {goal} |")
    lines += ["", f"- {tw['workload']}; goal: the official TensorFlow code's own dropout cost (issue 23, Intel Xeon); "
                  f"met: {'yes' if tw.get('met') else '**no**'}", ""]
    ops = d.get("ops", {})
    rows = [(name, r) for name, r in ops.items() if isinstance(r, dict) and "none" in r]
    if rows:
        lines += [f"| one dropout, forward + backward, CPU ms on {ops.get('threads', '?')} thread(s) | shape | none | "
                  "default | F.dropout | issue 14 |",
                  "|---|---|---:|---:|---:|---:|"]
        for name, r in rows:
            lines.append(f"| {name} | {'x'.join(map(str, r['shape']))} | {r['none']['cpu_ms']} | {r['default']['cpu_ms']} | "
                         f"{r['torch']['cpu_ms']} | {r['issue14']['cpu_ms']} |")
        bits = ops.get("random_bits_mlp_hidden")
        if bits:
            lines += ["", f"- 16 random bits for each of the MLP hidden's elements: torch's MT19937 "
                          f"{bits['torch_mt19937']['cpu_ms']} ms, numpy's SFC64 {bits['numpy_sfc64']['cpu_ms']} ms (CPU)"]
        lines.append("")
    return lines


def render_speed(sp) -> list:
    """The ``speed`` section written by ``benchmarks/bench_speed.py`` (issue 14)."""
    if not sp:
        return []
    lines = ["## CPU fast paths (`benchmarks/bench_speed.py`, issue 14)", "",
             f"{_measured(sp)} (shared 2-core machine: absolute times are slow and noisy; every ratio "
             f"comes from one interleaved run). previous = `{json.dumps(sp['variants']['baseline'])}` + torch's "
             f"default Adam; fast = `{json.dumps(sp['variants']['fast'])}` + fused Adam.", "",
             "| target | measured | goal | met |", "|---|---:|---:|:---:|"]
    for label, path, goal in SPEED_TARGETS:
        value = _get(sp, path)
        if value is not None:
            lines.append(f"| {label} | {value} | >= {goal} | {'yes' if value >= goal else '**no**'} |")
    lines.append("")
    gemm = sp.get("gemm")
    if gemm:
        lines += ["| GEMM GFLOP/s (M x K -> N) | dtype | torch | onednn | numpy | best |", "|---|---|---:|---:|---:|---|"]
        for dtype in ("fp32", "bf16"):
            if gemm[dtype].get("skipped"):
                lines.append(f"| bf16 | bf16 | skipped: {gemm[dtype]['skipped']} | | | |")
            for name, row in gemm[dtype].items():
                if name == "skipped":
                    continue
                shape = "x".join(map(str, gemm["shapes"][name]))
                onednn = row.get("onednn", "unsupported" if "onednn" in row.get("unsupported", []) else "")
                lines.append(f"| {name} ({shape}) | {dtype} | {row.get('torch', '')} | {onednn} | "
                             f"{row.get('numpy', '–')} | {row['best_backend']} |")
        blas = ", ".join(f"{b.get('internal_api')} {b.get('version')} ({b.get('architecture')})" for b in gemm.get("numpy_blas", []))
        lines += ["", f"- {gemm.get('note')}; numpy's BLAS per threadpoolctl: {blas} (OPENBLAS_CORETYPE/L2_SIZE unset)", ""]
    ts = sp.get("train_step", {})
    tw = ts.get("mbs_video_tower")
    if tw:
        lines += ["| MBS video tower train step | s | GFLOP/s |", "|---|---:|---:|"]
        for key in ("baseline", "fused_qkv_only", "onednn_only", "bits_dropout_only", "fused_adam_only", "fast",
                    "bf16_autocast"):
            if f"{key}_s" in tw:
                lines.append(f"| {'previous' if key == 'baseline' else key} | {tw[f'{key}_s']} | {tw[f'{key}_gflop_s']} |")
        lines += ["", f"- {tw['workload']}; {tw['gflop_per_step']} GFLOP/step; speed-up {tw['speedup']}x; "
                      f"GEMM alongside (tower MLP shape): {json.dumps(tw['gemm_alongside_gflop_s'])} GFLOP/s, best "
                      f"{tw['best_gemm_backend']}; fraction of it: fast {tw['fraction_of_best_gemm']}, previous "
                      f"{tw['baseline_fraction_of_best_gemm']}"]
        if "bf16_autocast_speedup_over_fast" in tw:
            lines += [f"- bf16 autocast (`precision=bf16`; outputs differ beyond fp32 rounding, so outside the targets): "
                      f"{tw['bf16_autocast_speedup_over_fast']}x the fp32 fast path, "
                      f"{tw['bf16_autocast_fraction_of_best_bf16_gemm']} of the best bf16 GEMM alongside "
                      f"({json.dumps(tw['bf16_gemm_alongside_gflop_s'])} GFLOP/s)"]
    for key, part in (("tiny_model", ts.get("tiny_model")), ("mbs_batch1 inference", _get(sp, ("inference", "mbs_batch1")))):
        if part:
            lines.append(f"- {key}: previous {part['baseline_s']} s, fast {part['fast_s']} s, speed-up "
                         f"{part['speedup']}x ({part['workload']})")
    lines.append("")
    return lines


VERSION_WORKLOADS = {"tiny_train": ("tiny-model train step (the demo's: batch 32, fwd + bwd + Adam)", 1.3),
                     "mbs_infer": ("full MBS inference, batch 1, paper inputs", 1.25),
                     "tower_train": ("MBS video-tower train step (2 of 12 layers, batch 1, DropToken 0.5)", None)}


def render_versions(v) -> list:
    """The ``versions`` section written by ``benchmarks/bench_versions.py``: this code vs an older commit."""
    if not v:
        return []
    env = v.get("env", {})
    lines = ["## This code vs an older commit (`benchmarks/bench_versions.py`, issue 14)", "",
             f"{_measured(v)}; old = commit `{env.get('old')}` with its own defaults, new = "
             f"`{env.get('new')}` with its defaults; each in its own process, timed in turn (rounds x steps "
             f"per round, medians of the rounds).", "",
             "| workload | old s | new s | new_compiled s | new / old speed-up | compiled / old | goal | rounds x steps, load |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for key, (label, goal) in VERSION_WORKLOADS.items():
        r = v.get(key)
        if r:
            lines.append(f"| {label} | {r.get('old_s')} | {r.get('new_s')} | {r.get('new_compiled_s', '–')} | "
                         f"{r.get('new_vs_old')}x | {r.get('new_compiled_vs_old', '–')}{'x' if 'new_compiled_vs_old' in r else ''} | "
                         f"{'>= ' + str(goal) + 'x' if goal else ''} | {r.get('rounds', '')} x {r.get('steps_per_round')}, "
                         f"{r.get('load_average', [[None]])[0][0]} |")
    lines.append("")
    return lines


def write_markdown(data: dict, path: Path = RESULTS / "cpu.md") -> None:
    text = render_markdown(data)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} x{os.cpu_count()}"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, 2 reps, print only")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--tower-layers", type=int, default=2, help="layers of the MBS video tower (of 12)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("BENCH_THREADS", "2")))
    p.add_argument("--timm-dtypes", nargs="+", default=["fp32"], choices=list(DTYPES))
    p.add_argument("--skip", nargs="*", default=[], choices=["matmul", "train", "droptoken", "timm", "memory"])
    p.add_argument("--markdown-only", action="store_true", help="re-render cpu.md from cpu.json")
    p.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child)
        return 0
    if args.markdown_only:
        write_markdown(json.loads((RESULTS / "cpu.json").read_text()))
        return 0
    torch.set_num_threads(args.threads)
    os.environ["BENCH_THREADS"] = str(args.threads)
    reps = 2 if args.quick else args.reps
    if args.quick:
        CLIP.update(frames=8, crop=112)
    layers = 1 if args.quick else args.tower_layers
    t_start = time.time()
    res: dict = {"model_bench_env": {
        "cpu": cpu_name(), "threads": torch.get_num_threads(), "machine": machine_info(),
        "capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "reps": reps,
        "load_average_start": round(os.getloadavg()[0], 2),
    }}
    if os.getloadavg()[0] > os.cpu_count():
        log(f"warning: load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; timings will be noisy "
            "(on a busy machine --threads 1 is often faster than 2)")
    peak = None
    if "matmul" not in args.skip:
        log("matmul peak")
        peak = res["matmul_peak_gflops"] = matmul_peak((256, 512) if args.quick else (1024, 2048, 4096), reps,
                                                       small_sizes=(256, 512))
        log(f"  {peak}")
    n_tok = (CLIP["frames"] // 4) * (CLIP["crop"] // 16) ** 2
    tower_work = (f"MBS video tower shapes (width 1024, 16 heads, MLP 4096), {layers} of 12 layers, batch 1, "
                  f"{CLIP['frames']}x{CLIP['crop']}x{CLIP['crop']} clips ({n_tok} tokens), attention dropout 0, Adam")
    if "train" not in args.skip:
        ts: dict = {"mbs_video_tower": {"workload": tower_work + f", DropToken 0.5 ({n_tok // 2} tokens kept)"},
                    "tiny_model": {"workload": "full tiny model (video, audio, 5 captions), batch 8, real objective, Adam"}}
        for dtype in DTYPES:
            log(f"train step: MBS video tower {dtype}")
            if dtype == "bf16" and native_bf16() and not args.quick:
                ts["mbs_video_tower"][dtype] = {"skipped": native_bf16()}
            else:
                ts["mbs_video_tower"][dtype] = measure_step(tower_step(layers, 1, 0.5, dtype), reps, peak)
            log(f"  {ts['mbs_video_tower'][dtype]}")
            log(f"train step: tiny model {dtype}")
            ts["tiny_model"][dtype] = measure_step(tiny_step(8, dtype), reps, peak)
            log(f"  {ts['tiny_model'][dtype]}")
        ts["mfu"] = ts["mbs_video_tower"]["fp32"].get("mfu")
        log("attention dropout cost")
        ts["attention_dropout_cost"] = attention_dropout_cost(reps)
        res["train_step"] = ts
    if "droptoken" not in args.skip:
        log("DropToken speed-up (fp32)")
        step0, step50 = tower_step(layers, 1, 0.0, "fp32"), tower_step(layers, 1, 0.5, "fp32")
        f0, f50 = step0.flops(), step50.flops()  # also the warm-up
        times = interleaved_seconds({"drop0": step0, "drop50": step50}, reps, warmup=0)
        s0, s50 = times["drop0"], times["drop50"]
        res["droptoken_speedup"] = {"speedup": round(s0 / s50, 3), "dtype": "fp32", "step_s_drop0": round(s0, 3),
                                    "step_s_drop50": round(s50, 3), "flop_ratio": round(f0 / f50, 3),
                                    "workload": tower_work}
        log(f"  {res['droptoken_speedup']}")
    if "timm" not in args.skip:
        log("vs timm")
        res["vs_timm"] = vs_timm(layers, reps, args.timm_dtypes)
        log(f"  {res['vs_timm']}")
    if "memory" not in args.skip:
        log("memory per clip")
        res["memory"] = memory_per_clip(2, 4 if args.quick else 16)
        log(f"  {res['memory']}")
    res["model_bench_env"]["seconds"] = round(time.time() - t_start, 1)
    res["model_bench_env"]["load_average_end"] = round(os.getloadavg()[0], 2)
    if args.quick:
        print(json.dumps(res, indent=2))
        return 0
    data = merge_results(res)
    write_markdown(data)
    log(f"wrote {RESULTS / 'cpu.json'} and {RESULTS / 'cpu.md'} in {time.time() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
