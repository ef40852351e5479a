#!/usr/bin/env python
"""`vatt serve` under load: p50/p99 latency of text queries from many concurrent clients.

    python benchmarks/serve_load.py                          # 200 clients x 5 queries; results/serve_load.json
    python benchmarks/serve_load.py --baseline 8a036a4       # the same load against an older commit too
    python benchmarks/serve_load.py --clients 20 --requests 2 --out /tmp/s.json   # smoke run

An index of the demo corpus (`vatt data synth`, its 24 retrieval clips: ~150 windows) is built
with a randomly initialised `tiny` model (latency does not depend on what the weights learned),
then `vatt serve` runs in its own process (as a user runs it, default flags). The clients
are asyncio coroutines in this process: all of them start at once, and each sends its queries one
after another, each on a new connection (a burst of connections is what overflowed the old
listen backlog). Latency is measured from connect to the last byte of the answer. With
``--baseline COMMIT`` the server of that commit (`git archive`) is measured on the same index and
the same machine in the same run. ``--hostile`` then opens idle connections that never send a
request and uploads that declare 20 MB and stall, and records the server's threads, memory, CPU
share and how long a normal request takes meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
WORDS = ["red", "green", "blue", "yellow", "ball", "box", "wedge", "bounces", "slides", "drops", "spins", "hops",
         "left", "right", "small", "big", "a", "the", "crimson", "navy"]


def build(tmp: Path) -> Path:
    sys.path.insert(0, str(REPO / "src"))
    import torch

    import vatt
    from vatt.data import caption_texts
    from vatt.data.synth import make_corpus
    from vatt.search.window_index import build_index
    from vatt.text import WordTokenizer

    torch.manual_seed(0)
    corpus = tmp / "corpus"
    make_corpus(corpus, clips=24, seed=0)
    model = vatt.create_model("tiny", vocab=WordTokenizer.build(caption_texts(str(corpus / "pretrain"))))
    model.save_pretrained(tmp / "model")
    build_index(corpus / "retrieval", model, tmp / "index", model_path=str(tmp / "model"))
    return tmp / "index"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(src: Path, index: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(src)}
    proc = subprocess.Popen([sys.executable, "-m", "vatt.cli.main", "serve", str(index), "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"the server did not start: {proc.stderr.read()}")
            time.sleep(0.2)
    raise RuntimeError("the server did not start in 120 s")


async def one_query(port: int, query: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /api/search?q={query}&k=10 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    status = int(data.split(b" ", 2)[1]) if data else 0
    return time.perf_counter() - t0, status


async def load(port: int, clients: int, requests: int, seed: int) -> dict:
    import random

    rng = random.Random(seed)
    plans = [["+".join(rng.choices(WORDS, k=4)) for _ in range(requests)] for _ in range(clients)]
    latencies, statuses = [], []

    async def client(plan):
        for q in plan:
            try:
                dt, status = await asyncio.wait_for(one_query(port, q), 120)
            except (OSError, asyncio.TimeoutError):
                dt, status = float("nan"), 0
            latencies.append(dt)
            statuses.append(status)

    t0 = time.perf_counter()
    await asyncio.gather(*(client(p) for p in plans))
    wall = time.perf_counter() - t0
    ok = sorted(x for x, s in zip(latencies, statuses) if s == 200)
    q = statistics.quantiles(ok, n=100) if len(ok) >= 2 else [float("nan")] * 99
    return {"clients": clients, "requests_per_client": requests, "answered_200": len(ok),
            "failed": len(latencies) - len(ok), "p50_s": round(q[49], 3), "p90_s": round(q[89], 3),
            "p99_s": round(q[98], 3), "max_s": round(ok[-1], 3) if ok else None,
            "queries_per_s": round(len(ok) / wall, 1), "wall_s": round(wall, 1)}


def _proc_status(pid: int) -> dict:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"threads": int(fields["Threads"]), "rss_mb": round(int(fields["VmRSS"].split()[0]) / 1024, 1)}


def _cpu_seconds(pid: int) -> float:
    parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def _info_latency(port: int) -> float | None:
    t0 = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return round(time.perf_counter() - t0, 3) if b" 200 " in data[:20] else None
    except OSError:
        return None


def hostile(port: int, pid: int, half_open: int, uploads: int) -> dict:
    """Idle connections that never send a request, then uploads that declare 20 MB and stall."""
    out = {"idle": _proc_status(pid)}
    socks = []
    try:
        for _ in range(half_open):
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        time.sleep(2)
        cpu0 = _cpu_seconds(pid)
        time.sleep(2)
        out[f"{half_open}_half_open"] = {**_proc_status(pid), "cpu_share": round((_cpu_seconds(pid) - cpu0) / 2, 2),
                                         "a_request_meanwhile_s": _info_latency(port)}
    finally:
        for s in socks:
            s.close()
    time.sleep(2)
    socks = []
    try:
        for _ in range(uploads):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"POST /api/audio HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 20971519\r\n\r\n" + b"\0" * 1024)
            socks.append(s)
        time.sleep(2)
        out[f"{uploads}_stalled_20MB_uploads"] = {**_proc_status(pid), "a_request_meanwhile_s": _info_latency(port)}
    finally:
        for s in socks:
            s.close()
    return out


def measure(src: Path, index: Path, args) -> dict:
    port = free_port()
    proc = start_server(src, index, port)
    try:
        asyncio.run(load(port, 4, 2, seed=1))  # warm-up: first model call, page cache
        res = asyncio.run(load(port, args.clients, args.requests, seed=0))
        if args.hostile:
            res["hostile"] = hostile(port, proc.pid, args.half_open, args.uploads)
        return res
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--requests", type=int, default=5, help="queries per client, one after another")
    ap.add_argument("--baseline", default=None, help="also measure the server of this git commit")
    ap.add_argument("--hostile", action="store_true", help="also: idle connections and stalled uploads")
    ap.add_argument("--half-open", type=int, default=2000, help="idle connections opened by --hostile")
    ap.add_argument("--uploads", type=int, default=40, help="stalled 20 MB uploads opened by --hostile")
    ap.add_argument("--out", default=str(ROOT / "results" / "serve_load.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        index = build(tmp)
        res = {"what": "vatt serve, text queries (tiny model, demo index), concurrent clients, new connection per query",
               "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                           "load_average_before": [round(x, 2) for x in os.getloadavg()]},
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "somaxconn": int(Path("/proc/sys/net/core/somaxconn").read_text()) if Path("/proc/sys/net/core/somaxconn").exists() else None}
        res["this_code"] = measure(REPO / "src", index, args)
        if args.baseline:
            old = tmp / "old"
            old.mkdir()
            archive = subprocess.run(["git", "-C", str(REPO), "archive", args.baseline, "src"], check=True,
                                     capture_output=True).stdout
            with tarfile.open(fileobj=__import__("io").BytesIO(archive)) as tar:
                tar.extractall(old, filter="data")
            res[f"baseline_{args.baseline}"] = measure(old / "src", index, args)
        res["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
