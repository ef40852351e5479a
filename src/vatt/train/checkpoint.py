"""Training checkpoints: atomic, pickle-free, resumable.

Layout of one checkpoint (``run_dir/checkpoints/step_0001000/``)::

    config.json, model.safetensors, vocab.json    the model (``vatt.load_model`` reads it)
    optimizer.safetensors + optimizer.json        optimiser tensors + the rest of its state
    trainer.json                                  step, schedule, grad scaler, data position, counters
    rng_rank{r}.safetensors + rng_rank{r}.json    every rank's torch / CUDA / numpy / Python RNG
    COMPLETE                                      written last: the step and every file's size

Everything is written into ``checkpoints/.tmp-step_XXXXXXX`` and renamed into place, so a kill at
any moment leaves either the old set of checkpoints or the new one, never a partial
``step_*`` directory that :func:`latest_checkpoint` would pick. Old checkpoints are pruned the
same way in reverse (renamed to ``.tmp-del-step_*``, then deleted), and loading checks the files
against the list in ``COMPLETE``. A failed write (disk full, read-only file system) removes its
temp directory and leaves the previous checkpoints as they were. Tensors go to safetensors and
everything else to JSON: loading a checkpoint never unpickles anything.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path


import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .. import distributed as D
from ..atomic_io import atomic_write_json
from ..errors import CheckpointError
from ..state_io import load_state, save_state

log = logging.getLogger(__name__)

MARKER = "COMPLETE"
PREFIX = "step_"
TMP_PREFIX = ".tmp-"


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:07d}"


# -- RNG -----------------------------------------------------------------------------------------
def capture_rng() -> dict:
    """This process's torch (CPU and CUDA), numpy and Python RNG states."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    """Restore :func:`capture_rng` output; a damaged state raises CheckpointError."""
    try:
        _restore_rng(state)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError, OverflowError) as e:
        raise CheckpointError(f"the saved RNG state is damaged ({type(e).__name__}: {str(e)[:200]})") from None


def _restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"].to(torch.uint8))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.to(torch.uint8) for s in state["cuda"]])


# -- finding checkpoints -------------------------------------------------------------------------
def _prune(path: Path) -> None:
    """Delete a checkpoint so that a kill at any moment never leaves a ``step_*`` directory marked
    complete with files missing: rename it out of the way first (start-up clears ``.tmp-*``)."""
    doomed = path.parent / f"{TMP_PREFIX}del-{path.name}"
    shutil.rmtree(doomed, ignore_errors=True)
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / MARKER).is_file()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def remove_incomplete(run_dir: str | os.PathLike) -> None:
    """Delete temp directories left by a write that was killed (rank 0, at start-up)."""
    root = Path(run_dir) / "checkpoints"
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(TMP_PREFIX) or (p.name.startswith(PREFIX) and not (p / MARKER).exists()):
                log.warning("removing incomplete checkpoint %s", p)
                shutil.rmtree(p, ignore_errors=True)


