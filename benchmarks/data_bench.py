#!/usr/bin/env python
"""Data pipeline throughput on this CPU: clips/s per core from web-like sources, from prepared data
and from a naive decoder, the profile of one clip, DataLoader rates, and the data wait of training.

    python benchmarks/data_bench.py            # about 5 minutes on 2 cores; merges key "data" into results/cpu.json
    python benchmarks/data_bench.py --quick    # smoke run; prints, writes nothing

Sources are web-like: generated 640x360 H.264 at 30 fps (CRF 20, a keyframe every 2 s, textured
moving shapes) with 44.1 kHz stereo AAC, 8 s each. Measured, in one process set up as a loader
worker is (one torch thread, ``keep_freed_memory()``), interleaved repetition by repetition so that load from other jobs
hits all three alike (ratios are medians of per-repetition ratios):

* ``per_core``: clips per CPU-second (``time.process_time``: the clips/s of a core the worker has to
  itself, which wall-clock time on a shared machine is not; wall-clock rates are kept too) of
  training samples (random window, decode, augment, float conversion)
  at the demo geometry (8 frames at 10 fps, crop 64, 16 kHz x 12800) and the paper geometry
  (32 frames at 10 fps, crop 224, 48 kHz x 153600) from

  - ``raw``: the web-like files themselves;
  - ``prepared``: the shards ``vatt data prepare --train-format`` writes from them (the
    geometry's frame rate, shorter side = its resize, audio at its rate and mono, a keyframe
    every second, H.264 tune=fastdecode), read as shard members (bytes), as training does;
  - ``naive``: PyAV decoding every frame of a window of the same length at source resolution
    into RGB arrays, with its audio (seek, ``to_ndarray(format="rgb24")`` per frame; no resize,
    no augmentation);
  - ``naive_prepared``: the same naive decoder on the prepared bytes (the floor for reading them).

  ``raw`` and ``prepared`` stop where a training loader's worker stops (``device_augment``: uint8
  crops plus colour maps; the colour step runs on the training device). Ratios are given in CPU
  time and by the wall clock (``wall_clock_ratios``).
* ``profile``: where one paper-geometry clip's time goes (cProfile, CPU ms per clip), raw and prepared.
* ``loader_2_workers``: clips/s by the wall clock through ``make_loader(num_workers=2)`` (one worker
  per core): raw, prepared (float clips, a CPU run) and prepared uint8 (an accelerator run's workers),
  against the naive decoder in 2 processes on the source and on the prepared bytes.
* ``training_run``: ``vatt pretrain --config tiny`` (batch 8, 2 loader workers, streaming) on the
  demo corpus, raw folder and prepared shards: median data-wait share of step time
  (``metrics.jsonl``), and the model-only step time to say how many cores the data would need.
* ``gpu_node_estimate``: cores per GPU to feed an MBS step (FLOPs from ``vatt model-info``; the
  step rate assumed, not measured: no GPU here).

Numbers on a 2-core machine shared with other jobs are noisy; they are medians, not bests, and
the load average is recorded.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_file import machine_info, merge_results

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
sys.path.insert(0, str(ROOT.parent / "src"))

from vatt.data import ClipRef, DataConfig, build_dataset, load_sample, make_loader  # noqa: E402
from vatt.data.decode import MediaReader  # noqa: E402
from vatt.data.encode import encode_mp4  # noqa: E402
from vatt.data.loader import keep_freed_memory  # noqa: E402
from vatt.data.prepare import ClipFormat, prepare_shards  # noqa: E402
from vatt.data.shards import ShardWriter, iter_tar_samples  # noqa: E402

DEMO = DataConfig()
PAPER = DataConfig(num_frames=32, fps=10.0, crop_size=224, sample_rate=48000, num_samples=153600)
WEB = "640x360 H.264 30 fps (CRF 20, keyframe every 2 s) + AAC 44.1 kHz stereo, 8 s"
THREADS = int(os.environ.get("BENCH_THREADS", "2"))


def log(msg: str) -> None:
    print(f"[data_bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def make_web_sources(folder: Path, n: int, seconds: float) -> list[Path]:
    rng = np.random.default_rng(0)
    H, W, fps, rate = 360, 640, 30, 44100
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
        t = np.arange(int(seconds * rate)) / rate
        audio = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 660 * t)]).astype(np.float32)
        p = folder / f"web{i}.mp4"
        p.write_bytes(encode_mp4(frames, fps, audio, rate=rate, gop=2 * fps))
        paths.append(p)
    return paths


def prepared_refs(src: Path, out: Path, cfg: DataConfig) -> tuple[list[ClipRef], dict]:
    """``vatt data prepare --train-format`` for ``cfg`` (whole 8 s files as one clip each)."""
    report = prepare_shards(str(src), out, clip_seconds=10.0, fmt=ClipFormat.training(cfg))
    refs = []
    for shard in sorted(out.glob("shard-*.tar")):
        refs += [ClipRef(s["__key__"], data=s["mp4"]) for s in iter_tar_samples(str(shard))]
    return refs, report["format"]


def naive_clip(path: Path, start: float, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """The naive decoder: every video frame of ``[start, start + seconds)`` at source resolution as
    RGB, and the audio frames of the span, with PyAV's everyday calls."""
    import av

    end = start + seconds
    frames, audio = [], []
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        c.seek(int(start * 1_000_000), backward=True, any_frame=False)
        v_done = a_done = False
        for f in c.decode(v, a):
            t = f.time
            if isinstance(f, av.VideoFrame):
                if t >= end:
                    v_done = True
                elif t >= start:
                    frames.append(f.to_ndarray(format="rgb24"))
            else:
                if t >= end:
                    a_done = True
                elif t + f.samples / f.sample_rate > start:
                    audio.append(f.to_ndarray())
            if v_done and a_done:
                break
    return np.stack(frames), np.concatenate(audio, axis=1)


