"""WebDataset-style tar shards: writing (``vatt data prepare``) and streaming.

A sample is a group of tar members sharing a key (video2dataset layout): ``KEY.mp4`` (or another
media suffix), ``KEY.json`` (``{"key", "source", "start", "end", "captions": {"start": [...],
"end": [...], "text": [...]}`` with caption times relative to the clip, optional ``"label"``) and
``KEY.txt`` (the caption sentences, one per line). Shards are plain tar files written with
:mod:`tarfile`; the ``webdataset`` package reads them too but is not needed.

Streaming: each epoch the shard list is shuffled with a seed shared by all ranks (training) and
dealt round-robin to the ``world_size * num_workers`` loader workers (rank-major), so every shard
is read exactly once per epoch. With ``resample=True`` each worker instead draws shards at
random with replacement forever (an endless stream; no worker ever runs dry, which keeps ranks
in step under DDP when shards are fewer than workers).
"""

from __future__ import annotations

import glob
import io
import json
import logging
import os
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..errors import DataError, InputError
from ..text import WordTokenizer
from .captions import Caption, CaptionError, parse_json_captions
from .config import DataConfig
from .decode import MediaError
from .sources import AUDIO_SUFFIXES, MEDIA_SUFFIXES, ClipRef, _bad_event, _StatsMixin, load_sample
from .stats import BAD, SampleStats

log = logging.getLogger(__name__)


