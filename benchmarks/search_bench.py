#!/usr/bin/env python
"""Query latency of `vatt serve`'s search engine at 10k and 1M windows, on this CPU.

    python benchmarks/search_bench.py                      # 10k and 1M windows; writes results/search.json
    python benchmarks/search_bench.py --sizes 2000 --out /tmp/s.json   # smoke run

For each size a real index folder is written with :func:`vatt.search.window_index.write_index` (random
unit vectors: latency does not depend on what the vectors mean; 100 windows per file, 0.8 s
windows every 0.4 s) and opened memory-mapped with :class:`WindowIndex`, as `vatt serve` does.
Measured, median over ``--queries`` random queries after one warm-up query:

* ``text_query_ms``: one text->video query without the text encoder: exact top-k over S_vt
  ``[N, 256]`` (one matrix product) plus merging neighbouring windows into 20 moments.
* ``similar_query_ms``: "more like this" over S_va ``[N, 512]``, the same steps.
* ``topk_only_ms``: the matrix product and top-k alone (S_vt).
* ``first_query_ms``: the first query after opening (the pages were just written, so they are
  mostly in the page cache; a cold disk adds its read time once).
* ``encode_text_ms``: embedding one sentence with the ``tiny`` model (per query, independent of N;
  larger models take longer).

FAISS (``IndexFlatIP``, exact) is measured too when it is installed.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from results_file import machine_info

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "src"))

from vatt.search.engine import SearchEngine, faiss_available, top_k  # noqa: E402
from vatt.search.window_index import INDEX_FORMAT, INDEX_VERSION, WindowIndex, write_index  # noqa: E402

WINDOWS_PER_FILE = 100


def _unit(n: int, d: int, gen: torch.Generator) -> torch.Tensor:
    out = torch.empty(n, d)
    step = 100_000
    for i in range(0, n, step):  # in chunks: no second N x D temporary
        x = torch.randn(min(step, n - i), d, generator=gen)
        out[i : i + step] = x / x.norm(dim=1, keepdim=True)
    return out


def make_index(folder: Path, n: int, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    files = (n + WINDOWS_PER_FILE - 1) // WINDOWS_PER_FILE
    per = np.arange(n) % WINDOWS_PER_FILE
    start = (per * 0.4).astype(np.float32)
    tensors = {"video_vt": _unit(n, 256, gen), "video_va": _unit(n, 512, gen), "audio_va": _unit(n, 512, gen),
               "start": torch.from_numpy(start), "end": torch.from_numpy(start + 0.8),
               "file": torch.from_numpy((np.arange(n) // WINDOWS_PER_FILE).astype(np.int32)),
               "thumb_offsets": torch.zeros(n + 1, dtype=torch.int64), "thumbs": torch.zeros(0, dtype=torch.uint8)}
    meta = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "model": None, "model_fingerprint": "random",
            "window": 0.8, "hop": 0.4, "clip_seconds": 0.8, "source": "random", "roots": [str(folder)],
            "num_windows": n, "bad": [],
            "files": [{"id": f"{i:016x}", "path": f"{folder}/f{i}.mp4", "rel": f"f{i}.mp4", "size": 0, "mtime_ns": 0,
                       "duration": WINDOWS_PER_FILE * 0.4 + 0.4, "has_audio": True,
                       "rows": [i * WINDOWS_PER_FILE, min(n, (i + 1) * WINDOWS_PER_FILE)]} for i in range(files)]}
    write_index(folder, meta, tensors)


def _median_ms(fn, queries) -> float:
    times = []
    for q in queries:
        t0 = time.perf_counter()
        fn(q)
        times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(times), 3)


def bench_size(n: int, queries: int, workdir: Path) -> dict:
    folder = workdir / f"index_{n}"
    t0 = time.perf_counter()
    make_index(folder, n)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    index = WindowIndex(folder)
    open_ms = (time.perf_counter() - t0) * 1000
    engine = SearchEngine(index, None, use_faiss=False)
    gen = torch.Generator().manual_seed(1)
    qs = [x for x in _unit(queries + 1, 256, gen)]
    t0 = time.perf_counter()
    engine._moments("video_vt", qs[0], 20)
    first_ms = (time.perf_counter() - t0) * 1000
    res = {
        "windows": n,
        "index_bytes_on_disk": sum(p.stat().st_size for p in folder.iterdir()),
        "write_index_s": round(build_s, 2),
        "open_ms": round(open_ms, 2),
        "first_query_ms": round(first_ms, 2),
        "text_query_ms": _median_ms(lambda q: engine._moments("video_vt", q, 20), qs[1:]),
        "topk_only_ms": _median_ms(lambda q: top_k(index.tensors["video_vt"], q[None], 20), qs[1:]),
    }
    rows = torch.randint(0, n, (queries,), generator=gen).tolist()
    engine.similar(rows[0], 20)
    res["similar_query_ms"] = _median_ms(lambda r: engine.similar(r, 20), rows)
    if faiss_available():
        fe = SearchEngine(index, None, use_faiss=True)
        fe._moments("video_vt", qs[0], 20)
        res["faiss_text_query_ms"] = _median_ms(lambda q: fe._moments("video_vt", q, 20), qs[1:])
    del engine, index
    shutil.rmtree(folder)
    return res


def encode_text_ms(queries: int) -> float:
    import vatt
    from vatt.text import WordTokenizer

    tok = WordTokenizer.build(["a red ball bounces to the right", "the green box drops down"])
    model = vatt.create_model("tiny", vocab=tok).eval()
    sentences = [f"a red ball bounces {i}" for i in range(queries + 1)]
    model.encode_text(sentences[0])
    return _median_ms(lambda s: model.encode_text(s), sentences[1:])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    p.add_argument("--queries", type=int, default=30)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default: 2)")
    p.add_argument("--out", default=str(ROOT / "results" / "search.json"))
    p.add_argument("--workdir", default=None, help="where the temporary indexes go (default: a temp folder)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="vatt-search-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results = {"machine": {"cpu": platform.processor() or platform.machine(), "torch_threads": args.threads,
                           "torch": torch.__version__, "faiss": faiss_available(), **machine_info(args.threads)},
               "queries_per_size": args.queries, "encode_text_ms_tiny": encode_text_ms(args.queries), "sizes": []}
    for n in args.sizes:
        r = bench_size(n, args.queries, work)
        results["sizes"].append(r)
        print(json.dumps(r), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from vatt.atomic_io import atomic_write_json

    atomic_write_json(out, results)
    print(f"-> {out}")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
