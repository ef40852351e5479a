"""``vatt serve``: a local web app and JSON API over a search index (standard library only).

Routes (every id comes from a search answer; no parameter is ever a filesystem path):

=====================================  =======================================================
``GET /``                              the page (static files shipped in ``vatt/search/static``)
``GET /static/app.js|style.css``       its script and style sheet
``GET /api/info``                      files, windows, which queries are available, skipped files
``GET /api/search?q=TEXT&k=N``         text -> moments: ``{"results": [...], "took_ms", "words"}``
``GET /api/similar?window=ROW&k=N``    video -> moments ("more like this" on a result)
``POST /api/audio?k=N`` (body: file)   audio file -> moments (size-limited, decoded in memory)
``GET /media/FILE_ID``                 the indexed file, with HTTP range requests (seeking)
``GET /thumb/ROW.jpg``                 a window's thumbnail
``GET /captions/FILE_ID.vtt``          the file's sidecar captions (.srt/.vtt/.json) as WebVTT
=====================================  =======================================================

Each result: ``{"path", "start", "end", "score", "thumbnail", "file", "media", "window", "windows",
"content", "captions"}`` (``path`` relative to its indexed root; ``thumbnail``, ``media`` and
``captions`` are URLs, ``captions`` null without a sidecar; ``window`` is the best window's id for
``/api/similar``; ``content`` is equal for windows with identical embeddings, e.g. copies of one
clip). Add ``&merge=0`` to get single windows instead of merged moments.

Security: binds 127.0.0.1 unless told otherwise, and then accepts only ``localhost`` Host headers
(no DNS rebinding); cross-site requests (``Sec-Fetch-Site``, ``Origin``) are refused except a
navigation to the page, and every answer carries ``Cross-Origin-Resource-Policy: same-origin``, so
other sites can neither embed the media nor probe which files are indexed; files are served only
by id, only when their real path is still inside an indexed root (``..``, absolute paths and
symlinks out of the roots are refused); uploads are limited in size and number and never touch
the disk; every error is one line of JSON with a 4xx status and unexpected failures are a 500
with no stack trace (it goes to the log).

Hostile clients: every socket operation has a timeout (``timeout``, default 20 s: an idle
keep-alive connection, a stalled upload or a reader that stops reading is closed), at most
``max_connections`` are open at once (at the cap the longest-idle one is closed to make room; when
all are busy answering, a new one gets a 503 at once, without a thread), at most
``max_uploads`` uploads are read at once, a request body that is not used is read and dropped
(or the connection closed) so it is never parsed as a request, running out of file descriptors
pauses accepting instead of spinning, and a client that resets its connection costs one debug
line. Concurrent text queries are embedded together (:class:`TextBatcher`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import mimetypes
import os
import queue
import re
import socket
import sys
import threading
import time
from concurrent.futures import Future
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlsplit

from ..errors import InputError, VattError
from .engine import MAX_K, SearchEngine, timed
from .window_index import shown_name, stored_path

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_QUERY_CHARS = 500
TIMEOUT_S = 20.0  # every socket read or write; an idle keep-alive connection is closed after it
MAX_CONNECTIONS = 256  # served at once; each holds a thread
MAX_UPLOADS = 4  # audio uploads read at once (each up to max_upload_bytes of memory)
LISTEN_BACKLOG = 4096  # the kernel caps it at net.core.somaxconn; 64 dropped bursts of 200 (SYN retry: 1 s)
DRAIN_BYTES = 64 * 1024  # an unused request body up to this is read and dropped; a larger one closes
MAX_BATCH = 64  # text queries embedded together
STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/static/style.css": ("style.css", "text/css; charset=utf-8")}
_FILE_ID = re.compile(r"^/media/([0-9a-f]{16})$")
_CAPTIONS = re.compile(r"^/captions/([0-9a-f]{16})\.vtt$")
_THUMB = re.compile(r"^/thumb/([0-9]{1,12})\.jpg$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
GET_ROUTES = {"/api/info", "/api/search", "/api/similar"} | set(STATIC)
CHUNK = 256 * 1024
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")


class HttpError(Exception):
    """An answer to a bad request: status, a one-line message and extra headers."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def _static(name: str) -> bytes:
    return resources.files("vatt.search").joinpath("static", name).read_bytes()


