"""`vatt index` / `vatt serve`: the window index (incremental = fresh), exact top-k and moment
merging, ranking with a trained model, and the server's answers to bad requests."""

import json
import os
import shutil
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest
import torch

import vatt
from vatt.cli.main import main
from vatt.search.engine import SearchEngine, merge_windows, top_k
from vatt.search.window_index import INDEX_FILE, SPACES, WindowIndex, build_index, window_starts
from vatt.search.server import make_server


# -- helpers ------------------------------------------------------------------------------------------
def _clips(synth_corpus):
    return sorted((synth_corpus / "retrieval").glob("*.mp4"))


def _folder(tmp_path, synth_corpus, n=3, name="videos"):
    folder = tmp_path / name
    folder.mkdir()
    for clip in _clips(synth_corpus)[:n]:
        shutil.copy(clip, folder / clip.name)
    return folder


def _same_index(a, b):
    """Two index folders hold the same index: same files/bad/settings and identical tensors."""
    ma = json.loads((a / INDEX_FILE).read_text())
    mb = json.loads((b / INDEX_FILE).read_text())
    for m in (ma, mb):
        m.pop("windows_file")
    assert ma == mb
    ta, tb = WindowIndex(a).tensors, WindowIndex(b).tensors
    assert set(ta) == set(tb)
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k


