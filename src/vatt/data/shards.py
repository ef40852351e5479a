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
            except (DataError, OSError, ValueError, RuntimeError) as e:
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
