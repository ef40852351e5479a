#!/usr/bin/env python
"""Data pipeline throughput on this CPU: decode + augment per worker, DataLoader, data wait.

    python benchmarks/data_bench.py            # about 3 minutes on 2 cores; merges key "data" into results/cpu.json
    python benchmarks/data_bench.py --quick    # smoke run; prints, writes nothing

Sources: generated 360p H.264 files (640x360, 30 fps, CRF 20, a keyframe every 2 s as in typical
streaming encodes, textured moving shapes) with 48 kHz stereo AAC, 8 s each. Measured:

* ``per_worker``: clips/s of one process (1 torch thread, as in a loader worker) producing training
  samples (random window, decode, augment, float conversion) at the demo geometry (8 frames at
  10 fps, crop 64, 16 kHz x 12800) and the paper geometry (32 frames at 10 fps, crop 224,
  48 kHz x 153600), with the decode share of the time; median of ``--reps`` after a warm-up.
* ``loader_2_workers``: clips/s through ``make_loader(num_workers=2)`` at both geometries.
* ``data_wait_fraction``: in a short demo-geometry training run (``tiny`` model, batch 8, Adam,
  the real objective, the demo corpus, 2 workers), the fraction of wall time spent waiting in
  ``next(loader)``.
* ``decoders``: PyAV is the one decoding path. torchcodec is measured when importable.

Numbers on a 2-core machine shared with other jobs are noisy; they are medians, not bests.
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

from results_file import merge_results

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
sys.path.insert(0, str(ROOT.parent / "src"))

from vatt.data import DataConfig, build_dataset, make_loader  # noqa: E402
from vatt.data.decode import MediaReader  # noqa: E402
from vatt.data.encode import encode_mp4  # noqa: E402
from vatt.data import ClipRef, load_sample  # noqa: E402

DEMO = DataConfig()
PAPER = DataConfig(num_frames=32, fps=10.0, crop_size=224, sample_rate=48000, num_samples=153600)


def log(msg: str) -> None:
    print(f"[data_bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def make_360p_sources(folder: Path, n: int, seconds: float) -> list[Path]:
    rng = np.random.default_rng(0)
    H, W, fps = 360, 640, 30
    yy, xx = np.mgrid[0:H, 0:W]
    paths = []
    for i in range(n):
        texture = rng.integers(0, 60, size=(H, W, 3), dtype=np.uint8)
        frames = np.empty((int(seconds * fps), H, W, 3), np.uint8)
        for k in range(len(frames)):
            img = texture.copy()
            cx, cy = (60 + 8 * k) % W, 180 + 100 * np.sin(k / 10)
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < 60**2] = (200, 60 + i * 40, 40)
            img[:, :, 1] = np.roll(img[:, :, 1], k, axis=1)
            frames[k] = img
        t = np.arange(int(seconds * 48000)) / 48000
        audio = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 660 * t)]).astype(np.float32)
        data = encode_mp4(frames, fps, audio, rate=48000, gop=2 * fps)
        p = folder / f"src{i}.mp4"
        p.write_bytes(data)
        paths.append(p)
    return paths


def median_rate(fn, clips_per_call: int, reps: int) -> tuple[float, float]:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return clips_per_call / med, med


def per_worker(paths, cfg: DataConfig, clips: int, reps: int) -> dict:
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    refs = [ClipRef(str(p)) for p in paths]

    def run():
        for k in range(clips):
            ref = refs[k % len(refs)]
            load_sample(ref, cfg, None, train=True, rng=rng)

    def decode_only():
        for k in range(clips):
            with MediaReader(refs[k % len(refs)].path) as r:
                start = float(rng.uniform(0, max(0.0, r.info.duration - cfg.clip_seconds)))
                r.read(start, num_frames=cfg.num_frames, fps=cfg.fps, sample_rate=cfg.sample_rate,
                       num_samples=cfg.num_samples, short_side=cfg.resize * 2)

    rate, _ = median_rate(run, clips, reps)
    drate, _ = median_rate(decode_only, clips, reps)
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    return {"clips_s": round(rate, 2), "decode_only_clips_s": round(drate, 2),
            "decode_share": round(min(1.0, rate / drate), 2)}


def loader_rate(paths, cfg: DataConfig, batch: int, batches: int, folder: Path) -> float:
    manifest = folder / "repeat.csv"  # every source many times, so epochs are long
    manifest.write_text("path\n" + "".join(f"{p}\n" for _ in range(64) for p in paths))
    ds = build_dataset(str(manifest), cfg, None, train=True, seed=0)
    loader = make_loader(ds, batch, num_workers=2, seed=0, drop_last=True)
    it = iter(loader)
    n = 0
    next(it)  # workers started, first batch (warm-up)
    t0 = time.perf_counter()
    while n < batches:
        try:
            next(it)
        except StopIteration:
            it = iter(loader)
            continue
        n += 1
    return batch * batches / (time.perf_counter() - t0)


def data_wait_fraction(corpus: Path, steps: int, warmup: int = 3) -> dict:
    import vatt
    from vatt.data import caption_texts
    from vatt.objective import ObjectiveConfig, VattObjective
    from vatt.text import WordTokenizer

    tok = WordTokenizer.build(caption_texts(str(corpus / "pretrain")))
    model = vatt.create_model("tiny", vocab=tok)
    model.train()
    cfg = DataConfig.from_model_config(model.config)
    objective = VattObjective(ObjectiveConfig())
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, eps=1e-7)
    ds = build_dataset(str(corpus / "pretrain"), cfg, tok, train=True, seed=0)
    loader = make_loader(ds, 8, num_workers=2, seed=0)
    it = iter(loader)
    wait = total = 0.0
    done = 0
    while done < warmup + steps:
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        t1 = time.perf_counter()
        out = model(video=batch["video"], audio=batch["audio"], text=batch["text"])
        loss = objective(out, batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        t2 = time.perf_counter()
        if done >= warmup:
            wait += t1 - t0
            total += t2 - t0
        done += 1
    return {"data_wait_fraction": round(wait / total, 3), "step_s": round(total / steps, 3),
            "wait_s_per_step": round(wait / steps, 4), "steps": steps, "batch": 8,
            "workload": "tiny model, demo corpus (128x96 H.264), 2 workers, Adam, real objective"}


def torchcodec_rate(paths, cfg: DataConfig, clips: int, reps: int) -> dict:
    try:
        from torchcodec.decoders import AudioDecoder, VideoDecoder
    except Exception as e:  # not installed, or a build that does not match this torch / has no FFmpeg
        return {"available": False, "reason": f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"}
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)

    def run():
        for k in range(clips):
            p = str(paths[k % len(paths)])
            vd = VideoDecoder(p, seek_mode="approximate")
            dur = vd.metadata.duration_seconds or 0.0
            start = float(rng.uniform(0, max(0.0, dur - cfg.clip_seconds)))
            vd.get_frames_played_at([start + i / cfg.fps for i in range(cfg.num_frames)])
            ad = AudioDecoder(p, sample_rate=cfg.sample_rate, num_channels=1)
            ad.get_samples_played_in_range(start, start + cfg.num_samples / cfg.sample_rate)

    rate, _ = median_rate(run, clips, reps)
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    return {"available": True, "decode_only_clips_s": round(rate, 2), "note": "full-size frames, no resize/augment"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, 2 reps, print only")
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args(argv)
    reps = 2 if args.quick else args.reps
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    t_start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "src").mkdir()
        log("encoding 360p H.264 sources")
        paths = make_360p_sources(tmp / "src", 2 if args.quick else 4, 4.0 if args.quick else 8.0)
        result: dict = {"sources": "640x360 H.264 30 fps (CRF 20, keyframe every 2 s) + AAC 48 kHz stereo, 8 s", "decoder": "pyav"}
        result["per_worker"] = {}
        for name, cfg, clips in (("demo", DEMO, 4 if args.quick else 16), ("paper", PAPER, 2 if args.quick else 4)):
            log(f"per-worker decode + augment, {name} geometry")
            result["per_worker"][name] = per_worker(paths, cfg, clips, reps)
        result["loader_2_workers"] = {}
        for name, cfg, batch, n in (("demo", DEMO, 8, 2 if args.quick else 8), ("paper", PAPER, 2, 2 if args.quick else 6)):
            log(f"DataLoader with 2 workers, {name} geometry")
            result["loader_2_workers"][name] = {"clips_s": round(loader_rate(paths, cfg, batch, n, tmp), 2), "batch": batch}
        log("torchcodec (if importable)")
        result["torchcodec"] = torchcodec_rate(paths, PAPER, 2 if args.quick else 4, reps)
        log("short demo training run for the data wait fraction")
        from vatt.data.synth import make_corpus

        make_corpus(tmp / "corpus", clips=16 if args.quick else 48, seed=0)
        result["training_run"] = data_wait_fraction(tmp / "corpus", 4 if args.quick else 20)
        result["data_wait_fraction"] = result["training_run"]["data_wait_fraction"]
    result["env"] = {"cpu_count": os.cpu_count(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                     "note": "2-core machine shared with other jobs; medians"}
    print(json.dumps(result, indent=2))
    if not args.quick:
        merge_results({"data": result})
        bench_model = ROOT / "bench_model.py"
        if bench_model.is_file():  # re-render the Markdown table from the merged JSON
            subprocess.run([sys.executable, str(bench_model), "--markdown-only"], check=False)
        log(f"merged key 'data' into {RESULTS / 'cpu.json'} in {time.time() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
