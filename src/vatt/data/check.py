"""``vatt data check``: decode every sample of a source as training would and count problems."""

from __future__ import annotations

from collections import Counter

from ..progress import advance, start as start_phase
from ..errors import InputError
from .config import DataConfig
from .datasets import ClipDataset, build_dataset
from .stats import BAD, MASKED


def _check_one(args):
    ds, i = args
    s = ds[i]
    return i, s.get("_skip", False), s.get("_events", [])


def check_source(source: str, cfg: DataConfig | None = None, *, num_workers: int = 0, progress=None) -> dict:
    """Decode every sample (evaluation windows; no augmentation) and report.

    Returns ``{"total", "good", "bad", "reasons": {reason: n}, "masked": {reason: n},
    "files": [{"path", "ok", "reason"}]}``; ``reason`` is None for a clean sample, a skip reason
    when ``ok`` is false, and the masking reason(s) (joined by ``,``) when a modality was masked.
    """
    if num_workers < 0:
        raise InputError(f"workers must be >= 0, got {num_workers}")
    cfg = cfg or DataConfig()
    ds = build_dataset(source, cfg, None, train=False)
    files, reasons, masked = [], Counter(), Counter()

    def add(path, skipped, events):
        bad = [e for e in events if e[2] == BAD]
        soft = [e for e in events if e[2] == MASKED]
        for e in bad:
            reasons[e[1]] += 1
        for e in soft:
            masked[e[1]] += 1
        if skipped:
            files.append({"path": path, "ok": False, "reason": bad[0][1] if bad else "unknown"})
        else:
            files.append({"path": path, "ok": True, "reason": ",".join(sorted({e[1] for e in soft})) or None})

    if isinstance(ds, ClipDataset):
        ds.max_retries = 1
        start_phase(progress, len(ds), "check", "sample")
        jobs = [(ds, i) for i in range(len(ds))]
        if num_workers > 0:
            import multiprocessing as mp

            with mp.get_context("fork").Pool(num_workers) as pool:
                results = list(_iter_progress(pool.imap(_check_one, jobs, chunksize=4), progress))
        else:
            results = list(_iter_progress(map(_check_one, jobs), progress))
        for i, skipped, events in results:
            add(ds.refs[i].path, skipped, events)
    else:  # shards: a bad sample's report rides on the next sample
        start_phase(progress, None, "check", "sample")
        for s in ds:
            events = s.get("_events", [])
            for e in events:
                if e[2] == BAD:
                    add(e[0], True, [e])
            if not s.get("_skip"):
                add(s["key"].rsplit("@", 1)[0], False, [e for e in events if e[2] == MASKED])
            advance(progress)
    good = sum(1 for f in files if f["ok"])
    return {"total": len(files), "good": good, "bad": len(files) - good, "reasons": dict(reasons),
            "masked": dict(masked), "files": files}


def _iter_progress(it, progress):
    for x in it:
        advance(progress)
        yield x
