"""Fine-tuning rows of `vatt bench`: fine-tuning on a benchmark's own files equals `vatt finetune`
on the same items written by hand as manifests (2 steps, tiny preset), and a converted official
fine-tuned classifier is evaluated without training, giving `predict_views`' logits."""

import os
from pathlib import Path

import pytest
import torch

import bench_replicas as rep
import vatt
from vatt.bench import run_benchmark
from vatt.data.benchmarks import read_kinetics
from vatt.train.finetune import Classifier, build_test_dataset, finetune, load_finetune_config, predict_views


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return rep.tiny_model_dir(tmp_path_factory.mktemp("bench_model"))


def test_kinetics_finetune_bench_equals_vatt_finetune_by_hand(tmp_path, model_dir):
    root = tmp_path / "kinetics400"
    rep.write_kinetics(root)
    cfg = load_finetune_config("video", {"steps": 2, "batch_size": 4, "test_windows": 2})
    bench = run_benchmark("kinetics400", root, vatt.load_model(model_dir), config=cfg, out_dir=tmp_path / "b")
    tr, va = read_kinetics(root, "train"), read_kinetics(root, "val")
    classes = tr.classes
    hand = finetune(vatt.load_model(model_dir), rep.write_manifest(tmp_path / "h/train.csv", tr.refs, classes),
                    rep.write_manifest(tmp_path / "h/val.csv", va.refs, classes), tmp_path / "h_out", config=cfg)
    assert bench["mode"] == "fine-tuned"
    for key in ("top1", "top5", "train_loss", "num_test", "num_classes"):
        assert bench["metrics"][key] == hand[key], key
    assert (tmp_path / "b" / "checkpoints").is_dir() and (tmp_path / "b" / "bench.md").is_file()
    assert bench["reports"]["train"]["missing"] == 1 and bench["reports"]["val"]["malformed"] == 1


_FIXTURES = [Path(p) for p in (os.environ.get("VATT_OFFICIAL_FIXTURES", ""),
                               Path(__file__).resolve().parents[1] / "shared/fixtures/official",
                               Path(__file__).resolve().parents[2] / "shared/fixtures/official") if p]
FIXTURES = next((p for p in _FIXTURES if (p / "README.md").is_file()), None)


@pytest.mark.skipif(FIXTURES is None, reason="official fixtures (shared/fixtures/official) not found")
def test_converted_official_classifier_through_bench_gives_predict_views_logits(tmp_path):
    from vatt.convert.official import from_official, read_case_overrides

    case = FIXTURES / "video_cls"
    from_official(case, overrides=read_case_overrides(case / "case.json"), out=tmp_path / "k")
    classes = [f"action {i}" for i in range(7)]  # the fixture head has 7 classes
    root = tmp_path / "kinetics400"
    rep.write_kinetics(root, classes=classes, per_class=(1, 1))
    model = vatt.load_model(tmp_path / "k")
    bench = run_benchmark("kinetics400", root, model)  # evaluation only: the model is not changed
    assert bench["mode"] == "converted classifier (no training)" and not model.training
    cfg = load_finetune_config("video")
    va = read_kinetics(root, "val")
    test_set = build_test_dataset(model, rep.write_manifest(tmp_path / "h/val.csv", va.refs, sorted(classes)), cfg)
    logits, labels = predict_views(Classifier(model, "video", 7), test_set)
    assert bench["logits"].shape == (7, 7) and logits.std(0).max() > 0  # items differ
    torch.testing.assert_close(bench["logits"], logits)
    assert torch.equal(bench["labels"], labels)
    # the 12 views of an item, each through the converted model's own classify(), averaged
    views = test_set[0]["video"]
    assert views.shape[0] == 12
    model.eval()  # predict_views left the fresh (train-mode) Classifier, and so the model, in train mode
    with torch.no_grad():
        torch.testing.assert_close(logits[0], model.classify(views).mean(0), rtol=1e-5, atol=1e-5)




