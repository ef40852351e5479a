"""Readers of the paper's benchmarks in their own published layouts (docs/BENCHMARKS.md).

One module per family; each reader takes the folder a user downloaded and returns a
:class:`BenchmarkSplit` (``refs``, ``classes``, ``multi_label``, ``modality`` and a
:class:`ReadReport` of missing media and malformed rows)::

    split = read_ucf101("UCF101/", "test", split=2)
    ds = clip_dataset(split, DataConfig.from_model_config(model.config), model.tokenizer,
                      train=False, num_windows=4)

:mod:`vatt.bench` knows which reader, subset and protocol make each table row.
"""

from __future__ import annotations

from ..config import DataConfig
from ..datasets import ClipDataset
from .audioset import read_audioset
from .common import BenchmarkSplit, ReadReport
from .esc50 import read_esc50
from .hmdb51 import read_hmdb51
from .imagenet import read_imagenet, synset_names
from .kinetics import read_kinetics, read_moments
from .retrieval_sets import read_msrvtt, read_youcook2
from .ucf101 import read_ucf101


def clip_dataset(split: BenchmarkSplit, cfg: DataConfig, tokenizer=None, *, train: bool, num_windows: int | None = None,
                 num_crops: int = 1, seed: int = 0, strict: bool = False) -> ClipDataset:
    """The :class:`ClipDataset` of a split: what :func:`vatt.data.build_dataset` (``train=True``) or
    :func:`vatt.data.build_eval_dataset` (``num_windows``, ``num_crops``) builds from a manifest
    listing the same items."""
    return ClipDataset(split.refs, cfg, tokenizer, train=train, seed=seed, strict=strict, classes=split.classes,
                       multi_label=split.multi_label, num_windows=num_windows, num_crops=num_crops)


__all__ = ["BenchmarkSplit", "ReadReport", "clip_dataset", "read_audioset", "read_esc50", "read_hmdb51",
           "read_imagenet", "read_kinetics", "read_moments", "read_msrvtt", "read_ucf101", "read_youcook2",
           "synset_names"]