def per_core(web: list[Path], raw: list[ClipRef], prep: list[ClipRef], cfg: DataConfig, n_slow: int, n_fast: int,
             reps: int, prep_files: list[Path]) -> dict:
    """Interleaved timing of raw, prepared and naive; one torch thread (one loader worker's core).

    ``raw`` and ``prepared`` run what a training loader's worker runs (``device_augment``: uint8
    crops and colour maps; the colour step runs on the training device). ``naive`` decodes the
    source files, ``naive_prepared`` the same prepared bytes the loader reads (``prep_files``)."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    span = cfg.clip_seconds
    worker_cfg = cfg.replace(device_augment=True)

    def run_samples(refs, n):
        for k in range(n):
            load_sample(refs[k % len(refs)], worker_cfg, None, train=True, rng=rng)

    def run_naive(n, files=web):
        for k in range(n):
            naive_clip(files[k % len(files)], float(rng.uniform(0, 8.0 - span)), span)

    def decode_only(refs, n):
        for k in range(n):
            r = refs[k % len(refs)]
            with MediaReader(r.data if r.data is not None else r.path, name=r.path) as m:
                m.read(float(rng.uniform(0, max(0.0, m.info.duration - span))), num_frames=cfg.num_frames, fps=cfg.fps,
                       sample_rate=cfg.sample_rate, num_samples=cfg.num_samples, short_side=cfg.resize * 2)

    jobs = {"raw": (lambda: run_samples(raw, n_slow), n_slow), "prepared": (lambda: run_samples(prep, n_fast), n_fast),
            "naive": (lambda: run_naive(n_slow), n_slow), "prepared_decode_only": (lambda: decode_only(prep, n_fast), n_fast),
            "naive_prepared": (lambda: run_naive(n_fast, prep_files), n_fast)}
    rates: dict[str, list[float]] = {k: [] for k in jobs}  # clips per CPU-second of this process
    wall: dict[str, list[float]] = {k: [] for k in jobs}  # clips per wall-clock second
    for rep in range(reps + 1):  # the first repetition warms up
        for name, (fn, n) in jobs.items():
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            if rep:
                rates[name].append(n / max(time.process_time() - c0, 1e-9))
                wall[name].append(n / (time.perf_counter() - t0))
    torch.set_num_threads(THREADS)
    med = {k: statistics.median(v) for k, v in rates.items()}
    ratio = lambda a, b, r=rates: round(statistics.median(x / y for x, y in zip(r[a], r[b])), 2)  # noqa: E731
    return {"raw_clips_s": round(med["raw"], 2), "prepared_clips_s": round(med["prepared"], 2),
            "naive_clips_s": round(med["naive"], 2), "naive_prepared_clips_s": round(med["naive_prepared"], 2),
            "prepared_vs_naive": ratio("prepared", "naive"),
            "prepared_vs_naive_prepared": ratio("prepared", "naive_prepared"),
            "wall_clock_ratios": {"prepared_vs_naive": ratio("prepared", "naive", wall),
                                  "prepared_vs_naive_prepared": ratio("prepared", "naive_prepared", wall)},
            "raw_vs_naive": ratio("raw", "naive"), "prepared_vs_raw": ratio("prepared", "raw"),
            "prepared_decode_share": round(min(1.0, med["prepared"] / med["prepared_decode_only"]), 2),
            "wall_clock_clips_s": {k: round(statistics.median(v), 2) for k, v in wall.items()},
            "reps": reps, "clips_per_rep": {"raw": n_slow, "prepared": n_fast, "naive": n_slow, "naive_prepared": n_fast},
            "unit": "clips per CPU-second of the worker process (clips/s of a core it had to itself); "
                    "wall_clock_clips_s: the same runs by the clock, lower when other jobs share the cores"}


def profile(refs: list[ClipRef], cfg: DataConfig, n: int) -> dict:
    """CPU ms per clip by kind of work, from cProfile (own time of C calls, cumulative for transforms)."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(1)
    load_sample(refs[0], cfg, None, train=True, rng=rng)
    pr = cProfile.Profile(time.process_time)  # CPU time: other jobs' load does not count
    t0 = time.process_time()
    pr.enable()
    for k in range(n):
        load_sample(refs[k % len(refs)], cfg, None, train=True, rng=rng)
    pr.disable()
    wall = (time.process_time() - t0) / n
    torch.set_num_threads(THREADS)
    parts = {"packet_decode": 0.0, "yuv_to_rgb": 0.0, "audio_resample": 0.0, "open_container": 0.0,
             "augment_video": 0.0, "augment_audio": 0.0}
    total = 0.0
    for (file, _line, name), (_cc, _nc, tt, ct, _callers) in pstats.Stats(pr).stats.items():
        if name == "load_sample":
            total = ct
        elif "decode' of 'av.packet.Packet" in name:
            parts["packet_decode"] += tt
        elif "'reformat'" in name or "to_ndarray' of 'av.video" in name:
            parts["yuv_to_rgb"] += tt
        elif "'resample' of 'av.audio" in name:
            parts["audio_resample"] += tt
        elif name == "<built-in method open>" and "av" in file or "av.container.core.open" in name:
            parts["open_container"] += tt
        elif file.endswith("transforms.py") and name == "train_video":
            parts["augment_video"] += ct
        elif file.endswith("transforms.py") and name == "train_audio":
            parts["augment_audio"] += ct
    total = total or wall * n
    ms = {k: round(1000 * v / n, 2) for k, v in parts.items()}
    ms["python_numpy_other"] = round(1000 * total / n - sum(ms.values()), 2)
    return {"ms_per_clip": round(1000 * total / n, 2), "parts_ms": ms,
            "shares": {k: round(v / (1000 * total / n), 3) for k, v in ms.items()}, "clips": n}