def test_audioset_finetune_bench_equals_vatt_finetune_multi_label(tmp_path, model_dir):
    from vatt.data.benchmarks import read_audioset

    root = tmp_path / "audioset"
    rep.write_audioset(root)
    cfg = load_finetune_config("audio", {"steps": 2, "batch_size": 2, "test_windows": 2})
    bench = run_benchmark("audioset", root, vatt.load_model(model_dir), config=cfg)
    tr, ev = read_audioset(root, "train"), read_audioset(root, "eval")
    names = tr.classes  # display names with commas, written as CSV-quoted "a;b" label lists
    hand_train, hand_eval = (rep.write_manifest(tmp_path / f"h/{s}.csv", split.refs, names, multi=True)
                             for s, split in (("train", tr), ("eval", ev)))
    hand = finetune(vatt.load_model(model_dir), hand_train, hand_eval, config=cfg)
    assert bench["mode"] == "fine-tuned" and bench["metrics"]["num_classes"] == 4
    for key in ("mAP", "AUC", "d_prime", "train_loss", "num_test"):
        assert bench["metrics"][key] == pytest.approx(hand[key], abs=1e-6), key
    assert set(bench["ours"]) == {"mAP", "AUC", "d_prime"} and bench["paper"][0]["mAP"] == 39.4


def test_imagenet_finetune_bench_equals_vatt_finetune_on_class_folders(tmp_path, model_dir):
    root = tmp_path / "imagenet"
    rep.write_imagenet(root, flat_val=False)  # val/<wnid>/: what `vatt finetune --config image` reads too
    cfg = load_finetune_config("image", {"steps": 2, "batch_size": 3})
    bench = run_benchmark("imagenet", root, vatt.load_model(model_dir), config=cfg)
    data = root / "ILSVRC" / "Data" / "CLS-LOC"
    hand = finetune(vatt.load_model(model_dir), str(data / "train"), str(data / "val"), config=cfg)
    for key in ("top1", "top5", "train_loss", "num_test"):
        assert bench["metrics"][key] == hand[key], key
    flat = tmp_path / "flat"
    rep.write_imagenet(flat, flat_val=True)  # LOC_val_solution.csv: the same images, the same result
    again = run_benchmark("imagenet", flat, vatt.load_model(model_dir), config=cfg)
    assert again["metrics"]["top1"] == bench["metrics"]["top1"] and again["reports"]["val"]["missing"] == 1


def test_bench_command_fine_tunes_with_config_flags_and_records_the_command(tmp_path, model_dir, capsys):
    import json

    from vatt.cli.main import main as cli

    root = tmp_path / "k400"
    rep.write_kinetics(root, per_class=(1, 1))
    out = tmp_path / "out"
    argv = ["bench", "kinetics400", "--root", str(root), "--model", str(model_dir), "--steps", "1",
            "--set", "batch_size=2", "lr=0.01", "--windows", "1", "--out", str(out), "--json"]
    assert cli(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["mode"] == "fine-tuned" and result["metrics"]["steps"] == 1 and result["metrics"]["num_test"] == 3
    config = (out / "config.yaml").read_text()
    assert config.splitlines()[0].startswith("# vatt bench kinetics400") and "test_windows: 1" in config
    assert "lr: 0.01" in config and "batch_size: 2" in config
    assert json.loads((out / "bench.json").read_text())["metrics"]["top1"] == result["metrics"]["top1"]
    assert (out / "results.json").is_file() and (out / "checkpoints").is_dir()  # vatt finetune's own outputs


@pytest.mark.skipif(FIXTURES is None, reason="official fixtures (shared/fixtures/official) not found")
def test_converted_official_audioset_classifier_is_evaluated_multi_label(tmp_path):
    from vatt.convert.official import from_official, read_case_overrides
    from vatt.data.benchmarks import read_audioset
    from vatt.train.finetune import classification_metrics

    case = FIXTURES / "audio_cls"  # a 5-class sigmoid head
    from_official(case, overrides=read_case_overrides(case / "case.json"), out=tmp_path / "a")
    model = vatt.load_model(tmp_path / "a")
    root = tmp_path / "audioset"
    rep.write_audioset(root, classes=rep.AUDIOSET_CLASSES + [("/m/0dgw9r", "Human sounds")])
    bench = run_benchmark("audioset", root, model)
    assert bench["mode"] == "converted classifier (no training)"
    ev = read_audioset(root, "eval")
    names = ev.classes
    test_set = build_test_dataset(model, rep.write_manifest(tmp_path / "h/eval.csv", ev.refs, names, multi=True),
                                  load_finetune_config("audio"), classes=names)
    logits, labels = predict_views(Classifier(model, "audio", 5).eval(), test_set)
    torch.testing.assert_close(bench["logits"], logits)
    assert labels.shape == (2, 5) and torch.equal(bench["labels"], labels)  # multi-hot
    assert bench["metrics"]["mAP"] == classification_metrics(logits, labels)["mAP"]
