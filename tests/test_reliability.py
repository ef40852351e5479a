"""Nothing a careless or hostile user (or a scheduler, or a shared file system) does gets a
traceback or loses a run (issue 13): signals to loader workers, dead and stopped workers, data
that vanishes mid-run, two runs on one directory, file-system errors, interrupted pruning,
damaged checkpoints, hostile model directories and embeddings files, bad flags, unexpected
errors. In-process on tiny models; the process-group signal test is in test_reliability_signals.py."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from train_helpers import VOCAB, MemoryClips, read_metrics, tiny_config

import vatt
from vatt.cli.main import main
from vatt.data.stats import SampleStats
from vatt.errors import CheckpointError, DataError, InputError
from vatt.train import Pretraining, pretrain
from vatt.train import checkpoint as C

# One-layer encoders: these tests are about the machinery around the steps, not the model.
SMALL = ["batch_size=2", "model.video_encoder.num_layers=1", "model.audio_encoder.num_layers=1",
         "model.text_encoder.num_layers=1"]


def small_config(*overrides):
    return tiny_config(*SMALL, *overrides)


def losses(run_dir):
    return [(m["step"], m["loss"]) for m in read_metrics(run_dir) if "loss" in m]


def one_error_line(capsys, command: str) -> str:
    """The one error line on stderr (progress bars aside), checked to start with `vatt COMMAND`."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    errors = [ln[ln.index(f"vatt {command}"):] for ln in err.split("\n") if f"vatt {command}" in ln]
    assert len(errors) == 1 and "error" in errors[0], err
    return errors[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Losses of an uninterrupted 4-step run (in-process loading)."""
    run = tmp_path_factory.mktemp("reference") / "run"
    pretrain(small_config("steps=4"), MemoryClips(4), run, vocab=VOCAB)
    return losses(run)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("model") / "tiny"
    vatt.create_model("tiny", vocab=VOCAB).save_pretrained(d)
    return d


def _workers(trainer):
    return trainer.batches.loader.worker_processes()


# -- 1. SIGTERM / SIGINT to the whole process group ---------------------------------------------------
def test_loader_workers_ignore_sigterm_and_sigint_so_the_main_process_checkpoints(tmp_path):
    def signal_the_group(m):  # what `kill -- -PGID` / Slurm does: every worker, then the main process
        if m.get("step") == 2:
            for w in _workers(trainer):
                os.kill(w.pid, signal.SIGTERM)
                os.kill(w.pid, signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)

    trainer = Pretraining(small_config("steps=4", "data.num_workers=1"), MemoryClips(4), tmp_path / "run", vocab=VOCAB,
                      callback=signal_the_group)
    result = trainer.fit()
    assert (result.stopped, result.step, result.signal) == ("signal", 2, signal.SIGTERM)
    assert C.latest_checkpoint(tmp_path / "run").name == "step_0000002"


# -- 2. a loader worker killed (-9) or stopped (SIGSTOP) ----------------------------------------------
@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"])
def test_dead_or_stopped_loader_worker_is_replaced_and_training_is_unchanged(tmp_path, reference, caplog, how):
    def hit_worker(m):
        if m.get("step") == 2:
            for w in _workers(trainer):
                os.kill(w.pid, getattr(signal, how))

    cfg = small_config("steps=4", "data.num_workers=1", "data.timeout=3")
    trainer = Pretraining(cfg, MemoryClips(4), tmp_path / "run", vocab=VOCAB, callback=hit_worker)
    with caplog.at_level(logging.WARNING):
        result = trainer.fit()
    assert result.stopped == "done" and result.step == 4
    assert "restarted its workers at batch" in caplog.text
    assert losses(tmp_path / "run") == reference  # the replacement workers resume the exact order


# -- 3. every training file disappears mid-run ----------------------------------------------------------
class _Runaway(BaseException):
    """Raised after far too many loads, so a loader that would spin forever fails the test instead."""


class VanishingClips(MemoryClips):
    """MemoryClips read through the data layer's retry path (``load``/``refs``); ``gone`` makes
    every read fail as if the files had been deleted."""

    max_retries, strict = 2, False

    def __init__(self, n=4):
        super().__init__(n)
        self.gone_since = None
        self._stats = SampleStats()
        self.refs = [type("Ref", (), {"path": f"clip{i}.mp4"})() for i in range(n)]

    def load(self, i, rng):
        if self.gone_since is not None:
            if time.monotonic() - self.gone_since > 60:
                raise _Runaway
            raise FileNotFoundError(f"clip{i}.mp4")
        return dict(self[i])


def test_all_bad_batches_stop_with_a_clear_error_and_a_checkpoint(tmp_path):
    data = VanishingClips()

    def delete_everything(m):
        if m.get("step") == 1:
            data.gone_since = time.monotonic()

    cfg = small_config("steps=4", "data.max_bad_batches=3")
    with pytest.raises(DataError, match="3 batches in a row had no usable sample.*at step 1") as err:
        pretrain(cfg, data, tmp_path / "run", vocab=VOCAB, callback=delete_everything)
    assert "\n" not in str(err.value)
    assert C.latest_checkpoint(tmp_path / "run").name == "step_0000001"


def test_a_stop_request_ends_a_wait_for_data_that_never_comes(tmp_path):
    data = VanishingClips()

    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))

    def delete_everything_then_sigterm(m):
        if m.get("step") == 1:
            data.gone_since = time.monotonic()
            timer.start()  # arrives while the loader finds nothing but bad samples

    cfg = small_config("steps=4", "data.max_bad_batches=1000000")
    try:
        result = pretrain(cfg, data, tmp_path / "run", vocab=VOCAB, callback=delete_everything_then_sigterm)
    finally:
        timer.cancel()
    assert (result.stopped, result.step) == ("signal", 1)
    assert C.latest_checkpoint(tmp_path / "run").name == "step_0000001"
    state = json.loads((C.latest_checkpoint(tmp_path / "run") / "trainer.json").read_text())
    assert state["data"]["consumed"] == 1  # the abandoned step's batches are drawn again on resume


# -- 4. two runs on one directory ------------------------------------------------------------------------
def test_second_run_on_a_locked_directory_names_the_holder(tmp_path, capsys):
    from vatt.train.run_lock import RunDirLocked, RunLock

    run = tmp_path / "run"
    run.mkdir()
    with RunLock(run):
        with pytest.raises(RunDirLocked, match=rf"pid {os.getpid()} on host .+, since"):
            pretrain(small_config("steps=1"), MemoryClips(4), run, vocab=VOCAB)
        assert not (run / "checkpoints").exists()  # it touched nothing
        code = main(["pretrain", "--config", "tiny", "--data", str(tmp_path), "--out", str(run)])
        assert code == 2 and "is in use by another run (pid" in one_error_line(capsys, "pretrain")
    result = pretrain(small_config("steps=1"), MemoryClips(4), run, vocab=VOCAB)  # released: runs
    assert result.stopped == "done"


def test_the_run_lock_dies_with_its_process(tmp_path):
    from vatt.train.run_lock import RunDirLocked, RunLock

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from vatt.train.run_lock import RunLock; "
                               "RunLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(60)",
         str(tmp_path)], stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == b"locked"
        with pytest.raises(RunDirLocked, match=f"pid {holder.pid} "):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    RunLock(tmp_path).acquire().release()  # kill -9 released it: no stale lock


# -- 5. file-system errors ------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["pretrain", "synth", "prepare", "vocab", "visualize"])
def test_out_that_is_a_file_or_folder_is_one_line_exit_2(tmp_path, model_dir, synth_corpus, capsys, command):
    file, folder, videos = tmp_path / "file", tmp_path / "folder", str(synth_corpus / "pretrain")
    file.write_text("x")
    folder.mkdir()
    argv = {
        "pretrain": ["pretrain", "--config", "tiny", "--data", videos, "--out", str(file)],
        "synth": ["data", "synth", str(file), "--clips", "2"],
        "prepare": ["data", "prepare", videos, str(file)],
        "vocab": ["vocab", "build", str(next((synth_corpus / "pretrain").glob("*.srt"))), "--out", str(folder)],
        "visualize": ["visualize", "--model", str(model_dir), "--data", videos, "--out", str(file / "x.png")],
    }[command]
    assert main(argv) == 2
    one_error_line(capsys, argv[0])
    assert file.read_text() == "x" and not any(folder.iterdir())


def _fail_when(monkeypatch, target: str, error: Exception):
    """Make safetensors' ``save_file`` (behind every tensor file the package writes, through
    ``vatt.atomic_io.atomic_write_safetensors``) raise ``error`` when writing into ``target``."""
    import safetensors.torch

    original = safetensors.torch.save_file

    def save_file(tensors, path, *a, **kw):
        if target in str(path):
            raise error
        return original(tensors, path, *a, **kw)

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)


@pytest.mark.parametrize("error", [
    "SafetensorError",  # what safetensors raises on a full disk
    OSError(28, "No space left on device"),
    OSError(30, "Read-only file system"),
    PermissionError(13, "Permission denied"),
])
def test_failed_checkpoint_write_is_one_line_keeps_previous_and_leaves_no_temp_files(tmp_path, monkeypatch, error):
    if error == "SafetensorError":
        from safetensors import SafetensorError

        error = SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                                '"No space left on device" })')
    _fail_when(monkeypatch, "step_0000002", error)
    run = tmp_path / "run"
    with pytest.raises(CheckpointError, match="could not write checkpoint step_0000002.*previous checkpoints are "
                                              "intact \\(newest: step_0000001\\)") as err:
        pretrain(small_config("steps=2", "checkpoint_every=1"), MemoryClips(4), run, vocab=VOCAB)
    assert "\n" not in str(err.value)
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_0000001"]  # no temp directory
    C.verify_files(run / "checkpoints" / "step_0000001")
    vatt.load_model(run / "checkpoints" / "step_0000001")


def test_permission_denied_in_the_cli_is_one_line_exit_2(tmp_path, monkeypatch, capsys, synth_corpus):
    import builtins

    real_open = builtins.open

    def no_metrics(path, *a, **kw):
        if str(path).endswith("metrics.jsonl"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **kw)

    monkeypatch.setattr(builtins, "open", no_metrics)
    code = main(["pretrain", "--config", "tiny", "--set", *SMALL, "steps=1", "data.num_workers=0",
                 "--data", str(synth_corpus / "pretrain"), "--out", str(tmp_path / "run")])
    assert code == 2
    assert "Permission denied: '" in one_error_line(capsys, "pretrain")


# -- 6. pruning is atomic; loading checks the file list -----------------------------------------------------
def test_kill_while_pruning_never_leaves_a_complete_checkpoint_with_missing_files(tmp_path, monkeypatch):
    run = tmp_path / "run"
    pretrain(small_config("steps=2", "checkpoint_every=1", "keep_last=0"), MemoryClips(4), run, vocab=VOCAB)

    class Killed(BaseException):
        pass

    rmtree = shutil.rmtree

    def rmtree_then_die(path, *a, **kw):  # deleting a checkpoint: the process dies after one file
        if os.path.isfile(os.path.join(path, "model.safetensors")):
            os.unlink(os.path.join(path, "model.safetensors"))
            raise Killed
        return rmtree(path, *a, **kw)

    monkeypatch.setattr(C.shutil, "rmtree", rmtree_then_die)
    with pytest.raises(Killed):
        pretrain(small_config("steps=3", "checkpoint_every=1", "keep_last=2"), MemoryClips(4), run, vocab=VOCAB,
                 resume="auto")
    monkeypatch.undo()
    for ckpt in C.list_checkpoints(run):  # whatever is listed as complete is whole
        C.verify_files(ckpt)
    assert [p.name for p in C.list_checkpoints(run)] == ["step_0000002", "step_0000003"]


def test_loading_a_checkpoint_checks_its_file_list(tmp_path):
    run = tmp_path / "run"
    pretrain(small_config("steps=1"), MemoryClips(4), run, vocab=VOCAB)
    ckpt = C.latest_checkpoint(run)
    (ckpt / "rng_rank0.json").unlink()  # the old loader silently skipped the RNG
    model = vatt.create_model("tiny", vocab=VOCAB)
    with pytest.raises(CheckpointError, match="missing rng_rank0.json"):
        C.load_checkpoint(ckpt, model=model)


# -- 7. damaged checkpoints: fall back with --resume auto; validate every field ------------------------------
def test_resume_auto_skips_a_damaged_newest_checkpoint_with_a_warning(tmp_path, reference, caplog):
    run = tmp_path / "run"
    pretrain(small_config("steps=3", "checkpoint_every=1", "keep_last=0"), MemoryClips(4), run, vocab=VOCAB)
    newest = C.latest_checkpoint(run)
    assert newest.name == "step_0000003"
    data = (newest / "model.safetensors").read_bytes()
    (newest / "model.safetensors").write_bytes(data[: len(data) // 2])  # e.g. a disk error
    with caplog.at_level(logging.WARNING):
        result = pretrain(small_config("steps=4", "checkpoint_every=1", "keep_last=0"), MemoryClips(4), run,
                          vocab=VOCAB, resume="auto")
    assert "skipping damaged checkpoint step_0000003" in caplog.text
    assert result.step == 4
    got = dict(losses(run))  # steps 3-4 were redone from step 2
    assert [got[s] for s in (1, 2, 3, 4)] == [loss for _, loss in reference]


def _tamper_json(path, edit):
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


TAMPERING = {
    "step a string": ("trainer.json", lambda d: d.update(step="ten")),
    "no schedule": ("trainer.json", lambda d: d.pop("schedule")),
    "negative position": ("trainer.json", lambda d: d["data"].update(consumed=-3)),
    "elapsed NaN": ("trainer.json", lambda d: d.update(elapsed_seconds=float("nan"))),
    "trainer a list": ("trainer.json", None),
    "rng torch state a number": ("rng_rank0.json", lambda d: d.update(torch=5)),
    "rng python state cut": ("rng_rank0.json", lambda d: d.update(python=[3])),
    "optimizer groups cut": ("optimizer.json", lambda d: d["param_groups"][0].update(params=[0, 1])),
    "optimizer state unknown tensor": ("optimizer.json",
                                       lambda d: d["state"]["__items__"][0][1].update(exp_avg={"__tensor__": "t.x"})),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_tampered_checkpoint_state_is_a_one_line_error(tmp_path, case):
    run = tmp_path / "run"
    pretrain(small_config("steps=1"), MemoryClips(4), run, vocab=VOCAB)
    ckpt = C.latest_checkpoint(run)
    name, edit = TAMPERING[case]
    if case == "trainer a list":
        (ckpt / name).write_text("[1, 2]")
    else:
        _tamper_json(ckpt / name, edit)
    marker = json.loads((ckpt / C.MARKER).read_text())  # keep the size list consistent: tampering, not damage
    marker["files"][name] = (ckpt / name).stat().st_size
    (ckpt / C.MARKER).write_text(json.dumps(marker))
    with pytest.raises(CheckpointError) as err:
        pretrain(small_config("steps=2"), MemoryClips(4), run, vocab=VOCAB, resume=str(ckpt))
    assert "\n" not in str(err.value) and str(ckpt) in str(err.value)


# -- 10. hostile model directories --------------------------------------------------------------------------
def _hostile(model_dir, tmp_path, config=None, vocab=None):
    d = tmp_path / "hostile"
    shutil.copytree(model_dir, d)
    if config:
        _tamper_json(d / "config.json", lambda m: config(m["config"]))
    if vocab:
        _tamper_json(d / "vocab.json", vocab)
    return d


@pytest.mark.parametrize("case,config,vocab,match", [
    ("num_layers 1e8", lambda c: c["video_encoder"].update(num_layers=10**8), None, "num_layers should be <= "),
    ("num_layers 400", lambda c: c["video_encoder"].update(num_layers=400), None, "tensors missing"),
    ("width doubled", lambda c: c["audio_encoder"].update(width=256, num_heads=4), None, "of another shape"),
    ("num_heads 0", lambda c: c["video_encoder"].update(num_heads=0), None, "num_heads should be >= 1"),
    ("a word is a number", None, lambda v: v["words"].__setitem__(5, 7), "got 7 at position 5"),
    ("a word is null", None, lambda v: v["words"].__setitem__(3, None), "got None at position 3"),
])
def test_hostile_model_directory_is_one_line_exit_2(tmp_path, model_dir, capsys, case, config, vocab, match):
    d = _hostile(model_dir, tmp_path, config, vocab)
    with pytest.raises(CheckpointError, match=match):
        vatt.load_model(d)
    assert main(["embed", str(tmp_path), "--model", str(d), "--out", str(tmp_path / "e.safetensors")]) == 2
    assert match.split(" ")[0] in one_error_line(capsys, "embed")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_is_one_line(model_dir, capsys, tmp_path):
    with pytest.raises(InputError, match="CUDA is not available"):
        vatt.load_model(model_dir, device="cuda")
    assert main(["embed", str(tmp_path), "--model", str(model_dir), "--out", "e.st", "--device", "cuda"]) == 2
    assert "CUDA is not available" in one_error_line(capsys, "embed")


# -- 14. embeddings files -------------------------------------------------------------------------------------
def _embeddings(path, tensors, meta):
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata={"vatt": json.dumps({"format": "vatt-embeddings", **meta})})
    return path


@pytest.mark.parametrize("case,tensors,meta,match", [
    ("fewer items than rows", {"video_vt": torch.ones(3, 4), "video_va": torch.ones(3, 4)},
     {"modality": "video", "items": ["a", "b"]}, r"should be \[2, D\]"),
    ("a missing tensor", {"video_va": torch.ones(2, 4)}, {"modality": "video", "items": ["a", "b"]}, "needs tensors"),
    ("items a string", {"text_vt": torch.ones(2, 4)}, {"modality": "text", "items": "ab"}, "list of strings"),
    ("a NaN row", {"text_vt": torch.tensor([[1.0, 0], [float("nan"), 0]])}, {"modality": "text", "items": ["a", "b"]},
     r"1 rows of text_vt are not finite \(rows \[1\]\)"),
])
def test_damaged_embeddings_file_is_one_line_exit_2(tmp_path, model_dir, capsys, case, tensors, meta, match):
    from vatt.embed import load_embeddings

    path = _embeddings(tmp_path / "e.safetensors", tensors, {**meta, "model": str(model_dir)})
    with pytest.raises(CheckpointError, match=match):
        load_embeddings(path)
    assert main(["search", str(path), "a red ball"]) == 2
    one_error_line(capsys, "search")


# -- 15. evaluation flags and sets with nothing to evaluate ---------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["eval", "retrieval", "--model", "M", "--data", "D", "--batch-size", "0"],
    ["eval", "retrieval", "--model", "M", "--data", "D", "--batch-size", "-1"],
    ["eval", "linear", "--model", "M", "--train", "D", "--test", "D", "--workers", "-1"],
    ["embed", "D", "--model", "M", "--out", "o", "--workers", "-1"],
    ["visualize", "--model", "M", "--data", "D", "--out", "o.png", "--max-items", "0"],
    ["visualize", "--model", "M", "--data", "D", "--out", "o.png", "--perplexity", "0"],
    ["finetune", "--model", "M", "--train", "D", "--val", "D", "--out", "o", "--lr", "-1"],
    ["finetune", "--model", "M", "--train", "D", "--val", "D", "--out", "o", "--batch-size", "0"],
])
def test_bad_evaluation_flags_are_one_line_exit_2(capsys, argv):
    assert main(argv) == 2
    one_error_line(capsys, " ".join(argv[:2]) if argv[0] == "eval" else argv[0])


def test_finetune_crop_smaller_than_a_patch_is_one_line_exit_2(capsys, model_dir, tmp_path):
    argv = ["finetune", "--model", str(model_dir), "--train", "D", "--val", "D", "--out", str(tmp_path / "o"),
            "--crop-size", "7"]
    assert main(argv) == 2
    assert "crop_size" in one_error_line(capsys, "finetune")


def test_an_all_bad_folder_is_one_line_exit_2(tmp_path, model_dir, capsys):
    (tmp_path / "bad").mkdir()
    for name in ("a.mp4", "b.mp4"):
        (tmp_path / "bad" / name).write_bytes(b"not a video at all")
    for argv in (["eval", "retrieval", "--model", str(model_dir), "--data", str(tmp_path / "bad"), "--windows", "1"],
                 ["embed", str(tmp_path / "bad"), "--model", str(model_dir), "--out", str(tmp_path / "e.st")]):
        assert main(argv) == 2
        assert "no usable item" in one_error_line(capsys, argv[0])


def test_retrieval_on_an_audio_only_set_says_there_is_nothing_to_retrieve():
    from vatt.eval.retrieval import retrieval_from_features

    n = 4  # audio-only items: the video is zeros with mask 0, and there is no text
    feats = {"video_vt": torch.randn(n, 1, 8), "text_vt": torch.randn(n, 5, 8), "video_va": torch.randn(n, 1, 8),
             "audio_va": torch.randn(n, 1, 8), "video_mask": torch.zeros(n), "audio_mask": torch.ones(n),
             "text_mask": torch.zeros(n), "text_ids": torch.ones(n, 5, 16, dtype=torch.long)}
    with pytest.raises(InputError, match="nothing to retrieve: of 4 items, 0 have a video"):
        retrieval_from_features(feats)


# -- 17. any other exception --------------------------------------------------------------------------------------
def test_unexpected_errors_are_one_line_with_a_debug_hint(monkeypatch, capsys):
    import vatt.cli.model_cmds as model_cmds

    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(model_cmds, "model_info_cmd", broken)
    assert main(["model-info", "tiny"]) == 1
    line = one_error_line(capsys, "model-info")
    assert "ZeroDivisionError: division by zero" in line and "--debug" in line
    with pytest.raises(ZeroDivisionError):
        main(["--debug", "model-info", "tiny"])