def _naive_job(args) -> int:
    files, n, span, duration, seed = args
    torch.set_num_threads(1)
    keep_freed_memory()  # as a loader worker does
    rng = np.random.default_rng(seed)
    for k in range(n):
        naive_clip(files[k % len(files)], float(rng.uniform(0, duration - span)), span)
    return n


def naive_pool_rate(files: list[Path], clips: int, span: float, duration: float, workers: int = 2) -> float:
    """Clips per wall-clock second of the naive decoder in ``workers`` processes (one per core,
    as the loader's workers), each decoding ``clips`` windows; pool start-up not timed."""
    import multiprocessing as mp

    with mp.get_context("fork").Pool(workers) as pool:
        pool.map(_naive_job, [([str(f) for f in files], 1, span, duration, w) for w in range(workers)])  # warm-up
        t0 = time.perf_counter()
        done = sum(pool.map(_naive_job, [([str(f) for f in files], clips, span, duration, 10 + w) for w in range(workers)]))
    return round(done / (time.perf_counter() - t0), 2)


def loader_rate(dataset, batch: int, batches: int) -> float:
    loader = make_loader(dataset, batch, num_workers=2, seed=0, drop_last=True)
    it = iter(loader)
    n = 0
    next(it)  # workers started, first batch (warm-up)
    t0 = time.perf_counter()
    while n < batches:
        try:
            next(it)
        except StopIteration:  # a short source: start it again
            it = iter(loader)
            continue
        n += 1
    return round(batch * batches / (time.perf_counter() - t0), 2)


