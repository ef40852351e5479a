"""``vatt serve``: a local web app and JSON API over a search index (standard library only).

Routes (every id comes from a search answer; no parameter is ever a filesystem path):

=====================================  =======================================================
``GET /``                              the page (static files shipped in ``vatt/search/static``)
``GET /static/app.js|style.css``       its script and style sheet
``GET /api/info``                      files, windows, which queries are available
``GET /api/search?q=TEXT&k=N``         text -> moments: ``{"results": [...], "took_ms"}``
``GET /api/similar?window=ROW&k=N``    video -> moments ("more like this" on a result)
``POST /api/audio?k=N`` (body: file)   audio file -> moments (size-limited, decoded in memory)
``GET /media/FILE_ID``                 the indexed file, with HTTP range requests (seeking)
``GET /thumb/ROW.jpg``                 a window's thumbnail
=====================================  =======================================================

Each result: ``{"path", "start", "end", "score", "thumbnail", "file", "media", "window", "windows"}``
(``path`` relative to its indexed root; ``thumbnail`` and ``media`` are URLs; ``window`` is the
best window's id for ``/api/similar``). Add ``&merge=0`` to get single windows instead of merged
moments.

Security: binds 127.0.0.1 unless told otherwise, and then accepts only ``localhost`` Host headers
(no DNS rebinding); files are served only by id, only when their real path is still inside an
indexed root (``..``, absolute paths and symlinks out of the roots are refused); uploads are
limited in size and never touch the disk; every error is one line of JSON with a 4xx status and
unexpected failures are a 500 with no stack trace (it goes to the log).
"""

from __future__ import annotations

import json
import logging
import mimetypes
import os
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlsplit

