"""Datasets of Batch-contract samples: map-style clips (folders, manifests, audio and labelled
sets), streamed shards, weighted mixtures; and the factories that build them from source strings
(:mod:`vatt.data.index` says what a source string means).

Shard streaming: each epoch the shard list is shuffled with a seed shared by all ranks (training)
and dealt round-robin to the ``world_size * num_workers`` loader workers (rank-major), so every
shard is read exactly once per epoch. With ``resample=True`` each worker instead draws shards at
random with replacement forever (an endless stream; no worker ever runs dry, which keeps ranks
in step under DDP when shards are fewer than workers).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from ..errors import DataError, InputError
from ..text import WordTokenizer
from .config import DataConfig
from .index import ClipRef, index_source, list_shards, sample_to_ref
from .sample import StatsMixin, load_sample, load_with_retries, try_load
from .shards import iter_tar_samples
from .stats import BAD, SampleStats

log = logging.getLogger(__name__)


class ClipDataset(StatsMixin, Dataset):
    """Map-style dataset over :class:`ClipRef` entries (folders, manifests, audio and labelled sets).

    In training, a bad sample is replaced by another random one (the batch keeps its size; the
    bad one is counted); in evaluation it is dropped from the batch (``"_skip"``) and counted.
    """

    def __init__(self, refs: list[ClipRef], cfg: DataConfig, tokenizer: WordTokenizer | None, *, train: bool = True,
                 seed: int = 0, strict: bool = False, classes: list[str] | None = None, multi_label: bool = False,
                 num_windows: int | None = None, num_crops: int = 1, max_retries: int = 10):
        if not refs:
            raise InputError("the data source holds no samples")
        self.refs, self.cfg, self.tokenizer = refs, cfg, tokenizer
        self.train, self.seed, self.strict = train, seed, strict
        self.classes, self.multi_label = classes, multi_label
        self.num_windows, self.num_crops, self.max_retries = num_windows, num_crops, max_retries
        self._stats = SampleStats()
        self._calls = 0

    def __len__(self) -> int:
        return len(self.refs)

    def _rng(self, idx: int) -> np.random.Generator:
        self._calls += 1
        if not self.train:
            return np.random.default_rng([self.seed, idx])
        # torch.initial_seed() differs per loader worker and per epoch (the loader draws it).
        return np.random.default_rng([self.seed, torch.initial_seed() % 2**63, idx, self._calls])

    def load(self, idx: int, rng: np.random.Generator) -> dict:
        return load_sample(self.refs[idx], self.cfg, self.tokenizer, train=self.train, rng=rng, strict=self.strict,
                           num_windows=self.num_windows, num_crops=self.num_crops, classes=self.classes,
                           multi_label=self.multi_label)

    def __getitem__(self, idx: int) -> dict:
        rng = self._rng(idx)
        return load_with_retries(lambda i: self.load(i, rng), idx, lambda i: self.refs[i].path,
                                 tries=self.max_retries if self.train else 1, strict=self.strict,
                                 draw=lambda: int(rng.integers(0, len(self.refs))))


class MixedStream(StatsMixin, IterableDataset):
    """Endless stream drawing each sample from one of several datasets with given weights.

    Map-style members are read in random order per worker; iterable members (shards) are
    iterated (and restarted when exhausted).
    """

    def __init__(self, datasets: list, weights: list[float], seed: int = 0, rank: int = 0):
        if len(datasets) != len(weights):
            raise InputError(f"{len(datasets)} sources but {len(weights)} weights")
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise InputError(f"weights must be non-negative with a positive sum, got {weights}")
        self.datasets, self.seed, self.rank = datasets, seed, rank
        self.weights = np.asarray(weights, dtype=np.float64) / sum(weights)
        self._stats = SampleStats()
        self._epoch = 0
        labelled = {getattr(d, "classes", None) is not None for d in datasets}
        if len(labelled) > 1:
            raise InputError("cannot mix labelled and unlabelled sources in one stream")
        self.classes = getattr(datasets[0], "classes", None)
        self.multi_label = getattr(datasets[0], "multi_label", False)
        self.train = True

    def _member_iter(self, k: int, rng: np.random.Generator):
        d = self.datasets[k]
        while True:
            if isinstance(d, IterableDataset):
                yield from d
            else:
                for i in rng.permutation(len(d)):
                    yield d[int(i)]

    def __iter__(self):
        info = get_worker_info()
        wid = info.id if info is not None else 0
        self._epoch += 1
        # The rank is part of the seed: loaders on all ranks share a seed, streams must differ.
        rng = np.random.default_rng([self.seed, self.rank, torch.initial_seed() % 2**63, wid, self._epoch])
        its = [self._member_iter(k, rng) for k in range(len(self.datasets))]
        while True:
            k = int(rng.choice(len(its), p=self.weights))
            yield next(its[k])


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


class ShardDataset(StatsMixin, IterableDataset):
    """Streams samples from tar shards (see the module docstring for the split and resampling).

    Bad samples are skipped; their reports ride on the next good sample so the loader counts them.
    Training shuffles shards per epoch and samples within a buffer of ``shuffle_buffer``.
    """

    def __init__(self, source: str | list[str], cfg: DataConfig, tokenizer: WordTokenizer | None, *, train: bool = True,
                 seed: int = 0, strict: bool = False, rank: int = 0, world_size: int = 1, resample: bool = False,
                 shuffle_buffer: int = 64, classes: list[str] | None = None, multi_label: bool = False,
                 num_windows: int | None = None, num_crops: int = 1):
        self.shards = list_shards(source) if isinstance(source, str) else list(source)
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

    def _load(self, raw: dict, rng: np.random.Generator) -> dict:
        return load_sample(sample_to_ref(raw, self.classes), self.cfg, self.tokenizer, train=self.train, rng=rng,
                           strict=self.strict, num_windows=self.num_windows, num_crops=self.num_crops,
                           classes=self.classes, multi_label=self.multi_label)

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
            sample, event = try_load(lambda: self._load(raw, rng), name, self.strict)
            if sample is None:
                pending.append(event)
                continue
            sample["_events"] = pending + sample["_events"]
            pending = []
            yield sample
        if pending:
            yield {"_skip": True, "_events": pending, "key": ""}


def open_source(source: str, cfg, tokenizer, *, train, seed, strict, rank, world_size, classes, num_windows=None,
                num_crops=1):
    """The dataset of one source string: a :class:`ShardDataset` for shards, else a :class:`ClipDataset`."""
    ix = index_source(source, classes)
    common = dict(train=train, seed=seed, strict=strict, num_windows=num_windows, num_crops=num_crops)
    if ix.kind == "shards":
        return ShardDataset(ix.shards, cfg, tokenizer, rank=rank, world_size=world_size, classes=ix.classes, **common)
    return ClipDataset(ix.refs, cfg, tokenizer, classes=ix.classes, multi_label=ix.multi_label, **common)


def build_dataset(sources: list[str] | str, cfg: DataConfig, tokenizer: WordTokenizer | None = None, *,
                  train: bool = True, weights: list[float] | None = None, seed: int = 0, strict: bool = False,
                  rank: int = 0, world_size: int = 1, classes: list[str] | None = None):
    """A dataset of Batch-contract samples from one or several sources.

    Args:
        sources: a source string or a list of them (see the module docstring for the types).
        cfg: clip geometry and augmentation (``DataConfig.from_model_config(model.config)``).
        tokenizer: maps captions to ids; ``None`` gives all-pad text with ``text_mask`` 1 when
            captions exist (only useful for tests and ``vatt data check``).
        train: one random window per sample and augmentation; else the centre window, centre crop.
        weights: mixing weights of several sources (an endless :class:`MixedStream`); without
            weights, several map-style sources are concatenated.
        strict: raise :class:`vatt.errors.DataError` (path and reason) on the first bad sample.
        rank, world_size: split of shard streams across distributed ranks (map-style datasets are
            split by the sampler instead).
        classes: class names of a labelled set, fixing the label ids.

    Each item: ``video`` float32 ``[T, H, W, 3]`` in [-1, 1], ``audio`` ``[S]``, ``text`` int64
    ``[5, 16]``, ``video_mask``/``audio_mask``/``text_mask`` float32 scalars, ``key``,
    ``captions`` (list of str), ``label`` for labelled sets.
    """
    srcs = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    if not srcs:
        raise InputError("no data sources given")
    datasets = [open_source(str(s), cfg, tokenizer, train=train, seed=seed, strict=strict, rank=rank,
                          world_size=world_size, classes=classes) for s in srcs]
    if len(datasets) == 1:
        return datasets[0]
    if weights is None and all(isinstance(d, ClipDataset) for d in datasets):
        first = datasets[0]
        if len({tuple(d.classes) if d.classes else None for d in datasets}) > 1:
            raise InputError("cannot concatenate sources with different class lists")
        return ClipDataset([r for d in datasets for r in d.refs], cfg, tokenizer, train=train, seed=seed,
                           strict=strict, classes=first.classes, multi_label=any(d.multi_label for d in datasets))
    return MixedStream(datasets, weights or [1.0] * len(datasets), seed=seed, rank=rank)


def build_eval_dataset(source: str, cfg: DataConfig, tokenizer: WordTokenizer | None = None, *,
                       num_windows: int = 4, num_crops: int = 1, strict: bool = False,
                       classes: list[str] | None = None):
    """Deterministic multi-view dataset for evaluation (retrieval, linear probe, fine-tune test).

    Items: ``video`` ``[V, T, H, W, 3]`` with ``V = num_windows * num_crops`` (window-major:
    views ``w * num_crops .. w * num_crops + num_crops - 1`` come from window ``w``; windows evenly
    spaced over the whole clip; resize + centre crop or 3 crops), ``audio`` ``[num_windows, S]``,
    ``text`` ``[5, 16]`` (captions nearest the clip's middle), masks, ``label`` when labelled,
    ``key`` (the file path) and ``captions``. Bad samples are dropped from batches and counted.
    """
    if num_crops not in (1, 3):
        raise InputError(f"num_crops must be 1 or 3, got {num_crops}")
    if num_windows < 1:
        raise InputError(f"num_windows must be >= 1, got {num_windows}")
    return open_source(str(source), cfg, tokenizer, train=False, seed=0, strict=strict, rank=0, world_size=1,
                     classes=classes, num_windows=num_windows, num_crops=num_crops)