def pretrain_run(data: Path, out: Path, steps: int, batch: int, workers: int, *sets: str) -> dict:
    """``vatt pretrain --config tiny`` streaming from ``data``; data wait from metrics.jsonl. Run as a
    user runs it: without the OMP_NUM_THREADS that run.sh sets (the trainer's threads are then
    ``cpu_threads``' automatic choice)."""
    cmd = [sys.executable, "-m", "vatt.cli.main", "pretrain", "--config", "tiny", "--data", str(data), "--out", str(out),
           "--set", f"steps={steps}", f"batch_size={batch}", f"data.num_workers={workers}", "log_every=1",
           f"checkpoint_every={steps + 1000}", *sets]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"} | {"PYTHONPATH": str(ROOT.parent / "src")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    rows = []
    if (out / "metrics.jsonl").is_file():
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "data_wait" in r]
    if proc.returncode != 0 or len(rows) < 4:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:300], "steps_logged": len(rows)}
    rows = rows[3:]  # the first steps start the workers and warm up
    return {"data_wait_fraction": round(statistics.median(r["data_wait"] for r in rows), 3),
            "data_wait_mean": round(statistics.fmean(r["data_wait"] for r in rows), 3),
            "step_s": round(statistics.median(r["step_seconds"] for r in rows), 3), "steps": len(rows)}