# -- save / load ---------------------------------------------------------------------------------
def save_checkpoint(run_dir: str | os.PathLike, step: int, *, model, optimizer, trainer_state: dict,
                    keep_last: int = 3, sharded: bool = False) -> Path | None:
    """Write checkpoint ``step`` of a run; call on every rank (each writes its RNG state).

    ``model`` is the bare model (not the DDP wrapper); ``trainer_state`` is a JSON-able dict.
    ``sharded``: the model is FSDP2-sharded; its full states are gathered (collectively) and
    rank 0 writes them in the same format, the optimiser keyed by parameter name.
    Keeps the newest ``keep_last`` complete checkpoints (0 keeps all). Returns the path on rank 0.
    """
    root = Path(run_dir) / "checkpoints"
    tmp = root / f"{TMP_PREFIX}{checkpoint_name(step)}"
    try:
        return _save_checkpoint(root, tmp, step, model=model, optimizer=optimizer, trainer_state=trainer_state,
                                keep_last=keep_last, sharded=sharded)
    except (OSError, SafetensorError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        kept = latest_checkpoint(run_dir)
        if isinstance(e, OSError) and e.strerror:
            reason = e.strerror + (f": {e.filename}" if e.filename else "")
        else:
            reason = str(e)
        raise CheckpointError(
            f"could not write checkpoint {checkpoint_name(step)} in {root} ({' '.join(reason.split())[:300]}); "
            f"previous checkpoints are intact (newest: {kept.name if kept else 'none'})"
        ) from None


def _save_checkpoint(root: Path, tmp: Path, step: int, *, model, optimizer, trainer_state: dict, keep_last: int,
                     sharded: bool) -> Path | None:
    final = root / checkpoint_name(step)
    rank = D.get_rank()
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    D.barrier()
    save_state(tmp, f"rng_rank{rank}", capture_rng())
    extra = {}
    if sharded:
        from . import fsdp

        model_state, optim_state = fsdp.full_states(model, optimizer)  # collective
        model = fsdp.saveable(model, model_state)
        extra["optimizer_format"] = fsdp.OPTIMIZER_FORMAT
    D.barrier()
    if rank == 0:
        model.save_pretrained(tmp)
        save_state(tmp, "optimizer", optim_state if sharded else optimizer.state_dict())
        atomic_write_json(tmp / "trainer.json",
                          {"step": step, "world_size": D.get_world_size(), **extra, **trainer_state})
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        atomic_write_json(tmp / MARKER, {"step": step, "files": files})
        if final.exists():  # re-saving a step (e.g. after a resume): move the old one out first
            old = root / f"{TMP_PREFIX}old-{checkpoint_name(step)}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(root)
        if keep_last > 0:
            for old in list_checkpoints(root.parent)[:-keep_last]:
                _prune(old)
        log.info("saved checkpoint %s", final)
    D.barrier()
    return final if rank == 0 else None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(path: str | os.PathLike, *, model, optimizer=None, restore_rng_state: bool = True,
                    sharded: bool = False) -> dict:
    """Restore model weights (and optimiser, this rank's RNG) from a checkpoint directory.

    ``sharded``: ``model`` is FSDP2-sharded (every rank reads the full states and keeps its shard).
    The optimiser state must come from a run of the same kind (FSDP or not), else CheckpointError.

    Returns the ``trainer.json`` dict (step, schedule, scaler, data position, counters).
    """
    path = Path(path)
    verify_files(path)
    try:
        weights = load_file(str(path / "model.safetensors"))
        trainer = json.loads((path / "trainer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, SafetensorError) as e:
        raise CheckpointError(f"{path} is not a readable checkpoint: {e}") from None
    check_trainer_state(path, trainer)
    if hasattr(model, "state_from_saved"):  # a module saved under other names (fine-tuning's Classifier)
        weights = model.state_from_saved(weights)
    fqn = trainer.get("optimizer_format") == "fqn"
    if optimizer is not None and fqn != sharded:
        raise CheckpointError(
            f"{path} holds the optimiser state of a run with fsdp={'true' if fqn else 'false'}; resume it with "
            f"fsdp={'true' if fqn else 'false'} (this run has fsdp={'true' if sharded else 'false'})"
        )
    try:
        if sharded:
            from . import fsdp

            fsdp.load_full_states(model, optimizer, weights,
                                  load_state(path, "optimizer") if optimizer is not None else None)
        else:
            model.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        raise CheckpointError(
            f"{path} does not match this model ({str(e).splitlines()[0][:300]}); was the run's config changed?"
        ) from None
    if optimizer is not None and not sharded:
        load_optimizer_state(path, optimizer, load_state(path, "optimizer"))
    if restore_rng_state:
        rank, world = D.get_rank(), D.get_world_size()
        if int(trainer.get("world_size", 1)) != world:
            log.warning("checkpoint was written by %s ranks, resuming on %d: RNG streams restart",
                        trainer.get("world_size"), world)
        if (path / f"rng_rank{rank}.json").is_file():
            try:
                restore_rng(load_state(path, f"rng_rank{rank}"))
            except CheckpointError as e:
                raise CheckpointError(f"{path}: {e}") from None
    return trainer


REQUIRED_FILES = ("config.json", "model.safetensors", "trainer.json", "optimizer.json", "optimizer.safetensors")


def verify_files(path: Path) -> None:
    """CheckpointError unless ``path`` is a complete checkpoint whose files are all there, at the
    sizes listed in its ``COMPLETE`` marker (older markers without a list: the required files)."""
    if not (path / MARKER).is_file():
        raise CheckpointError(f"{path} is not a complete checkpoint (no {MARKER} marker)")
    try:
        marker = json.loads((path / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable {MARKER} marker ({e})") from None
    files = marker.get("files") if isinstance(marker, dict) else None
    if files is None:
        files = {name: None for name in REQUIRED_FILES}
    if not isinstance(files, dict):
        raise CheckpointError(f"{path}: the {MARKER} marker's file list is damaged")
    for name, size in files.items():
        f = path / str(name)
        if not f.is_file():
            raise CheckpointError(f"{path} is missing {name} (listed in {MARKER}); the checkpoint is damaged")
        if size is not None and f.stat().st_size != size:
            raise CheckpointError(f"{path}: {name} has {f.stat().st_size} bytes, {MARKER} says {size}; "
                                  "the checkpoint is damaged")


def _count(value, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def check_trainer_state(path: Path, trainer) -> None:
    """CheckpointError naming the first field of ``trainer.json`` that is missing or of the wrong kind."""
    def bad(field: str, expected: str):
        value = trainer.get(field, "<missing>") if isinstance(trainer, dict) else trainer
        raise CheckpointError(f"{path}/trainer.json: {field} should be {expected}, got {str(value)[:100]!r}")

    if not isinstance(trainer, dict):
        bad("the file", "a JSON object")
    if not _count(trainer.get("step")):
        bad("step", "an integer >= 0")
    if not _count(trainer.get("world_size", 1), 1):
        bad("world_size", "an integer >= 1")
    schedule = trainer.get("schedule")
    if not isinstance(schedule, dict) or not _count(schedule.get("step")):
        bad("schedule", "an object with an integer step >= 0")
    data = trainer.get("data", {})
    if not isinstance(data, dict) or not _count(data.get("consumed", 0)):
        bad("data", "an object with an integer 'consumed' >= 0")
    for name in ("skipped_steps", "bad_in_row"):
        if not _count(trainer.get(name, 0)):
            bad(name, "an integer >= 0")
    elapsed = trainer.get("elapsed_seconds", 0.0)
    if isinstance(elapsed, bool) or not isinstance(elapsed, (int, float)) or not 0 <= elapsed < float("inf"):
        bad("elapsed_seconds", "a finite number >= 0")
    if trainer.get("scaler") is not None and not isinstance(trainer["scaler"], dict):
        bad("scaler", "an object or null")


def load_optimizer_state(path: Path, optimizer, state) -> None:
    """``optimizer.load_state_dict`` after checking that every saved tensor fits its parameter
    (torch would accept a wrong shape here and fail, or silently broadcast, at the next step)."""
    try:
        params = [p for g in optimizer.param_groups for p in g["params"]]
        groups = state["param_groups"]
        ids = [i for g in groups for i in g["params"]]
        if len(ids) != len(params):
            raise ValueError(f"it has {len(ids)} parameters, the model {len(params)}")
        by_id = dict(zip(ids, params))
        for key, entry in state["state"].items():
            if key not in by_id or not isinstance(entry, dict):
                raise ValueError(f"state for unknown parameter {key!r}")
            for name, value in entry.items():
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != by_id[key].shape:
                    raise ValueError(f"{name} of parameter {key} is {list(value.shape)}, the parameter "
                                     f"{list(by_id[key].shape)}")
                if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
                    raise ValueError(f"{name} of parameter {key} holds non-finite values")
        optimizer.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as e:
        raise CheckpointError(f"{path}: the optimiser state does not fit this model "
                              f"({type(e).__name__}: {str(e)[:200]})") from None
