"""A moment index of a video library (``vatt index``): every file cut into overlapping windows,
each window embedded (video S_vt and S_va, audio S_va) with a small JPEG thumbnail.

On disk an index is a folder::

    index.json                 what is indexed: model, window/hop, roots, files (path, size, mtime,
                               rows), bad files (reason); written last, atomically
    windows-<id>.safetensors   per window (row): video_vt [N, 256], video_va [N, 512], audio_va
                               [N, 512] (unit vectors; zeros where a file has no audio), start/end
                               [N] seconds, file [N] (file number), thumb_offsets [N + 1] and
                               thumbs [M] (the JPEG bytes of all thumbnails, concatenated)

Sources: a folder of videos, a CSV/JSON manifest, or uncompressed tar shards (``vatt data
prepare``), whose media members are read, and later served, by byte offset in the tar.

``index.json`` names the windows file it belongs to, so a reader never sees a half-updated pair:
a new windows file is written first, then the JSON is replaced, then old windows files go.
Re-running on the same source is incremental: files whose path, size and mtime are unchanged keep
their rows, new and changed files are embedded, removed files are dropped. Each file's windows are
embedded in batches of that file alone, so the result equals a fresh run bit for bit.

Windows: length ``window`` seconds (default: the model's clip, e.g. 3.2 s for the paper presets),
every ``hop`` seconds (default: half a window), plus one window ending at the end of the file when
the hops leave a tail. A window longer than the model's clip is embedded as several evenly spaced
clips whose unit embeddings are averaged; a shorter one as the clip centred on it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError, InputError
from ..progress import Progress, advance
from ..progress import start as start_phase
from ..tagged_json import read_tagged_json
from ..embed import l2_normalize

log = logging.getLogger(__name__)

INDEX_FORMAT = "vatt-search-index"
INDEX_VERSION = 1
INDEX_FILE = "index.json"
SPACES = {"video_vt": 256, "video_va": 512, "audio_va": 512}
THUMB_MAX = (192, 108)  # thumbnail box (width, height), pixels
_DTYPES = {"F32": np.float32, "I32": np.int32, "I64": np.int64, "U8": np.uint8}


# -- reading ---------------------------------------------------------------------------------------
def _mmap_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file as memory-mapped (copy-on-write) CPU tensors: nothing is read
    until used, so a 1M-window index opens instantly and shares the page cache. A truncated or
    garbage file is a CheckpointError naming it."""
    bad = f"{path} is not a complete windows file (truncated or damaged; rebuild the index with `vatt index`)"
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n <= size - 8:
                raise ValueError("header size")
            header = json.loads(f.read(n))
        out = {}
        for name, spec in header.items():
            if name == "__metadata__":
                continue
            a, b = (int(x) for x in spec["data_offsets"])
            dtype = _DTYPES[spec["dtype"]]
            shape = tuple(int(x) for x in spec["shape"])
            if not 0 <= a <= b <= size - 8 - n or b - a != int(np.prod(shape)) * np.dtype(dtype).itemsize:
                raise ValueError(f"tensor {name} lies outside the file")
            if b == a:
                arr = np.zeros(shape, dtype)
            else:
                arr = np.memmap(path, dtype=dtype, mode="c", offset=8 + n + a, shape=shape)
            out[name] = torch.from_numpy(arr)
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{bad}: {e}") from None
    return out


def _check_layout(meta: dict, tensors: dict[str, torch.Tensor], where: Path) -> None:
    """Every tensor and file entry an index needs, with consistent shapes (else CheckpointError)."""
    bad = f"{where} is damaged (rebuild the index with `vatt index`)"
    need = {**SPACES, "start": 0, "end": 0, "file": 0, "thumb_offsets": 0, "thumbs": 0}
    missing = sorted(set(need) - set(tensors))
    if missing:
        raise CheckpointError(f"{bad}: the windows file lacks {', '.join(missing)}")
    n = tensors["file"].shape[0]
    for name, dim in need.items():
        want = {"thumb_offsets": (n + 1,), "thumbs": tensors["thumbs"].shape}.get(name, (n, dim) if dim else (n,))
        if tuple(tensors[name].shape) != want:
            raise CheckpointError(f"{bad}: {name} has shape {list(tensors[name].shape)}, expected {list(want)}")
    for i, f in enumerate(meta["files"]):
        if not isinstance(f, dict) or not {"id", "path", "rel", "size", "mtime_ns", "rows"} <= set(f):
            raise CheckpointError(f"{bad}: file entry {i} lacks id, path, rel, size, mtime_ns or rows")
        a, b = f["rows"]
        if not 0 <= a <= b <= n:
            raise CheckpointError(f"{bad}: file entry {i} points at rows {a}..{b} of {n}")