def model_only_step(corpus: Path, batch: int, steps: int) -> float:
    """Median step time of the tiny model on one fixed batch (no loader): the step the data must keep up with."""
    import vatt
    from vatt.data.vocab import caption_texts
    from vatt.objective import ObjectiveConfig, VattObjective
    from vatt.text import WordTokenizer

    tok = WordTokenizer.build(caption_texts(str(corpus)))
    model = vatt.create_model("tiny", vocab=tok)
    model.train()
    cfg = DataConfig.from_model_config(model.config)
    ds = build_dataset(str(corpus), cfg, tok, train=True, seed=0)
    batch_d = next(iter(make_loader(ds, batch, num_workers=0, seed=0)))
    objective = VattObjective(ObjectiveConfig())
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, eps=1e-7)
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        out = model(video=batch_d["video"], audio=batch_d["audio"], text=batch_d["text"])
        loss = objective(out, batch_d)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def gpu_node_estimate(paper_prepared: float, paper_raw: float) -> dict:
    from vatt.config import get_config
    from vatt.model.flops import forward_flops

    fwd = forward_flops(get_config("mbs"), drop_rate=0.5)
    peak, mfu = 989e12, 0.4  # H100/H200 SXM dense bf16 peak; an assumed MFU (not measured: no GPU here)
    clips_s = peak * mfu / (3 * fwd)
    return {"mbs_forward_gflop_per_clip_drop50": round(fwd / 1e9, 1), "assumed_bf16_peak_tflops": peak / 1e12,
            "assumed_mfu": mfu, "clips_s_per_gpu": round(clips_s),
            "cores_per_gpu_prepared": round(clips_s / paper_prepared, 1),
            "cores_per_gpu_raw_360p": round(clips_s / paper_raw, 1),
            "note": "training FLOPs = 3 x forward; clips/s per GPU = peak x MFU / FLOPs; cores = that / per-core clips/s"}


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

    run()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    torch.set_num_threads(THREADS)
    return {"available": True, "decode_only_clips_s": round(clips / statistics.median(times), 2),
            "note": "raw sources, full-size frames, no resize/augment"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, 2 reps, print only")
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args(argv)
    q = args.quick
    reps = 2 if q else args.reps
    torch.set_num_threads(THREADS)
    keep_freed_memory()  # what every loader worker does at start (all three decoders measured under it)
    t_start = time.time()
    load_start = load_average()
    result: dict = {"sources": WEB, "decoder": "pyav"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "web").mkdir()
        log("encoding web-like sources")
        web = make_web_sources(tmp / "web", 2 if q else 4, 8.0)
        raw = [ClipRef(str(w)) for w in web]
        prep, fmts = {}, {}
        for name, cfg in (("demo", DEMO), ("paper", PAPER)):
            log(f"vatt data prepare --train-format ({name} geometry)")
            prep[name], fmts[name] = prepared_refs(tmp / "web", tmp / f"prep_{name}", cfg)
        result["prepared_format"] = fmts
        result["per_core"] = {}
        for name, cfg, n_slow, n_fast in (("demo", DEMO, 4 if q else 8, 8 if q else 32), ("paper", PAPER, 1 if q else 3, 4 if q else 16)):
            log(f"per core: raw / prepared / naive, {name} geometry")
            files = []  # the prepared clips as files, for the naive decoder on the same bytes
            for i, r in enumerate(prep[name]):
                files.append(tmp / f"prep_{name}_{i}.mp4")
                files[-1].write_bytes(r.data)
            result["per_core"][name] = per_core(web, raw, prep[name], cfg, n_slow, n_fast, reps, files)
        log("profile of a paper-geometry clip")
        result["profile"] = {"paper": {"raw": profile(raw, PAPER, 2 if q else 6), "prepared": profile(prep["paper"], PAPER, 8 if q else 32)}}
        result["loader_2_workers"] = {}
        for name, cfg, batch, n in (("demo", DEMO, 8, 2 if q else 8), ("paper", PAPER, 2, 2 if q else 12)):
            log(f"DataLoader with 2 workers, {name} geometry")
            manifest = tmp / "repeat.csv"  # every source many times, so epochs are long
            manifest.write_text("path\n" + "".join(f"{w}\n" for _ in range(16) for w in web))
            raw_ds = build_dataset(str(manifest), cfg, None, train=True, seed=0)
            with ShardWriter(tmp / f"repeat_{name}", max_count=8) as w:  # every prepared clip 16 times, 4+ shards
                for k in range(16):
                    for i, r in enumerate(prep[name]):
                        w.write(f"{k:03d}_{i:03d}", {"mp4": r.data})
            prep_ds = build_dataset(str(tmp / f"repeat_{name}"), cfg, None, train=True, seed=0)
            prep_u8 = build_dataset(str(tmp / f"repeat_{name}"), cfg.replace(device_augment=True), None, train=True, seed=0)
            files = sorted(tmp.glob(f"prep_{name}_*.mp4"))
            r = {"raw_clips_s": loader_rate(raw_ds, batch, n),
                 "prepared_clips_s": loader_rate(prep_ds, batch, n * 3),
                 "prepared_uint8_clips_s": loader_rate(prep_u8, batch, n * 3),
                 "naive_source_2_processes_clips_s": naive_pool_rate(web, max(2, n * batch // 4), cfg.clip_seconds, 8.0),
                 "naive_prepared_2_processes_clips_s": naive_pool_rate(files, n * batch * 3 // 2, cfg.clip_seconds, 8.0),
                 "batch": batch}
            r["uint8_loader_vs_naive_prepared"] = round(r["prepared_uint8_clips_s"] / r["naive_prepared_2_processes_clips_s"], 2)
            r["uint8_loader_vs_naive_source"] = round(r["prepared_uint8_clips_s"] / r["naive_source_2_processes_clips_s"], 2)
            r["note"] = ("by the wall clock, 2 loader workers (one per core) against the naive decoder in 2 processes; "
                         "prepared_uint8: what the workers of an accelerator run hand over (DataConfig.device_augment), "
                         "prepared: float clips, as on a CPU run")
            result["loader_2_workers"][name] = r
        log("torchcodec (if importable)")
        result["torchcodec"] = torchcodec_rate(web, PAPER, 1 if q else 3, reps)
        log("vatt pretrain --config tiny, streaming: demo corpus raw and prepared")
        from vatt.data.synth import make_corpus

        make_corpus(tmp / "corpus", clips=48 if q else 200, seed=0)
        corpus = tmp / "corpus" / "pretrain"
        prepare_shards(str(corpus), tmp / "corpus_shards", fmt=ClipFormat.training(DEMO))
        steps, batch = (6, 8) if q else (22, 8)  # 22 x 8 < 200 clips: one pass (a shard stream is not restarted here)
        run = {"workload": f"vatt pretrain --config tiny, batch {batch}, 2 loader workers, {steps} steps, demo corpus "
                           "(128x96 H.264 + AAC 16 kHz); median data_wait of metrics.jsonl after 3 warm-up steps; "
                           "trainer threads: cpu_threads auto (torch's default less one per worker) unless named"}
        run["raw"] = pretrain_run(corpus, tmp / "run_raw", steps, batch, 2)
        run["prepared"] = pretrain_run(tmp / "corpus_shards", tmp / "run_prep", steps, batch, 2)
        run["prepared_cpu_threads_2"] = pretrain_run(tmp / "corpus_shards", tmp / "run_prep2", steps, batch, 2,
                                                     "cpu_threads=2")
        log("model-only step time (tiny, batch 8)")
        step = model_only_step(corpus, batch, 3 if q else 10)
        demo_core = result["per_core"]["demo"]["prepared_clips_s"]
        run["model_only_step_s"] = round(step, 3)
        run["clips_s_needed"] = round(batch / step, 1)
        run["cores_needed_prepared"] = round(batch / step / demo_core, 2)
        run["cores_available"] = os.cpu_count()
        result["training_run"] = run
        waits = [r.get("data_wait_fraction") for r in (run["prepared"], run["raw"]) if "data_wait_fraction" in r]
        if waits:
            result["data_wait_fraction"] = waits[0]
        result["gpu_node_estimate"] = gpu_node_estimate(result["per_core"]["paper"]["prepared_clips_s"],
                                                        result["per_core"]["paper"]["raw_clips_s"])
    result["env"] = {"cpu_count": os.cpu_count(), "machine": machine_info(1), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                     "load_average_start": load_start, "load_average_end": load_average(),
                     "note": "2-core machine shared with other jobs; medians; per-core rates with 1 torch thread"}
    print(json.dumps(result, indent=2))
    if not q:
        merge_results({"data": result})
        bench_model = ROOT / "bench_model.py"
        if bench_model.is_file():  # re-render the Markdown table from the merged JSON
            subprocess.run([sys.executable, str(bench_model), "--markdown-only"], check=False)
        log(f"merged key 'data' into {RESULTS / 'cpu.json'} in {time.time() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
