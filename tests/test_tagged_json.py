"""vatt's four format-tagged JSON files are read by one reader (vatt.tagged_json): a damaged,
foreign or untagged file gets the same one-line CheckpointError from each, naming the file and
the tag it should carry, never a traceback from json or a KeyError later."""

import json

import pytest
import torch
from safetensors.torch import save_file

from vatt.errors import CheckpointError
from vatt.embed import load_embeddings
from vatt.model.vatt import load_model
from vatt.search.window_index import WindowIndex
from vatt.text import WordTokenizer

BAD = {
    "not JSON": ("{not json", "is not valid JSON"),
    "a list": ("[1, 2]", "expected format"),
    "another tag": ('{"format": "vatt-other", "config": {}, "words": []}', "found 'vatt-other'"),
    "no tag": ('{"config": {}, "words": []}', "expected format"),
    "not UTF-8": (b"\xff\xfe{", "is not valid JSON"),
}


def _model_dir(tmp_path, text):
    d = tmp_path / "model"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"")
    _write(d / "config.json", text)
    return lambda: load_model(d), "vatt-model", d / "config.json"


def _vocab(tmp_path, text):
    p = tmp_path / "vocab.json"
    _write(p, text)
    return lambda: WordTokenizer.load(p), "vatt-vocab", p


def _index(tmp_path, text):
    d = tmp_path / "index"
    d.mkdir()
    _write(d / "index.json", text)
    return lambda: WindowIndex(d), "vatt-search-index", d / "index.json"


def _embeddings(tmp_path, text):
    p = tmp_path / "e.safetensors"
    header = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    save_file({"video_vt": torch.zeros(1, 4)}, str(p), metadata={"vatt": header})
    return lambda: load_embeddings(p), "vatt-embeddings", p


def _write(path, text):
    path.write_bytes(text if isinstance(text, bytes) else text.encode())


@pytest.mark.parametrize("bad", list(BAD))
@pytest.mark.parametrize("kind", [_model_dir, _vocab, _index, _embeddings], ids=["model", "vocab", "index", "embeddings"])
def test_every_tagged_file_refuses_a_damaged_or_foreign_file_the_same_way(tmp_path, kind, bad):
    text, expected = BAD[bad]
    if kind is _embeddings and isinstance(text, bytes):
        expected = "is not valid JSON"  # the header is a str: the bytes arrive as replacement characters
    load, fmt, path = kind(tmp_path, text)
    with pytest.raises(CheckpointError) as err:
        load()
    msg = str(err.value)
    assert expected in msg and str(path) in msg and "\n" not in msg
    if expected != "is not valid JSON":
        assert f"'{fmt}'" in msg


def test_the_readers_still_read_their_own_files(tmp_path):
    import vatt

    model = vatt.create_model("tiny", vocab=WordTokenizer(["<pad>", "<unk>", "a", "dog"]))
    model.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["format"] == "vatt-model"
    back = load_model(tmp_path / "m")
    assert back.tokenizer.words == ["<pad>", "<unk>", "a", "dog"]
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), model.state_dict().values()))
