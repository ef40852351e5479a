"""`vatt bench` runs each protocol on a benchmark's own files and gets exactly what the generic
commands give when the same items are written by hand as manifests (`vatt eval linear`,
`vatt eval retrieval`; fine-tuning rows: tests/test_bench_finetune.py); zero-shot classification
and `vatt classify`: tests/test_bench_zero_shot.py; `vatt bench list` and errors."""

import json

import pytest
import torch

import bench_replicas as rep
import vatt
from vatt.bench import BENCHMARKS, run_benchmark
from vatt.bench.run import caption_retrieval, linear_datasets, read_subset
from vatt.cli.main import main as cli
from vatt.data.benchmarks import clip_dataset, read_msrvtt, read_ucf101
from vatt.data.config import DataConfig
from vatt.embed import extract_features, l2_normalize
from vatt.eval.linear import frozen_features, linear_probe
from vatt.eval.retrieval import zero_shot_retrieval


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return rep.tiny_model_dir(tmp_path_factory.mktemp("bench_model"))


def _json_out(capsys, argv) -> dict:
    assert cli(argv) == 0
    return json.loads(capsys.readouterr().out)


# -- linear rows -------------------------------------------------------------------------------------
def test_ucf101_bench_equals_eval_linear_on_the_three_splits_by_hand(tmp_path, model_dir, capsys):
    root = tmp_path / "UCF101"
    rep.write_ucf101(root)
    bench = _json_out(capsys, ["bench", "ucf101", "--root", str(root), "--model", str(model_dir),
                               "--classifier", "logistic", "--windows", "2", "--json", "--out", str(tmp_path / "out")])
    splits = []
    for k in (1, 2, 3):
        tr, te = read_ucf101(root, "train", k), read_ucf101(root, "test", k)
        splits += ["--split", rep.write_manifest(tmp_path / f"hand{k}/train.csv", tr.refs, rep.UCF_CLASSES),
                   rep.write_manifest(tmp_path / f"hand{k}/test.csv", te.refs, rep.UCF_CLASSES)]
    hand = _json_out(capsys, ["eval", "linear", "--model", str(model_dir), "--classifier", "logistic", "--windows", "2",
                              "--json", *splits])
    assert bench["metrics"]["split_accuracies"] == hand["logistic"]["split_accuracies"]
    assert bench["metrics"]["accuracy"] == pytest.approx(hand["logistic"]["accuracy"], abs=1e-12)
    assert bench["metrics"]["num_test"] == 3 and bench["metrics"]["num_train"] == 9
    assert bench["reports"]["split 1 train"]["missing"] == 1 and bench["reports"]["split 1 test"]["malformed"] == 1
    assert bench["ours"]["accuracy"] == pytest.approx(100 * hand["logistic"]["accuracy"])
    saved = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert saved["metrics"]["split_accuracies"] == bench["metrics"]["split_accuracies"]
    assert "split 1 train: 1 of 10 media files missing" in (tmp_path / "out" / "bench.md").read_text()


def test_linear_features_are_the_generic_paths_window_for_window(tmp_path, model_dir):
    # Accuracy on easy replicas is coarse; the probe's inputs must be identical: one centre window
    # per training item, `num_windows` windows averaged per test item, the same labels.
    root = tmp_path / "UCF101"
    rep.write_ucf101(root)
    model = vatt.load_model(model_dir)
    [(train_set, test_set)], _ = linear_datasets(BENCHMARKS["ucf101"], root, model, [3], num_windows=3)
    tr, te = read_ucf101(root, "train", 3), read_ucf101(root, "test", 3)
    for ours, refs, windows in ((train_set, tr.refs, 1), (test_set, te.refs, 3)):
        x, y, _ = frozen_features(model, ours, num_windows=windows)
        hx, hy, names = frozen_features(model, rep.write_manifest(tmp_path / f"h{windows}/m.csv", refs, rep.UCF_CLASSES),
                                        num_windows=windows)
        assert names == rep.UCF_CLASSES and torch.equal(y, hy)
        torch.testing.assert_close(x, hx, rtol=0, atol=0)


