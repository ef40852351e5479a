"""The demo corpus: layout, determinism, and that the modalities share meaning."""

import csv
import hashlib
import json

import numpy as np
import pytest

from vatt.cli.main import main
from vatt.data import DataConfig, build_dataset, read_captions
from vatt.data.synth import COLOURS, MOTIONS, PITCH, SHAPES, SYNONYMS, make_corpus


def digest(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path):
    assert main(["data", "synth", str(tmp_path / "a"), "--clips", "4", "--seed", "7"]) == 0
    make_corpus(tmp_path / "b", clips=4, seed=7, workers=2)  # parallel writers give the same files
    make_corpus(tmp_path / "c", clips=4, seed=8)
    a, b, c = digest(tmp_path / "a"), digest(tmp_path / "b"), digest(tmp_path / "c")
    assert a == b
    assert a.keys() == c.keys()
    media = [k for k in a if k.endswith((".mp4", ".wav"))]
    assert all(a[k] != c[k] for k in media)


def test_corpus_layout_matches_corpus_json(synth_corpus):
    meta = json.loads((synth_corpus / "corpus.json").read_text())
    counts = meta["counts"]
    assert meta["seed"] == 0 and meta["classes"] == list(SHAPES)
    assert len(list((synth_corpus / "pretrain").glob("*.mp4"))) == counts["pretrain"] == 24
    assert len(list((synth_corpus / "pretrain").glob("*.srt"))) == counts["pretrain"]
    assert len(list((synth_corpus / "audio_only").glob("*.wav"))) == counts["audio_only"]
    assert len(list((synth_corpus / "retrieval").glob("*.srt"))) == counts["retrieval"]
    for split in ("train", "test"):
        rows = list(csv.DictReader(open(synth_corpus / "labelled" / f"{split}.csv")))
        assert len(rows) == counts[f"labelled_{split}"]
        assert {r["label"] for r in rows} == set(SHAPES)  # every class present
        assert all((synth_corpus / "labelled" / r["path"]).is_file() for r in rows)


def attributes(corpus):
    return {r["path"]: r for r in csv.DictReader(open(corpus / "attributes.csv"))}


def test_narration_names_only_the_clips_own_attributes(synth_corpus):
    truth = attributes(synth_corpus)
    for srt in sorted((synth_corpus / "retrieval").glob("*.srt")):
        row = truth[f"retrieval/{srt.stem}.mp4"]
        words = " " + " ".join(c.text for c in read_captions(srt)) + " "
        named = {a for group in (SHAPES, COLOURS, MOTIONS) for a in group
                 if any(f" {w} " in words for w in SYNONYMS[a])}
        assert named, words
        assert named <= {row["shape"], row["colour"], row["motion"]}, (words, row)


def dominant_hz(audio, rate):
    spec = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return np.fft.rfftfreq(len(audio), 1 / rate)[int(np.argmax(spec))]


def test_sound_pitch_follows_the_colour_and_labels_follow_the_shape(synth_corpus):
    truth = attributes(synth_corpus)
    cfg = DataConfig(num_frames=8, fps=10.0, crop_size=32, sample_rate=16000, num_samples=12800)
    ds = build_dataset(str(synth_corpus / "labelled" / "train.csv"), cfg, None, train=False)
    checked = 0
    for i, ref in enumerate(ds.refs):
        row = truth["labelled/" + str(ref.path).split("/labelled/")[1]]
        assert ds.classes[ref.label[0]] == row["shape"]
        if row["shape"] == "circle" and row["motion"] == "right":  # a steady sine: energy at the pitch
            hz = dominant_hz(ds[i]["audio"].numpy(), 16000)
            assert abs(hz - PITCH[row["colour"]]) < 0.05 * PITCH[row["colour"]], (row, hz)
            checked += 1
    if checked == 0:
        pytest.skip("no steady circle clip in this small corpus")
