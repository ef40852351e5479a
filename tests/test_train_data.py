"""Pretraining on real media through the data pipeline: `vatt pretrain` on a folder where 20% of
the files are bad (trains, reports the counts), and an exact resume with augmentation and
loader workers in the loop."""

import json
import os
import shutil
import signal

import pytest
from train_helpers import read_metrics

import vatt
from vatt.cli.main import main
from vatt.train import load_train_config, pretrain
from vatt.train import checkpoint as C

KNOWN_REASONS = {"missing_file", "empty_file", "not_media", "no_streams", "decode_error", "no_frames"}


@pytest.fixture()
def folder_with_bad_files(synth_corpus, tmp_path):
    """The 24 pretraining clips of the synth corpus, 5 of them (~20%) replaced by bad files."""
    folder = tmp_path / "videos"
    shutil.copytree(synth_corpus / "pretrain", folder)
    videos = sorted(folder.glob("*.mp4"))
    assert len(videos) == 24
    bad = videos[::5]  # 5 files
    bad[0].write_bytes(b"")  # zero bytes
    bad[1].write_bytes(bad[1].read_bytes()[:300])  # truncated header
    bad[2].write_bytes(os.urandom(4096))  # garbage
    bad[3].write_text("this is not a video\n")
    bad[4].write_bytes(bad[4].read_bytes()[:1500])  # truncated after the header
    return folder


@pytest.mark.slow
def test_pretrain_command_on_data_with_20_percent_bad_files(folder_with_bad_files, synth_corpus, tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(["pretrain", "--config", "tiny", "--set", "steps=3", "batch_size=8", "log_every=1", "eval_every=3",
               "data.num_workers=1", "--data", str(folder_with_bad_files),
               "--eval-data", str(synth_corpus / "retrieval"), "--out", str(run)])
    assert rc == 0
    printed = capsys.readouterr().out
    summary = json.loads((run / "summary.json").read_text())
    data = summary["data"]
    assert data["good"] == 3 * 8  # every batch kept its size: bad samples were replaced
    assert data["bad"] >= 1 and sum(data["reasons"].values()) == data["bad"]
    assert set(data["reasons"]) <= KNOWN_REASONS
    assert f"{data['good']} / {data['bad']}" in printed
    assert summary["step"] == 3 and summary["skipped_steps"] == 0
    metrics = read_metrics(run)
    assert [m["step"] for m in metrics] == [1, 2, 3, 3]
    evals = {k: v for k, v in metrics[-1].items() if k.startswith("eval/retrieval/text_to_video/")}
    assert set(evals) == {f"eval/retrieval/text_to_video/{k}" for k in ("R@1", "R@5", "R@10", "MedR", "MeanR")}
    assert 0.0 <= evals["eval/retrieval/text_to_video/R@1"] <= 1.0
    config = (run / "config.yaml").read_text().splitlines()[0]
    assert config.startswith("# vatt pretrain --config tiny --set steps=3") and str(folder_with_bad_files) in config
    model = vatt.load_model(run)  # run_dir/model
    assert model.tokenizer is not None and "ball" in model.tokenizer.index  # vocabulary built from the captions
    assert model.tokenizer == vatt.WordTokenizer.load(run / "vocab.json")


@pytest.mark.slow
def test_resume_on_real_media_is_exact_with_augmentation_and_workers(synth_corpus, tmp_path):
    data = [str(synth_corpus / "pretrain"), str(synth_corpus / "audio_only")]
    straight = pretrain(load_train_config("tiny", ["steps=4", "batch_size=4", "log_every=1", "data.num_workers=0"]),
                        data, tmp_path / "a")
    assert straight.step == 4

    def stop_at_2(m):
        if m.get("step") == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    cfg = load_train_config("tiny", ["steps=4", "batch_size=4", "log_every=1", "data.num_workers=1"])
    first = pretrain(cfg, data, tmp_path / "b", callback=stop_at_2)
    assert first.stopped == "signal" and C.latest_checkpoint(tmp_path / "b").name == "step_0000002"
    pretrain(cfg, data, tmp_path / "b", resume="auto")
    # Same clips, same augmentation, same DropToken draws: identical losses, whatever the workers.
    assert [m["loss"] for m in read_metrics(tmp_path / "b")] == [m["loss"] for m in read_metrics(tmp_path / "a")]