class WindowIndex:
    """A loaded index (read-only). ``tensors`` are memory-mapped; ``file``, ``start``, ``end`` are
    numpy arrays ``[N]``; ``files`` the file entries of ``index.json``."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        meta_path = self.directory / INDEX_FILE
        if not meta_path.is_file():
            raise InputError(f"{directory} is not a vatt search index (no {INDEX_FILE}; build one with `vatt index`)")
        meta = read_tagged_json(meta_path, INDEX_FORMAT, "a vatt search index")
        if meta.get("version") != INDEX_VERSION:
            raise CheckpointError(f"{meta_path} has index version {meta.get('version')}; this vatt reads "
                                  f"{INDEX_VERSION} (rebuild it with `vatt index`)")
        missing = [k for k in ("windows_file", "files", "roots", "window", "hop") if k not in meta]
        if missing or not isinstance(meta.get("files"), list) or not isinstance(meta.get("windows_file"), str):
            raise CheckpointError(f"{meta_path} is damaged: it lacks {', '.join(missing) or 'a files list'} "
                                  "(rebuild the index with `vatt index`)")
        windows = self.directory / os.path.basename(meta["windows_file"])
        if not windows.is_file():
            raise CheckpointError(f"{windows} is missing (rebuild the index with `vatt index`)")
        self.meta = meta
        self.files: list[dict] = meta["files"]
        self.tensors = _mmap_safetensors(windows)
        _check_layout(meta, self.tensors, self.directory)
        self.file = self.tensors["file"].numpy()
        self.start = self.tensors["start"].numpy()
        self.end = self.tensors["end"].numpy()
        self._by_id = {f["id"]: i for i, f in enumerate(self.files)}

    @property
    def num_windows(self) -> int:
        return int(self.file.shape[0])

    @property
    def roots(self) -> list[str]:
        return list(self.meta["roots"])

    def file_number(self, file_id: str) -> int | None:
        return self._by_id.get(file_id)

    def thumbnail(self, row: int) -> bytes:
        off = self.tensors["thumb_offsets"]
        a, b = int(off[row]), int(off[row + 1])
        return self.tensors["thumbs"][a:b].numpy().tobytes()


def load_index(directory) -> WindowIndex:
    return WindowIndex(directory)


# -- sources ---------------------------------------------------------------------------------------
def _inside(path: str, roots: list[str]) -> bool:
    real = os.path.realpath(path)
    return any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


SHARD_SEP = "#"  # "shard.tar#member.mp4": a media member of a shard


@dataclass(frozen=True)
class MediaItem:
    """One indexed media file: a plain file, or a member of an uncompressed tar shard
    (``offset``/``length`` bytes into ``file``; ``key`` is ``file#member``)."""

    key: str
    file: str
    offset: int | None = None
    length: int | None = None


def _shard_members(tar_path: str) -> list[MediaItem]:
    import tarfile

    from ..data.index import MEDIA_SUFFIXES

    with tarfile.open(tar_path, "r:") as tar:  # uncompressed only: members are served by byte offset
        return [MediaItem(f"{tar_path}{SHARD_SEP}{m.name}", tar_path, m.offset_data, m.size) for m in tar
                if m.isfile() and os.path.splitext(m.name)[1].lower() in MEDIA_SUFFIXES]


def list_media(source: str, extra_roots: list[str] | None = None) -> tuple[list[MediaItem], list[str], list[dict]]:
    """``(media items, roots, unreadable shards)`` of a folder, manifest or shard set. Roots (real
    paths) bound what ``vatt serve`` may read: the folder, the manifest's folder or the shards'
    folder, plus ``extra_roots``."""
    from ..data.index import AUDIO_SUFFIXES, VIDEO_SUFFIXES, manifest_rows, detect_kind, list_shards

    kind, path = detect_kind(str(source))
    bad_shards = []
    if kind == "shards":
        shards = [os.path.abspath(x) for x in list_shards(path)]
        items = []
        for shard in shards:
            try:
                items.extend(_shard_members(shard))
            except (OSError, EOFError, Exception) as e:  # noqa: BLE001 - tarfile raises several kinds
                log.warning("%s: cannot read the shard (%s: %s)", shard, type(e).__name__, e)
                bad_shards.append(shard)
        root = Path(path) if Path(path).is_dir() else Path(shards[0]).parent
        roots = [os.path.realpath(root)] + [os.path.realpath(r) for r in extra_roots or []]
        return sorted(items, key=lambda m: m.key), roots, bad_shards
    p = Path(path).absolute()
    if kind == "manifest":
        rows = manifest_rows(p)
        paths = []
        for r in rows:
            media = Path(str(r["path"]))
            paths.append(str(media if media.is_absolute() else p.parent / media))
        root = p.parent
    else:
        root = p
        paths = [str(f) for f in sorted(root.rglob("*"))
                 if f.suffix.lower() in VIDEO_SUFFIXES + AUDIO_SUFFIXES and not f.name.startswith(".")
                 and (f.is_file() or f.is_symlink())]
    roots = [os.path.realpath(root)] + [os.path.realpath(r) for r in extra_roots or []]
    items = [MediaItem(x, x) for x in sorted(dict.fromkeys(os.path.abspath(x) for x in paths))]
    return items, roots, bad_shards


def window_starts(duration: float, window: float, hop: float) -> list[float]:
    """Start times (s) of the windows of a file: every ``hop``, plus one ending at the end."""
    if duration <= window + 1e-6:
        return [0.0]
    n = int(math.floor((duration - window) / hop + 1e-6)) + 1
    starts = [round(i * hop, 6) for i in range(n)]
    if duration - (starts[-1] + window) > 0.05 * window:
        starts.append(round(duration - window, 6))
    return starts


# -- embedding -------------------------------------------------------------------------------------
def model_fingerprint(model) -> str:
    """A hash of the model's configuration and every weight: an index is reused only by the same model."""
    h = hashlib.sha1(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def jpeg_thumbnail(frame: np.ndarray, box: tuple[int, int] = THUMB_MAX) -> bytes:
    """JPEG bytes of an RGB uint8 ``[H, W, 3]`` frame scaled to fit ``box`` (even sides), encoded
    with PyAV's MJPEG encoder at FFmpeg's default quality, so no image library is needed."""
    import av
    import torch.nn.functional as F

    h, w = frame.shape[:2]
    scale = min(1.0, box[0] / w, box[1] / h)
    tw, th = max(2, int(round(w * scale)) // 2 * 2), max(2, int(round(h * scale)) // 2 * 2)
    if (tw, th) != (w, h):
        x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None]
        x = F.interpolate(x, size=(th, tw), mode="bilinear", align_corners=False, antialias=True)
        frame = x[0].permute(1, 2, 0).contiguous().numpy()
    cc = av.CodecContext.create("mjpeg", "w")
    cc.width, cc.height, cc.pix_fmt = tw, th, "yuvj420p"
    from fractions import Fraction

    cc.time_base = Fraction(1, 25)
    img = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24").reformat(format="yuvj420p")
    return b"".join(bytes(p) for p in cc.encode(img) + cc.encode(None))


@dataclass
class FileWindows:
    """The rows of one file: tensors ``{name: [n, D]}``, start/end ``[n]`` and thumbnails."""

    tensors: dict[str, torch.Tensor]
    start: np.ndarray
    end: np.ndarray
    thumbs: list[bytes]


class _Embedder:
    def __init__(self, model, window: float, hop: float, batch_size: int, device):
        from ..data.config import DataConfig

        self.model, self.window, self.hop, self.batch_size, self.device = model, window, hop, batch_size, device
        self.cfg = DataConfig.from_model_config(model.config)
        clip = self.cfg.clip_seconds
        self.num_sub = max(1, int(round(window / clip)))

    def sub_starts(self, start: float) -> list[float]:
        clip = self.cfg.clip_seconds
        if self.window <= clip:
            return [max(0.0, start + (self.window - clip) / 2)]
        return [float(x) for x in np.linspace(start, start + self.window - clip, self.num_sub)]

    @torch.no_grad()
    def file(self, item: MediaItem) -> tuple[FileWindows, dict]:
        """Embed every window of one file; raises MediaError when it cannot be used."""
        from ..data import transforms
        from ..data.decode import MediaError, MediaReader

        cfg = self.cfg
        path = item.key
        source: str | bytes = item.file
        if item.offset is not None:
            with open(item.file, "rb") as f:
                f.seek(item.offset)
                source = f.read(item.length)
        out: dict[str, list] = {name: [] for name in SPACES}
        videos, audios, thumbs, kept = [], [], [], []

        def flush() -> None:  # embed the decoded windows waiting (at most batch_size: memory stays bounded)
            if not videos:
                return
            b = len(videos)
            v = torch.stack(videos)  # [b, n_sub, T, c, c, 3]
            inputs = {"video": v.reshape(b * self.num_sub, *v.shape[2:]).to(self.device)}
            if audios:
                inputs["audio"] = torch.stack(audios).reshape(b * self.num_sub, -1).to(self.device)
            res = self.model(**inputs)
            for name in SPACES:
                if name in res:
                    x = l2_normalize(res[name].float().cpu()).reshape(b, self.num_sub, -1)
                    out[name].append(l2_normalize(x.mean(1)))
                else:
                    out[name].append(torch.zeros(b, SPACES[name]))
            videos.clear()
            audios.clear()

        with MediaReader(source, name=path) as reader:
            info = reader.info
            if not info.has_video:
                raise MediaError(path, "no_video_track")
            duration = info.duration if info.duration > 0 else self.window
            readable = None  # where a damaged file stops being readable (s)
            for st in window_starts(duration, self.window, self.hop):
                try:
                    wins = [reader.read(s, num_frames=cfg.num_frames, fps=cfg.fps, sample_rate=cfg.sample_rate,
                                        num_samples=cfg.num_samples, short_side=cfg.resize * 2)
                            for s in self.sub_starts(st)]
                except MediaError as e:
                    # truncated or damaged mid-way (the decoder fails, or finds no frame from here
                    # on): keep the windows before the damage
                    if e.reason in ("no_frames", "decode_error") and kept:
                        readable = min(kept[-1] + self.window, duration)
                        log.warning("%s: unreadable in the window from %.2fs (%s; truncated?); indexed up to %.2fs",
                                    path, st, e.reason, readable)
                        break
                    raise
                videos.append(torch.cat([transforms.eval_video(w.frames, cfg) for w in wins]))  # [n_sub, T, c, c, 3]
                if info.has_audio:
                    audios.append(torch.stack([transforms.eval_audio(w.audio) for w in wins]))
                mid = wins[len(wins) // 2]
                thumbs.append(jpeg_thumbnail(mid.frames[len(mid.frames) // 2]))
                kept.append(st)
                if len(videos) == self.batch_size:
                    flush()
        flush()
        start = np.asarray(kept, np.float32)
        end = np.minimum(start + self.window, duration).astype(np.float32)
        tensors = {k: torch.cat(v) for k, v in out.items()}
        info_out = {"duration": round(float(info.duration), 3), "has_audio": bool(info.has_audio)}
        if readable is not None:
            info_out["readable_until"] = round(float(readable), 3)
        return FileWindows(tensors, start, end, thumbs), info_out


def _stat(path: str) -> tuple[int, int]:
    st = os.stat(path)  # follows symlinks: a file replaced behind a link counts as changed
    return int(st.st_size), int(st.st_mtime_ns)


def _file_id(path: str) -> str:
    return hashlib.sha1(path.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def shown_name(path: str) -> str:
    """A path as text people (and JSON) can hold: bytes that are not UTF-8 become U+FFFD."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def name_fields(path: str) -> dict:
    """``{"path": ...}`` for ``index.json``, lossless for any name the OS allows: a name that is
    not valid UTF-8 (``bad\\xffname.mp4``) is shown with U+FFFD and kept exactly, as the
    base64 of its bytes, under ``path_bytes``."""
    if path == shown_name(path):
        return {"path": path}
    return {"path": shown_name(path), "path_bytes": base64.b64encode(os.fsencode(path)).decode("ascii")}


def stored_path(entry: dict, key: str = "path") -> str:
    """The exact path of an ``index.json`` entry (the inverse of :func:`name_fields`)."""
    raw = entry.get(f"{key}_bytes")
    return os.fsdecode(base64.b64decode(raw)) if raw else entry[key]


def _rel(item: MediaItem, roots: list[str]) -> str:
    """The path shown to people: relative to the root holding it (``shard.tar#member`` for shards)."""
    real = os.path.realpath(item.file)
    member = item.key[len(item.file):] if item.offset is not None else ""
    for r in roots:
        if real.startswith(r.rstrip(os.sep) + os.sep):
            return shown_name(os.path.relpath(real, r) + member)
    return shown_name(os.path.basename(item.file) + member)


def build_index(source, model, out, *, model_path: str | None = None, window: float | None = None,
                hop: float | None = None, batch_size: int = 8, device: str | torch.device = "cpu",
                roots: list[str] | None = None, progress: Progress | None = None) -> dict:
    """Index (or update the index of) ``source`` into the folder ``out``.

    Args:
        source: a folder of videos or a CSV/JSON manifest (see :mod:`vatt.data.index`).
        model: a loaded model; ``model_path`` (recorded for ``vatt serve``) is where it came from.
        window, hop: seconds; defaults: the model's clip length and half of it.
        roots: extra folders files may live in (a manifest's files outside its folder).
        progress: the :mod:`vatt.progress` callable; one unit per file.
    Returns:
        ``{"files", "windows", "embedded", "reused", "removed", "bad", "reasons"}`` for this run.
    """
    from ..data.config import DataConfig
    from ..data.decode import MediaError

    cfg = DataConfig.from_model_config(model.config)
    window = float(window or cfg.clip_seconds)
    hop = float(hop or window / 2)
    if window <= 0 or hop <= 0:
        raise InputError(f"window and hop must be positive seconds, got {window} and {hop}")
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    out = Path(out)
    items, root_list, bad_shards = list_media(str(source), roots)
    model.eval().to(device)
    fingerprint = model_fingerprint(model)
    settings = {"model_fingerprint": fingerprint, "window": window, "hop": hop}

    old, old_meta = None, None
    if (out / INDEX_FILE).is_file():
        try:
            old = WindowIndex(out)
            old_meta = old.meta
        except (InputError, CheckpointError) as e:
            log.warning("the existing index in %s cannot be read (%s); building it again", out, e)
        if old_meta is not None and any(old_meta.get(k) != v for k, v in settings.items()):
            log.info("the model, window or hop changed: indexing every file again")
            old, old_meta = None, None
    old_files = {stored_path(f): (i, f) for i, f in enumerate(old.files)} if old else {}
    old_bad = {stored_path(b): b for b in old_meta.get("bad", [])} if old_meta else {}

    embedder = _Embedder(model, window, hop, batch_size, device)
    files, bad, parts = [], [], []
    stats = {"embedded": 0, "reused": 0, "bad": 0, "reasons": {}}
    for shard in bad_shards:
        size, mtime = _stat(shard)
        bad.append({**name_fields(shard), "size": size, "mtime_ns": mtime, "reason": "bad_shard"})
        stats["bad"] += 1
        stats["reasons"]["bad_shard"] = stats["reasons"].get("bad_shard", 0) + 1
    start_phase(progress, len(items), "indexing", "file")
    for item in items:
        path = item.key
        try:
            size, mtime = _stat(item.file)  # a shard member changes with its shard
        except OSError:
            size, mtime = -1, -1
        reason = None
        if size < 0:
            reason = "missing_file"
        elif not _inside(item.file, root_list):
            reason = "outside_root"
        prev = old_files.get(path)
        if reason is None and prev and (prev[1]["size"], prev[1]["mtime_ns"]) == (size, mtime):
            i, entry = prev
            a, b = entry["rows"]
            parts.append(FileWindows({k: old.tensors[k][a:b].clone() for k in SPACES}, old.start[a:b].copy(),
                                     old.end[a:b].copy(),
                                     [old.thumbnail(r) for r in range(a, b)] if b > a else []))
            files.append({k: v for k, v in entry.items() if k != "rows"})
            stats["reused"] += 1
        elif reason is None and path in old_bad and (old_bad[path]["size"], old_bad[path]["mtime_ns"]) == (size, mtime):
            reason = old_bad[path]["reason"]  # unchanged bad file: not decoded again
        elif reason is None:
            try:
                fw, info = embedder.file(item)
                parts.append(fw)
                entry = {"id": _file_id(path), **name_fields(path), "rel": _rel(item, root_list), "size": size,
                         "mtime_ns": mtime, **info}
                if item.offset is not None:
                    shard = name_fields(item.file)
                    entry.update(file=shard["path"], offset=item.offset, length=item.length)
                    if "path_bytes" in shard:
                        entry["file_bytes"] = shard["path_bytes"]
                files.append(entry)
                stats["embedded"] += 1
            except MediaError as e:
                reason = e.reason
            except Exception as e:  # noqa: BLE001 - a bad file must never end an indexing run
                log.warning("%s: %s: %s", path, type(e).__name__, e)
                reason = "decode_error"
        if reason is not None:
            bad.append({**name_fields(path), "size": size, "mtime_ns": mtime, "reason": reason})
            stats["bad"] += 1
            stats["reasons"][reason] = stats["reasons"].get(reason, 0) + 1
        advance(progress, 1, file=shown_name(os.path.basename(path))[-40:])

    row = 0
    for entry, part in zip(files, parts):
        n = len(part.start)
        entry["rows"] = [row, row + n]
        row += n
    tensors = _stack(parts)
    removed = len(set(old_files) - {stored_path(f) for f in files} - {stored_path(b) for b in bad}) if old else 0
    del old  # release the memory map before old windows files are deleted
    meta = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "model": model_path, **settings,
            "clip_seconds": cfg.clip_seconds, "source": str(source), "roots": root_list,
            "num_windows": row, "files": files, "bad": bad}
    write_index(out, meta, tensors)
    if stats["bad"]:
        log.warning("%d of %d files could not be indexed: %s", stats["bad"], len(items), stats["reasons"])
    return {"files": len(files), "windows": row, "removed": removed, **stats}


def _stack(parts: list[FileWindows]) -> dict[str, torch.Tensor]:
    thumbs = [t for p in parts for t in p.thumbs]
    lengths = np.array([len(t) for t in thumbs], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    file = np.concatenate([np.full(len(p.start), i, np.int32) for i, p in enumerate(parts)] or [np.zeros(0, np.int32)])
    out = {k: torch.cat([p.tensors[k] for p in parts]) if parts else torch.zeros(0, d) for k, d in SPACES.items()}
    out.update({
        "start": torch.from_numpy(np.concatenate([p.start for p in parts] or [np.zeros(0, np.float32)])),
        "end": torch.from_numpy(np.concatenate([p.end for p in parts] or [np.zeros(0, np.float32)])),
        "file": torch.from_numpy(file),
        "thumb_offsets": torch.from_numpy(offsets),
        "thumbs": torch.from_numpy(np.frombuffer(b"".join(thumbs), np.uint8).copy()),
    })
    return out


def write_index(out: str | os.PathLike, meta: dict, tensors: dict[str, torch.Tensor]) -> Path:
    """Write a windows file, then ``index.json`` naming it (both atomically), then drop old windows files."""
    from safetensors.torch import save_file

    from ..atomic_io import atomic_path, atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"windows-{uuid.uuid4().hex[:12]}.safetensors"
    # The JSON is made (and checked to encode) before anything is written: a failure leaves the old
    # index as it was, with no orphan windows file.
    text = json.dumps({**meta, "windows_file": name}, indent=1, ensure_ascii=False)
    text.encode("utf-8")
    with atomic_path(out / name) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"format": INDEX_FORMAT})
    try:
        atomic_write_text(out / INDEX_FILE, text + "\n")
    except BaseException:
        (out / name).unlink(missing_ok=True)
        raise
    for old in out.glob("windows-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)
    return out