from ..errors import VattError
from .engine import MAX_K, SearchEngine, timed
from .window_index import stored_path

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_QUERY_CHARS = 500
STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/static/style.css": ("style.css", "text/css; charset=utf-8")}
_FILE_ID = re.compile(r"^/media/([0-9a-f]{16})$")
_THUMB = re.compile(r"^/thumb/([0-9]{1,12})\.jpg$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
CHUNK = 256 * 1024
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")


class HttpError(Exception):
    """An answer to a bad request: status and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _static(name: str) -> bytes:
    return resources.files("vatt.search").joinpath("static", name).read_bytes()


class SearchApp:
    """Everything the handler needs: the engine, the static files and the limits."""

    def __init__(self, engine: SearchEngine, *, max_upload_bytes: int = MAX_UPLOAD_BYTES, local_only: bool = True):
        self.engine, self.index = engine, engine.index
        self.max_upload_bytes, self.local_only = max_upload_bytes, local_only
        self.static = {path: (_static(name), ctype) for path, (name, ctype) in STATIC.items()}
        self.roots = [os.path.realpath(r) for r in self.index.roots]
        self.model_lock = threading.Lock()  # one query embedding at a time (torch threads are shared)

    # -- helpers ---------------------------------------------------------------------------------
    def result(self, hit) -> dict:
        f = self.index.files[hit.file]
        return {"path": f["rel"], "start": round(hit.start, 3), "end": round(hit.end, 3),
                "score": round(hit.score, 4), "thumbnail": f"/thumb/{hit.best}.jpg", "file": f["id"],
                "media": f"/media/{f['id']}", "window": hit.best, "windows": len(hit.rows)}

    def media_path(self, file_id: str) -> tuple[str, str, int | None, int | None]:
        """``(real path, name for the media type, offset, length)`` of an indexed file; a shard
        member is a byte range of its tar."""
        number = self.index.file_number(file_id)
        if number is None:
            raise HttpError(404, f"unknown file id {file_id}")
        entry = self.index.files[number]
        path = stored_path(entry, "file") if "file" in entry else stored_path(entry)
        real = os.path.realpath(path)
        if not any(real.startswith(r.rstrip(os.sep) + os.sep) for r in self.roots):
            log.warning("refused %s: its real path %s is outside the indexed roots", path, real)
            raise HttpError(403, "this file is outside the indexed folders")
        if not os.path.isfile(real):
            raise HttpError(404, "this file is no longer on disk (re-run vatt index)")
        if "offset" in entry:
            st = os.stat(real)
            if (st.st_size, st.st_mtime_ns) != (entry["size"], entry["mtime_ns"]):  # offsets would be stale
                raise HttpError(404, "this shard changed since it was indexed (re-run vatt index)")
            return real, stored_path(entry), int(entry["offset"]), int(entry["length"])
        return real, real, None, None

    def info(self) -> dict:
        return {"files": len(self.index.files), "windows": self.index.num_windows,
                "window_seconds": self.index.meta["window"], "hop_seconds": self.index.meta["hop"],
                "model": os.path.basename(str(self.index.meta.get("model") or "")) or None,
                "text_search": self.engine.can_search_text, "audio_search": self.engine.can_search_audio,
                "max_upload_bytes": self.max_upload_bytes}


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


class Handler(BaseHTTPRequestHandler):
    server_version = "vatt-serve"
    protocol_version = "HTTP/1.1"
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
        self.send_header("Content-Security-Policy",
                         "default-src 'self'; img-src 'self'; media-src 'self'; object-src 'none'; base-uri 'none'")
        self.send_header("Referrer-Policy", "no-referrer")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()

    def _json(self, obj, status: int = 200, close: bool = False) -> None:
        body = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        try:
            self._headers(status, "application/json; charset=utf-8", len(body),
                          {"Cache-Control": "no-store", **({"Connection": "close"} if close else {})})
            if self.command != "HEAD":
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        if close:
            self.close_connection = True

    def _guard(self, fn) -> None:
        try:
            if self.app.local_only:
                host = (self.headers.get("Host") or "").lower()
                name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
                if name not in LOCAL_HOSTS:
                    raise HttpError(403, "this server answers only requests for localhost")
            fn()
        except HttpError as e:
            self._json({"error": e.message}, e.status, close=e.status in (411, 413))
        except VattError as e:
            self._json({"error": str(e).splitlines()[0] if str(e) else type(e).__name__}, 400)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception:  # noqa: BLE001 - never a stack trace in a response; it goes to the log
            log.exception("error answering %s", self.path)
            self._json({"error": "internal error (see the server log)"}, 500, close=True)

    # -- routes ----------------------------------------------------------------------------------
    def do_GET(self):
        self._guard(self._get)

    def do_HEAD(self):
        self._guard(self._get)

    def do_POST(self):
        self._guard(self._post)

    def _get(self):
        url = urlsplit(self.path)
        path = url.path
        try:
            params = parse_qs(url.query, keep_blank_values=True, strict_parsing=False, max_num_fields=20)
        except ValueError:
            raise HttpError(400, "too many query parameters") from None
        if path in self.app.static:
            body, ctype = self.app.static[path]
            self._headers(200, ctype, len(body), {"Cache-Control": "no-cache"})
            if self.command != "HEAD":
                self.wfile.write(body)
            return
        if path == "/api/info":
            return self._json(self.app.info())
        if path == "/api/search":
            q = params.get("q", [""])[-1].strip()
            if not q:
                raise HttpError(400, "give a query: /api/search?q=a+red+ball+bounces")
            if len(q) > MAX_QUERY_CHARS:
                raise HttpError(400, f"the query is longer than {MAX_QUERY_CHARS} characters")
            k, merge = _param_k(params), _param_merge(params)
            with self.app.model_lock:
                hits, ms = timed(self.app.engine.text, q, k, merge)
            return self._json({"results": [self.app.result(h) for h in hits], "took_ms": round(ms, 2)})
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
            body = self.app.index.thumbnail(row)
            self._headers(200, "image/jpeg", len(body), {"Cache-Control": "max-age=3600"})
            if self.command != "HEAD":
                self.wfile.write(body)
            return
        m = _FILE_ID.match(path)
        if m:
            return self._media(*self.app.media_path(m.group(1)))
        if path.startswith("/media/"):
            raise HttpError(404, "unknown file id (media are addressed by the id a search returns)")
        raise HttpError(404, f"no such page: {path[:80]}")

    def _post(self):
        url = urlsplit(self.path)
        if url.path != "/api/audio":
            raise HttpError(404, f"no such endpoint: POST {url.path[:80]}")
        params = parse_qs(url.query, max_num_fields=20)
        k, merge = _param_k(params), _param_merge(params)
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            raise HttpError(411, "send the audio file with a Content-Length (no chunked uploads)")
        raw = self.headers.get("Content-Length")
        if raw is None or not re.fullmatch(r"[0-9]{1,15}", raw.strip()):
            raise HttpError(411, "send the audio file with a Content-Length")
        size = int(raw)
        if size > self.app.max_upload_bytes:
            raise HttpError(413, f"the upload is {size} bytes; the limit is {self.app.max_upload_bytes}")
        if size == 0:
            raise HttpError(400, "the upload is empty; send an audio file as the request body")
        data = self.rfile.read(size)
        if len(data) != size:
            raise HttpError(400, "the upload ended early")
        with self.app.model_lock:
            hits, ms = timed(self.app.engine.audio, data, k, merge)
        self._json({"results": [self.app.result(h) for h in hits], "took_ms": round(ms, 2)})

    def _media(self, real: str, name: str, offset: int | None, length: int | None) -> None:
        size = os.path.getsize(real) if offset is None else length
        base = offset or 0
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        start, end, status = 0, size - 1, 200
        rng = self.headers.get("Range")
        if rng:
            m = _RANGE.match(rng.strip())
            if not m or (not m.group(1) and not m.group(2)):
                raise HttpError(416, f"unsupported range {rng[:40]!r} (one 'bytes=a-b' range)")
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            else:  # suffix range: the last n bytes
                start = max(0, size - int(m.group(2)))
            if start >= size or start > end:
                self._json({"error": f"range {rng[:40]!r} is outside the file ({size} bytes)"}, 416)
                return
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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64


def make_server(engine: SearchEngine, host: str = "127.0.0.1", port: int = 8000, *,
                max_upload_bytes: int = MAX_UPLOAD_BYTES) -> ThreadingHTTPServer:
    """A ready server (call ``serve_forever()``); ``port=0`` picks a free port (``server.server_port``)."""
    local = host in ("127.0.0.1", "localhost", "::1")
    app = SearchApp(engine, max_upload_bytes=max_upload_bytes, local_only=local)
    handler = type("SearchHandler", (Handler,), {"app": app})
    server_class = _Server
    if ":" in host:  # an IPv6 address
        import socket

        server_class = type("_Server6", (_Server,), {"address_family": socket.AF_INET6})
    try:
        return server_class((host, port), handler)
    except OSError as e:
        from ..errors import InputError

        raise InputError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