def expand_braces(pattern: str) -> list[str]:
    """``a-{000..002}.tar`` -> ``[a-000.tar, a-001.tar, a-002.tar]``; ``{x,y}`` lists too."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if not m:
        return [pattern]
    body = m.group(1)
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if rng:
        a, b = rng.groups()
        items = [str(i).zfill(len(a)) for i in range(int(a), int(b) + 1)]
    else:
        items = body.split(",")
    return [p for it in items for p in expand_braces(pattern[: m.start()] + it + pattern[m.end() :])]


def list_shards(source: str) -> list[str]:
    """Shard paths for a ``.tar`` file, a folder of them, or a glob / brace pattern (sorted)."""
    p = Path(source)
    if p.is_dir():
        shards = sorted(str(x) for x in p.glob("*.tar"))
    else:
        shards = sorted({s for pat in expand_braces(source) for s in (glob.glob(pat) if any(c in pat for c in "*?[") else [pat])})
    missing = [s for s in shards if not Path(s).is_file()]
    if missing:
        raise InputError(f"shard file(s) not found: {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    if not shards:
        raise InputError(f"no .tar shards match {source}")
    return shards


def split_shards(shards: list[str], *, rank: int = 0, world_size: int = 1, worker: int = 0, num_workers: int = 1,
                 epoch: int = 0, seed: int = 0, shuffle: bool = True) -> list[str]:
    """The shards one loader worker of one rank reads in ``epoch``.

    All ranks shuffle with the same ``(seed, epoch)``; global worker ``rank * num_workers + worker``
    takes every ``world_size * num_workers``-th shard, so the union over ranks and workers is the
    whole list with no shard twice.
    """
    order = np.random.default_rng([seed, epoch]).permutation(len(shards)) if shuffle else np.arange(len(shards))
    total = world_size * num_workers
    return [shards[i] for i in order[rank * num_workers + worker :: total]]


def iter_tar_samples(path: str) -> Iterator[dict]:
    """Group consecutive members of a tar by key: yields ``{"__key__", "__shard__", ext: bytes}``.

    A truncated or corrupt tar ends the iteration with a :class:`DataError` (caller decides).
    """
    current: dict | None = None
    try:
        with tarfile.open(path, "r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                name = os.path.basename(member.name)
                if "." not in name:
                    continue
                key, ext = name.split(".", 1)
                key = os.path.join(os.path.dirname(member.name), key)
                data = tar.extractfile(member).read()
                if current is not None and current["__key__"] != key:
                    yield current
                    current = None
                if current is None:
                    current = {"__key__": key, "__shard__": path}
                current[ext.lower()] = data
    except (tarfile.TarError, OSError, EOFError) as e:
        if current is not None:
            yield current
        raise DataError(f"{path}: bad_shard ({type(e).__name__}: {e})") from None
    if current is not None:
        yield current


def sample_to_ref(sample: dict, classes: list[str] | None = None) -> ClipRef:
    """A grouped tar sample -> :class:`ClipRef` with the media bytes and inline captions."""
    name = f"{sample['__shard__']}:{sample['__key__']}"
    media_ext = next((e for e in sample if "." + e in MEDIA_SUFFIXES), None)
    if media_ext is None:
        raise CaptionError(name, "no_media_member", f"members: {sorted(k for k in sample if not k.startswith('__'))}")
    meta = {}
    if "json" in sample:
        try:
            meta = json.loads(sample["json"].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CaptionError(name, "bad_metadata", str(e)) from None
    captions: list[Caption] | None = None
    if meta.get("captions"):
        captions = parse_json_captions(meta["captions"], name)
    elif "txt" in sample:
        text = sample["txt"].decode("utf-8", errors="replace")
        captions = [Caption(0.0, float("inf"), ln.strip()) for ln in text.splitlines() if ln.strip()] or None
    label = None
    if classes is not None and meta.get("label") is not None:
        labs = meta["label"] if isinstance(meta["label"], list) else [meta["label"]]
        lookup = {c: i for i, c in enumerate(classes)}
        label = [lookup[str(x)] for x in labs if str(x) in lookup]
    return ClipRef(name, None, None, captions, label, "." + media_ext in AUDIO_SUFFIXES, data=sample[media_ext])


class ShardDataset(_StatsMixin, IterableDataset):
    """Streams samples from tar shards (see the module docstring for the split and resampling).

    Bad samples are skipped; their reports ride on the next good sample so the loader counts them.
    Training shuffles shards per epoch and samples within a buffer of ``shuffle_buffer``.
    """

    def __init__(self, source: str, cfg: DataConfig, tokenizer: WordTokenizer | None, *, train: bool = True,
                 seed: int = 0, strict: bool = False, rank: int = 0, world_size: int = 1, resample: bool = False,
                 shuffle_buffer: int = 64, classes: list[str] | None = None, multi_label: bool = False,
                 num_windows: int | None = None, num_crops: int = 1):
        self.shards = list_shards(source)
        self.cfg, self.tokenizer, self.train, self.seed, self.strict = cfg, tokenizer, train, seed, strict
        self.rank, self.world_size, self.resample = rank, world_size, resample
        self.shuffle_buffer = shuffle_buffer if train else 0
        self.classes, self.multi_label = classes, multi_label
        self.num_windows, self.num_crops = num_windows, num_crops
        self._stats = SampleStats()
        self.epoch = 0

    @property
    def num_shards(self) -> int:
        return len(self.shards)

    def set_epoch(self, epoch: int) -> None:
        """Fix the epoch used by the next iteration (without it, each iteration counts up)."""
        self.epoch = epoch - 1

    def _my_shards(self, rng: np.random.Generator) -> Iterator[str]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if self.resample:
            while True:
                yield self.shards[int(rng.integers(len(self.shards)))]
        mine = split_shards(self.shards, rank=self.rank, world_size=self.world_size, worker=worker,
                            num_workers=num_workers, epoch=self.epoch, seed=self.seed, shuffle=self.train)
        if not mine and self.epoch == 1:
            log.warning("rank %d worker %d has no shard (%d shards for %d workers); use resample=True or more shards",
                        self.rank, worker, len(self.shards), self.world_size * num_workers)
        yield from mine

    def _raw(self, rng: np.random.Generator) -> Iterator[dict]:
        """Undecoded tar samples of this worker's shards; a broken shard yields an ``"__event__"``."""
        for shard in self._my_shards(rng):
            try:
                yield from iter_tar_samples(shard)
            except DataError as e:
                if self.strict:
                    raise
                yield {"__event__": (shard, "bad_shard", BAD, str(e))}

    def _shuffled(self, items: Iterator[dict], rng: np.random.Generator) -> Iterator[dict]:
        # The buffer holds compressed samples, not decoded clips, so it stays small in memory.
        if not self.shuffle_buffer:
            yield from items
            return
        buf: list[dict] = []
        for item in items:
            buf.append(item)
            if len(buf) >= self.shuffle_buffer:
                yield buf.pop(int(rng.integers(len(buf))))
        while buf:
            yield buf.pop(int(rng.integers(len(buf))))

    def __iter__(self) -> Iterator[dict]:
        self.epoch += 1
        info = get_worker_info()
        worker = info.id if info is not None else 0
        extra = torch.initial_seed() % 2**63 if self.train else 0
        rng = np.random.default_rng([self.seed, self.rank, worker, self.epoch, extra])
        pending: list = []
        for raw in self._shuffled(self._raw(rng), rng):
            if "__event__" in raw:
                pending.append(raw["__event__"])
                continue
            name = f"{raw['__shard__']}:{raw['__key__']}"
            try:
                ref = sample_to_ref(raw, self.classes)
                sample = load_sample(ref, self.cfg, self.tokenizer, train=self.train, rng=rng, strict=self.strict,
                                     num_windows=self.num_windows, num_crops=self.num_crops, classes=self.classes,
                                     multi_label=self.multi_label)
            except Exception as e:  # noqa: BLE001 - a bad sample must never end a stream; strict re-raises
                if self.strict:
                    if isinstance(e, DataError):
                        raise
                    raise DataError(f"{name}: decode_error ({type(e).__name__}: {e})") from e
                pending.append(_bad_event(e, ClipRef(name)))
                continue
            sample["_events"] = pending + sample["_events"]
            pending = []
            yield sample
        if pending:
            yield {"_skip": True, "_events": pending, "key": ""}


