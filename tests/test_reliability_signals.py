"""End to end (subprocesses): `setsid vatt pretrain ...` stopped by `kill -TERM -- -PGID` (what Slurm
and Kubernetes send to the whole job, loader workers included) exits 143 with a checkpoint at the
stop step, and `--resume auto` continues with the losses of an uninterrupted run. Plus a seeded fuzz
of every CLI command with bad flag values: no traceback anywhere, exit 2."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vatt.cli.main import main
from vatt.train import checkpoint as C

SRC = str(Path(__file__).resolve().parents[1] / "src")
SMALL = ["batch_size=2", "model.video_encoder.num_layers=1", "model.audio_encoder.num_layers=1",
         "model.text_encoder.num_layers=1", "log_every=1", "checkpoint_every=1000", "data.num_workers=1",
         "steps=6"]


def _pretrain(data, out, *extra):
    return [sys.executable, "-m", "vatt.cli.main", "pretrain", "--config", "tiny", "--set", *SMALL,
            "--data", str(data), "--out", str(out), *extra]


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}


def _losses(run):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return {m["step"]: m["loss"] for m in map(json.loads, lines) if "loss" in m}


@pytest.mark.slow
def test_sigterm_to_the_process_group_checkpoints_exits_143_and_resumes_exactly(tmp_path, synth_corpus):
    data = synth_corpus / "pretrain"
    full = subprocess.run(_pretrain(data, tmp_path / "full"), env=_env(), capture_output=True, text=True)
    assert full.returncode == 0, full.stderr[-2000:]

    run = tmp_path / "run"
    proc = subprocess.Popen(_pretrain(data, run), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # setsid: its own process group
    try:
        deadline = time.time() + 300
        while not ((run / "metrics.jsonl").is_file() and len((run / "metrics.jsonl").read_text().splitlines()) >= 2):
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.time() < deadline, "the run never reached step 2"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGTERM)  # kill -TERM -- -PGID: main process and loader workers
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, err[-2000:]
    assert "Traceback" not in err and "stopped by SIGTERM" in err
    stop_step = max(_losses(run))
    assert C.latest_checkpoint(run).name == C.checkpoint_name(stop_step)  # a checkpoint at the stop step
    assert stop_step < 6

    resumed = subprocess.run(_pretrain(data, run, "--resume", "auto"), env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _losses(run) == _losses(tmp_path / "full")  # same losses as the uninterrupted run


# -- fuzz: every command, bad flag values -----------------------------------------------------------
POSITIVE_INT = ["0", "-1", "-7", "abc", "1.5", "nan", "", "1e3x"]
NONNEG_INT = ["-1", "-3", "abc", "2.5", "", "inf"]
POSITIVE_FLOAT = ["0", "-1", "-0.5", "nan", "inf", "-inf", "abc", ""]
BAD_SETTINGS = ["optim.lr=nan", "optim.lr=-1", "steps=0", "batch_size=-4", "seed=-1", "data.num_workers=-1",
                "keep_last=-2", "max_minutes=nan", "optim.beta1=1", "model.video_encoder.num_heads=0",
                "model.video_encoder.width=1000000000", "no_such_key=1", "data.augment=5", "data.timeout=-1",
                "data.max_bad_batches=0", "optim.lrr=1", "steps"]
BAD_FINETUNE_SETTINGS = ["lr=-1", "steps=0", "batch_size=0", "num_workers=-1", "crop_size=7", "no_such_key=2"]

# command -> (valid arguments, {flag: bad values}). Paths need not exist: a bad flag must be refused first.
COMMANDS = {
    "model-info": (["tiny"], {"--set": ["video.crop_size=0", "video.patch_size=[0, 16, 16]", "nope=1"]}),
    "data synth": (["OUT"], {"--clips": ["abc", "", "1.5"], "--seed": ["abc"], "--workers": ["x"]}),
    "data prepare": (["SRC", "OUT"], {"--clip-seconds": ["abc", ""], "--max-count": ["x"], "--max-side": ["1.5"]}),
    "data check": (["SRC"], {"--workers": ["abc", "1.5"]}),
    "vocab build": (["SRC", "--out", "OUT"], {"--max-size": ["abc"], "--min-count": ["x"]}),
    "pretrain": (["--config", "tiny", "--data", "SRC", "--out", "OUT"], {"--set": BAD_SETTINGS,
                                                                        "--config": ["tiyn", "nothere.yaml"]}),
    "demo": (["--out", "OUT"], {"--minutes": POSITIVE_FLOAT, "--clips": POSITIVE_INT, "--steps": POSITIVE_INT,
                                "--set": BAD_SETTINGS}),
    "eval retrieval": (["--model", "MODEL", "--data", "SRC"], {
        "--batch-size": POSITIVE_INT, "--workers": NONNEG_INT, "--windows": POSITIVE_INT,
        "--average": ["mean", ""]}),
    "eval linear": (["--model", "MODEL", "--train", "SRC", "--test", "SRC"], {
        "--batch-size": POSITIVE_INT, "--workers": NONNEG_INT, "--windows": POSITIVE_INT, "--seed": NONNEG_INT,
        "--classifier": ["svm"], "--modality": ["text"]}),
    "finetune": (["--model", "MODEL", "--train", "SRC", "--val", "SRC", "--out", "OUT"], {
        "--steps": POSITIVE_INT, "--lr": POSITIVE_FLOAT, "--batch-size": POSITIVE_INT, "--workers": NONNEG_INT,
        "--crop-size": POSITIVE_INT, "--windows": POSITIVE_INT, "--crops": ["2", "0"], "--mixup": ["-1", "nan"],
        "--warmup": NONNEG_INT, "--set": BAD_FINETUNE_SETTINGS, "--config": ["vidoe"]}),
    "embed": (["SRC", "--model", "MODEL", "--out", "OUT"], {
        "--batch-size": POSITIVE_INT, "--workers": NONNEG_INT, "--windows": POSITIVE_INT}),
    "search": (["FILE", "a red ball"], {"-k": POSITIVE_INT}),
    "visualize": (["--model", "MODEL", "--data", "SRC", "--out", "OUT"], {
        "--max-items": POSITIVE_INT, "--perplexity": POSITIVE_FLOAT, "--workers": NONNEG_INT}),
}


def _cases(seed=0, per_command=6):
    rng = random.Random(seed)
    for command, (valid, flags) in COMMANDS.items():
        for _ in range(per_command):
            flag = rng.choice(sorted(flags))
            yield command, valid, flag, rng.choice(flags[flag])


@pytest.mark.parametrize("command,valid,flag,value", list(_cases()))
def test_fuzz_every_command_with_bad_flag_values(tmp_path, capsys, command, valid, flag, value):
    subs = {"OUT": str(tmp_path / "out"), "SRC": str(tmp_path / "src"), "MODEL": str(tmp_path / "model"),
            "FILE": str(tmp_path / "e.safetensors")}
    argv = command.split() + [subs.get(a, a) for a in valid] + [f"{flag}={value}" if value.startswith("-") else flag]
    if not value.startswith("-"):
        argv.append(value)
    code = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    errors = [ln for ln in err.split("\n") if "error" in ln]
    assert code == 2 and len(errors) == 1 and errors[0].startswith("vatt"), (argv, code, err)
    assert not (tmp_path / "out").exists()  # refused before any work
