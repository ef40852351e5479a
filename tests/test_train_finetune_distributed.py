"""Fine-tuning under torchrun (gloo on CPU), through the README's command: 2 ranks equal one
process on the concatenated batch (losses, gradient norms, weights, the multi-view test), and a
kill -9 of the whole job followed by ``--resume auto`` ends where an uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from test_objective import free_port

import vatt
from vatt.train import checkpoint as C

pytestmark = pytest.mark.distributed

# Dropout off everywhere (model and head): then the two runs draw no random numbers in the step
# and must agree within fp32 rounding. Batch 8 = 4 clips per rank.
SETTINGS = ["--steps", "4", "--batch-size", "8", "--lr", "0.01", "--warmup", "1", "--windows", "2", "--crops", "1",
            "--device", "cpu", "--set", "head_dropout=0", "log_every=1", "checkpoint_every=2", "keep_last=0"]


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("base") / "model"
    vatt.create_model("tiny", dropout=0.0, attention_dropout=0.0).save_pretrained(path)
    return path


def _finetune_cmd(base_model, corpus, out, *extra):
    lab = corpus / "labelled"
    return ["finetune", "--model", str(base_model), "--config", "video", "--train", str(lab / "train.csv"),
            "--val", str(lab / "test.csv"), "--out", str(out), *SETTINGS, *extra]


def _torchrun(args, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
           "-m", "vatt.cli.main", *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kw)


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every descendant (torchrun starts its ranks in their own process groups)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    todo, found = [pid], []
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children.get(p, [])
    for p in found:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _metrics(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def _one_process(base_model, corpus, out, *extra):
    from vatt.cli.main import main

    assert main(_finetune_cmd(base_model, corpus, out, *extra, "--json")) == 0


@pytest.mark.slow
@pytest.mark.parametrize("sharding", ["ddp", "fsdp"])
def test_torchrun_finetune_equals_one_process_on_the_concatenated_batch(synth_corpus, base_model, tmp_path, sharding):
    extra = ("--set", "fsdp=true") if sharding == "fsdp" else ()
    proc = _torchrun(_finetune_cmd(base_model, synth_corpus, tmp_path / "ddp", *extra))
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert "fine-tuned model:" in out and out.count("top1") == 1  # rank 0 alone prints
    _one_process(base_model, synth_corpus, tmp_path / "one")

    ddp, one = _metrics(tmp_path / "ddp"), _metrics(tmp_path / "one")
    assert [m["step"] for m in ddp] == [1, 2, 3, 4]
    for a, b in zip(ddp, one):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5), a["step"]
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4), a["step"]
        assert a["clips_per_second"] > 0 and a["mfu"] > 0
    a = vatt.load_model(tmp_path / "ddp" / "model").state_dict()
    b = vatt.load_model(tmp_path / "one" / "model").state_dict()
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    start = vatt.load_model(base_model).state_dict()
    moved = max((a[k] - start[k]).abs().max().item() for k in start if k.endswith("weight"))
    assert moved > 1e-4  # 100x the tolerance: the comparison is not vacuous

    # The test set (6 clips) was split over the ranks (3 each) and gathered: the same metrics.
    r_ddp = json.loads((tmp_path / "ddp" / "results.json").read_text())
    r_one = json.loads((tmp_path / "one" / "results.json").read_text())
    assert r_ddp["num_test"] == r_one["num_test"] == 6
    for key in ("top1", "top5"):
        assert r_ddp[key] == pytest.approx(r_one[key], abs=1e-9)


@pytest.mark.slow
def test_kill9_of_a_torchrun_finetune_then_resume_auto_ends_as_an_uninterrupted_run(synth_corpus, base_model,
                                                                                      tmp_path):
    run = tmp_path / "run"
    long = ("--steps", "30", "--set", "checkpoint_every=10")  # long enough to be killed mid-run
    proc = _torchrun(_finetune_cmd(base_model, synth_corpus, run, *long))
    try:
        deadline = time.time() + 300
        while not (run / "checkpoints" / C.checkpoint_name(10) / C.MARKER).is_file():
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.time() < deadline, "no checkpoint of step 10"
            time.sleep(0.05)
    finally:
        _kill_tree(proc.pid)  # torchrun and both ranks, no handler runs
        proc.communicate()
    assert not (run / "model").exists() and C.latest_checkpoint(run) is not None

    again = _torchrun(_finetune_cmd(base_model, synth_corpus, run, *long))  # without --resume: refused, one line
    _, err = again.communicate(timeout=300)
    assert again.returncode != 0 and "--resume auto" in err
    resumed = _torchrun(_finetune_cmd(base_model, synth_corpus, run, *long, "--resume", "auto"))
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]

    _one_process(base_model, synth_corpus, tmp_path / "one", *long)
    a = vatt.load_model(run / "model").state_dict()
    b = vatt.load_model(tmp_path / "one" / "model").state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    steps = [m["step"] for m in _metrics(run)]
    assert steps[-2:] == [29, 30] and set(steps) == set(range(1, 31))
