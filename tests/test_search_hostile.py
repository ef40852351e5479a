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
