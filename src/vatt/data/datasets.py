"""Datasets of Batch-contract samples: map-style clips (folders, manifests, audio and labelled
sets) here, streamed shards and weighted mixtures in :mod:`vatt.data.streams`; and the factories
that build them from source strings (:mod:`vatt.data.index` says what a source string means).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import InputError
from ..text import WordTokenizer
from .config import DataConfig
from .index import ClipRef, index_source
from .sample import StatsMixin, load_sample, load_with_retries
from .shards import check_url_scheme
from .stats import SampleStats
from .streams import MixedStream, ShardDataset


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


def open_source(source: str, cfg, tokenizer, *, train, seed, strict, rank, world_size, classes, num_windows=None,
                num_crops=1):
    """The dataset of one source string: a :class:`ShardDataset` for shards, else a :class:`ClipDataset`."""
    ix = index_source(source, classes)
    common = dict(train=train, seed=seed, strict=strict, num_windows=num_windows, num_crops=num_crops)
    if ix.kind == "shards":
        check_url_scheme(ix.shards[0])
        return ShardDataset(ix.shards, cfg, tokenizer, rank=rank, world_size=world_size, classes=ix.classes,
                            max_member_bytes=int(cfg.max_member_mb * 2**20), **common)
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
    return MixedStream(datasets, weights or [1.0] * len(datasets), seed=seed, rank=rank, world_size=world_size)


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
