"""The evaluation commands end to end on the demo corpus (tiny untrained model)."""

import json

import pytest

import vatt
from vatt.cli.main import main


@pytest.fixture(scope="module")
def model_dir(synth_tokenizer, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_model") / "tiny"
    vatt.create_model("tiny", vocab=synth_tokenizer).save_pretrained(out)
    return out


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_eval_retrieval_json_has_both_averagings(model_dir, synth_corpus, capsys):
    code, out, err = _run(capsys, "eval", "retrieval", "--model", model_dir, "--data", synth_corpus / "retrieval",
                          "--windows", "1", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert set(res) == {"embeddings", "similarities"}
    for variant in res.values():
        assert {"text_to_video", "video_to_text", "audio_to_video", "video_to_audio"} <= set(variant)
    code, out, err = _run(capsys, "eval", "retrieval", "--model", model_dir, "--data", synth_corpus / "retrieval",
                          "--windows", "1", "--average", "embeddings")
    assert code == 0 and "text->video" in out and "MedR" in out


def test_eval_linear_table(model_dir, synth_corpus, capsys):
    lab = synth_corpus / "labelled"
    code, out, err = _run(capsys, "eval", "linear", "--model", model_dir, "--train", lab / "train.csv",
                          "--test", lab / "test.csv", "--windows", "1", "--classifier", "logistic", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["num_classes"] == 4 and 0 <= res["logistic"]["accuracy"] <= 1
    assert res["train_windows"] == 1 and res["test_windows"] == 1
    code, out, err = _run(capsys, "eval", "linear", "--model", model_dir, "--train", lab / "train.csv",
                          "--test", lab / "test.csv", "--windows", "2", "--train-windows", "2", "--classifier", "logistic")
    assert code == 0, err
    assert "2 to train, 2 to test" in out


def test_visualize_writes_png(model_dir, synth_corpus, tmp_path, capsys):
    png = tmp_path / "tsne.png"
    code, out, err = _run(capsys, "visualize", "--model", model_dir, "--data", synth_corpus / "retrieval",
                          "--out", png, "--max-items", "6")
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_inputs_are_one_line_errors(model_dir, synth_corpus, tmp_path, capsys):
    code, out, err = _run(capsys, "eval", "retrieval", "--model", tmp_path / "nope", "--data", synth_corpus / "retrieval")
    assert code == 2 and "model not found" in err and "Traceback" not in err
    code, out, err = _run(capsys, "eval", "linear", "--model", model_dir)
    assert code == 2 and "--train" in err
    code, out, err = _run(capsys, "embed", tmp_path / "missing.txt", "--model", model_dir, "--out", tmp_path / "e")
    assert code == 2 and "not found" in err


def test_finetune_command_writes_checkpoint_and_json(model_dir, synth_corpus, tmp_path, capsys):
    lab = synth_corpus / "labelled"
    out = tmp_path / "ft"
    code, stdout, err = _run(capsys, "finetune", "--model", model_dir, "--task", "video", "--train", lab / "train.csv",
                             "--val", lab / "test.csv", "--out", out, "--steps", "1", "--batch-size", "2",
                             "--windows", "1", "--crops", "1", "--json")
    assert code == 0, err
    res = json.loads(stdout)
    assert res["steps"] == 1 and res["num_classes"] == 4 and "top1" in res
    assert (out / "checkpoints" / "step_0000001" / "COMPLETE").is_file() and res["stopped"] == "done"
    assert json.loads((out / "results.json").read_text())["top1"] == res["top1"]


def test_finetune_config_file_and_set_like_pretraining(model_dir, synth_corpus, tmp_path, capsys):
    lab = synth_corpus / "labelled"
    cfg = tmp_path / "ft.yaml"
    cfg.write_text("task: video\nsteps: 1\nbatch_size: 2\ntest_windows: 1\ntest_crops: 1\nlabel_smoothing: 0.2\n")
    out = tmp_path / "ft"
    code, stdout, err = _run(capsys, "finetune", "--model", model_dir, "--config", cfg, "--set", "lr=0.01",
                             "--train", lab / "train.csv", "--val", lab / "test.csv", "--out", out, "--json")
    assert code == 0, err
    saved = (out / "config.yaml").read_text()
    assert saved.startswith("# vatt finetune --model")  # the command that made it, as for pretraining
    from vatt.train.finetune import FinetuneConfig

    state = FinetuneConfig.load(out / "config.yaml")
    assert state.lr == 0.01 and state.label_smoothing == 0.2 and state.steps == 1
    code, _, err = _run(capsys, "finetune", "--model", model_dir, "--set", "label_smothing=0", "--train",
                        lab / "train.csv", "--val", lab / "test.csv", "--out", tmp_path / "ft2")
    assert code == 2 and "did you mean 'label_smoothing'" in err and "Traceback" not in err
