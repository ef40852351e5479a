"""``vatt data prepare``: cut media files (and their captions) into clips and write tar shards."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..atomic_io import atomic_write_json, atomic_write_text
from ..progress import advance, start as start_phase
from ..errors import InputError
from .captions import Caption, CaptionError, read_captions
from .decode import MediaError, MediaReader
from .encode import encode_mp4
from .index import ClipRef, index_source
from .shards import ShardWriter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipFormat:
    """What ``prepare`` stores for training; ``None`` keeps the source's value.

    The default (all ``None``/False) is the historic behaviour: files up to 1.5 clips long are
    stored as is, longer ones re-encoded at the source frame and sample rates. A training format
    (:meth:`training`) makes reads cheap: frames already at the training rate and near the
    training resize, audio already at the model's rate and mono (no resampling), a keyframe every
    ``keyframe_seconds`` (a random window decodes at most that much before it) and H.264 tuned for
    fast decoding. Frames are picked by timestamp at both ends, so windows of a prepared clip show
    the same frames as the source, up to the stored frame period (the window start is rounded down
    to the stored frame grid: <= 0.1 s at 10 fps; store a multiple of the training rate to shrink it).

    Args:
        fps: stored frame rate (frames shown at ``i / fps`` after the clip start).
        sample_rate: stored audio rate, Hz (always mono).
        short_side: shorter side of stored frames, px (scaled down only); overrides ``max_side``.
        keyframe_seconds: seconds between keyframes.
        fast_decode: H.264 ``tune=fastdecode``.
        crf: H.264 quality (x264 CRF; 23 is x264's default, lower is better and larger). Decoding
            time grows with the bits per frame: CRF 23 reads ~10% faster than 20 and is ~40% smaller.
        reencode: re-encode every file, also the short ones that would be stored as is.
    """

    fps: float | None = None
    sample_rate: int | None = None
    short_side: int | None = None
    keyframe_seconds: float = 1.0
    fast_decode: bool = False
    crf: int = 20
    reencode: bool = False

    @classmethod
    def training(cls, cfg) -> "ClipFormat":
        """The format for training with ``cfg`` (a :class:`DataConfig`): its frame rate, its audio
        rate, shorter side = its resize (rounded up to even, as H.264 4:2:0 needs), fast decoding at
        x264's default quality (CRF 23)."""
        return cls(fps=float(cfg.fps), sample_rate=int(cfg.sample_rate), short_side=int(cfg.resize + cfg.resize % 2),
                   fast_decode=True, crf=23, reencode=True)


def _segments(duration: float, clip_seconds: float, min_seconds: float) -> list[tuple[float, float]]:
    n = max(1, int(np.ceil(duration / clip_seconds - 1e-6)))
    segs = [(k * clip_seconds, min(duration, (k + 1) * clip_seconds)) for k in range(n)]
    return [s for s in segs if s[1] - s[0] >= min_seconds] or segs[:1]


def cut_clips(ref: ClipRef, clip_seconds: float = 10.0, max_side: int = 360, min_seconds: float = 1.0,
              classes: list[str] | None = None, fmt: ClipFormat | None = None) -> list[tuple[str, dict[str, bytes]]]:
    """Cut one media file (and its captions) into clips: ``[(suffix, members)]``.

    A file (or manifest span) no longer than 1.5 clips is stored as is (no re-encoding, exact);
    longer ones are cut into ``clip_seconds`` pieces re-encoded as H.264/AAC with the shorter
    side at most ``max_side`` (frames keep the source frame rate, audio its sample rate, mono).
    ``fmt`` (a :class:`ClipFormat`) changes what is stored, e.g. the training format. Caption times in the JSON are relative to the clip. Raises MediaError/CaptionError.
    """
    fmt = fmt or ClipFormat()
    max_side = fmt.short_side or max_side
    with MediaReader(ref.path) as reader:
        info = reader.info
        s0 = max(0.0, ref.start or 0.0)
        e0 = info.duration if ref.end is None else min(ref.end, info.duration or ref.end)
        whole = ref.start is None and ref.end is None and info.duration <= 1.5 * clip_seconds and not fmt.reencode
        spans = [(s0, e0)] if whole else [(s0 + a, s0 + b) for a, b in _segments(e0 - s0, clip_seconds, min_seconds)]
        caps: list[Caption] = []
        if ref.captions is not None and not ref.audio_only:
            try:
                caps = ref.captions if isinstance(ref.captions, list) else read_captions(ref.captions, info.duration)
            except CaptionError as e:
                log.warning("%s: %s; clips get no captions", ref.path, e)
        out = []
        for k, (s, e) in enumerate(spans):
            if whole:
                media, ext = Path(ref.path).read_bytes(), Path(ref.path).suffix.lower().lstrip(".")
            else:
                fps = fmt.fps or (info.fps if info.fps > 0 else 25.0)
                rate = fmt.sample_rate or info.sample_rate or 48000
                n_frames = max(1, int(round((e - s) * fps)))
                w = reader.read(s, num_frames=n_frames, fps=fps, sample_rate=rate,
                                num_samples=max(1, int(round((e - s) * rate))), short_side=max_side)
                frames = None
                if w.frames is not None:
                    H, W = w.frames.shape[1:3]
                    frames = w.frames[:, : H - H % 2, : W - W % 2]  # H.264 4:2:0 needs even sizes
                gop = max(1, int(round(fps * fmt.keyframe_seconds)))
                media = (encode_mp4(frames, fps, w.audio, rate=rate, gop=gop, fast_decode=fmt.fast_decode, crf=fmt.crf)
                         if (frames is not None or w.audio is not None) else b"")
                ext = "mp4" if frames is not None else "m4a"
                if not media:
                    raise MediaError(ref.path, "no_streams")
            inside = [c for c in caps if c.end > s and c.start < e] if not whole else caps
            rel = [Caption(max(0.0, c.start - s), min(e - s, c.end - s), c.text) for c in inside]
            meta = {"source": ref.path, "start": round(s, 3), "end": round(e, 3),
                    "captions": {"start": [round(c.start, 3) for c in rel], "end": [round(c.end, 3) for c in rel],
                                 "text": [c.text for c in rel]}}
            if ref.label is not None and classes is not None:
                meta["label"] = [classes[i] for i in ref.label]
            members = {ext: media, "json": json.dumps(meta, ensure_ascii=False).encode("utf-8")}
            if rel:
                members["txt"] = "\n".join(c.text for c in rel).encode("utf-8")
            out.append((f"{k:04d}", members))
    return out


def _cut_job(job):
    ref, clip_seconds, max_side, classes, fmt = job
    try:
        return ref.path, cut_clips(ref, clip_seconds, max_side, classes=classes, fmt=fmt), None
    except Exception as e:  # noqa: BLE001 - reported in prepare_report.json, never fatal
        reason = getattr(e, "reason", None)
        return ref.path, [], (reason or "decode_error", getattr(e, "detail", "") if reason else f"{type(e).__name__}: {e}")


def parse_part(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N`` (Slurm's ``$SLURM_ARRAY_TASK_ID/$N``)."""
    try:
        i, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise InputError(f"--part must be I/N (the I-th of N slices, 0 <= I < N), got {text!r}") from None
    if not 0 <= i < n:
        raise InputError(f"--part I/N needs 0 <= I < N, got {text!r}")
    return i, n


def _report_name(part: tuple[int, int] | None) -> str:
    return "prepare_report.json" if part is None else f"prepare_report.{part[0]:05d}-of-{part[1]:05d}.json"


def prepare_shards(src: str, out: str | os.PathLike, *, clip_seconds: float = 10.0, max_count: int = 256,
                   workers: int = 1, max_side: int = 360, fmt: ClipFormat | None = None,
                   part: tuple[int, int] | None = None, progress=None) -> dict:
    """``vatt data prepare``: cut every file of ``src`` into clips and write tar shards to ``out``.

    Writes ``out/shard-NNNNN.tar`` and ``out/prepare_report.json`` (``{"source", "clip_seconds",
    "files_total", "files_ok", "clips", "shards", "skipped": [{"path", "reason", "detail"}],
    "ignored", "format"}``; ``format`` is the :class:`ClipFormat`, ``None`` values meaning "as the
    source"). Samples keep the source order (parallel workers are ordered), so output is
    deterministic.

    ``part=(I, N)`` processes only the I-th of N contiguous slices of the source's file list (one
    machine of a Slurm array each): shards ``shard-pIIIII-NNNNN.tar`` and the report
    ``prepare_report.IIIII-of-NNNNN.json``; sample keys are those of a one-machine run, so the
    union of all parts holds exactly its samples. :func:`merge_reports` joins the reports.
    """
    if not clip_seconds > 0:
        raise InputError(f"clip_seconds must be > 0, got {clip_seconds}")
    if max_side < 2:
        raise InputError(f"max_side must be >= 2 pixels, got {max_side}")
    if workers < 1:
        raise InputError(f"workers must be >= 1, got {workers}")
    ix = index_source(str(src))
    if ix.kind == "shards":
        raise InputError(f"{src} already holds shards; `vatt data prepare` reads folders or manifests")
    refs, classes, first = ix.refs, ix.classes, 0
    if part is not None:
        first, last = len(refs) * part[0] // part[1], len(refs) * (part[0] + 1) // part[1]
        refs = refs[first:last]
    start_phase(progress, len(refs), "prepare", "file")  # vatt.progress convention
    fmt = fmt or ClipFormat()
    jobs = [(r, clip_seconds, max_side, classes, fmt) for r in refs]
    skipped, n_clips, ok = [], 0, 0
    out = Path(out)
    with ShardWriter(out, max_count, prefix="shard" if part is None else f"shard-p{part[0]:05d}") as writer:
        if workers > 1:
            import multiprocessing as mp

            pool = mp.get_context("spawn").Pool(workers)
            results = pool.imap(_cut_job, jobs, chunksize=1)
        else:
            pool, results = None, map(_cut_job, jobs)
        try:
            for i, (p, clips, err) in enumerate(results, start=first):
                if err:
                    skipped.append({"path": p, "reason": err[0], "detail": err[1]})
                    log.warning("%s: %s (skipped)", p, err[0])
                else:
                    ok += 1
                    for suffix, members in clips:
                        writer.write(f"{i:07d}_{suffix}", members)
                        n_clips += 1
                advance(progress)
        finally:
            if pool is not None:
                pool.close()
                pool.join()
    shards = writer.shards
    report = {"source": str(src), "clip_seconds": clip_seconds, "files_total": len(refs), "files_ok": ok,
              "clips": n_clips, "shards": [os.path.basename(s) for s in shards], "skipped": skipped,
              "ignored": ix.ignored, "format": {**asdict(fmt), "short_side": fmt.short_side or max_side}}
    if part is not None:
        report["part"] = list(part)
    if classes is not None:
        atomic_write_text(out / "classes.txt", "\n".join(classes) + "\n")
    atomic_write_json(out / _report_name(part), report)
    report["report_path"] = str(out / _report_name(part))
    return report


def merge_reports(out: str | os.PathLike) -> dict:
    """``vatt data merge-reports OUT``: join the per-part reports of ``prepare --part I/N`` runs
    into ``OUT/prepare_report.json`` (totals summed, shard and skip lists concatenated in part
    order). Every part 0..N-1 must be there, from the same source and clip length."""
    out = Path(out)
    paths = sorted(out.glob("prepare_report.*-of-*.json"))
    if not paths:
        raise InputError(f"no per-part reports (prepare_report.IIIII-of-NNNNN.json) in {out}")
    parts = []
    for p in paths:
        try:
            r = json.loads(p.read_text(encoding="utf-8"))
            i, n = (int(x) for x in r["part"])
            parts.append((i, n, r))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"{p}: not a prepare report of a --part run ({type(e).__name__}: {e})") from None
    counts = {n for _, n, _ in parts}
    if len(counts) != 1:
        raise InputError(f"{out} holds reports of runs split in different numbers of parts: {sorted(counts)}")
    n = counts.pop()
    missing = sorted(set(range(n)) - {i for i, _, _ in parts})
    if missing:
        raise InputError(f"{out}: parts {missing[:10]} of {n} have no report yet (still running, or failed?)")
    parts.sort(key=lambda x: x[0])
    first = parts[0][2]
    for i, _, r in parts:
        if (r.get("source"), r.get("clip_seconds")) != (first.get("source"), first.get("clip_seconds")):
            raise InputError(f"{out}: part {i} was prepared from {r.get('source')} at {r.get('clip_seconds')} s, "
                             f"part 0 from {first.get('source')} at {first.get('clip_seconds')} s")
    merged = {"source": first["source"], "clip_seconds": first["clip_seconds"], "parts": n}
    for key in ("files_total", "files_ok", "clips"):
        merged[key] = sum(int(r[key]) for _, _, r in parts)
    merged["shards"] = [s for _, _, r in parts for s in r["shards"]]
    merged["skipped"] = [s for _, _, r in parts for s in r["skipped"]]
    merged["ignored"] = int(first.get("ignored", 0))
    atomic_write_json(out / "prepare_report.json", merged)
    merged["report_path"] = str(out / "prepare_report.json")
    return merged
