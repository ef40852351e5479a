"""WebDataset-style tar shards: reading a shard's samples and writing shards.

A sample is a group of tar members sharing a key (video2dataset layout): ``KEY.mp4`` (or another
media suffix), ``KEY.json`` (``{"key", "source", "start", "end", "captions": {"start": [...],
"end": [...], "text": [...]}`` with caption times relative to the clip, optional ``"label"``) and
``KEY.txt`` (the caption sentences, one per line). Shards are plain tar files written with
:mod:`tarfile`; the ``webdataset`` package reads them too (tested) but is not needed.

Shards are read from local files or URLs (:func:`open_shard`): ``https://``, ``pipe:COMMAND``,
and ``s3://`` / ``gs://`` / anything fsspec knows.
"""

from __future__ import annotations

import http.client
import io
import os
import subprocess
import tarfile
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlparse
from urllib.request import url2pathname

from ..errors import DataError, InputError


DEFAULT_MAX_MEMBER_BYTES = 1 << 30  # 1 GiB: far above any clip, far below a tar bomb


class _PipeStream(io.RawIOBase):
    """stdout of ``pipe:COMMAND`` (webdataset's convention); a non-zero exit is an error at EOF."""

    def __init__(self, command: str):
        self.command = command
        self.proc = subprocess.Popen(command, shell=True, stdout=subprocess.PIPE)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self.proc.stdout.readinto(b)
        if n == 0 and self.proc.wait() != 0:
            raise OSError(f"command exited with status {self.proc.returncode}: {self.command}")
        return n

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.stdout.close()
        self.proc.wait()
        super().close()


def open_shard(url: str) -> BinaryIO:
    """A readable binary stream of one shard: a local path, ``file://``, ``http(s)://``,
    ``pipe:COMMAND``, or any URL fsspec knows (``s3://``, ``gs://``, ...; the backend package, e.g.
    ``s3fs`` or ``gcsfs``, must be installed).

    http(s) uses the standard library rather than webdataset's ``curl`` subprocess: no external
    binary, and a dropped connection raises here at once (``IncompleteRead``) instead of at close.
    """
    if url.startswith("pipe:"):
        return io.BufferedReader(_PipeStream(url[5:]), 1 << 16)
    scheme = urlparse(url).scheme.lower()
    if len(scheme) < 2:  # a local path (or a Windows drive letter)
        return open(url, "rb")
    if scheme == "file":
        return open(url2pathname(urlparse(url).path), "rb")
    if scheme in ("http", "https"):
        return urllib.request.urlopen(url, timeout=60)  # noqa: S310 - the user names the URL
    import fsspec

    try:
        return fsspec.open(url, "rb").open()
    except ImportError as e:
        raise InputError(f"cannot read {url}: {e} (pip install the fsspec backend for '{scheme}://')") from None


def check_url_scheme(url: str) -> None:
    """Fail early, in the main process, when ``url`` needs an fsspec backend that is missing."""
    scheme = urlparse(url).scheme.lower()
    if url.startswith("pipe:") or len(scheme) < 2 or scheme in ("file", "http", "https"):
        return
    import fsspec

    try:
        fsspec.get_filesystem_class(scheme)
    except (ImportError, ValueError) as e:
        raise InputError(f"cannot read {url}: {e} (shards from '{scheme}://' go through fsspec and its backend "
                         "package, e.g. s3fs or gcsfs)") from None


def iter_tar_samples(path: str, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> Iterator[dict]:
    """Group consecutive members of a tar by key: yields ``{"__key__", "__shard__", ext: bytes}``.

    ``path`` is anything :func:`open_shard` opens. A member larger than ``max_member_bytes`` is
    never read into memory (the stream skips over it); its sample comes back as
    ``{"__key__", "__shard__", "__too_large__": member name}`` for the caller to count. A truncated
    or corrupt tar, or a dropped connection, ends the iteration with a :class:`DataError`.

    Our own loop rather than webdataset's ``tar_file_iterator``: that one reads every member
    whole before a caller can look at its size, which is what a tar bomb exploits.
    """
    current: dict | None = None
    try:
        with open_shard(path) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                name = os.path.basename(member.name)
                if "." not in name:
                    continue
                key, ext = name.split(".", 1)
                key = os.path.join(os.path.dirname(member.name), key)
                if current is not None and current["__key__"] != key:
                    yield current
                    current = None
                if current is None:
                    current = {"__key__": key, "__shard__": path}
                if member.size > max_member_bytes:
                    current["__too_large__"] = f"{member.name}: {member.size} bytes > {max_member_bytes}"
                    continue
                current[ext.lower()] = tar.extractfile(member).read()
                tar.members = []  # a stream of millions of members must not keep them all
    except (tarfile.TarError, OSError, EOFError, http.client.HTTPException, zlib.error) as e:
        if current is not None:
            yield current
        raise DataError(f"{path}: bad_shard ({type(e).__name__}: {e})") from None
    if current is not None:
        yield current


class ShardWriter:
    """Writes samples into ``out/shard-NNNNN.tar`` with at most ``max_count`` samples each.

    Each shard is written to a temporary file and renamed when complete (atomic); member times are
    fixed so the same input gives byte-identical shards. (``webdataset.TarWriter`` can fix the
    time too, but the atomic rename and shard rotation would still be ours, and it would make
    webdataset a runtime dependency for what ``tarfile`` does in a dozen lines; the test extra
    checks that webdataset reads what we write.)
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
