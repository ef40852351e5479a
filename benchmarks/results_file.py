"""benchmarks/results/cpu.json: one file that several benchmark scripts fill, each under its own keys."""

from __future__ import annotations

import fcntl
import json
import os
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