class Served:
    """A server on a free port in a background thread, with a small HTTP client."""

    def __init__(self, engine, **kw):
        self.server = make_server(engine, "127.0.0.1", 0, **kw)
        self.base = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def get(self, path, data=None, headers=None):
        req = urllib.request.Request(self.base + path, data=data, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def json(self, path, **kw):
        status, headers, body = self.get(path, **kw)
        return status, json.loads(body)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def random_model_dir(synth_tokenizer, tmp_path_factory):
    out = tmp_path_factory.mktemp("random_model") / "model"
    vatt.create_model("tiny", vocab=synth_tokenizer).save_pretrained(out)
    return out


# -- windows, top-k, merging --------------------------------------------------------------------------
def test_windows_cover_the_file_every_hop():
    assert window_starts(0.5, 0.8, 0.4) == [0.0]  # shorter than a window: one (padded) window
    assert window_starts(2.0, 0.8, 0.4) == pytest.approx([0.0, 0.4, 0.8, 1.2])  # last one ends at 2.0
    starts = window_starts(2.5, 0.8, 0.4)
    assert starts[:-1] == pytest.approx([0.0, 0.4, 0.8, 1.2, 1.6]) and starts[-1] == pytest.approx(1.7)  # tail


def test_top_k_equals_brute_force_with_ties():
    g = torch.Generator().manual_seed(0)
    m = torch.nn.functional.normalize(torch.randn(200, 16, generator=g), dim=1)
    m[150] = m[10]  # exact ties: the lower index comes first
    m[60] = m[10]
    q = torch.nn.functional.normalize(torch.randn(4, 16, generator=g), dim=1)
    q[0] = m[10]
    scores, idx = top_k(m, q, 7)
    sim = q @ m.t()
    for i in range(4):  # reference: sort by (score desc, index asc)
        ref = sorted(range(200), key=lambda j: (-float(sim[i, j]), j))[:7]
        assert idx[i].tolist() == ref
        torch.testing.assert_close(scores[i], sim[i, ref])
    assert idx[0, :3].tolist() == [10, 60, 150]
    assert top_k(m, q[:1], 2)[1].tolist() == [[10, 60]]  # a tie at the k-th place: the lower index
    assert top_k(m, q[:1], 1000)[1].shape == (1, 200)


def test_neighbouring_windows_merge_into_one_moment():
    # file 0: windows 0..5 every 0.4 s (0.8 s long) and 8 at 4.0 s; file 1: windows 6..7
    file = np.array([0, 0, 0, 0, 0, 0, 1, 1, 0])
    start = np.array([0.0, 0.4, 0.8, 1.2, 1.6, 2.0, 0.0, 0.4, 4.0], np.float32)
    end = start + 0.8
    scores = {2: 0.90, 3: 0.88, 6: 0.80, 7: 0.79, 1: 0.70, 5: 0.60, 4: 0.50, 8: 0.3, 0: 0.1}
    rows = sorted(scores, key=lambda r: -scores[r])
    s = [scores[r] for r in rows]
    hits = merge_windows(rows, s, file, start, end, k=10, margin=0.05)
    # 2 and 3 merge (0.88 is within 0.05 of 0.90), so do 6 and 7 in file 1; 1, 4 (overlapping),
    # 5 and 0 (touching) are far below the hit beside them: suppressed; 8 is apart: its own moment
    assert [(h.file, h.start, h.end, h.best, h.rows, h.score) for h in hits] == [
        (0, pytest.approx(0.8), pytest.approx(2.0), 2, [2, 3], 0.90), (1, 0.0, pytest.approx(1.2), 6, [6, 7], 0.80),
        (0, 4.0, pytest.approx(4.8), 8, [8], 0.3)]
    assert [h.best for h in merge_windows(rows, s, file, start, end, k=2, margin=0.05)] == [2, 6]  # k caps
    wide = merge_windows(rows, s, file, start, end, k=10, margin=0.25)  # 1 joins too (0.70 >= 0.90 - 0.25)
    assert [(h.start, h.end, h.rows) for h in wide][0] == (pytest.approx(0.4), pytest.approx(2.0), [1, 2, 3])
    singles = merge_windows(rows, s, file, start, end, k=3, margin=None)
    assert [h.best for h in singles] == [2, 3, 6]
    # "more like this": the moment holding the query window is left out
    assert [h.best for h in merge_windows(rows, s, file, start, end, 10, 0.05, exclude={3})] == [6, 8]


# -- the index -------------------------------------------------------------------------------------------
def test_index_rows_thumbnails_and_bad_files(synth_corpus, random_model_dir, tmp_path, capsys):
    folder = _folder(tmp_path, synth_corpus, n=2)
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    (folder / "empty.mkv").write_bytes(b"")
    outside = tmp_path / "private.mp4"
    shutil.copy(_clips(synth_corpus)[2], outside)
    os.symlink(outside, folder / "link.mp4")  # a symlink out of the indexed folder
    out = tmp_path / "index"
    assert main(["index", str(folder), "--model", str(random_model_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2 files" in printed and "3 files skipped" in printed and "outside_root 1" in printed
    idx = WindowIndex(out)
    assert [f["rel"] for f in idx.files] == [c.name for c in _clips(synth_corpus)[:2]]
    assert {b["reason"] for b in idx.meta["bad"]} >= {"outside_root", "empty_file"}
    assert idx.meta["window"] == 0.8 and idx.meta["hop"] == 0.4  # the tiny model's clip, half of it
    for n, f in enumerate(idx.files):
        a, b = f["rows"]
        assert b - a == len(window_starts(f["duration"], 0.8, 0.4))
        assert (idx.file[a:b] == n).all() and idx.start[a] == 0.0
        assert idx.end[b - 1] == pytest.approx(f["duration"], abs=1e-3)
    for name, dim in SPACES.items():
        x = idx.tensors[name]
        assert x.shape == (idx.num_windows, dim)
        torch.testing.assert_close(x.norm(dim=1), torch.ones(idx.num_windows))  # unit vectors (all have audio)
    assert all(idx.thumbnail(r)[:2] == b"\xff\xd8" for r in range(idx.num_windows))  # JPEG
    assert len({idx.thumbnail(r) for r in range(idx.num_windows)}) > idx.num_windows // 2  # not one image


def test_incremental_index_equals_a_fresh_run(synth_corpus, random_model_dir, tmp_path):
    clips = _clips(synth_corpus)
    folder = _folder(tmp_path, synth_corpus, n=3)
    (folder / "bad.mp4").write_bytes(b"junk")
    model = vatt.load_model(random_model_dir)
    inc = tmp_path / "incremental"
    first = build_index(folder, model, inc)
    assert (first["embedded"], first["bad"]) == (3, 1)
    # add one, change one (other content, so other size), remove one, leave one
    shutil.copy(clips[3], folder / "new.mp4")
    shutil.copy(clips[4], folder / clips[1].name)
    (folder / clips[2].name).unlink()
    again = build_index(folder, model, inc)
    assert (again["embedded"], again["reused"], again["removed"], again["bad"]) == (2, 1, 1, 1)
    fresh = tmp_path / "fresh"
    build_index(folder, model, fresh)
    _same_index(inc, fresh)
    assert len(list(inc.glob("windows-*.safetensors"))) == 1  # the old windows file is gone
    # nothing changed: everything reused, same index again
    assert build_index(folder, model, inc)["embedded"] == 0
    _same_index(inc, fresh)


# -- ranking with a trained model -------------------------------------------------------------------------
@pytest.mark.slow
def test_a_clip_ranks_first_for_its_own_caption(memorised_model, synth_corpus, tmp_path):
    model_dir, captions, keys = memorised_model
    out = tmp_path / "index"
    assert main(["index", str(synth_corpus / "retrieval"), "--model", str(model_dir), "--out", str(out)]) == 0
    served = Served(SearchEngine(WindowIndex(out), vatt.load_model(model_dir)))
    try:
        ranks = []
        for caption, key in zip(captions, keys):
            status, res = served.json(f"/api/search?q={urllib.parse.quote(caption)}&k=10")
            assert status == 200 and res["took_ms"] >= 0
            paths = [r["path"] for r in res["results"]]
            ranks.append(paths.index(os.path.basename(key.split("@")[0])) + 1)
            r = res["results"][0]
            assert set(r) >= {"path", "start", "end", "score", "thumbnail"} and 0 <= r["start"] < r["end"]
        assert sum(r == 1 for r in ranks) >= len(ranks) - 1 and max(ranks) <= 2, ranks
    finally:
        served.close()


@pytest.mark.slow
def test_moments_point_at_the_right_half_of_a_two_part_clip(memorised_model, synth_corpus, tmp_path):
    from vatt.data.decode import MediaReader
    from vatt.data.encode import encode_mp4

    model_dir, captions, keys = memorised_model
    fps, rate = 25, 16000
    frames, audio, durations = [], [], []
    for key in keys[:2]:
        with MediaReader(key.split("@")[0]) as r:
            d = r.info.duration
            w = r.read(0.0, num_frames=int(d * fps), fps=fps, sample_rate=rate, num_samples=int(d * fps) * rate // fps)
        frames.append(w.frames)
        audio.append(w.audio)
        durations.append(int(d * fps) / fps)
    folder = tmp_path / "long"
    folder.mkdir()
    (folder / "two_halves.mp4").write_bytes(encode_mp4(np.concatenate(frames), fps, np.concatenate(audio), rate))
    out = tmp_path / "index"
    model = vatt.load_model(model_dir)
    build_index(folder, model, out)
    engine = SearchEngine(WindowIndex(out), model)
    cut = durations[0]
    halves = [(0.0, cut), (cut, cut + durations[1])]
    for caption, (lo, hi) in zip(captions[:2], halves):
        best = engine.text(caption, k=1, merge=False)[0]  # the single best window
        centre = (best.start + best.end) / 2
        assert lo <= centre <= hi, (caption, best, halves)
        moment = engine.text(caption, k=1)[0]  # merged: still in that half (give or take a window)
        assert lo - 0.8 <= moment.start and moment.end <= hi + 0.8, (caption, moment, halves)


# -- the server: media, errors, security ------------------------------------------------------------------
@pytest.fixture(scope="module")
def served_random(synth_corpus, random_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("served")
    folder = _folder(tmp, synth_corpus, n=3)
    outside = tmp / "secret.mp4"
    shutil.copy(_clips(synth_corpus)[3], outside)
    out = tmp / "index"
    build_index(folder, vatt.load_model(random_model_dir), out)
    index = WindowIndex(out)
    # after indexing, one indexed file is replaced by a symlink out of the folder
    swapped = index.files[2]["path"]
    os.unlink(swapped)
    os.symlink(outside, swapped)
    served = Served(SearchEngine(index, vatt.load_model(random_model_dir)), max_upload_bytes=256 * 1024)
    yield served, index
    served.close()


def test_media_are_served_with_range_requests(served_random):
    served, index = served_random
    f = index.files[0]
    data = open(f["path"], "rb").read()
    status, headers, body = served.get(f"/media/{f['id']}")
    assert status == 200 and body == data and headers["Accept-Ranges"] == "bytes" and headers["Content-Type"] == "video/mp4"
    status, headers, body = served.get(f"/media/{f['id']}", headers={"Range": "bytes=100-1099"})
    assert status == 206 and body == data[100:1100] and headers["Content-Range"] == f"bytes 100-1099/{len(data)}"
    status, _, body = served.get(f"/media/{f['id']}", headers={"Range": "bytes=1000-"})
    assert status == 206 and body == data[1000:]
    status, _, body = served.get(f"/media/{f['id']}", headers={"Range": "bytes=-500"})
    assert status == 206 and body == data[-500:]
    status, _, body = served.get("/thumb/0.jpg")
    assert status == 200 and body == index.thumbnail(0)
    status, _, page = served.get("/")
    assert status == 200 and b"/static/app.js" in page
    assert served.get("/static/app.js")[0] == 200 and served.get("/static/style.css")[0] == 200


def _raw(served, request: bytes) -> tuple[int, bytes]:
    """Send raw bytes, return (status, body) of the answer."""
    with socket.create_connection(("127.0.0.1", served.server.server_port), timeout=30) as s:
        s.sendall(request)
        chunks = []
        while True:
            try:
                c = s.recv(65536)
            except ConnectionResetError:
                break
            if not c:
                break
            chunks.append(c)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_bad_requests_get_a_one_line_json_error_and_the_server_keeps_serving(served_random):
    served, index = served_random
    fid = index.files[0]["id"]
    swapped = index.files[2]["id"]
    big_enough = b"RIFF" + b"\x00" * (300 * 1024)
    cases = [  # (request path, body, headers, expected status)
        ("/api/search", None, {}, 400),  # no query
        ("/api/search?q=", None, {}, 400),
        ("/api/search?q=ball&k=0", None, {}, 400),
        ("/api/search?q=ball&k=abc", None, {}, 400),
        ("/api/search?q=ball&k=99999", None, {}, 400),
        ("/api/search?q=ball&k=%C2%B2", None, {}, 400),  # a Unicode digit
        ("/api/search?q=%ff%fe&k=1e3", None, {}, 400),
        ("/api/search?q=ball&merge=yes", None, {}, 400),
        ("/api/search?q=" + "a" * 600, None, {}, 400),
        ("/api/similar?window=-1", None, {}, 400),
        ("/api/similar?window=%C2%B2", None, {}, 400),
        ("/api/similar?window=999999", None, {}, 404),  # unknown window id
        ("/thumb/999999.jpg", None, {}, 404),
        ("/media/0123456789abcdef", None, {}, 404),  # unknown file id
        ("/media/../index/index.json", None, {}, 404),  # traversal
        ("/media/%2e%2e%2f%2e%2e%2fetc%2fpasswd", None, {}, 404),
        ("/media//etc/passwd", None, {}, 404),  # absolute path
        ("/static/../../index.json", None, {}, 404),
        ("/static/%2e%2e/index.html", None, {}, 404),
        (f"/media/{swapped}", None, {}, 403),  # symlink out of the indexed folder
        (f"/media/{fid}", None, {"Range": "bytes=99999999-"}, 416),
        (f"/media/{fid}", None, {"Range": "lines=1-2"}, 416),
        ("/api/audio?k=5", big_enough, {}, 413),  # over the 256 KB limit of this server
        ("/api/audio?k=5", b"not audio at all", {}, 400),
        ("/api/audio?k=5", b"", {}, 400),
        ("/api/audio?k=zz", b"x", {}, 400),
        ("/api/nothing", None, {}, 404),
        ("/api/info", None, {"Host": "attacker.example"}, 403),  # DNS rebinding
    ]
    for path, body, headers, expected in cases:
        status, _, raw = served.get(path, data=body, headers=headers)
        assert status == expected, (path, status, raw[:200])
        text = raw.decode()
        assert "\n" not in text.strip() and "Traceback" not in text and "File \"" not in text, (path, text)
        assert set(json.loads(text)) == {"error"} and json.loads(text)["error"], (path, text)
    # a huge upload is refused from its headers, before any of it is read
    status, body = _raw(served, b"POST /api/audio HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000000000\r\n\r\n")
    assert status == 413 and "limit" in json.loads(body)["error"]
    status, body = _raw(served, b"POST /api/audio HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert status == 411
    status, body = _raw(served, b"GET /a b HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # malformed request line
    assert 400 <= status < 500 and "error" in json.loads(body)
    # still serving
    status, info = served.json("/api/info")
    assert status == 200 and info["files"] == 3 and info["windows"] == index.num_windows
    status, res = served.json("/api/search?q=a+red+ball&k=2")
    assert status == 200 and len(res["results"]) == 2


def test_audio_upload_and_more_like_this_answer_with_moments(served_random, synth_corpus):
    served, index = served_random
    wav = sorted((synth_corpus / "audio_only").glob("*.wav"))[0].read_bytes()
    status, res = served.json("/api/audio?k=3", data=wav, headers={"Content-Type": "audio/wav"})
    assert status == 200 and 1 <= len(res["results"]) <= 3
    status, res = served.json("/api/similar?window=0&k=5&merge=0")
    assert status == 200 and 0 not in [r["window"] for r in res["results"]]  # not the query itself
    assert [r["score"] for r in res["results"]] == sorted((r["score"] for r in res["results"]), reverse=True)


def test_shard_members_are_indexed_and_served_by_byte_range(synth_corpus, random_model_dir, tmp_path):
    import tarfile

    from vatt.data.prepare import prepare_shards

    folder = _folder(tmp_path, synth_corpus, n=2)
    prepare_shards(str(folder), tmp_path / "shards", clip_seconds=10.0, max_count=1)  # one clip per shard
    (tmp_path / "shards" / "shard-99999.tar").write_bytes(b"not a tar")  # an unreadable shard: counted
    out = tmp_path / "index"
    stats = build_index(tmp_path / "shards", vatt.load_model(random_model_dir), out)
    assert (stats["files"], stats["reasons"]) == (2, {"bad_shard": 1})
    index = WindowIndex(out)
    served = Served(SearchEngine(index, vatt.load_model(random_model_dir)))
    try:
        for f in index.files:
            assert f["rel"].startswith("shard-") and "#" in f["rel"]
            with tarfile.open(f["file"]) as tar:
                member = tar.extractfile(f["path"].split("#", 1)[1]).read()
            status, headers, body = served.get(f"/media/{f['id']}")
            assert status == 200 and body == member and headers["Content-Type"] == "video/mp4"
            status, _, body = served.get(f"/media/{f['id']}", headers={"Range": "bytes=10-19"})
            assert status == 206 and body == member[10:20]
        status, res = served.json("/api/search?q=a+ball&k=5")
        assert status == 200 and {r["path"] for r in res["results"]} <= {f["rel"] for f in index.files}
    finally:
        served.close()


def test_an_internal_failure_is_a_500_without_a_stack_trace(served_random, caplog):
    served, _ = served_random
    engine = served.server.RequestHandlerClass.app.engine

    def broken(*args, **kwargs):
        raise RuntimeError("secret detail /home/user/private")

    original, engine.text_many = engine.text_many, broken
    try:
        status, _, raw = served.get("/api/search?q=ball")
    finally:
        engine.text_many = original
    assert status == 500 and json.loads(raw) == {"error": "internal error (see the server log)"}
    assert "secret detail" in caplog.text  # the traceback went to the log, not to the client
    assert served.json("/api/search?q=ball&k=1")[0] == 200


def test_a_long_window_is_the_mean_of_its_model_clips(synth_corpus, random_model_dir, tmp_path):
    from vatt.data import transforms
    from vatt.data.config import DataConfig
    from vatt.data.decode import MediaReader

    folder = _folder(tmp_path, synth_corpus, n=1)
    model = vatt.load_model(random_model_dir)
    out = tmp_path / "index"
    build_index(folder, model, out, window=1.6, hop=0.8, batch_size=1)  # 2 model clips per window, 1 window a batch
    index = WindowIndex(out)
    cfg = DataConfig.from_model_config(model.config)
    clip = sorted(folder.glob("*.mp4"))[0]
    for row in range(index.num_windows):
        a = float(index.start[row])
        with MediaReader(clip) as r:  # reference: clips at a and a + 0.8, unit vectors averaged
            wins = [r.read(s, num_frames=cfg.num_frames, fps=cfg.fps, sample_rate=cfg.sample_rate,
                           num_samples=cfg.num_samples, short_side=cfg.resize * 2) for s in (a, a + 0.8)]
        with torch.no_grad():
            out_ = model(video=torch.cat([transforms.eval_video(w.frames, cfg) for w in wins]),
                         audio=torch.stack([transforms.eval_audio(w.audio) for w in wins]))
        for name in ("video_vt", "video_va", "audio_va"):
            ref = torch.nn.functional.normalize(torch.nn.functional.normalize(out_[name], dim=1).mean(0), dim=0)
            torch.testing.assert_close(index.tensors[name][row], ref, rtol=1e-4, atol=1e-5)