def test_esc50_fold_equals_linear_probe_on_audio_by_hand(tmp_path, model_dir):
    root = tmp_path / "ESC-50-master"
    rep.write_esc50(root)
    broken = root / "audio" / "2-100012-A-1.wav"  # a test clip of fold 2, truncated inside its header
    broken.write_bytes(broken.read_bytes()[:20])
    model = vatt.load_model(model_dir)
    bench = run_benchmark("esc50", root, model, split=2, classifier="logistic", out_dir=tmp_path / "out")
    tr, te = (read_subset(BENCHMARKS["esc50"], root, s, 2) for s in ("train", "test"))
    hand = linear_probe(model, rep.write_manifest(tmp_path / "h/train.csv", tr.refs, rep.ESC_CLASSES),
                        rep.write_manifest(tmp_path / "h/test.csv", te.refs, rep.ESC_CLASSES), modality="audio",
                        classifier="logistic")
    assert bench["metrics"]["accuracy"] == hand["accuracy"] and bench["metrics"]["num_test"] == 5
    assert bench["reports"]["split 2 test"]["unreadable"] == 1  # skipped and counted by the data layer
    assert "split 2 test: 0 of 32 media files missing, 1 malformed rows" in (tmp_path / "out/bench.md").read_text()
    assert "1 unreadable" in (tmp_path / "out/bench.md").read_text()
    assert bench["mode"] == "linear probe (logistic), splits [2]"


def test_hmdb51_split_equals_linear_probe_by_hand(tmp_path, model_dir):
    root = tmp_path / "hmdb51"
    rep.write_hmdb51(root)
    model = vatt.load_model(model_dir)
    bench = run_benchmark("hmdb51", root, model, split=2, classifier="logistic", num_windows=2)
    tr, te = (read_subset(BENCHMARKS["hmdb51"], root, s, 2) for s in ("train", "test"))
    hand = linear_probe(model, rep.write_manifest(tmp_path / "h/train.csv", tr.refs, rep.HMDB_CLASSES),
                        rep.write_manifest(tmp_path / "h/test.csv", te.refs, rep.HMDB_CLASSES), num_windows=2)
    assert bench["metrics"]["accuracy"] == hand["accuracy"]
    assert (bench["metrics"]["num_train"], bench["metrics"]["num_test"]) == (6, 3)  # flag-0 clips in neither


# -- retrieval rows ----------------------------------------------------------------------------------
def test_youcook2_bench_equals_eval_retrieval_on_a_segment_manifest(tmp_path, model_dir, capsys):
    root = tmp_path / "YouCookII"
    rep.write_youcook2(root)
    bench = _json_out(capsys, ["bench", "youcook2", "--root", str(root), "--model", str(model_dir), "--json"])
    split = read_subset(BENCHMARKS["youcook2"], root, "validation")
    manifest = rep.write_manifest(tmp_path / "hand/val.csv", split.refs, caption=True)
    hand = _json_out(capsys, ["eval", "retrieval", "--model", str(model_dir), "--data", manifest, "--json"])
    for average in ("embeddings", "similarities"):
        assert bench["metrics"][average]["text_to_video"] == hand[average]["text_to_video"]
    assert bench["metrics"]["embeddings"]["num_videos"] == 4  # 4 segments of 2 downloaded videos
    assert bench["ours"]["R@10"] == 100 * hand["embeddings"]["text_to_video"]["R@10"]
    assert bench["paper"][0]["R@10"] == 45.5
    assert cli(["bench", "youcook2", "--root", str(root), "--model", str(model_dir), "--windows", "1"]) == 0
    out = capsys.readouterr().out
    assert "VATT-MBS (paper)" in out and "45.5" in out and "R@10" in out
    assert "validation: 2 of 7 media files missing, 1 malformed rows" in out


def test_msrvtt_1ka_bench_equals_manifest_and_all_captions_rank_every_caption(tmp_path, model_dir):
    root = tmp_path / "msrvtt"
    expect = rep.write_msrvtt(root)
    model = vatt.load_model(model_dir)
    bench = run_benchmark("msrvtt", root, model, num_windows=2)
    split = read_msrvtt(root, "1k-A")
    hand = zero_shot_retrieval(model, rep.write_manifest(tmp_path / "h.csv", split.refs, caption=True), average="embeddings",
                               num_windows=2)
    assert bench["metrics"]["embeddings"]["text_to_video"] == hand["text_to_video"]
    full = run_benchmark("msrvtt", root, model, split="all", num_windows=2)["metrics"]["embeddings"]
    assert full["num_text_queries"] == 20 * len(expect["videos"]) and full["num_videos"] == len(expect["videos"])


