"""Embedding files (vatt embed) and search (vatt search)."""

import json
import shutil

import pytest
import torch

import vatt
from vatt.cli.main import main
from vatt.errors import CheckpointError, InputError
from vatt.embed import embed_source, load_embeddings, save_embeddings
from vatt.search.embeddings import nearest, search


def _run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.slow
def test_search_ranks_a_clip_first_with_its_own_caption(memorised_model, synth_corpus, tmp_path, capsys):
    model_dir, captions, keys = memorised_model
    emb = tmp_path / "clips.safetensors"
    code, out, err = _run(capsys, "embed", str(synth_corpus / "retrieval"), "--model", str(model_dir), "--out", str(emb))
    assert code == 0, err
    ranks = []
    for query, key in zip(captions, keys):
        code, out, err = _run(capsys, "search", str(emb), query, "-k", "10", "--json")
        assert code == 0, err
        hits = json.loads(out)
        items = [h["item"] for h in hits]
        ranks.append(items.index(key.split("@")[0]) + 1)
        assert [h["rank"] for h in hits] == list(range(1, len(hits) + 1))
        assert all(a["score"] >= b["score"] for a, b in zip(hits, hits[1:]))
    n = len(keys)
    # every clip in the top 2 of n, and most of them first
    assert max(ranks) <= 2 and sum(r == 1 for r in ranks) >= n - 1, ranks


def test_embedding_the_same_clip_twice_gives_the_same_vector(synth_corpus, synth_tokenizer, tmp_path):
    clip = sorted((synth_corpus / "retrieval").glob("*.mp4"))[0]
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(clip, folder / "a.mp4")
    shutil.copy(clip, folder / "b.mp4")
    model = vatt.create_model("tiny", vocab=synth_tokenizer)
    first, meta = embed_source(model, folder, num_windows=2)
    again, _ = embed_source(model, folder, num_windows=2)
    assert meta["modality"] == "video" and [p.rsplit("/", 1)[-1] for p in meta["items"]] == ["a.mp4", "b.mp4"]
    # in another batch (beside a different clip) the clip still gets the same vector: eval mode
    other = tmp_path / "mixed"
    other.mkdir()
    shutil.copy(clip, other / "a.mp4")
    shutil.copy(sorted((synth_corpus / "retrieval").glob("*.mp4"))[1], other / "c.mp4")
    mixed, _ = embed_source(model, other, num_windows=2)
    for name in ("video_vt", "video_va", "video_agg"):
        assert torch.equal(first[name][0], first[name][1])
        assert torch.equal(first[name], again[name])
        torch.testing.assert_close(mixed[name][0], first[name][0], rtol=1e-5, atol=1e-6)
        assert not torch.allclose(mixed[name][1], first[name][0])
    assert torch.allclose(first["video_vt"].norm(dim=1), torch.ones(2))


def test_embeddings_file_round_trip_and_errors(tmp_path):
    tensors = {"video_vt": torch.randn(3, 4), "video_agg": torch.randn(3, 8)}
    meta = {"modality": "video", "items": ["x.mp4", "y.mp4", "z.mp4"], "model": "/m"}
    path = save_embeddings(tmp_path / "e.safetensors", tensors, meta)
    loaded, got = load_embeddings(path)
    assert got["items"] == meta["items"] and got["format"] == "vatt-embeddings"
    assert torch.equal(loaded["video_vt"], tensors["video_vt"])
    assert not list(tmp_path.glob(".*tmp"))
    with pytest.raises(InputError, match="one row per item"):
        save_embeddings(tmp_path / "bad.safetensors", tensors, {"modality": "video", "items": ["x"]})
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="vatt embed"):
        load_embeddings(tmp_path / "junk.safetensors")


def test_nearest_equals_brute_force():
    g = torch.Generator().manual_seed(0)
    coll, queries = torch.randn(50, 8, generator=g), torch.randn(3, 8, generator=g)
    scores, idx = nearest(coll, queries, 5)
    cos = torch.nn.functional.normalize(queries, dim=1) @ torch.nn.functional.normalize(coll, dim=1).t()
    ref = cos.topk(5, dim=1)
    torch.testing.assert_close(scores, ref.values)
    assert torch.equal(idx, ref.indices)
    assert nearest(coll, queries, 100)[1].shape == (3, 50)  # k capped at the collection size


def test_text_collection_search_finds_the_identical_sentence(synth_tokenizer, tmp_path, capsys):
    model = vatt.create_model("tiny", vocab=synth_tokenizer)
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    sentences = ["the red ball bounces", "a green box slides right", "the navy wedge drops", "a golden plus hops"]
    (tmp_path / "s.txt").write_text("\n".join(sentences) + "\n\n")
    emb = tmp_path / "s.safetensors"
    assert _run(capsys, "embed", str(tmp_path / "s.txt"), "--model", str(model_dir), "--out", str(emb))[0] == 0
    for s in sentences:
        hits = search(emb, s, k=2)
        assert hits[0].item == s and hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_search_refuses_audio_collections_with_a_clear_message(tmp_path, capsys):
    save_embeddings(tmp_path / "a.safetensors", {"audio_va": torch.randn(2, 4)},
                    {"modality": "audio", "items": ["a.wav", "b.wav"], "model": str(tmp_path)})
    code, out, err = _run(capsys, "search", str(tmp_path / "a.safetensors"), "a red ball")
    assert code == 2 and "audio" in err and "Traceback" not in err


def test_faiss_request_without_faiss_is_a_clear_error():
    from vatt.search.embeddings import faiss_available

    coll, q = torch.randn(5, 4), torch.randn(1, 4)
    if faiss_available():  # exact inner-product index: same answer as the matrix product
        s, i = nearest(coll, q, 3, use_faiss=True)
        assert torch.equal(i, nearest(coll, q, 3, use_faiss=False)[1])
    else:
        with pytest.raises(InputError, match="FAISS"):
            nearest(coll, q, 3, use_faiss=True)
