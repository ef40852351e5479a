"""The GPU data-loading check: what a training step receives per second from the loader at the
paper geometry, with the colour step on the device (``DataConfig.device_augment``).

Run it on a machine with one CUDA GPU after ``gpu_step.py`` (about 2 minutes):

    python benchmarks/gpu_data.py                 # paper geometry, 8 workers (at most the cores), batch 8

It writes web-like sources (360p H.264, 44.1 kHz AAC), prepares them with ``vatt data prepare
--train-format mbs`` into shards, then times ``TrainBatches`` + the engine's ``to_device`` (pinned
uint8 crops over PCIe, the colour maps applied on the GPU) for ``--batches`` batches after a
warm-up: clips/s delivered, the device time of the colour step per clip, and bytes per clip moved,
merged into ``benchmarks/results/gpu-<card>.json`` under ``"data"``. Compare clips/s with the
~340 clips/s an MBS step at 40% MFU needs (docs/DATA.md).

``--smoke`` runs the same code on the CPU at the demo geometry (a test calls it).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from results_file import RESULTS, merge_results

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from vatt.data import DataConfig, build_dataset  # noqa: E402
from vatt.data.encode import encode_mp4  # noqa: E402
from vatt.data.prepare import ClipFormat, prepare_shards  # noqa: E402
from vatt.train.batches import TrainBatches  # noqa: E402
from vatt.train.engine import to_device  # noqa: E402

PAPER = DataConfig(num_frames=32, fps=10.0, crop_size=224, sample_rate=48000, num_samples=153600)
DEMO = DataConfig()


def make_sources(folder: Path, n: int, seconds: float, size: tuple[int, int]) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    w, h = size
    fps, rate = 30, 44100
    for i in range(n):
        t = int(seconds * fps)
        base = rng.integers(0, 255, size=(1, h, w, 3), dtype=np.uint8)
        frames = np.repeat(base, t, axis=0)
        for k in range(t):  # a moving bright square, so the codec has motion to encode
            x = (k * 7) % max(1, w - 40)
            frames[k, 20:60, x:x + 40] = 255
        audio = (0.1 * np.sin(np.arange(int(seconds * rate)) * 2 * np.pi * 440 / rate)).astype(np.float32)
        (folder / f"src_{i:03d}.mp4").write_bytes(encode_mp4(frames, fps, audio, rate))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--batches", type=int, default=30, help="timed batches (after --warmup)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--sources", type=int, default=8)
    p.add_argument("--device", default="cuda")
    p.add_argument("--smoke", action="store_true", help="CPU, demo geometry, tiny sizes")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    device = torch.device("cpu" if args.smoke else args.device)
    cfg, size = (DEMO, (160, 96)) if args.smoke else (PAPER, (640, 360))
    if args.smoke:
        args.workers, args.batch, args.batches, args.warmup, args.sources = 1, 2, 3, 1, 2
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "src").mkdir()
        make_sources(tmp / "src", args.sources, 8.0, size)
        prepare_shards(str(tmp / "src"), tmp / "shards", fmt=ClipFormat.training(cfg))
        data = build_dataset(str(tmp / "shards"), cfg.replace(device_augment=True), None, train=True, seed=0)
        batches = TrainBatches(data, args.batch, num_workers=args.workers, seed=0)
        times, finish = [], []
        try:
            for i in range(args.warmup + args.batches):
                t0 = time.perf_counter()
                raw = next(batches)
                t1 = time.perf_counter()
                batch = to_device(raw, device)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t2 = time.perf_counter()
                if i >= args.warmup:
                    times.append(t2 - t0)
                    finish.append(t2 - t1)
        finally:
            batches.close()
        bytes_per_clip = raw["video"][0].numel() * raw["video"].element_size() + raw["audio"][0].numel() * 4
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu-smoke"
    result = {
        "geometry": f"{cfg.num_frames}x{cfg.crop_size}^2 @ {cfg.fps} fps, audio {cfg.num_samples} @ {cfg.sample_rate} Hz",
        "workers": args.workers, "batch": args.batch, "batches": args.batches,
        "clips_per_second": round(args.batch / statistics.median(times), 2),
        "to_device_and_colour_ms_per_clip": round(1000 * statistics.median(finish) / args.batch, 3),
        "video_dtype_from_workers": str(raw["video"].dtype), "mb_per_clip_from_workers": round(bytes_per_clip / 2**20, 2),
        "output_dtype": str(batch["video"].dtype), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    out = args.out or RESULTS / f"gpu-{re.sub(r'[^A-Za-z0-9]+', '-', card).strip('-').lower()}.json"
    merge_results({"data": result}, out)
    print(f"{card}: {result['clips_per_second']} clips/s from {args.workers} workers, "
          f"{result['to_device_and_colour_ms_per_clip']} ms/clip to the device + colour -> {out}")
    return result


if __name__ == "__main__":
    main()