# --------------------------------------------------------------------------------------------
# Writing: `vatt data prepare`
# --------------------------------------------------------------------------------------------
class ShardWriter:
    """Writes samples into ``out/shard-NNNNN.tar`` with at most ``max_count`` samples each.

    Each shard is written to a temporary file and renamed when complete (atomic); member times are
    fixed so the same input gives byte-identical shards.
    """

    def __init__(self, out: str | os.PathLike, max_count: int = 256, prefix: str = "shard"):
        if max_count < 1:
            raise InputError(f"max_count must be >= 1, got {max_count}")
        self.out, self.max_count, self.prefix = Path(out), max_count, prefix
        self.out.mkdir(parents=True, exist_ok=True)
        self.shards: list[str] = []
        self._tar = None
        self._count = 0

    def _open(self) -> None:
        path = self.out / f"{self.prefix}-{len(self.shards):05d}.tar"
        self._tmp = path.with_name(f".{path.name}.tmp")
        self._path = path
        self._tar = tarfile.open(self._tmp, "w", format=tarfile.PAX_FORMAT)
        self._count = 0

    def _close(self) -> None:
        if self._tar is not None:
            self._tar.close()
            os.replace(self._tmp, self._path)
            self.shards.append(str(self._path))
            self._tar = None

    def write(self, key: str, members: dict[str, bytes]) -> None:
        """Add one sample: ``members`` maps extensions (``mp4``, ``json``, ``txt``) to bytes."""
        if "." in key or "/" in key:
            raise InputError(f"sample key must not contain '.' or '/': {key!r}")
        if self._tar is None or self._count >= self.max_count:
            self._close()
            self._open()
        for ext, data in members.items():
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            self._tar.addfile(info, io.BytesIO(data))
        self._count += 1

    def close(self) -> list[str]:
        self._close()
        return self.shards

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _segments(duration: float, clip_seconds: float, min_seconds: float) -> list[tuple[float, float]]:
    n = max(1, int(np.ceil(duration / clip_seconds - 1e-6)))
    segs = [(k * clip_seconds, min(duration, (k + 1) * clip_seconds)) for k in range(n)]
    return [s for s in segs if s[1] - s[0] >= min_seconds] or segs[:1]


