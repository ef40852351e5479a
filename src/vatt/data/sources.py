"""Where samples come from: folders, manifests, audio sets, labelled sets, shards; and how one
sample is made (decode a window, pick its captions, augment).

Source strings and how their type is detected (first match wins; a ``kind:`` prefix such as
``labelled:path`` or ``audio:path`` forces a type):

* ``*.tar``, a glob / brace pattern (``shards-{000..009}.tar``), or a folder holding ``*.tar``
  files -> WebDataset shards (:mod:`vatt.data.shards`), streamed.
* ``*.csv``, ``*.json``, ``*.jsonl`` -> manifest; rows ``path`` [, ``start``, ``end``,
  ``caption`` (text) or ``captions`` (caption file), ``label`` (``a;b`` for multi-label)].
  Relative paths are relative to the manifest. A ``label`` column makes it a labelled set.
* a folder whose media all sit in two or more first-level sub-folders, with no caption files ->
  labelled class-per-folder (class = sub-folder name; video or audio files).
* a folder holding only audio files (wav/flac/mp3/ogg/m4a/opus) -> audio-only set.
* any other folder -> videos (recursively) with sidecar captions of the same stem.

Class names of a labelled set come from ``classes.txt`` next to the manifest (one per line) when
present, else from the sorted labels found; pass ``classes=`` to fix them.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from ..errors import DataError, InputError
from ..text import WordTokenizer
from . import transforms
from .captions import Caption, CaptionError, decode_text, find_sidecar, read_captions, select_captions
from .config import DataConfig
from .decode import MediaError, MediaReader
from .stats import BAD, MASKED, SampleStats

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".ts", ".3gp", ".ogv", ".wmv")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".m4a", ".opus", ".aac")
MEDIA_SUFFIXES = VIDEO_SUFFIXES + AUDIO_SUFFIXES
SOURCE_KINDS = ("folder", "audio", "labelled", "manifest", "shards")


@dataclass
class ClipRef:
    """One sample before decoding.

    Args:
        path: media file (or a name when ``data`` holds the bytes).
        start, end: part of the file to use, seconds (None = whole file).
        captions: caption file path, parsed captions, or None (text masked).
        label: class indices (one for single-label sets), or None.
        audio_only: the source has no video by design (video masked without complaint).
        data: the file's bytes (shards) instead of a path.
    """

    path: str
    start: float | None = None
    end: float | None = None
    captions: str | list[Caption] | None = None
    label: list[int] | None = None
    audio_only: bool = False
    data: bytes | None = field(default=None, repr=False)


# --------------------------------------------------------------------------------------------
# Indexing sources
# --------------------------------------------------------------------------------------------
def _media_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in MEDIA_SUFFIXES and p.is_file() and not p.name.startswith("."))


def detect_kind(source: str) -> tuple[str, str]:
    """``(kind, path)`` for a source string; see the module docstring for the rules."""
    m = re.match(r"^(folder|audio|labelled|manifest|shards):(.*)$", source)
    if m:
        return m.group(1), m.group(2)
    low = source.lower()
    if low.endswith(".tar") or any(ch in source for ch in "*?{"):
        return "shards", source
    if low.endswith((".csv", ".json", ".jsonl")):
        return "manifest", source
    p = Path(source)
    if not p.exists():
        raise InputError(f"data source not found: {source} (expected a folder, a .csv/.json manifest or .tar shards)")
    if p.is_dir():
        if any(p.glob("*.tar")):
            return "shards", source
        files = _media_files(p)
        if not files:
            raise InputError(f"no media files ({', '.join(MEDIA_SUFFIXES)}) under {source}")
        depth_one = all(f.parent.parent == p for f in files)
        if depth_one and len({f.parent for f in files}) >= 2 and not any(find_sidecar(f) for f in files[:50]):
            return "labelled", source
        if all(f.suffix.lower() in AUDIO_SUFFIXES for f in files):
            return "audio", source
        return "folder", source
    raise InputError(f"cannot tell the type of data source {source} (expected a folder, a .csv/.json manifest or .tar shards)")


def index_folder(root: str, audio_only: bool = False) -> list[ClipRef]:
    files = _media_files(Path(root))
    refs = []
    for f in files:
        is_audio = audio_only or f.suffix.lower() in AUDIO_SUFFIXES
        side = None if is_audio else find_sidecar(f)
        refs.append(ClipRef(str(f), captions=str(side) if side else None, audio_only=is_audio))
    return refs


def _read_classes_file(folder: Path) -> list[str] | None:
    f = folder / "classes.txt"
    if f.is_file():
        return [ln.strip() for ln in f.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return None


def index_labelled_folder(root: str, classes: list[str] | None) -> tuple[list[ClipRef], list[str]]:
    rootp = Path(root)
    files = _media_files(rootp)
    names = classes or _read_classes_file(rootp) or sorted({f.parent.name for f in files})
    lookup = {c: i for i, c in enumerate(names)}
    refs = []
    for f in files:
        if f.parent.name not in lookup:
            raise InputError(f"{f}: class folder '{f.parent.name}' is not among the classes {names}")
        refs.append(ClipRef(str(f), label=[lookup[f.parent.name]], audio_only=f.suffix.lower() in AUDIO_SUFFIXES))
    return refs, names


def _manifest_rows(path: Path) -> list[dict]:
    if not path.is_file():
        raise InputError(f"manifest not found: {path}")
    text = decode_text(path.read_bytes(), str(path))
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        if rows and "path" not in rows[0]:
            raise InputError(f"{path}: a CSV manifest needs a 'path' column; found columns {list(rows[0])}")
        return rows
    try:
        if path.suffix.lower() == ".jsonl":
            rows = [json.loads(ln) for ln in text.splitlines() if ln.strip()]
        else:
            obj = json.loads(text)
            rows = obj.get("samples") if isinstance(obj, dict) else obj
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: invalid JSON manifest: {e}") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "path" in r for r in rows):
        raise InputError(f"{path}: a JSON manifest is a list of objects with a 'path' (or {{'samples': [...]}})")
    return rows


def _labels_of(value) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [v.strip() for v in str(value).split(";") if v.strip()]


def index_manifest(path: str, classes: list[str] | None) -> tuple[list[ClipRef], list[str] | None, bool]:
    """Rows -> refs; returns ``(refs, classes or None, multi_label)``."""
    mpath = Path(path)
    rows = _manifest_rows(mpath)
    labelled = any("label" in r or "labels" in r for r in rows)
    label_lists = [_labels_of(r.get("label", r.get("labels"))) for r in rows]
    names = None
    multi = False
    if labelled:
        names = classes or _read_classes_file(mpath.parent) or sorted({lab for labs in label_lists for lab in labs})
        multi = any(len(labs) > 1 for labs in label_lists)
        if not multi:  # a single-label set: every row needs its one label
            missing = [i + 2 for i, labs in enumerate(label_lists) if not labs]
            if missing:
                raise InputError(f"{mpath}: rows {missing[:5]} have no label (single-label set; use 'a;b' for multi-label)")
    lookup = {c: i for i, c in enumerate(names or [])}
    refs = []
    for i, (r, labs) in enumerate(zip(rows, label_lists)):
        media = Path(str(r["path"]))
        if not media.is_absolute():
            media = mpath.parent / media
        start = float(r["start"]) if r.get("start") not in (None, "") else None
        end = float(r["end"]) if r.get("end") not in (None, "") else None
        caps: str | list[Caption] | None = None
        if r.get("captions") not in (None, ""):
            cap = Path(str(r["captions"]))
            caps = str(cap if cap.is_absolute() else mpath.parent / cap)
        elif r.get("caption") not in (None, ""):
            text = r["caption"]
            texts = text if isinstance(text, list) else [text]
            caps = [Caption(start or 0.0, end if end is not None else float("inf"), str(t)) for t in texts]
        elif not labelled and media.suffix.lower() in VIDEO_SUFFIXES:
            side = find_sidecar(media)
            caps = str(side) if side else None
        label = None
        if labelled:
            unknown = [lab for lab in labs if lab not in lookup]
            if unknown:
                raise InputError(f"{mpath} row {i + 2}: label(s) {unknown} not among the classes {names}")
            label = [lookup[lab] for lab in labs]
        refs.append(ClipRef(str(media), start, end, caps, label, media.suffix.lower() in AUDIO_SUFFIXES))
    return refs, names, multi


# --------------------------------------------------------------------------------------------
# Making one sample
# --------------------------------------------------------------------------------------------
def _events_key(ref: ClipRef) -> str:
    return ref.path


def _clip_span(ref: ClipRef, duration: float) -> tuple[float, float]:
    s0 = max(0.0, ref.start or 0.0)
    e0 = duration if ref.end is None else min(ref.end, duration) if duration > 0 else ref.end
    return s0, max(s0, e0)


def _text_for(ref: ClipRef, cfg: DataConfig, tokenizer, center: float, duration: float, events, strict: bool):
    """``(ids [num_captions, max_words], mask, sentences)`` for a window centred at ``center``."""
    empty = torch.zeros(cfg.num_captions, cfg.max_words, dtype=torch.long)
    if ref.captions is None or ref.audio_only:
        return empty, 0.0, []
    try:
        caps = ref.captions if isinstance(ref.captions, list) else read_captions(ref.captions, duration)
        if not caps:
            raise CaptionError(ref.captions if isinstance(ref.captions, str) else ref.path, "empty_captions")
    except CaptionError as e:
        if strict:
            raise
        events.append((ref.path, e.reason, MASKED, e.detail))
        return empty, 0.0, []
    sentences = select_captions(caps, center, cfg.num_captions)
    if tokenizer is None:
        return empty, 1.0, sentences
    return tokenizer.encode(sentences, cfg.max_words), 1.0, sentences


def _eval_key(ref: ClipRef) -> str:
    """The file path, plus the span when a manifest row names part of a file (keys stay unique)."""
    if ref.start is None and ref.end is None:
        return ref.path
    end = "" if ref.end is None else f"{ref.end:.2f}"
    return f"{ref.path}@{ref.start or 0.0:.2f}-{end}"


def _label_tensor(ref: ClipRef, num_classes: int, multi_label: bool):
    if multi_label:
        y = torch.zeros(num_classes, dtype=torch.float32)
        y[ref.label] = 1.0
        return y
    return torch.tensor(ref.label[0], dtype=torch.long)


def load_sample(
    ref: ClipRef,
    cfg: DataConfig,
    tokenizer: WordTokenizer | None,
    *,
    train: bool,
    rng: np.random.Generator | None = None,
    strict: bool = False,
    num_windows: int | None = None,
    num_crops: int = 1,
    classes: list[str] | None = None,
    multi_label: bool = False,
) -> dict:
    """Decode, caption and transform one sample (Batch-contract fields for one item).

    ``num_windows=None`` gives one window: random in training, the centre one otherwise;
    ``video`` ``[T, crop, crop, 3]``, ``audio`` ``[S]``. With ``num_windows=n`` (evaluation) the
    windows are evenly spaced over the clip: ``video`` ``[n * num_crops, T, crop, crop, 3]``
    (window-major), ``audio`` ``[n, S]``. Raises :class:`MediaError` / :class:`CaptionError`
    when the sample must be skipped; modality problems that only mask are listed in ``"_events"``.
    """
    events: list = []
    rng = rng if rng is not None else np.random.default_rng(0)
    win = cfg.clip_seconds
    with MediaReader(ref.data if ref.data is not None else ref.path, name=ref.path) as reader:
        info = reader.info
        if not info.has_video and not ref.audio_only:
            if strict:
                raise MediaError(ref.path, "no_video_track")
            events.append((ref.path, "no_video_track", MASKED, ""))
        if not info.has_audio:
            if strict and not ref.audio_only:
                raise MediaError(ref.path, "no_audio_track")
            if not info.has_video:
                raise MediaError(ref.path, "no_streams")
            events.append((ref.path, "no_audio_track", MASKED, ""))
        s0, e0 = _clip_span(ref, info.duration)
        last = max(s0, e0 - win)
        if num_windows is None:
            starts = [float(rng.uniform(s0, last)) if train else (s0 + last) / 2]
        else:
            starts = [float(x) for x in np.linspace(s0, last, num_windows)] if num_windows > 1 else [(s0 + last) / 2]
        views, audios = [], []
        for k, st in enumerate(starts):
            try:
                w = reader.read(st, num_frames=cfg.num_frames, fps=cfg.fps, sample_rate=cfg.sample_rate,
                                num_samples=cfg.num_samples, short_side=cfg.resize * 2)
            except MediaError as e:
                if e.reason != "no_frames" or st == 0.0:
                    raise
                # Metadata promised more than the file holds (truncated): fall back to the start.
                w = reader.read(0.0, num_frames=cfg.num_frames, fps=cfg.fps, sample_rate=cfg.sample_rate,
                                num_samples=cfg.num_samples, short_side=cfg.resize * 2)
                starts[k] = 0.0
                events.append((ref.path, "truncated", MASKED, "duration in metadata exceeds decodable data"))
            views.append(w.frames)
            audios.append(w.audio)
    T, c = cfg.num_frames, cfg.crop_size
    has_v = views[0] is not None
    has_a = audios[0] is not None
    if num_windows is None:
        if has_v:
            video = transforms.train_video(views[0], cfg, rng) if train else transforms.eval_video(views[0], cfg)[0]
        else:
            video = torch.zeros(T, c, c, 3)
        if has_a:
            audio = transforms.train_audio(audios[0], cfg, rng) if train else transforms.eval_audio(audios[0])
        else:
            audio = torch.zeros(cfg.num_samples)
    else:
        if has_v:
            video = torch.cat([transforms.eval_video(v, cfg, num_crops) for v in views])
        else:
            video = torch.zeros(len(starts) * num_crops, T, c, c, 3)
        audio = torch.stack([transforms.eval_audio(a) for a in audios]) if has_a else torch.zeros(len(starts), cfg.num_samples)
    center = (starts[0] + win / 2) if num_windows is None else (s0 + e0) / 2
    text, text_mask, sentences = _text_for(ref, cfg, tokenizer, center, info.duration, events, strict)
    sample = {
        "video": video,
        "audio": audio,
        "text": text,
        "video_mask": torch.tensor(float(has_v)),
        "audio_mask": torch.tensor(float(has_a)),
        "text_mask": torch.tensor(text_mask),
        "key": f"{ref.path}@{starts[0]:.2f}" if num_windows is None else _eval_key(ref),
        "captions": sentences,
        "_events": events,
    }
    if ref.label is not None and classes is not None:
        sample["label"] = _label_tensor(ref, len(classes), multi_label)
    return sample


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------
class _StatsMixin:
    """Every dataset owns a :class:`SampleStats`, filled by the loader in the main process."""

    _stats: SampleStats

    def stats(self) -> dict:
        """``{"good", "bad", "reasons", "masked"}`` over everything loaded so far."""
        return self._stats.as_dict()


def _bad_event(e: Exception, ref: ClipRef) -> tuple:
    reason = getattr(e, "reason", None) or "decode_error"
    detail = getattr(e, "detail", "") if getattr(e, "reason", None) else f"{type(e).__name__}: {e}"
    return (ref.path, reason, BAD, detail)


class ClipDataset(_StatsMixin, Dataset):
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
        bad = []
        tries = self.max_retries if self.train else 1
        for _ in range(tries):
            try:
                sample = self.load(idx, rng)
                sample["_events"] = bad + sample["_events"]
                return sample
            except Exception as e:  # noqa: BLE001 - a bad file must never end a run; strict re-raises
                if self.strict:
                    if isinstance(e, DataError):
                        raise
                    raise DataError(f"{self.refs[idx].path}: decode_error ({type(e).__name__}: {e})") from e
                bad.append(_bad_event(e, self.refs[idx]))
                idx = int(rng.integers(0, len(self.refs)))
        return {"_skip": True, "_events": bad, "key": self.refs[idx].path}


class MixedStream(_StatsMixin, IterableDataset):
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


def _open_one(source: str, cfg, tokenizer, *, train, seed, strict, rank, world_size, classes, num_windows=None,
              num_crops=1):
    from .shards import ShardDataset

    kind, path = detect_kind(source)
    common = dict(train=train, seed=seed, strict=strict, num_windows=num_windows, num_crops=num_crops)
    if kind == "shards":
        folder = Path(path) if Path(path).is_dir() else Path(path).parent
        names = classes or _read_classes_file(folder)
        return ShardDataset(path, cfg, tokenizer, rank=rank, world_size=world_size, classes=names, **common)
    if kind == "manifest":
        refs, names, multi = index_manifest(path, classes)
        return ClipDataset(refs, cfg, tokenizer, classes=names, multi_label=multi, **common)
    if kind == "labelled":
        refs, names = index_labelled_folder(path, classes)
        return ClipDataset(refs, cfg, tokenizer, classes=names, multi_label=False, **common)
    refs = index_folder(path, audio_only=(kind == "audio"))
    return ClipDataset(refs, cfg, tokenizer, **common)


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
    datasets = [_open_one(str(s), cfg, tokenizer, train=train, seed=seed, strict=strict, rank=rank,
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
    return _open_one(str(source), cfg, tokenizer, train=False, seed=0, strict=strict, rank=0, world_size=1,
                     classes=classes, num_windows=num_windows, num_crops=num_crops)


def caption_texts(sources: list[str] | str) -> list[str]:
    """Every caption sentence of the given sources or caption files (for building a vocabulary)."""
    from .captions import CAPTION_SUFFIXES
    from .shards import iter_tar_samples, list_shards, sample_to_ref

    srcs = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    texts: list[str] = []

    def add_file(path) -> None:
        try:
            texts.extend(c.text for c in read_captions(path))
        except CaptionError as e:
            log.warning("skipping captions %s: %s", path, e)

    for src in map(str, srcs):
        p = Path(src)
        if p.is_file() and p.suffix.lower() in (".srt", ".vtt", ".txt") or (p.suffix.lower() == ".json" and _is_caption_json(p)):
            add_file(p)
            continue
        kind, path = detect_kind(src)
        if kind == "shards":
            for shard in list_shards(path):
                for raw in iter_tar_samples(shard):
                    caps = sample_to_ref(raw).captions
                    texts.extend(c.text for c in caps or [])
        elif kind == "manifest":
            refs, _, _ = index_manifest(path, None)
            for r in refs:
                if isinstance(r.captions, list):
                    texts.extend(c.text for c in r.captions)
                elif r.captions:
                    add_file(r.captions)
        elif kind == "folder":
            for f in sorted(Path(path).rglob("*")):
                if f.suffix.lower() in CAPTION_SUFFIXES and f.is_file() and any(
                    f.with_suffix(s).is_file() for s in VIDEO_SUFFIXES
                ):
                    add_file(f)
    return texts


def _is_caption_json(p: Path) -> bool:
    try:
        obj = json.loads(p.read_text(encoding="utf-8", errors="replace"))
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(obj, dict) and {"start", "end", "text"} <= set(obj)
