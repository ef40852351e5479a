"""Pretraining from prepared shards, the README's path for real data: it runs past the end of the
first pass over the shards, and a run interrupted mid-epoch resumes at the same stream position."""

import json
import os
import signal

import pytest
from train_helpers import read_metrics

from vatt.cli.main import main
from vatt.train import load_train_config, pretrain
from vatt.train import checkpoint as C

TINY = ["batch_size=8", "log_every=1", "checkpoint_every=100", "data.num_workers=2"]


@pytest.fixture(scope="module")
def shards(synth_corpus, tmp_path_factory):
    """`vatt data prepare corpus/pretrain shards/` (the corpus is `vatt data synth --clips 24`)."""
    out = tmp_path_factory.mktemp("prepared") / "shards"
    assert main(["data", "prepare", str(synth_corpus / "pretrain"), str(out)]) == 0
    report = json.loads((out / "prepare_report.json").read_text())
    assert report["clips"] == 24 and len(report["shards"]) == 1
    return out


@pytest.mark.slow
def test_readme_path_prepare_then_pretrain_past_an_epoch_then_resume(shards, tmp_path):
    run = tmp_path / "run"
    # 24 clips, 8 per step: an epoch every 3 steps; the old stream stopped with StopIteration at step 4.
    assert main(["pretrain", "--config", "tiny", "--data", str(shards), "--out", str(run),
                 "--set", "steps=5", *TINY]) == 0
    assert [m["step"] for m in read_metrics(run)] == [1, 2, 3, 4, 5]
    data = json.loads((C.latest_checkpoint(run) / "trainer.json").read_text())["data"]
    assert data["consumed"] == 5 and data["stream"]["workers"] == 2
    assert main(["pretrain", "--config", "tiny", "--data", str(shards), "--out", str(run),
                 "--set", "steps=7", *TINY, "--resume", "auto"]) == 0
    assert [m["step"] for m in read_metrics(run)] == [1, 2, 3, 4, 5, 6, 7]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["step"] == 7 and summary["data"]["bad"] == 0


@pytest.mark.slow
def test_resume_mid_epoch_of_a_stream_gives_the_uninterrupted_losses(shards, synth_corpus, tmp_path):
    data = [str(shards), str(synth_corpus / "audio_only")]  # a mixture: shards + an audio folder
    cfg = load_train_config("tiny", ["steps=5", "batch_size=4", "log_every=1", "data.num_workers=2"])
    pretrain(cfg, data, tmp_path / "a")

    def stop_at_3(m):
        if m.get("step") == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    first = pretrain(cfg, data, tmp_path / "b", callback=stop_at_3)
    assert first.stopped == "signal" and C.latest_checkpoint(tmp_path / "b").name == "step_0000003"
    pretrain(cfg, data, tmp_path / "b", resume="auto")
    # Same clips in the same order, same augmentation: the resumed run's losses are the straight run's.
    assert [m["loss"] for m in read_metrics(tmp_path / "b")] == [m["loss"] for m in read_metrics(tmp_path / "a")]


@pytest.mark.slow
def test_cpu_training_leaves_the_loader_workers_their_cores(shards, tmp_path, monkeypatch):
    """``cpu_threads=0`` (auto): on the CPU the step runs torch's threads less one per loader worker
    (the workers decode on the same cores); an explicit value or OMP_NUM_THREADS wins; the
    caller gets its thread count back."""
    import torch

    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    seen = []
    try:
        for i, (extra, env) in enumerate([([], None), (["cpu_threads=3"], None), ([], "4")]):
            if env:
                monkeypatch.setenv("OMP_NUM_THREADS", env)
            torch.set_num_threads(4)
            cfg = load_train_config("tiny", ["steps=2", "batch_size=4", "data.num_workers=2", *extra])
            pretrain(cfg, str(shards), tmp_path / f"r{i}",
                     callback=lambda m: seen.append((i, torch.get_num_threads())) if "loss" in m else None)
            assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(before)
    assert seen == [(0, 2), (0, 2), (1, 3), (1, 3), (2, 4), (2, 4)]
