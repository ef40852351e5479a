"""Careless or hostile data input: one-line errors, skipped-and-counted samples, never a traceback
(issue 13, items 11-13 and 16)."""

import gzip
import io
import json
import tarfile
from collections import Counter

import pytest

from vatt.cli.main import main
from vatt.data import caption_texts, list_shards, prepare_shards
from vatt.data.shards import iter_tar_samples


def _one_line_error(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1, err
    return err[0]


def _tar(members: list[tuple[str, bytes]], gz: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue()) if gz else buf.getvalue()


@pytest.fixture(scope="module")
def good_samples(synth_corpus, tmp_path_factory):
    """(name, bytes) members of 6 prepared retrieval clips."""
    out = tmp_path_factory.mktemp("good")
    prepare_shards(str(synth_corpus / "retrieval"), out)
    return [(f"{r['__key__']}.{ext}", data) for s in list_shards(str(out)) for r in iter_tar_samples(s)
            for ext, data in r.items() if not ext.startswith("__")]


def test_a_tar_bomb_member_is_never_read_and_counted_too_large(good_samples, tmp_path, capsys):
    bomb = [("zzbomb.mp4", bytes(8 << 20)), ("zzbomb.json", b"{}")]  # 8 MiB of zeros: a few KiB gzipped
    (tmp_path / "bomb.tar.gz").write_bytes(_tar(good_samples + bomb, gz=True))
    assert main(["data", "check", str(tmp_path / "bomb.tar.gz"), "--max-member-mb", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["reasons"] == {"too_large": 1} and report["good"] == 6
    raws = list(iter_tar_samples(str(tmp_path / "bomb.tar.gz"), max_member_bytes=1 << 20))
    assert "mp4" not in raws[-1] and "__too_large__" in raws[-1]  # the bytes never reached memory


def test_one_bad_shard_sample_does_not_abort_vocabulary_building(good_samples, tmp_path):
    bad = [("zzlist.mp4", good_samples[0][1]), ("zzlist.json", b"[1, 2, 3]"),  # a list where an object belongs
           ("zzbadjson.mp4", good_samples[0][1]), ("zzbadjson.json", b"{not json")]
    (tmp_path / "s.tar").write_bytes(_tar(good_samples + bad))
    skipped = Counter()
    texts = caption_texts(str(tmp_path / "s.tar"), skipped)
    assert skipped == {"bad_metadata": 2}
    good_only = caption_texts(str(_write(tmp_path / "g.tar", _tar(good_samples))))
    assert texts == good_only and len(texts) >= 6


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_manifest_with_a_non_numeric_start_is_one_line(synth_corpus, tmp_path, capsys):
    clip = next((synth_corpus / "retrieval").glob("*.mp4"))
    (tmp_path / "m.csv").write_text(f"path,start,end\n{clip},abc,2\n")
    assert main(["data", "check", str(tmp_path / "m.csv")]) == 2
    line = _one_line_error(capsys)
    assert "row 2" in line and "'start' must be a number of seconds" in line and "'abc'" in line


def test_non_utf8_classes_file_is_one_line(synth_corpus, tmp_path, capsys):
    clip = next((synth_corpus / "retrieval").glob("*.mp4"))
    (tmp_path / "m.csv").write_text(f"path,label\n{clip},cat\n")
    (tmp_path / "classes.txt").write_bytes("cat\nchien\xe9\n".encode("latin-1"))
    assert main(["data", "check", str(tmp_path / "m.csv")]) == 2
    assert "classes.txt: class names must be UTF-8" in _one_line_error(capsys)


@pytest.mark.parametrize("argv, expected", [
    (["synth", "OUT", "--clips", "-5"], "clips must be >= 1"),
    (["synth", "OUT", "--clips", "0"], "clips must be >= 1"),
    (["synth", "OUT", "--workers", "-1"], "workers must be >= 1"),
    (["prepare", "SRC", "OUT", "--clip-seconds", "0"], "clip_seconds must be > 0"),
    (["prepare", "SRC", "OUT", "--max-side", "0"], "max_side must be >= 2"),
    (["prepare", "SRC", "OUT", "--workers", "-1"], "workers must be >= 1"),
    (["prepare", "SRC", "OUT", "--part", "3/3"], "0 <= I < N"),
    (["check", "SRC", "--workers", "-1"], "workers must be >= 0"),
])
def test_nonsense_counts_are_refused_in_one_line(synth_corpus, tmp_path, capsys, argv, expected):
    argv = [str(synth_corpus / "retrieval") if a == "SRC" else str(tmp_path / "out") if a == "OUT" else a for a in argv]
    assert main(["data", *argv]) == 2
    assert expected in _one_line_error(capsys)
    assert not (tmp_path / "out").exists()  # nothing written
