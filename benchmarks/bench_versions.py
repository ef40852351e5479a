#!/usr/bin/env python
"""This checkout against an older commit, side by side in one run (issue 14: "faster than today's main").

    python benchmarks/bench_versions.py                       # against e10d98e (main before issue 14)
    python benchmarks/bench_versions.py --against REV --workloads tiny_train
    python benchmarks/bench_versions.py --quick               # smoke run; prints, writes nothing

Each variant runs in its own child process with its own copy of ``src/`` (``git archive REV src``
for the old commit), so both codes are imported as they are, not as switches of today's code.
The parent times them in turn (A, B, C, A, B, C, ...): a child runs ``--steps`` steps while the
others wait on their pipes, so no two variants share the CPU; medians of ``--reps`` rounds.
Each workload records its own date and load; a run of some workloads keeps the others' results
(against the same commit) in the file.

Variants: ``old`` (the commit, its defaults: model config, Adam), ``new`` (this checkout's
defaults: fused QKV, oneDNN linear, fused Adam) and ``new_compiled`` (``new`` under
``torch.compile``; inference also with inductor's weight freezing). Workloads:

* ``tiny_train``: the demo's step: the tiny model (dropout 0, as the tiny training preset),
  batch 32, the real objective, forward + backward + Adam.
* ``mbs_infer``: the full MBS model, eval, batch 1, paper inputs, ``torch.no_grad``.
* ``tower_train``: the MBS video tower, 2 of 12 layers, batch 1, 32x224x224, DropToken 0.5, Adam.

Results go to ``benchmarks/results/cpu.json`` under ``versions`` and ``cpu.md`` is re-rendered.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_file import RESULTS, machine_info, publish

ROOT = Path(__file__).resolve().parents[1]
RESULTS_FILE = RESULTS / "cpu.json"
DEFAULT_AGAINST = "e10d98e"  # main when issue 14 was filed (before the CPU fast paths)
ROUNDS = {"tiny_train": (15, 10), "mbs_infer": (7, 1), "tower_train": (7, 5)}  # (rounds, steps per round)

CHILD = r"""
import json, sys, time, torch
compiled = sys.argv[1] == "1"
torch.set_num_threads(int(sys.argv[2]))
import vatt
from vatt.objective import ObjectiveConfig, VattObjective

def inputs(cfg, batch, g):
    return {"video": torch.rand(batch, cfg.video.num_frames, cfg.video.crop_size, cfg.video.crop_size, 3,
                                generator=g) * 2 - 1,
            "audio": torch.rand(batch, cfg.audio.num_samples, generator=g) * 2 - 1,
            "text": torch.randint(1, cfg.text.vocab_size, (batch, 5, cfg.text.max_words), generator=g)}

def adam(params):
    try:
        from vatt.train.config import OptimConfig
        fused = bool(getattr(OptimConfig(), "fused", False))
    except ImportError:
        fused = False
    return torch.optim.Adam(params, lr=1e-4, eps=1e-7, **({"fused": True} if fused else {}))

