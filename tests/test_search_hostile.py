"""`vatt index` / `vatt serve` against hostile files, indexes, flags and clients (issue 22): odd file
names, truncated media, damaged indexes, slow and misbehaving HTTP clients. Each test names the
defect it pins."""

import base64
import io
import json
import os
import shutil
import socket
import time

import numpy as np
import pytest

import vatt
from vatt.cli.main import main
from vatt.search.engine import SearchEngine
from vatt.search.window_index import INDEX_FILE, WindowIndex, build_index

from test_search_app import Served, _clips, _folder, random_model_dir  # noqa: F401 - a fixture


def _faststart_mp4(data: bytes, tmp_path) -> bytes:
    """The same MP4 with its index (moov) in front, as web video is: a truncated copy still plays."""
    import av

    out = tmp_path / "faststart.mp4"
    with av.open(io.BytesIO(data)) as src, av.open(str(out), "w", format="mp4",
                                                   options={"movflags": "faststart"}) as dst:
        streams = {s.index: dst.add_stream_from_template(s) for s in src.streams}
        for packet in src.demux():
            if packet.dts is None:
                continue
            packet.stream = streams[packet.stream.index]
            dst.mux(packet)
    return out.read_bytes()


def _long_clip(synth_corpus, seconds_each=2.4, n=4) -> bytes:
    """A ~9.6 s MP4 made of ``n`` demo clips one after another."""
    from vatt.data.decode import MediaReader
    from vatt.data.encode import encode_mp4

    frames, audio = [], []
    for clip in _clips(synth_corpus)[:n]:
        with MediaReader(clip) as r:
            w = r.read(0.0, num_frames=int(seconds_each * 25), fps=25, sample_rate=16000,
                       num_samples=int(seconds_each * 16000))
        frames.append(w.frames)
        audio.append(w.audio)
    return encode_mp4(np.concatenate(frames), 25, np.concatenate(audio), 16000)


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- files ------------------------------------------------------------------------------------------------
def test_a_file_name_that_is_not_utf8_is_indexed_and_served(synth_corpus, random_model_dir, tmp_path, capsys):
    """Was: `bad\\xffutf8.mp4` made `vatt index` embed everything, then die in write_index
    (UnicodeEncodeError, exit 1) with no index.json and an orphan windows file."""
    folder = _folder(tmp_path, synth_corpus, n=1)
    odd = os.fsdecode(b"bad\xffutf8.mp4")
    shutil.copy(_clips(synth_corpus)[1], os.path.join(str(folder), odd))
    out = tmp_path / "index"
    code, printed, err = _cli(capsys, "index", folder, "--model", random_model_dir, "--out", out)
    assert code == 0, err
    assert "2 files" in printed and len(list(out.glob("windows-*.safetensors"))) == 1
    index = WindowIndex(out)
    entry = next(f for f in index.files if "path_bytes" in f)
    assert entry["rel"] == "bad\ufffdutf8.mp4"  # readable
    assert base64.b64decode(entry["path_bytes"]) == os.fsencode(os.path.join(str(folder), odd))  # lossless
    served = Served(SearchEngine(index, vatt.load_model(random_model_dir)))
    try:
        status, _, body = served.get(f"/media/{entry['id']}")
        assert status == 200 and body == _clips(synth_corpus)[1].read_bytes()
        status, res = served.json("/api/search?q=a+ball&k=5")
        assert status == 200 and "bad\ufffdutf8.mp4" in {r["path"] for r in res["results"]}
    finally:
        served.close()
    again = build_index(folder, vatt.load_model(random_model_dir), out)  # matched losslessly: reused
    assert (again["reused"], again["embedded"]) == (2, 0)


def test_a_failed_write_keeps_the_old_index_and_leaves_no_orphan(synth_corpus, random_model_dir, tmp_path,
                                                                 monkeypatch):
    """Was: a failure writing index.json left the new windows file behind (6 MB orphan)."""
    import vatt.atomic_io

    folder = _folder(tmp_path, synth_corpus, n=1)
    out = tmp_path / "index"
    model = vatt.load_model(random_model_dir)
    build_index(folder, model, out)
    before = sorted(os.listdir(out)), (out / INDEX_FILE).read_bytes()
    shutil.copy(_clips(synth_corpus)[1], folder / "new.mp4")

    def disk_full(path, text):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(vatt.atomic_io, "atomic_write_text", disk_full)
    with pytest.raises(OSError):
        build_index(folder, model, out)
    assert (sorted(os.listdir(out)), (out / INDEX_FILE).read_bytes()) == before


