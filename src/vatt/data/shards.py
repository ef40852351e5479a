"""WebDataset-style tar shards: reading a shard's samples and writing shards.

A sample is a group of tar members sharing a key (video2dataset layout): ``KEY.mp4`` (or another
media suffix), ``KEY.json`` (``{"key", "source", "start", "end", "captions": {"start": [...],
"end": [...], "text": [...]}`` with caption times relative to the clip, optional ``"label"``) and
``KEY.txt`` (the caption sentences, one per line). Shards are plain tar files written with
:mod:`tarfile`; the ``webdataset`` package reads them too but is not needed.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import DataError, InputError


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