def cut_clips(ref: ClipRef, clip_seconds: float = 10.0, max_side: int = 360, min_seconds: float = 1.0,
              classes: list[str] | None = None) -> list[tuple[str, dict[str, bytes]]]:
    """Cut one media file (and its captions) into clips: ``[(suffix, members)]``.

    A file (or manifest span) no longer than 1.5 clips is stored as is (no re-encoding, exact);
    longer ones are cut into ``clip_seconds`` pieces re-encoded as H.264/AAC with the shorter
    side at most ``max_side`` (frames keep the source frame rate, audio its sample rate, mono).
    Caption times in the JSON are relative to the clip. Raises MediaError/CaptionError.
    """
    from .captions import read_captions
    from .decode import MediaReader
    from .encode import encode_mp4

    with MediaReader(ref.path) as reader:
        info = reader.info
        s0 = max(0.0, ref.start or 0.0)
        e0 = info.duration if ref.end is None else min(ref.end, info.duration or ref.end)
        whole = ref.start is None and ref.end is None and info.duration <= 1.5 * clip_seconds
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
                fps = info.fps if info.fps > 0 else 25.0
                rate = info.sample_rate or 48000
                n_frames = max(1, int(round((e - s) * fps)))
                w = reader.read(s, num_frames=n_frames, fps=fps, sample_rate=rate,
                                num_samples=max(1, int(round((e - s) * rate))), short_side=max_side)
                frames = None
                if w.frames is not None:
                    H, W = w.frames.shape[1:3]
                    frames = w.frames[:, : H - H % 2, : W - W % 2]  # H.264 4:2:0 needs even sizes
                media = encode_mp4(frames, fps, w.audio, rate=rate) if (frames is not None or w.audio is not None) else b""
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
    ref, clip_seconds, max_side, classes = job
    try:
        return ref.path, cut_clips(ref, clip_seconds, max_side, classes=classes), None
    except Exception as e:  # noqa: BLE001 - reported in prepare_report.json, never fatal
        reason = getattr(e, "reason", None)
        return ref.path, [], (reason or "decode_error", getattr(e, "detail", "") if reason else f"{type(e).__name__}: {e}")


def prepare_shards(src: str, out: str | os.PathLike, *, clip_seconds: float = 10.0, max_count: int = 256,
                   workers: int = 1, max_side: int = 360, progress=None, total=None) -> dict:
    """``vatt data prepare``: cut every file of ``src`` into clips and write tar shards to ``out``.

    Writes ``out/shard-NNNNN.tar`` and ``out/prepare_report.json`` (``{"source", "clip_seconds",
    "files_total", "files_ok", "clips", "shards", "skipped": [{"path", "reason", "detail"}]}``).
    Samples keep the source order (parallel workers are ordered), so output is deterministic.
    """
    from ..atomic_io import atomic_write_json, atomic_write_text
    from .sources import detect_kind, index_folder, index_labelled_folder, index_manifest

    kind, path = detect_kind(str(src))
    classes = None
    if kind == "shards":
        raise InputError(f"{src} already holds shards; `vatt data prepare` reads folders or manifests")
    if kind == "manifest":
        refs, classes, _ = index_manifest(path, None)
    elif kind == "labelled":
        refs, classes = index_labelled_folder(path, None)
    else:
        refs = index_folder(path, audio_only=(kind == "audio"))
    if total:
        total(len(refs))
    jobs = [(r, clip_seconds, max_side, classes) for r in refs]
    skipped, n_clips, ok = [], 0, 0
    out = Path(out)
    with ShardWriter(out, max_count) as writer:
        if workers > 1:
            import multiprocessing as mp

            pool = mp.get_context("spawn").Pool(workers)
            results = pool.imap(_cut_job, jobs, chunksize=1)
        else:
            pool, results = None, map(_cut_job, jobs)
        try:
            for i, (p, clips, err) in enumerate(results):
                if err:
                    skipped.append({"path": p, "reason": err[0], "detail": err[1]})
                    log.warning("%s: %s (skipped)", p, err[0])
                else:
                    ok += 1
                    for suffix, members in clips:
                        writer.write(f"{i:07d}_{suffix}", members)
                        n_clips += 1
                if progress:
                    progress(1)
        finally:
            if pool is not None:
                pool.close()
                pool.join()
    shards = writer.shards
    report = {"source": str(src), "clip_seconds": clip_seconds, "files_total": len(refs), "files_ok": ok,
              "clips": n_clips, "shards": [os.path.basename(s) for s in shards], "skipped": skipped}
    if classes is not None:
        atomic_write_text(out / "classes.txt", "\n".join(classes) + "\n")
    atomic_write_json(out / "prepare_report.json", report)
    report["report_path"] = str(out / "prepare_report.json")
    return report