def train_step(model, call, loss_fn):
    opt = adam([p for p in model.parameters() if p.requires_grad])
    fwd = torch.compile(model) if compiled else model
    def step():
        loss_fn(call(fwd)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step

def workload(name, quick):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    if name == "tiny_train":
        model = vatt.create_model("tiny", validate_inputs=False, dropout=0.0, attention_dropout=0.0).train()
        x = inputs(model.config, 4 if quick else 32, g)
        objective = VattObjective(ObjectiveConfig())
        return train_step(model, lambda m: m(**x), lambda out: objective({k: v.float() for k, v in out.items()})["loss"])
    if name == "mbs_infer":
        model = vatt.create_model("tiny" if quick else "mbs", validate_inputs=False).eval()
        x = inputs(model.config, 1, g)
        fwd = model
        if compiled:
            import torch._inductor.config as inductor
            inductor.freezing = True
            fwd = torch.compile(model)
        def run():
            with torch.no_grad():
                fwd(**x)
        return run
    if name == "tower_train":
        from vatt.config import get_config
        from vatt.model.backbones import VideoTransformer
        frames, crop = (8, 112) if quick else (32, 224)
        cfg = get_config("mbs", **{"video.num_frames": frames, "video.crop_size": crop,
                                   "video_encoder.num_layers": 1 if quick else 2, "video.drop_rate": 0.5,
                                   "attention_dropout": 0.0, "validate_inputs": False})
        model = VideoTransformer(cfg).train()
        video = torch.rand(1, frames, crop, crop, 3, generator=g) * 2 - 1
        return train_step(model, lambda m: m(video), lambda agg: agg.float().pow(2).mean())
    raise SystemExit(f"unknown workload {name}")

fn = None
for line in sys.stdin:
    cmd, arg = line.split()
    if cmd == "setup":
        t0 = time.perf_counter()
        fn = workload(arg, quick=sys.argv[3] == "1")
        fn(); fn()  # warm-up (compilation happens here)
        print(json.dumps({"setup_s": time.perf_counter() - t0}), flush=True)
    else:
        t0 = time.perf_counter()
        for _ in range(int(arg)):
            fn()
        print(json.dumps({"seconds": (time.perf_counter() - t0) / int(arg)}), flush=True)
"""


def log(msg: str) -> None:
    print(f"[bench_versions {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def extract(rev: str, into: Path) -> Path:
    """``src/`` of ``rev`` under ``into`` (git archive: the tree as committed, nothing else)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


class Child:
    def __init__(self, src: Path, compiled: bool, threads: int, quick: bool):
        env = dict(os.environ, PYTHONPATH=str(src))
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD, "1" if compiled else "0", str(threads),
                                      "1" if quick else "0"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env, cwd=tempfile.gettempdir())

    def ask(self, line: str) -> dict:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        out = self.proc.stdout.readline()
        if not out:
            raise RuntimeError(f"benchmark child exited with {self.proc.wait()} on {line!r}")
        return json.loads(out)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def measure(workload: str, sources: dict, args) -> dict:
    children = {name: Child(src, compiled, args.threads, args.quick) for name, (src, compiled) in sources.items()}
    try:
        setup = {name: round(c.ask(f"setup {workload}")["setup_s"], 1) for name, c in children.items()}
        times: dict = {name: [] for name in children}
        steps, reps = (1, 2) if args.quick else (args.steps or ROUNDS[workload][1], args.reps or ROUNDS[workload][0])
        load = [round(x, 2) for x in os.getloadavg()]
        for _ in range(reps):
            for name, c in children.items():
                times[name].append(c.ask(f"run {steps}")["seconds"])
    finally:
        for c in children.values():
            c.close()
    med = {name: statistics.median(t) for name, t in times.items()}
    res = {f"{name}_s": round(v, 4) for name, v in med.items()}
    res.update({f"{name}_vs_old": round(med["old"] / v, 3) for name, v in med.items() if name != "old"})
    res["setup_s"] = setup
    res.update(steps_per_round=steps, rounds=reps, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               load_average=[load, [round(x, 2) for x in os.getloadavg()]])
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--against", default=DEFAULT_AGAINST, help=f"the older commit (default {DEFAULT_AGAINST})")
    p.add_argument("--workloads", nargs="*", default=["tiny_train", "mbs_infer", "tower_train"],
                   choices=["tiny_train", "mbs_infer", "tower_train"])
    p.add_argument("--no-compile", action="store_true", help="leave out the new_compiled variant")
    p.add_argument("--reps", type=int, default=None, help=f"timed rounds (default per workload: {ROUNDS})")
    p.add_argument("--steps", type=int, default=None, help="steps per timed round (default per workload)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("BENCH_THREADS", "2")))
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.against], capture_output=True,
                         text=True, check=True).stdout.strip()
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    t0 = time.time()
    res: dict = {"env": {"threads": args.threads, "machine": machine_info(args.threads),
                         "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                         "old": rev, "new": f"{head} (working tree)",
                         "load_average_start": [round(x, 2) for x in os.getloadavg()]}}
    with tempfile.TemporaryDirectory() as tmp:
        sources = {"old": (extract(args.against, Path(tmp)), False), "new": (ROOT / "src", False)}
        if not args.no_compile:
            sources["new_compiled"] = (ROOT / "src", True)
        for w in args.workloads:
            log(f"{w}: {', '.join(sources)} in turn")
            res[w] = measure(w, sources, args)
            log(f"  {json.dumps(res[w])}")
    res["env"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    res["env"]["seconds"] = round(time.time() - t0, 1)
    previous = json.loads(RESULTS_FILE.read_text()).get("versions", {}) if RESULTS_FILE.is_file() else {}
    if not args.quick and previous.get("env", {}).get("old") == rev:  # keep workloads measured against the same commit
        res = {**{k: v for k, v in previous.items() if k != "env"}, **res}
    return publish("versions", res, args.quick, log)


if __name__ == "__main__":
    sys.exit(main())
