"""Zero-shot classification from class names (beyond the paper): the scores are cosines of videos
and template-averaged class-name embeddings in S_vt; `vatt bench NAME --zero-shot` equals
`zero_shot_classify` run by hand; `vatt classify` on one's own files."""

import json

import pytest
import torch

import bench_replicas as rep
import vatt
from vatt.bench import BENCHMARKS, run_benchmark
from vatt.bench.run import class_names, read_subset
from vatt.cli.main import main as cli
from vatt.data.benchmarks import clip_dataset, read_ucf101
from vatt.data.config import DataConfig
from vatt.embed import extract_features, l2_normalize
from vatt.eval.zero_shot import class_embeddings, readable_class_name, zero_shot_classify, zero_shot_scores


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return rep.tiny_model_dir(tmp_path_factory.mktemp("bench_model"))


def _json_out(capsys, argv):
    assert cli(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_zero_shot_scores_are_cosines_with_template_averaged_class_vectors(model_dir):
    model = vatt.load_model(model_dir)
    templates = ["a video of {}", "{}"]
    vectors = class_embeddings(model, ["red square", "blue square"], templates)
    for c, name in enumerate(["red square", "blue square"]):
        each = [l2_normalize(model.encode_text([t.format(name)])["text_vt"].float())[0] for t in templates]
        torch.testing.assert_close(vectors[c], l2_normalize(sum(each) / 2), rtol=1e-5, atol=1e-6)
    video = torch.randn(3, 4, 256)
    scores = zero_shot_scores(video, vectors)
    for i in range(3):
        v = l2_normalize(l2_normalize(video[i]).mean(0))
        torch.testing.assert_close(scores[i], vectors @ v, rtol=1e-5, atol=1e-6)
    assert readable_class_name("ApplyEyeMakeup") == "apply eye makeup"
    assert readable_class_name("brush_hair") == "brush hair"


def test_ucf101_zero_shot_bench_equals_zero_shot_classify_by_hand(tmp_path, model_dir, capsys):
    root = tmp_path / "UCF101"
    rep.write_ucf101(root)
    bench = _json_out(capsys, ["bench", "ucf101", "--root", str(root), "--model", str(model_dir), "--zero-shot",
                               "--split", "2", "--template", "a video of {}", "--json"])
    te = read_ucf101(root, "test", 2)
    hand = zero_shot_classify(vatt.load_model(model_dir), rep.write_manifest(tmp_path / "h/test.csv", te.refs, rep.UCF_CLASSES),
                              templates=["a video of {}"])
    assert bench["metrics"]["top1"] == hand["top1"] and bench["metrics"]["num_test"] == 3
    assert hand["prompts"] == ["apply eye makeup", "boxing punching bag", "handstand pushups"]
    assert bench["mode"].startswith("zero-shot") and bench["paper"] == []


def test_zero_shot_on_fine_tuning_rows_kinetics_and_imagenet_synset_names(tmp_path, model_dir):
    model = vatt.load_model(model_dir)
    root = tmp_path / "k400"
    rep.write_kinetics(root, per_class=(1, 1))
    bench = run_benchmark("kinetics400", root, model, zero_shot=True, num_windows=2)
    va = read_subset(BENCHMARKS["kinetics400"], root, "val")
    hand = zero_shot_classify(model, rep.write_manifest(tmp_path / "h/val.csv", va.refs, va.classes), num_windows=2)
    assert bench["metrics"]["top1"] == hand["top1"] and hand["prompts"] == ["abseiling", "air drumming", "zumba"]
    inet = tmp_path / "imagenet"
    rep.write_imagenet(inet)
    got = run_benchmark("imagenet", inet, model, zero_shot=True)
    assert got["metrics"]["num_test"] == 3 and got["reports"]["val"]["missing"] == 1
    assert class_names(BENCHMARKS["imagenet"], inet, rep.WNIDS) == ["tench", "goldfish", "great white shark"]


def test_vatt_classify_own_files(tmp_path, model_dir, capsys):
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"clip{i}.mp4")
        paths[-1].write_bytes(rep.video_bytes(i))
    out = _json_out(capsys, ["classify", *map(str, paths), "--model", str(model_dir), "--labels", "red square,blue square,dog",
                             "-k", "2", "--json"])
    assert [r["path"] for r in out] == [str(p) for p in paths]
    model = vatt.load_model(model_dir)
    vectors = class_embeddings(model, ["red square", "blue square", "dog"])
    ds = clip_dataset(type("S", (), {"refs": [vatt.data.ClipRef(str(p)) for p in paths], "classes": None,
                                     "multi_label": False})(), DataConfig.from_model_config(model.config),
                      model.tokenizer, train=False, num_windows=4)
    scores = zero_shot_scores(extract_features(model, ds, outputs=["video_vt"])["video_vt"], vectors)
    for r, s in zip(out, scores):
        assert [c for c, _ in r["top"]] == [["red square", "blue square", "dog"][int(j)] for j in s.topk(2).indices]
        assert r["top"][0][1] == pytest.approx(float(s.max()), abs=1e-6)
    labels = tmp_path / "labels.txt"
    labels.write_text("red square\nblue square\n")
    assert cli(["classify", str(paths[0]), "--model", str(model_dir), "--labels", str(labels)]) == 0
    assert "red square" in capsys.readouterr().out
    assert cli(["classify", str(paths[0]), "--model", str(model_dir), "--labels", "dog"]) == 2
    assert "at least two class names" in capsys.readouterr().err


