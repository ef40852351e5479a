"""Which samples a source string names: the source grammar, media suffixes, and indexers that
turn folders, manifests and shard patterns into lists (no decoding here).

Source strings and how their type is detected (first match wins; a ``kind:`` prefix such as
``labelled:path`` or ``audio:path`` forces a type):

* ``*.tar`` (``.tar.gz``, ``.tgz``), a glob / brace pattern (``shards-{000..009}.tar``), a URL (``https://``, ``s3://``,
  ``gs://``, ...), ``pipe:COMMAND``, or a folder holding ``*.tar`` files -> WebDataset shards
  (:mod:`vatt.data.shards`), streamed.
* ``*.csv``, ``*.json``, ``*.jsonl`` -> manifest; rows ``path`` [, ``start``, ``end``,
  ``caption`` (text) or ``captions`` (caption file), ``label`` (``a;b`` for multi-label)].
  Relative paths are relative to the manifest. A ``label`` column makes it a labelled set.
* a folder whose media all sit in two or more first-level sub-folders, with no caption files ->
  labelled class-per-folder (class = sub-folder name; video or audio files).
* a folder holding only audio files (wav/flac/mp3/ogg/oga/m4a/opus/aac) -> audio-only set.
* any other folder -> videos (recursively) with sidecar captions of the same stem.

Class names of a labelled set come from ``classes.txt`` next to the manifest (one per line) when
present, else from the sorted labels found; pass ``classes=`` to fix them.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from braceexpand import braceexpand

from ..errors import InputError
from .captions import CAPTION_SUFFIXES, Caption, CaptionError, decode_text, find_sidecar, parse_json_captions
from .decode import MediaError

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".ts", ".3gp", ".ogv", ".wmv")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".oga", ".m4a", ".opus", ".aac")
MEDIA_SUFFIXES = VIDEO_SUFFIXES + AUDIO_SUFFIXES
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
_KIND_PREFIX = re.compile(r"^(folder|audio|labelled|manifest|shards):(.*)$")
# A URL scheme (two letters or more, so a Windows drive letter is not one) or webdataset's pipe:.
_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]+://|pipe:)")


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


@dataclass
class SourceIndex:
    """What :func:`index_source` found: ``refs`` for files, ``shards`` (paths / URLs) for shards."""

    kind: str
    path: str
    refs: list[ClipRef] = field(default_factory=list)
    shards: list[str] = field(default_factory=list)
    classes: list[str] | None = None
    multi_label: bool = False
    ignored: int = 0  # files in a folder source that are neither media nor captions


def _shard_files(folder: Path) -> list[Path]:
    return sorted(x for x in folder.iterdir() if x.name.lower().endswith(SHARD_SUFFIXES) and x.is_file())


def is_url(source: str) -> bool:
    """``https://...``, ``s3://...``, ``pipe:CMD`` and the like (anything but a local path)."""
    return bool(_URL.match(source))


def media_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in MEDIA_SUFFIXES and p.is_file() and not p.name.startswith("."))


_NOT_IGNORED = {"classes.txt", "prepare_report.json"}


def ignored_files(root: Path) -> list[Path]:
    """Files under ``root`` that a folder source does not use: neither media nor captions."""
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() not in MEDIA_SUFFIXES + CAPTION_SUFFIXES and p.name not in _NOT_IGNORED)


def _ignored_note(files: list[Path]) -> str:
    return f"{len(files)} file(s) neither video nor audio, e.g. {', '.join(f.name for f in files[:3])}" if files else ""


def detect_kind(source: str) -> tuple[str, str]:
    """``(kind, path)`` for a source string; see the module docstring for the rules."""
    m = _KIND_PREFIX.match(source)
    if m:
        return m.group(1), m.group(2)
    low = source.lower()
    if is_url(source) or low.endswith(SHARD_SUFFIXES) or any(ch in source for ch in "*?{"):
        return "shards", source
    if low.endswith((".csv", ".json", ".jsonl")):
        return "manifest", source
    p = Path(source)
    if not p.exists():
        raise InputError(f"data source not found: {source} (expected a folder, a .csv/.json manifest or .tar shards)")
    if p.is_dir():
        if _shard_files(p):
            return "shards", source
        files = media_files(p)
        if not files:
            note = _ignored_note(ignored_files(p))
            raise InputError(f"no media files ({', '.join(MEDIA_SUFFIXES)}) under {source}" + (f" ({note})" if note else ""))
        depth_one = all(f.parent.parent == p for f in files)
        if depth_one and len({f.parent for f in files}) >= 2 and not any(find_sidecar(f) for f in files[:50]):
            return "labelled", source
        if all(f.suffix.lower() in AUDIO_SUFFIXES for f in files):
            return "audio", source
        return "folder", source
    raise InputError(f"cannot tell the type of data source {source} (expected a folder, a .csv/.json manifest or .tar shards)")


def index_folder(root: str, audio_only: bool = False) -> list[ClipRef]:
    files = media_files(Path(root))
    refs = []
    for f in files:
        is_audio = audio_only or f.suffix.lower() in AUDIO_SUFFIXES
        side = None if is_audio else find_sidecar(f)
        refs.append(ClipRef(str(f), captions=str(side) if side else None, audio_only=is_audio))
    return refs


