"""One run per run directory: an advisory lock on ``RUN_DIR/.lock`` held for the whole run.

``flock`` locks belong to the open file and die with the process (kill -9, a crashed node's
processes), so a stale lock never blocks a resume. The file records who holds it (pid, host,
start time) so a second ``vatt pretrain`` on the same ``--out`` can say so in one line.

Network file systems: Linux NFS clients (v3 with lockd, v4) implement ``flock`` with the
server's byte-range locks, so the lock holds across nodes there; if the file system refuses
locks (ENOLCK / EOPNOTSUPP, e.g. some Lustre or SMB mounts) we log a warning and run unlocked.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import time
from pathlib import Path

from ..errors import CheckpointError

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class RunDirLocked(CheckpointError):
    """Another process is training in this run directory."""


class RunLock:
    """``with RunLock(run_dir):`` or ``acquire()`` / ``release()``; raises :class:`RunDirLocked`."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunDirLocked(f"{self.path.parent} is in use by another run ({self.holder()}); wait for it to "
                               "finish or stop it, or choose another --out") from None
        except OSError as e:
            os.close(fd)
            if e.errno not in _UNSUPPORTED:
                raise
            log.warning("%s: this file system does not support locks (%s); a second run on the same directory "
                        "would not be stopped", self.path, e.strerror)
            return self
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info).encode())
        self._fd = fd
        return self

    def holder(self) -> str:
        try:
            info = json.loads(self.path.read_text(encoding="utf-8"))
            return f"pid {info['pid']} on host {info['host']}, since {info['since']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "holder unknown"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file releases the lock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