def test_caption_retrieval_is_brute_force_ranking_of_every_caption(tmp_path, model_dir):
    root = tmp_path / "msrvtt"
    rep.write_msrvtt(root)
    model = vatt.load_model(model_dir)
    split = read_msrvtt(root, "all")
    ds = clip_dataset(split, DataConfig.from_model_config(model.config), model.tokenizer, train=False, num_windows=2)
    captions = [[c.text for c in r.captions][:3] for r in split.refs]
    got = caption_retrieval(model, ds, captions)["text_to_video"]
    video = extract_features(model, ds, outputs=["video_vt"])["video_vt"]
    video = l2_normalize(l2_normalize(video).mean(1))
    ranks = []
    for i, caps in enumerate(captions):
        for c in caps:
            q = l2_normalize(model.encode_text([c])["text_vt"].float())[0]
            scores = video @ q
            ranks.append(int((scores >= scores[i]).sum()))  # pessimistic ties
    assert got["R@1"] == pytest.approx(sum(r <= 1 for r in ranks) / len(ranks))
    assert got["MeanR"] == pytest.approx(sum(ranks) / len(ranks))
    # one caption per video: the same numbers as zero_shot_retrieval's text->video
    one = caption_retrieval(model, ds, [[c[0]] for c in captions])["text_to_video"]
    manifest = [type(r)(r.path, captions=[type(r.captions[0])(0.0, float("inf"), c[0])]) for r, c in zip(split.refs, captions)]
    ref = zero_shot_retrieval(model, rep.write_manifest(tmp_path / "one.csv", manifest, caption=True), num_windows=2)["text_to_video"]
    assert one == pytest.approx(ref)


# -- the command ---------------------------------------------------------------------------------------
def test_bench_list_shows_every_benchmark_protocol_number_and_cost(capsys):
    rows = _json_out(capsys, ["bench", "list", "--json"])
    assert [r["name"] for r in rows] == list(BENCHMARKS)
    assert {"kinetics400", "kinetics600", "kinetics700", "mit", "ucf101", "hmdb51", "esc50", "audioset", "imagenet",
            "msrvtt", "youcook2"} == set(BENCHMARKS)
    k400 = next(r for r in rows if r["name"] == "kinetics400")
    assert "VATT-Base top1 79.6" in k400["paper"] and k400["gpu_hours"] > 1
    assert {"model": "VATT-Base", "preset": "bbs", "top1": 79.6, "top5": 94.9} in k400["paper_rows"]
    assert all(r["gpu_hours"] > 0 for r in rows)
    assert cli(["bench", "list"]) == 0
    assert "audioset" in capsys.readouterr().out
    assert cli(["bench", "list", "--markdown"]) == 0
    assert "| Kinetics-400 |" in capsys.readouterr().out


def test_bench_errors_are_one_line(tmp_path, model_dir, capsys):
    (tmp_path / "x.mp4").write_bytes(b"")
    assert cli(["bench", "ucf101", "--root", str(tmp_path), "--model", str(model_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "classInd.txt" in err
    assert cli(["bench", "kinetcs400", "--root", str(tmp_path), "--model", str(model_dir)]) == 2
    assert "did you mean 'kinetics400'" in capsys.readouterr().err
    assert cli(["bench", "ucf101", "--root", str(tmp_path)]) == 2
    assert "--model" in capsys.readouterr().err
    assert cli(["bench", "ucf101", "--root", str(tmp_path), "--model", str(model_dir), "--split", "4"]) == 2
    assert "--split must be one of 1, 2, 3, got 4" in capsys.readouterr().err
    assert cli(["bench", "kinetics400", "--root", str(tmp_path), "--model", str(model_dir), "--split", "2"]) == 2
    assert "one train/test split" in capsys.readouterr().err
    assert cli(["bench", "ucf101", "--root", str(tmp_path), "--model", str(model_dir), "--steps", "3"]) == 2
    assert "apply to fine-tuning rows" in capsys.readouterr().err