def test_a_truncated_file_keeps_the_windows_before_the_damage(synth_corpus, random_model_dir, tmp_path):
    """Was: an MP4 cut at 50% (its first half still decodes) was skipped whole as decode_error."""
    data = _faststart_mp4(_long_clip(synth_corpus), tmp_path)
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "whole.mp4").write_bytes(data)
    (folder / "half.mp4").write_bytes(data[: len(data) // 2])
    out = tmp_path / "index"
    stats = build_index(folder, vatt.load_model(random_model_dir), out)
    assert (stats["files"], stats["bad"]) == (2, 0), stats
    index = WindowIndex(out)
    half, whole = sorted(index.files, key=lambda f: f["rel"])
    assert half["rel"] == "half.mp4" and 0 < half["readable_until"] < whole["duration"]
    (a, b), (c, d) = half["rows"], whole["rows"]
    assert 3 <= b - a < d - c  # several windows, fewer than the whole file's
    assert index.end[b - 1] <= half["readable_until"] + 1e-3
    # the windows kept are those of the whole file (same frames; batches of other sizes: fp32 rounding)
    np.testing.assert_allclose(index.tensors["video_vt"][a:b].numpy(), index.tensors["video_vt"][c:c + b - a].numpy(),
                               rtol=1e-4, atol=1e-6)


# -- damaged indexes and bad flags: one line, exit 2 ------------------------------------------------------
def test_a_damaged_index_or_bad_flag_is_one_line_and_exit_2(synth_corpus, random_model_dir, tmp_path, capsys):
    """Was: `unexpected error`, exit 1, for index.json missing keys, a truncated or garbage windows
    file, --port 99999 and --max-upload-mb -1."""
    folder = _folder(tmp_path, synth_corpus, n=1)
    good = tmp_path / "good"
    build_index(folder, vatt.load_model(random_model_dir), good)
    meta = json.loads((good / INDEX_FILE).read_text())
    windows = good / meta["windows_file"]

    def damaged(name, edit_meta=None, windows_bytes=None):
        d = tmp_path / name
        shutil.copytree(good, d)
        if edit_meta:
            m = json.loads((d / INDEX_FILE).read_text())
            edit_meta(m)
            (d / INDEX_FILE).write_text(json.dumps(m))
        if windows_bytes is not None:
            (d / meta["windows_file"]).write_bytes(windows_bytes)
        return d

    data = windows.read_bytes()
    cases = {
        "no files key": damaged("a", lambda m: m.pop("files")),
        "no windows_file key": damaged("b", lambda m: m.pop("windows_file")),
        "file entry without rows": damaged("c", lambda m: m["files"][0].pop("rows")),
        "rows out of range": damaged("d", lambda m: m["files"][0].update(rows=[0, 10**6])),
        "truncated windows": damaged("e", windows_bytes=data[: len(data) // 2]),
        "garbage windows": damaged("f", windows_bytes=b"\xff" * 5000),
        "empty windows": damaged("g", windows_bytes=b""),
        "index.json garbage": damaged("h", lambda m: None),
    }
    (cases["index.json garbage"] / INDEX_FILE).write_bytes(b"\x00{not json")
    for what, d in cases.items():
        code, out, err = _cli(capsys, "serve", d, "--port", "0")
        assert code == 2, (what, code, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and "unexpected" not in err, (what, err)
    for flags, expected in ((["--port", "99999"], "port"), (["--port", "-1"], "port"),
                            (["--max-upload-mb", "-1"], "max-upload-mb"), (["--max-upload-mb", "nan"], "max-upload-mb")):
        code, out, err = _cli(capsys, "serve", good, *flags)
        assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, (flags, err)


# -- hostile clients ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_index(synth_corpus, random_model_dir, tmp_path_factory):
    """Three clips (one with sidecar captions, one a byte-identical copy) and a skipped file."""
    tmp = tmp_path_factory.mktemp("hostile")
    folder = _folder(tmp, synth_corpus, n=2)
    first = _clips(synth_corpus)[0]
    shutil.copy(first, folder / "copy_of_first.mp4")
    (folder / first.name).with_suffix(".srt").write_text("1\n00:00:00,000 --> 00:00:01,500\na red ball bounces\n")
    (folder / "junk.mp4").write_bytes(b"junk")
    out = tmp / "index"
    build_index(folder, vatt.load_model(random_model_dir), out)
    return out


@pytest.fixture
def serve(small_index, random_model_dir):
    """``serve(**limits)`` -> a started server over ``small_index`` (closed after the test)."""
    started = []

    def start(**kw):
        s = Served(SearchEngine(WindowIndex(small_index), vatt.load_model(random_model_dir)), **kw)
        started.append(s)
        return s

    yield start
    for s in started:
        s.close()


def _connect(served, timeout=10.0):
    s = socket.create_connection(("127.0.0.1", served.server.server_port), timeout=timeout)
    return s


def _read_all(sock) -> bytes:
    chunks = []
    while True:
        try:
            c = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not c:
            break
        chunks.append(c)
    return b"".join(chunks)


def _responses(raw: bytes) -> list[tuple[int, dict, bytes]]:
    """Split a stream of HTTP/1.1 responses (each with Content-Length)."""
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        n = int(headers.get("content-length", 0))
        out.append((int(lines[0].split()[1]), headers, rest[:n]))
        raw = rest[n:]
    return out


def test_idle_and_stalled_connections_are_closed_after_the_timeout(serve):
    """Was: no timeout, so half-open connections and stalled uploads held a thread (and the
    declared upload size in memory) until the client left."""
    served = serve(timeout=1.0, max_upload_bytes=1 << 20)
    idle = _connect(served)
    stalled = _connect(served)
    stalled.sendall(b"POST /api/audio HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 500000\r\n\r\n" + b"\x00" * 1000)
    for sock in (idle, stalled):  # the server hangs up long before the client's 10 s timeout
        try:
            while sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
        except socket.timeout:
            pytest.fail("the server kept a stalled connection open")
        sock.close()
    assert served.json("/api/info")[0] == 200


def test_connections_over_the_cap_close_the_idlest_or_get_a_503(serve):
    """Was: every connection got a thread; 4,000 half-open ones held 4,000 threads and, with file
    descriptors exhausted, the server stopped answering. Now at most max_connections are open:
    idle ones make room for new ones, and only busy ones make the server refuse (503)."""
    served = serve(timeout=30.0, max_connections=4, max_uploads=10, max_upload_bytes=1 << 20)
    idle = []
    for _ in range(4):  # half-open: never send a request
        idle.append(_connect(served))
        time.sleep(0.1)  # accepted in this order: idle[0] has waited longest
    time.sleep(0.3)
    for _ in range(3):  # new clients are still answered: the first one closes the longest-idle
        assert served.json("/api/info")[0] == 200  # connection, the next ones reuse its slot
    closed = []
    for s in idle:
        s.settimeout(0.5)
        try:
            closed.append(s.recv(10) == b"")
        except ConnectionResetError:
            closed.append(True)
        except socket.timeout:  # still open
            closed.append(False)
        s.close()
    # The longest-idle goes first; on a loaded machine a client's own closed connection may not be
    # noticed before the next request, and one more idle one makes room: the closed ones are then
    # still the oldest (a prefix), never a newer one before an older.
    assert closed[0] and closed == sorted(closed, reverse=True) and not all(closed), closed
    time.sleep(0.3)
    busy = []  # uploads in progress are busy: they are never closed to make room
    for _ in range(4):
        s = _connect(served)
        s.sendall(b"POST /api/audio HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 900000\r\n\r\nRIFF")
        busy.append(s)
    time.sleep(1.5)  # every upload's headers read (the server sees them busy), also under load
    extra = _connect(served)
    status, headers, body = _responses(_read_all(extra))[0]
    assert status == 503 and headers["retry-after"] == "1" and "busy" in json.loads(body)["error"]
    for s in busy:
        s.close()
    for _ in range(50):  # the slots come back as the server notices the closed connections
        try:
            if served.json("/api/info")[0] == 200:
                break
        except OSError:
            pass
        time.sleep(0.1)
    assert served.json("/api/info")[0] == 200


def test_uploads_over_the_cap_get_a_503(serve):
    """Was: 40 uploads declaring 20 MB and stalling pinned 0.7 GB; now at most max_uploads are
    read at once (and a declared size is not allocated before it arrives)."""
    served = serve(timeout=30.0, max_uploads=2, max_upload_bytes=1 << 20)
    hold = []
    for _ in range(2):
        s = _connect(served)
        s.sendall(b"POST /api/audio HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 900000\r\n\r\nRIFF")
        hold.append(s)
    time.sleep(0.5)
    status, headers, _ = served.get("/api/audio?k=2", data=b"RIFF" + b"\x00" * 100)
    assert status == 503 and headers["Retry-After"] == "2"
    for s in hold:
        s.close()


def test_an_unused_request_body_is_never_parsed_as_a_request(serve, small_index):
    """Was: errors were answered without reading the body, so a keep-alive body was parsed as a
    second request (desync, request smuggling)."""
    served = serve()
    smuggled = b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    s = _connect(served)
    s.sendall(b"GET /no/such/page HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n%s" % (len(smuggled), smuggled)
              + b"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n%s" % (len(smuggled), smuggled)
              + b"GET /thumb/0.jpg HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    answers = _responses(_read_all(s))
    s.close()
    assert [a[0] for a in answers] == [404, 405, 200]  # three requests, no /api/info among them
    assert answers[1][1]["allow"] == "GET, HEAD" and answers[2][2][:2] == b"\xff\xd8"
    # a body too long to drop closes the connection instead
    s = _connect(served)
    s.sendall(b"GET /nothing HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10000000\r\n\r\n" + smuggled)
    answers = _responses(_read_all(s))
    s.close()
    assert [a[0] for a in answers] == [404] and answers[0][1]["connection"] == "close"


def test_methods_ranges_and_cross_site_requests(serve):
    """405 with Allow; 416 with Content-Range: */size; cross-site requests to media, thumbnails and
    the API refused, and CORP same-origin on every answer (was: other sites could embed media and
    POST to /api/audio, and so probe which paths are indexed)."""
    served = serve()
    index = WindowIndex(served.server.RequestHandlerClass.app.index.directory)
    fid, size = index.files[0]["id"], index.files[0]["size"]
    status, headers, _ = served.get("/api/info", data=b"x", headers={"Content-Type": "text/plain"})
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    assert served.get("/api/audio")[0] == 405 and served.get("/api/audio")[1]["Allow"] == "POST"
    req = urllib_request(served, "/api/info", method="DELETE")
    assert req[0] == 405 and req[1]["Allow"] == "GET, HEAD"
    status, headers, _ = served.get(f"/media/{fid}", headers={"Range": f"bytes={size + 5}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{size}"
    cross = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}
    for path in (f"/media/{fid}", "/thumb/0.jpg", "/api/search?q=ball", "/api/info", f"/media/{'0' * 16}"):
        status, headers, body = served.get(path, headers=cross)
        assert status == 403 and "cross-site" in json.loads(body)["error"], path
        status, headers, _ = served.get(path.replace("0" * 16, fid), headers={"Sec-Fetch-Site": "same-origin"})
        assert status == 200 and headers["Cross-Origin-Resource-Policy"] == "same-origin", path
    status, _, _ = served.get("/api/audio?k=1", data=b"RIFF", headers={"Sec-Fetch-Site": "same-site"})
    assert status == 403
    status, _, _ = served.get("/api/audio?k=1", data=b"RIFF", headers={"Origin": "http://evil.example"})
    assert status == 403
    # a link from another site may still open the page itself
    status, _, _ = served.get("/", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"})
    assert status == 200


def urllib_request(served, path, method):
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(served.base + path, method=method), timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_a_client_reset_leaves_no_traceback_on_stderr(serve, capfd):
    """Was: a reset connection printed a 17-line traceback on the server's stderr."""
    served = serve()
    import struct

    for partial in (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n", b"POST /api/audio HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Content-Length: 5000\r\n\r\nRIFF"):
        s = _connect(served)
        s.sendall(partial)
        time.sleep(0.2)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
        s.close()
    time.sleep(0.5)
    assert served.json("/api/info")[0] == 200
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err, err


def test_concurrent_text_queries_are_batched_and_answer_as_alone(serve):
    """Was: one lock around the model, a query at a time (p50 ~2 s under 200 clients)."""
    import threading

    served = serve()
    app = served.server.RequestHandlerClass.app
    queries = [f"a {c} ball bounces" for c in ("red", "green", "blue", "yellow", "purple", "small", "big", "round")]
    alone = {q: served.json(f"/api/search?q={q.replace(' ', '+')}&k=3")[1]["results"] for q in queries}
    calls = []
    original = app.engine.text_many
    app.engine.text_many = lambda batch: calls.append(len(batch)) or original(batch)
    answers = {}
    try:
        with app.model_lock:  # the model is busy: the queries queue up behind it
            threads = [threading.Thread(target=lambda q=q: answers.__setitem__(
                q, served.json(f"/api/search?q={q.replace(' ', '+')}&k=3")[1]["results"])) for q in queries]
            for t in threads:
                t.start()
            for _ in range(100):
                if app.batcher.queue.qsize() >= len(queries) - 1:
                    break
                time.sleep(0.05)
        for t in threads:
            t.join(30)
    finally:
        app.engine.text_many = original
    assert sum(calls) == len(queries) and len(calls) <= 2, calls  # 8 queries in 1-2 forwards
    for q in queries:
        assert [(r["path"], r["start"], r["end"]) for r in answers[q]] == [(r["path"], r["start"], r["end"]) for r in alone[q]]
        assert [r["score"] for r in answers[q]] == pytest.approx([r["score"] for r in alone[q]], abs=1e-4)


# -- what the page needs ----------------------------------------------------------------------------------
def test_answers_flag_unknown_words_and_carry_captions_duplicates_and_skipped_files(serve):
    served = serve()
    status, res = served.json("/api/search?q=zzqx+red+ball+blorf+red&k=10")
    assert status == 200 and res["words"] == {"unknown": ["zzqx", "blorf"], "ignored": []}
    by_path = {}
    for r in res["results"]:
        by_path.setdefault(r["path"], []).append(r)
    first, copy = by_path["retrieval_00000.mp4"][0], by_path["copy_of_first.mp4"][0]
    assert first["content"] == copy["content"] and first["score"] == copy["score"]  # identical clips: one key
    assert first["captions"] and copy["captions"] is None
    status, headers, body = served.get(first["captions"])
    assert status == 200 and headers["Content-Type"].startswith("text/vtt")
    assert body.decode() == "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\na red ball bounces\n"
    status, info = served.json("/api/info")
    assert info["skipped_count"] == 1 and info["skipped"] == [{"path": "junk.mp4", "reason": "not_media"}]


def test_running_out_of_file_descriptors_pauses_accepting_instead_of_spinning(serve, monkeypatch):
    """Was: with file descriptors exhausted, accept() failed at once, again and again (100% CPU),
    and the server stopped answering."""
    import errno
    import socketserver

    served = serve()
    calls = []

    def out_of_descriptors(self):
        calls.append(1)
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(socketserver.TCPServer, "get_request", out_of_descriptors)
    waiting = _connect(served)  # stays in the backlog: the listening socket is readable all along
    time.sleep(1.0)
    monkeypatch.undo()
    assert 3 <= len(calls) <= 100, len(calls)  # a pause after each failure (a spin makes thousands)
    waiting.sendall(b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert _responses(_read_all(waiting))[0][0] == 200  # accepted once descriptors are back
    waiting.close()


def test_an_upload_being_decoded_does_not_hold_up_text_queries(serve, synth_corpus):
    """Decoding an upload (up to 30 s of audio) needs no model: it runs outside the model lock."""
    import threading

    served = serve()
    engine = served.server.RequestHandlerClass.app.engine
    wav = sorted((synth_corpus / "audio_only").glob("*.wav"))[0].read_bytes()
    started, release, order = threading.Event(), threading.Event(), []
    original = engine.decode_audio

    def slow_decode(data, *args, **kwargs):
        started.set()
        release.wait(20)
        order.append("upload decoded")
        return original(data, *args, **kwargs)

    engine.decode_audio = slow_decode
    answers = {}
    upload = threading.Thread(target=lambda: answers.update(audio=served.json("/api/audio?k=2", data=wav)))
    upload.start()
    try:
        assert started.wait(20)
        status, _ = served.json("/api/search?q=a+ball&k=2")
        order.append("text answered")
        assert status == 200
    finally:
        release.set()
        upload.join(30)
        engine.decode_audio = original
    assert order == ["text answered", "upload decoded"] and answers["audio"][0] == 200
