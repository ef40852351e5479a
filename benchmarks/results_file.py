"""benchmarks/results/cpu.json: one file that several benchmark scripts fill, each under its own keys."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def merge_results(update: dict, path: Path = RESULTS / "cpu.json") -> dict:
    """Read-modify-write of cpu.json under a lock file, so two scripts never lose each other's keys;
    the write itself is atomic (temp file + os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(path.read_text()) if path.is_file() else {}
        data.update(update)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    return data


def publish(key: str, res: dict, quick: bool, log) -> int:
    """End of a benchmark script: print ``res`` (``--quick``: a smoke run writes nothing) or store it
    under ``key`` in cpu.json and re-render cpu.md. Returns the exit status."""
    if quick:
        print(json.dumps(res, indent=2))
        return 0
    merge_results({key: res})
    subprocess.run([sys.executable, str(Path(__file__).with_name("bench_model.py")), "--markdown-only"], check=True)
    log(f"wrote benchmarks/results/cpu.json ({key}) and cpu.md")
    return 0
