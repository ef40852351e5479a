"""Endless, resumable training streams: tar shards and weighted mixtures of sources.

Every training stream runs epoch after epoch and never ends. In epoch ``e`` the items of a source
(shards, or the indices of a map-style clip set in a mixture) are shuffled with ``(seed, e)``,
the same on every rank, and dealt to the ``G = world_size * num_workers`` loader workers: global
worker ``g = rank * num_workers + worker`` takes shards ``g, g + G, ...`` of the order; with
fewer shards than workers, the workers sharing a shard take every ``m``-th of its samples. Every
sample is read exactly once per epoch, whatever the number of workers and ranks.

A stream is a pure function of ``(seed, g, G)``: shuffling and augmentation draw from seeded
generators (``(seed, epoch, shard, item)`` for a sample), never from the loader's worker seed.
Each sample carries its position ``[epoch, items consumed in that epoch]`` (a mixture: the number
of draws and each member's position); :class:`vatt.train.batches.TrainBatches` records the
position of what the trainer consumed, and a resumed stream replays the epoch it stopped in,
skipping the items already consumed without decoding them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from ..errors import DataError, InputError
from ..text import WordTokenizer
from .config import DataConfig
from .index import list_shards, sample_to_ref
from .sample import StatsMixin, load_sample, try_load
from .shards import DEFAULT_MAX_MEMBER_BYTES, iter_tar_samples
from .stats import BAD, SampleStats

log = logging.getLogger(__name__)


def split_shards(shards: list[str], *, rank: int = 0, world_size: int = 1, worker: int = 0, num_workers: int = 1,
                 epoch: int = 0, seed: int = 0, shuffle: bool = True) -> list[str]:
    """The whole shards one loader worker of one rank reads in ``epoch`` (when shards >= workers).

    All ranks shuffle with the same ``(seed, epoch)``; global worker ``rank * num_workers + worker``
    takes every ``world_size * num_workers``-th shard, so the union over ranks and workers is the
    whole list with no shard twice.
    """
    order = np.random.default_rng([seed, epoch]).permutation(len(shards)) if shuffle else np.arange(len(shards))
    total = world_size * num_workers
    return [shards[i] for i in order[rank * num_workers + worker :: total]]


def run_epochs(epoch_items: Callable[[int], Iterable], make: Callable[[object, int], dict],
               name_of: Callable[[object], str], *, start: list | None, endless: bool, strict: bool,
               where: str) -> Iterator[dict]:
    """Samples of ``epoch_items(0)``, ``epoch_items(1)``, ... each with ``"_pos": [epoch, n]``.

    ``epoch_items(e)`` lists the raw items of epoch ``e`` (deterministically); ``make(item, e)``
    turns one into a sample or raises (the item is counted bad and skipped; its report rides on
    the next sample); a ``{"__event__": ...}`` item is a report by itself (a bad shard).
    ``start = [e, n]`` resumes after the ``n``-th item of epoch ``e`` (skipped items are not
    made). ``endless=False`` stops after one epoch, ending with a ``"_skip"`` marker when reports
    are left over; ``endless=True`` carries them into the next epoch so batches keep their size.
    """
    epoch, skip = (int(start[0]), int(start[1])) if start else (0, 0)
    pending: list = []
    bad_epochs = 0
    while True:
        n = good = 0
        for item in epoch_items(epoch):
            n += 1
            if n <= skip:
                continue
            if isinstance(item, dict) and "__event__" in item:
                pending.append(item["__event__"])
                continue
            sample, event = try_load(lambda: make(item, epoch), name_of(item), strict)
            if sample is None:
                pending.append(event)
                continue
            good += 1
            sample["_events"] = pending + sample.get("_events", [])
            sample["_pos"] = [epoch, n]
            pending = []
            yield sample
        if not endless:
            if pending:
                yield {"_skip": True, "_events": pending, "key": "", "_pos": [epoch, n]}
            return
        if n == 0:
            raise InputError(f"{where}: a loader worker got no sample to read (fewer samples than loader "
                             "workers x ranks); lower data.num_workers or add data")
        bad_epochs = bad_epochs + 1 if good == 0 and n > skip else 0
        if bad_epochs >= 2:
            raise DataError(f"{where}: every sample was bad for two epochs in a row ({pending[-1][1]}, ...)")
        epoch, skip = epoch + 1, 0


def _buffered_shuffle(items: Iterator, size: int, rng: np.random.Generator) -> Iterator:
    # The buffer holds compressed samples, not decoded clips, so it stays small in memory.
    buf: list = []
    for item in items:
        buf.append(item)
        if len(buf) >= size:
            yield buf.pop(int(rng.integers(len(buf))))
    while buf:
        yield buf.pop(int(rng.integers(len(buf))))


class Stream(StatsMixin, IterableDataset):
    """Base of the resumable streams: maps the DataLoader worker to its global slot and start.

    :meth:`resume_from` takes what :class:`vatt.train.batches.TrainBatches` saved for this rank:
    ``{"workers": W, "next": k, "positions": [pos of logical worker 0..W-1]}``. The DataLoader
    asks its workers for batches in turn starting with worker 0, so worker ``w`` plays logical
    worker ``(w + k) % W``: the resumed run continues the uninterrupted run's batch order.
    """

    rank: int = 0
    world_size: int = 1
    seed: int = 0
    _resume: dict | None = None

    def resume_from(self, state: dict | None) -> None:
        self._resume = state

    def stream(self, g: int, total: int, start) -> Iterator[dict]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        r = self._resume if self._resume and int(self._resume.get("workers", -1)) == workers else None
        logical = (worker + int(r["next"])) % workers if r else worker
        start = r["positions"][logical] if r else None
        for sample in self.stream(self.rank * workers + logical, self.world_size * workers, start):
            sample["_pos"] = (logical, sample["_pos"])
            yield sample


class ShardDataset(Stream):
    """Streams samples from tar shards (see the module docstring for the split and the epochs).

    Training streams are endless (epoch after epoch, reshuffled) and sample within a buffer of
    ``shuffle_buffer``; evaluation (``train=False``) reads every shard once, in order. Bad samples
    are skipped; their reports ride on the next good sample so the loader counts them. A member
    larger than ``max_member_bytes`` is never read; its sample counts as ``too_large``.
    """

    def __init__(self, source: str | list[str], cfg: DataConfig, tokenizer: WordTokenizer | None, *, train: bool = True,
                 seed: int = 0, strict: bool = False, rank: int = 0, world_size: int = 1,
                 shuffle_buffer: int = 64, classes: list[str] | None = None, multi_label: bool = False,
                 num_windows: int | None = None, num_crops: int = 1,
                 max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES):
        self.shards = list_shards(source) if isinstance(source, str) else list(source)
        self.cfg, self.tokenizer, self.train, self.seed, self.strict = cfg, tokenizer, train, seed, strict
        self.rank, self.world_size = rank, world_size
        self.shuffle_buffer = shuffle_buffer if train else 0
        self.classes, self.multi_label = classes, multi_label
        self.num_windows, self.num_crops = num_windows, num_crops
        self.max_member_bytes = max_member_bytes
        self._stats = SampleStats()

    @property
    def num_shards(self) -> int:
        return len(self.shards)

    def _read(self, picks: list[tuple[int, int, int]]) -> Iterator[dict]:
        """Raw samples of shards ``(index, part, parts)``: the ``part``-th of every ``parts`` samples."""
        for si, part, parts in picks:
            shard, j = self.shards[si], 0
            try:
                for raw in iter_tar_samples(shard, self.max_member_bytes):
                    if j % parts == part:
                        raw["__index__"] = (si, j)
                        yield raw
                    j += 1
            except DataError as e:
                if self.strict:
                    raise
                if part == 0:  # one report per shard, however many workers share it
                    yield {"__event__": (shard, "bad_shard", BAD, str(e))}

    def epoch_items(self, epoch: int, g: int, total: int) -> Iterator[dict]:
        n = len(self.shards)
        order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.train else np.arange(n)
        if n >= total:
            picks = [(int(si), 0, 1) for si in order[g::total]]
        else:
            picks = [(int(order[g % n]), g // n, len(range(g % n, total, n)))]
        items = self._read(picks)
        if self.shuffle_buffer:
            items = _buffered_shuffle(items, self.shuffle_buffer, np.random.default_rng([self.seed, g, epoch, 1]))
        return items

    def _make(self, raw: dict, epoch: int) -> dict:
        rng = np.random.default_rng([self.seed, epoch, *raw["__index__"]])
        return load_sample(sample_to_ref(raw, self.classes), self.cfg, self.tokenizer, train=self.train, rng=rng,
                           strict=self.strict, num_windows=self.num_windows, num_crops=self.num_crops,
                           classes=self.classes, multi_label=self.multi_label)

    def stream(self, g: int, total: int, start) -> Iterator[dict]:
        return run_epochs(lambda e: self.epoch_items(e, g, total), self._make,
                          lambda raw: f"{raw['__shard__']}:{raw['__key__']}", start=start, endless=self.train,
                          strict=self.strict, where=f"shards {self.shards[0]} ...")


def clip_stream(ds, seed: int, g: int, total: int, start) -> Iterator[dict]:
    """A map-style clip set as an endless stream: epoch ``e`` is a ``(seed, e)`` permutation dealt
    to the workers; sample ``i`` of epoch ``e`` is augmented with ``(seed, e, i)``."""

    def items(epoch: int):
        return (int(i) for i in np.random.default_rng([seed, epoch]).permutation(len(ds))[g::total])

    def make(idx: int, epoch: int) -> dict:
        if not hasattr(ds, "load"):  # any map-style dataset of Batch-contract items
            return dict(ds[idx])
        return ds.load(idx, np.random.default_rng([seed, epoch, idx]))

    def name_of(idx: int) -> str:
        return ds.refs[idx].path if hasattr(ds, "refs") else f"item {idx}"

    return run_epochs(items, make, name_of, start=start, endless=True, strict=getattr(ds, "strict", False),
                      where=f"{len(ds)} clips")


class MixedStream(Stream):
    """Endless stream drawing each sample from one of several sources with given weights.

    Every member is itself an endless stream split over workers and ranks (shards as in
    :class:`ShardDataset`, clip sets by :func:`clip_stream`); draw ``k`` of global worker ``g``
    picks its member from ``(seed, g, k)``, so a resumed stream picks the same members.
    """

    def __init__(self, datasets: list, weights: list[float], seed: int = 0, rank: int = 0, world_size: int = 1):
        if len(datasets) != len(weights):
            raise InputError(f"{len(datasets)} sources but {len(weights)} weights")
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise InputError(f"weights must be non-negative with a positive sum, got {weights}")
        self.datasets, self.seed, self.rank, self.world_size = datasets, seed, rank, world_size
        self.weights = np.asarray(weights, dtype=np.float64) / sum(weights)
        self._stats = SampleStats()
        labelled = {getattr(d, "classes", None) is not None for d in datasets}
        if len(labelled) > 1:
            raise InputError("cannot mix labelled and unlabelled sources in one stream")
        self.classes = getattr(datasets[0], "classes", None)
        self.multi_label = getattr(datasets[0], "multi_label", False)
        self.train = True

    def _member(self, k: int, g: int, total: int, start) -> Iterator[dict]:
        d = self.datasets[k]
        if isinstance(d, ShardDataset):
            return d.stream(g, total, start)
        return clip_stream(d, self.seed + 1000003 * (k + 1), g, total, start)

    def stream(self, g: int, total: int, start) -> Iterator[dict]:
        start = start or {"draws": 0, "members": [None] * len(self.datasets)}
        pos = list(start["members"])
        its = [self._member(k, g, total, pos[k]) for k in range(len(self.datasets))]
        bounds = np.cumsum(self.weights)
        draws = int(start["draws"])
        while True:
            u = np.random.default_rng([self.seed, g, draws]).random() * bounds[-1]
            k = min(int(np.searchsorted(bounds, u, side="right")), len(its) - 1)
            draws += 1
            sample = next(its[k])
            pos[k] = sample["_pos"]
            sample["_pos"] = {"draws": draws, "members": list(pos)}
            yield sample