def read_classes_file(folder: Path) -> list[str] | None:
    f = folder / "classes.txt"
    if not f.is_file():
        return None
    try:
        text = f.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"{f}: class names must be UTF-8 text, one per line ({e.reason} at byte {e.start})") from None
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def index_labelled_folder(root: str, classes: list[str] | None) -> tuple[list[ClipRef], list[str]]:
    rootp = Path(root)
    files = media_files(rootp)
    names = classes or read_classes_file(rootp) or sorted({f.parent.name for f in files})
    lookup = {c: i for i, c in enumerate(names)}
    refs = []
    for f in files:
        if f.parent.name not in lookup:
            raise InputError(f"{f}: class folder '{f.parent.name}' is not among the classes {names}")
        refs.append(ClipRef(str(f), label=[lookup[f.parent.name]], audio_only=f.suffix.lower() in AUDIO_SUFFIXES))
    return refs, names


def manifest_rows(path: Path) -> list[dict]:
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


def _seconds(row: dict, column: str, mpath: Path, i: int) -> float | None:
    value = row.get(column)
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(f"{mpath} row {i + 2}: '{column}' must be a number of seconds, got {value!r}") from None


def index_manifest(path: str, classes: list[str] | None) -> tuple[list[ClipRef], list[str] | None, bool]:
    """Rows -> refs; returns ``(refs, classes or None, multi_label)``."""
    mpath = Path(path)
    rows = manifest_rows(mpath)
    labelled = any("label" in r or "labels" in r for r in rows)
    label_lists = [_labels_of(r.get("label", r.get("labels"))) for r in rows]
    names = None
    multi = False
    if labelled:
        names = classes or read_classes_file(mpath.parent) or sorted({lab for labs in label_lists for lab in labs})
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
        start, end = (_seconds(r, col, mpath, i) for col in ("start", "end"))
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
# Shards: which tar files a pattern names, and what one tar sample means
# --------------------------------------------------------------------------------------------
def expand_braces(pattern: str) -> list[str]:
    """``a-{000..002}.tar`` -> ``[a-000.tar, a-001.tar, a-002.tar]``; ``{x,y}`` lists too (bash rules,
    through the ``braceexpand`` package that webdataset uses)."""
    return list(braceexpand(pattern))


def list_shards(source: str) -> list[str]:
    """Shard paths or URLs for a ``.tar`` file, a folder of them, a glob / brace pattern, or URLs.

    Local shards are sorted and must exist; URLs (``https://``, ``s3://``, ``pipe:``) are
    brace-expanded in order and only opened when read; a glob in an fsspec URL (``s3://b/*.tar``)
    is listed through fsspec.
    """
    if is_url(source):
        urls = expand_braces(source)
        if any(c in source for c in "*?[") and not source.lower().startswith(("pipe:", "http:", "https:")):
            return _glob_urls(source, urls)
        return urls
    p = Path(source)
    if p.is_dir():
        shards = [str(x) for x in _shard_files(p)]
    else:
        shards = sorted({s for pat in expand_braces(source) for s in (glob.glob(pat) if any(c in pat for c in "*?[") else [pat])})
    missing = [s for s in shards if not Path(s).is_file()]
    if missing:
        raise InputError(f"shard file(s) not found: {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    if not shards:
        raise InputError(f"no .tar shards match {source}")
    return shards


def _glob_urls(source: str, patterns: list[str]) -> list[str]:
    """``s3://bucket/shard-*.tar`` and the like, listed through fsspec (sorted)."""
    import fsspec

    found = []
    try:
        for pattern in patterns:
            fs, path = fsspec.core.url_to_fs(pattern)
            found += sorted(fs.unstrip_protocol(p) for p in fs.glob(path))
    except ImportError as e:
        raise InputError(f"cannot list {source}: {e} (pip install the fsspec backend)") from None
    if not found:
        raise InputError(f"no shards match {source}")
    return found


def sample_to_ref(sample: dict, classes: list[str] | None = None) -> ClipRef:
    """A grouped tar sample (``{"__key__", "__shard__", ext: bytes}``) -> :class:`ClipRef` with the
    media bytes and inline captions. Raises :class:`CaptionError` for an unusable sample."""
    name = f"{sample['__shard__']}:{sample['__key__']}"
    if "__too_large__" in sample:
        raise MediaError(name, "too_large", sample["__too_large__"])
    media_ext = next((e for e in sample if "." + e in MEDIA_SUFFIXES), None)
    if media_ext is None:
        raise CaptionError(name, "no_media_member", f"members: {sorted(k for k in sample if not k.startswith('__'))}")
    meta = {}
    if "json" in sample:
        try:
            meta = json.loads(sample["json"].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CaptionError(name, "bad_metadata", str(e)) from None
        if not isinstance(meta, dict):
            raise CaptionError(name, "bad_metadata", f"expected a JSON object, found {type(meta).__name__}")
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


# --------------------------------------------------------------------------------------------
# The one dispatch on source kinds
# --------------------------------------------------------------------------------------------
def index_source(source: str, classes: list[str] | None = None) -> SourceIndex:
    """Index one source string (see the module docstring): its kind, refs or shards, classes."""
    kind, path = detect_kind(str(source))
    if kind == "shards":
        folder = Path(path) if Path(path).is_dir() else Path(path).parent
        names = classes or (None if is_url(path) else read_classes_file(folder))
        return SourceIndex(kind, path, shards=list_shards(path), classes=names)
    if kind == "manifest":
        refs, names, multi = index_manifest(path, classes)
        return SourceIndex(kind, path, refs=refs, classes=names, multi_label=multi)
    ignored = ignored_files(Path(path))
    if ignored:
        log.warning("%s: ignored %s", path, _ignored_note(ignored))
    if kind == "labelled":
        refs, names = index_labelled_folder(path, classes)
        return SourceIndex(kind, path, refs=refs, classes=names, ignored=len(ignored))
    return SourceIndex(kind, path, refs=index_folder(path, audio_only=(kind == "audio")), ignored=len(ignored))