class TextBatcher:
    """Concurrent text queries, embedded and searched together: one thread takes every query
    waiting (up to ``max_batch``) and answers them with one :meth:`SearchEngine.text_many` call,
    so N clients cost about one forward of the text tower, not N behind a lock. No query waits
    on purpose: a batch is whatever arrived while the previous one ran."""

    def __init__(self, engine: SearchEngine, lock: threading.Lock, max_batch: int = MAX_BATCH):
        self.engine, self.lock, self.max_batch = engine, lock, max_batch
        self.queue: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="vatt-text-batcher", daemon=True)
        self.thread.start()

    def search(self, query: str, k: int, merge: bool):
        fut: Future = Future()
        self.queue.put((query, k, merge, fut))
        return fut.result()

    def close(self) -> None:
        self.queue.put(None)

    def _run(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self.queue.put(None)
                    break
                batch.append(item)
            with self.lock:
                try:
                    answers = self.engine.text_many([(q, k, m) for q, k, m, _ in batch])
                except Exception:  # noqa: BLE001 - answer each alone, so one bad query fails alone
                    answers = None
                if answers is None:
                    answers = []
                    for q, k, m, _ in batch:
                        try:
                            answers.append(self.engine.text_many([(q, k, m)])[0])
                        except Exception as e:  # noqa: BLE001 - handed to the waiting request
                            answers.append(e)
            for (_, _, _, fut), answer in zip(batch, answers):
                if isinstance(answer, Exception):
                    fut.set_exception(answer)
                else:
                    fut.set_result(answer)


class SearchApp:
    """Everything the handler needs: the engine, the static files and the limits."""

    def __init__(self, engine: SearchEngine, *, max_upload_bytes: int = MAX_UPLOAD_BYTES, local_only: bool = True,
                 max_uploads: int = MAX_UPLOADS):
        if max_upload_bytes < 1:
            raise InputError(f"the upload limit must be at least 1 byte, got {max_upload_bytes}")
        self.engine, self.index = engine, engine.index
        self.max_upload_bytes, self.local_only = max_upload_bytes, local_only
        self.static = {path: (_static(name), ctype) for path, (name, ctype) in STATIC.items()}
        self.roots = [os.path.realpath(r) for r in self.index.roots]
        self.model_lock = threading.Lock()  # one model call at a time (torch threads are shared)
        self.upload_slots = threading.BoundedSemaphore(max_uploads)
        self.batcher = TextBatcher(engine, self.model_lock) if engine.can_search_text else None
        self._captions: dict[int, str | None] = {}

    # -- helpers ---------------------------------------------------------------------------------
    def result(self, hit) -> dict:
        f = self.index.files[hit.file]
        content = hashlib.sha1(self.index.tensors["video_va"][hit.best].numpy().tobytes()).hexdigest()[:12]
        return {"path": f["rel"], "start": round(hit.start, 3), "end": round(hit.end, 3),
                "score": round(float(hit.score), 4), "thumbnail": f"/thumb/{hit.best}.jpg", "file": f["id"],
                "media": f"/media/{f['id']}", "window": hit.best, "windows": len(hit.rows), "content": content,
                "duration": f.get("duration"),
                "captions": f"/captions/{f['id']}.vtt" if self.captions_path(hit.file) else None}

    def _inside_roots(self, real: str) -> bool:
        return any(real.startswith(r.rstrip(os.sep) + os.sep) for r in self.roots)

    def media_path(self, file_id: str) -> tuple[str, str, int | None, int | None]:
        """``(real path, name for the media type, offset, length)`` of an indexed file; a shard
        member is a byte range of its tar."""
        number = self.index.file_number(file_id)
        if number is None:
            raise HttpError(404, f"unknown file id {file_id}")
        entry = self.index.files[number]
        path = stored_path(entry, "file") if "file" in entry else stored_path(entry)
        real = os.path.realpath(path)
        if not self._inside_roots(real):
            log.warning("refused %s: its real path %s is outside the indexed roots", shown_name(path), shown_name(real))
            raise HttpError(403, "this file is outside the indexed folders")
        if not os.path.isfile(real):
            raise HttpError(404, "this file is no longer on disk (re-run vatt index)")
        if "offset" in entry:
            st = os.stat(real)
            if (st.st_size, st.st_mtime_ns) != (entry["size"], entry["mtime_ns"]):  # offsets would be stale
                raise HttpError(404, "this shard changed since it was indexed (re-run vatt index)")
            return real, stored_path(entry), int(entry["offset"]), int(entry["length"])
        return real, real, None, None

    def captions_path(self, number: int) -> str | None:
        """The real path of a plain file's sidecar captions inside the roots, or None (cached)."""
        if number not in self._captions:
            from ..data.captions import find_sidecar

            entry, found = self.index.files[number], None
            if "offset" not in entry:
                side = find_sidecar(stored_path(entry))
                if side is not None and self._inside_roots(os.path.realpath(side)):
                    found = os.path.realpath(side)
            self._captions[number] = found
        return self._captions[number]

    def captions_vtt(self, file_id: str) -> bytes:
        from ..data.captions import read_captions

        number = self.index.file_number(file_id)
        path = self.captions_path(number) if number is not None else None
        if path is None:
            raise HttpError(404, f"no captions for file id {file_id}")
        try:
            caps = read_captions(path, float(self.index.files[number].get("duration") or 1e9))
        except VattError as e:
            raise HttpError(404, f"the captions of this file cannot be read ({str(e).splitlines()[0]})") from None

        def stamp(t: float) -> str:
            ms = int(round(max(t, 0.0) * 1000))
            return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"

        cues = [f"{stamp(c.start)} --> {stamp(c.end)}\n{c.text.replace('-->', '->')}" for c in caps]
        return ("WEBVTT\n\n" + "\n\n".join(cues) + "\n").encode("utf-8")

    def info(self) -> dict:
        bad = self.index.meta.get("bad", [])
        return {"files": len(self.index.files), "windows": self.index.num_windows,
                "window_seconds": self.index.meta["window"], "hop_seconds": self.index.meta["hop"],
                "model": os.path.basename(str(self.index.meta.get("model") or "")) or None,
                "text_search": self.engine.can_search_text, "audio_search": self.engine.can_search_audio,
                "max_upload_bytes": self.max_upload_bytes, "max_k": MAX_K,
                "skipped": [{"path": shown_name(_relative(str(b.get("path", "?")), self.roots)),
                             "reason": str(b.get("reason", "unknown"))} for b in bad[:1000] if isinstance(b, dict)],
                "skipped_count": len(bad)}


def _relative(path: str, roots: list[str]) -> str:
    for r in roots:
        if path.startswith(r.rstrip(os.sep) + os.sep):
            return os.path.relpath(path, r)
    return os.path.basename(path)


def _whole(raw: str) -> bool:
    return re.fullmatch(r"[0-9]{1,9}", raw) is not None  # ASCII digits only ("²".isdigit() is True)


def _param_k(params: dict) -> int:
    raw = params.get("k", ["20"])[-1]
    if not _whole(raw) or not 1 <= int(raw) <= MAX_K:
        raise HttpError(400, f"k must be a whole number from 1 to {MAX_K}, got {raw[:20]!r}")
    return int(raw)


def _param_merge(params: dict) -> bool:
    raw = params.get("merge", ["1"])[-1]
    if raw not in ("0", "1"):
        raise HttpError(400, f"merge must be 0 or 1, got {raw[:20]!r}")
    return raw == "1"


def _allowed(path: str) -> str | None:
    """The methods a path answers (for 405 ``Allow``), or None for an unknown path."""
    if path == "/api/audio":
        return "POST"
    if path in GET_ROUTES or _THUMB.match(path) or _FILE_ID.match(path) or _CAPTIONS.match(path):
        return "GET, HEAD"
    return None


class Handler(BaseHTTPRequestHandler):
    server_version = "vatt-serve"
    protocol_version = "HTTP/1.1"
    timeout = TIMEOUT_S  # socket timeout of every connection (StreamRequestHandler applies it)
    app: SearchApp  # set on the subclass made by make_server

    # -- plumbing --------------------------------------------------------------------------------
    def version_string(self) -> str:  # no Python version in the Server header
        return self.server_version

    def log_message(self, fmt, *args):  # the access log goes to logging, not stderr
        log.debug("%s %s", self.address_string(), fmt % args)

    def send_error(self, code, message=None, explain=None):  # malformed requests: JSON too
        self._json({"error": message or HTTPStatus(code).phrase}, code, close=True)

    def _headers(self, status: int, ctype: str, length: int, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(length))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'self'; img-src 'self'; media-src 'self'; "
                         "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()

    def _body_length(self) -> int | None:
        """Bytes of request body still unread (None: unknown, e.g. chunked)."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return None
        raw = (self.headers.get("Content-Length") or "0").strip()
        return int(raw) if re.fullmatch(r"[0-9]{1,15}", raw) else None

    def _drop_body(self) -> bool:
        """Read and drop an unread request body, so it is never parsed as the next request;
        False when the connection must close instead (too long, unknown length, or stalled)."""
        left = getattr(self, "_unread", 0)
        if left == 0:
            return True
        if left is None or left > DRAIN_BYTES:
            return False
        try:
            while left > 0:
                chunk = self.rfile.read(min(left, 16384))
                if not chunk:
                    return False
                left -= len(chunk)
        except OSError:
            return False
        self._unread = 0
        return True

    def _json(self, obj, status: int = 200, close: bool = False, extra: dict | None = None) -> None:
        body = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        close = close or not self._drop_body()
        try:
            self._headers(status, "application/json; charset=utf-8", len(body),
                          {"Cache-Control": "no-store", **(extra or {}), **({"Connection": "close"} if close else {})})
            if self.command != "HEAD":
                self.wfile.write(body)
        except (ConnectionError, TimeoutError):
            close = True
        if close:
            self.close_connection = True

    def _check_origin(self, path: str) -> None:
        """Refuse cross-site requests: other pages may link to the app, not use its API or media."""
        site = (self.headers.get("Sec-Fetch-Site") or "").lower()
        navigation = (self.headers.get("Sec-Fetch-Mode") or "").lower() == "navigate" and path in STATIC
        if site and site not in ("same-origin", "none") and not navigation:
            raise HttpError(403, "cross-site requests are refused (open the page itself)")
        origin = self.headers.get("Origin")
        if origin is not None and not navigation:
            host = (self.headers.get("Host") or "").lower()
            if urlsplit(origin).netloc.lower() != host:
                raise HttpError(403, "cross-origin requests are refused (open the page itself)")

    def _guard(self, fn) -> None:
        self._unread = self._body_length()
        self.server.mark(self.connection, busy=True)
        try:
            self._route(fn)
        finally:
            self.server.mark(self.connection, busy=False)

    def _route(self, fn) -> None:
        try:
            if self.app.local_only:
                host = (self.headers.get("Host") or "").lower()
                name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
                if name not in LOCAL_HOSTS:
                    raise HttpError(403, "this server answers only requests for localhost")
            self._check_origin(urlsplit(self.path).path)
            fn()
        except HttpError as e:
            self._json({"error": e.message}, e.status, close=e.status in (411, 413), extra=e.headers)
        except VattError as e:
            self._json({"error": str(e).splitlines()[0] if str(e) else type(e).__name__}, 400)
        except (ConnectionError, TimeoutError):  # the client left or stalled: nothing to answer
            self.close_connection = True
        except Exception:  # noqa: BLE001 - never a stack trace in a response; it goes to the log
            log.exception("error answering %s", self.path)
            self._json({"error": "internal error (see the server log)"}, 500, close=True)
        if self._unread != 0 and not self._drop_body():
            self.close_connection = True

    # -- routes ----------------------------------------------------------------------------------
    def do_GET(self):
        self._guard(self._get)

    def do_HEAD(self):
        self._guard(self._get)

    def do_POST(self):
        self._guard(self._post)

    def _not_allowed(self):
        path = urlsplit(self.path).path
        allowed = _allowed(path)
        if allowed is None:
            raise HttpError(404, f"no such page: {path[:80]}")
        raise HttpError(405, f"{self.command} is not allowed here (allowed: {allowed})", {"Allow": allowed})

    def do_PUT(self):
        self._guard(self._not_allowed)

    do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = do_PUT

    def _send(self, status: int, ctype: str, body: bytes, extra: dict | None = None) -> None:
        self._headers(status, ctype, len(body), extra)
        if self.command != "HEAD":
            self.wfile.write(body)

    def _get(self):
        url = urlsplit(self.path)
        path = url.path
        if path == "/api/audio":
            raise HttpError(405, "send the audio file with POST", {"Allow": "POST"})
        try:
            params = parse_qs(url.query, keep_blank_values=True, strict_parsing=False, max_num_fields=20)
        except ValueError:
            raise HttpError(400, "too many query parameters") from None
        if path in self.app.static:
            body, ctype = self.app.static[path]
            return self._send(200, ctype, body, {"Cache-Control": "no-cache"})
        if path == "/api/info":
            return self._json(self.app.info())
        if path == "/api/search":
            q = params.get("q", [""])[-1].strip()
            if not q:
                raise HttpError(400, "give a query: /api/search?q=a+red+ball+bounces")
            if len(q) > MAX_QUERY_CHARS:
                raise HttpError(400, f"the query is longer than {MAX_QUERY_CHARS} characters")
            k, merge = _param_k(params), _param_merge(params)
            if self.app.batcher is None:
                raise HttpError(400, "text search needs a model with a vocabulary (serve with --model DIR)")
            hits, ms = timed(self.app.batcher.search, q, k, merge)
            return self._json({"results": [self.app.result(h) for h in hits], "took_ms": round(ms, 2),
                               "words": self.app.engine.query_words(q)})
        if path == "/api/similar":
            raw = params.get("window", [""])[-1]
            if not _whole(raw) or int(raw) >= self.app.index.num_windows:
                raise HttpError(404 if _whole(raw) else 400, f"unknown window id {raw[:20]!r}")
            k, merge = _param_k(params), _param_merge(params)
            hits, ms = timed(self.app.engine.similar, int(raw), k, merge)
            return self._json({"results": [self.app.result(h) for h in hits], "took_ms": round(ms, 2)})
        m = _THUMB.match(path)
        if m:
            row = int(m.group(1))
            if row >= self.app.index.num_windows:
                raise HttpError(404, f"unknown window id {row}")
            return self._send(200, "image/jpeg", self.app.index.thumbnail(row), {"Cache-Control": "max-age=3600"})
        m = _CAPTIONS.match(path)
        if m:
            return self._send(200, "text/vtt; charset=utf-8", self.app.captions_vtt(m.group(1)),
                              {"Cache-Control": "no-cache"})
        m = _FILE_ID.match(path)
        if m:
            return self._media(*self.app.media_path(m.group(1)))
        if path.startswith("/media/"):
            raise HttpError(404, "unknown file id (media are addressed by the id a search returns)")
        raise HttpError(404, f"no such page: {path[:80]}")

    def _post(self):
        url = urlsplit(self.path)
        if url.path != "/api/audio":
            self._not_allowed()
        params = parse_qs(url.query, max_num_fields=20)
        k, merge = _param_k(params), _param_merge(params)
        if self._unread is None:
            raise HttpError(411, "send the audio file with a Content-Length (no chunked uploads)")
        if self.headers.get("Content-Length") is None:
            raise HttpError(411, "send the audio file with a Content-Length")
        size = self._unread
        if size > self.app.max_upload_bytes:
            raise HttpError(413, f"the upload is {size} bytes; the limit is {self.app.max_upload_bytes}")
        if size == 0:
            raise HttpError(400, "the upload is empty; send an audio file as the request body")
        if not self.app.upload_slots.acquire(blocking=False):
            raise HttpError(503, "too many uploads at once; try again in a moment", {"Retry-After": "2"})
        try:
            data = bytearray()  # grows with what arrives (a declared size is not allocated up front)
            while len(data) < size:
                chunk = self.rfile.read1(min(CHUNK, size - len(data)))
                if not chunk:
                    self._unread = None  # the client left; nothing to read or answer
                    raise HttpError(400, "the upload ended early")
                data += chunk
                self._unread = size - len(data)
            t0 = time.perf_counter()
            clips = self.app.engine.decode_audio(bytes(data))  # no lock: text queries go on meanwhile
            del data
        finally:
            self.app.upload_slots.release()
        with self.app.model_lock:
            hits = self.app.engine.audio_clips(clips, k, merge)
        ms = (time.perf_counter() - t0) * 1000.0
        self._json({"results": [self.app.result(h) for h in hits], "took_ms": round(ms, 2)})

    def _media(self, real: str, name: str, offset: int | None, length: int | None) -> None:
        size = os.path.getsize(real) if offset is None else length
        base = offset or 0
        ctype = mimetypes.guess_type(shown_name(name))[0] or "application/octet-stream"
        start, end, status = 0, size - 1, 200
        rng = self.headers.get("Range")
        if rng:
            m = _RANGE.match(rng.strip())
            if not m or (not m.group(1) and not m.group(2)):
                raise HttpError(416, f"unsupported range {rng[:40]!r} (one 'bytes=a-b' range)",
                                {"Content-Range": f"bytes */{size}"})
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            else:  # suffix range: the last n bytes
                start = max(0, size - int(m.group(2)))
            if start >= size or start > end:
                raise HttpError(416, f"range {rng[:40]!r} is outside the file ({size} bytes)",
                                {"Content-Range": f"bytes */{size}"})
            status = 206
        length = end - start + 1
        extra = {"Accept-Ranges": "bytes", "Cache-Control": "no-cache"}
        if status == 206:
            extra["Content-Range"] = f"bytes {start}-{end}/{size}"
        self._headers(status, ctype, length, extra)
        if self.command == "HEAD":
            return
        with open(real, "rb") as f:
            f.seek(base + start)
            left = length
            while left > 0:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)


_BUSY_BODY = b'{"error": "the server is busy; try again in a moment"}'
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
         b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY))


class _Server(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` of them, a deep listen backlog, a pause
    instead of a busy loop when file descriptors run out, and no traceback on stderr for clients
    that reset or time out. At the cap, the connection that has waited longest for a request (idle
    keep-alive, half-open, or still sending its headers) is closed to make room; only when every
    connection is busy answering does a new one get a 503 at once."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG
    max_connections = MAX_CONNECTIONS

    def server_activate(self):
        super().server_activate()
        self._slots = threading.BoundedSemaphore(self.max_connections)
        self._conns: dict = {}  # socket -> monotonic time it started waiting for a request; None: busy
        self._conns_lock = threading.Lock()
        self._last_fd_warning = 0.0

    def mark(self, sock, busy: bool) -> None:
        with self._conns_lock:
            if sock in self._conns:
                self._conns[sock] = None if busy else time.monotonic()

    def _evict_idle(self) -> bool:
        with self._conns_lock:
            idle = [(t, id(s), s) for s, t in self._conns.items() if t is not None]
            if not idle:
                return False
            sock = min(idle)[2]
            self._conns[sock] = None  # never picked twice
        try:
            sock.shutdown(socket.SHUT_RDWR)  # its thread reads end-of-stream and exits
        except OSError:
            pass
        return True

    def get_request(self):
        try:
            return super().get_request()
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                # out of descriptors: the listening socket stays readable, so retrying at once
                # spins at 100% CPU; wait for connections to close instead
                now = time.monotonic()
                if now - self._last_fd_warning > 10:
                    log.warning("cannot accept connections: %s (waiting)", e.strerror)
                    self._last_fd_warning = now
                time.sleep(0.05)
            raise

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            if not (self._evict_idle() and self._slots.acquire(timeout=2.0)):
                try:  # every connection is busy: answered from here, without blocking on the client
                    request.setblocking(False)
                    request.send(_BUSY)
                except OSError:
                    pass
                self.shutdown_request(request)
                return
        with self._conns_lock:
            self._conns[request] = time.monotonic()
        try:
            super().process_request(request, client_address)
        except BaseException:
            with self._conns_lock:
                self._conns.pop(request, None)
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._conns_lock:
                self._conns.pop(request, None)
            self._slots.release()

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            log.debug("%s: %s", client_address, exc)
        else:
            log.error("error serving %s", client_address, exc_info=True)

    def server_close(self):
        super().server_close()
        app = getattr(self.RequestHandlerClass, "app", None)
        if app is not None and app.batcher is not None:
            app.batcher.close()


def make_server(engine: SearchEngine, host: str = "127.0.0.1", port: int = 8000, *,
                max_upload_bytes: int = MAX_UPLOAD_BYTES, timeout: float = TIMEOUT_S,
                max_connections: int = MAX_CONNECTIONS, max_uploads: int = MAX_UPLOADS) -> ThreadingHTTPServer:
    """A ready server (call ``serve_forever()``); ``port=0`` picks a free port (``server.server_port``).

    Args:
        timeout: seconds any one read or write of a connection may take (idle keep-alive included).
        max_connections: connections served at once (capped below the process's file limit).
        max_uploads: audio uploads read at once.
    """
    if not 0 <= port <= 65535:
        raise InputError(f"expected a port from 0 to 65535, got {port}")
    if timeout <= 0 or max_connections < 1 or max_uploads < 1:
        raise InputError("timeout, max_connections and max_uploads must be positive")
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft != resource.RLIM_INFINITY:  # leave descriptors for the index, media and the model
            max_connections = max(1, min(max_connections, (soft - 64) // 2))
    except (ImportError, ValueError, OSError):
        pass
    local = host in ("127.0.0.1", "localhost", "::1")
    app = SearchApp(engine, max_upload_bytes=max_upload_bytes, local_only=local, max_uploads=max_uploads)
    handler = type("SearchHandler", (Handler,), {"app": app, "timeout": timeout})
    attrs = {"max_connections": max_connections}
    if ":" in host:  # an IPv6 address
        attrs["address_family"] = socket.AF_INET6
    server_class = type("SearchServer", (_Server,), attrs)
    try:
        return server_class((host, port), handler)
    except OSError as e:
        if app.batcher is not None:
            app.batcher.close()
        raise InputError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
