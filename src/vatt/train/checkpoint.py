"""Training checkpoints: atomic, pickle-free, resumable.

Layout of one checkpoint (``run_dir/checkpoints/step_0001000/``)::

    config.json, model.safetensors, vocab.json    the model (``vatt.load_model`` reads it)
    optimizer.safetensors + optimizer.json        optimiser tensors + the rest of its state
    trainer.json                                  step, schedule, grad scaler, data position, counters
    rng_rank{r}.safetensors + rng_rank{r}.json    every rank's torch / CUDA / numpy / Python RNG
    COMPLETE                                      written last: the checkpoint is whole

Everything is written into ``checkpoints/.tmp-step_XXXXXXX`` and renamed into place, so a kill at
any moment leaves either the old set of checkpoints or the new one, never a partial
``step_*`` directory that :func:`latest_checkpoint` would pick. Tensors go to safetensors and
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
    torch.set_rng_state(state["torch"].to(torch.uint8))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.to(torch.uint8) for s in state["cuda"]])


# -- finding checkpoints -------------------------------------------------------------------------
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
    final = root / checkpoint_name(step)
    tmp = root / f"{TMP_PREFIX}{checkpoint_name(step)}"
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
        atomic_write_json(tmp / MARKER, {"step": step})
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
            for old in list_checkpoints(run_dir)[:-keep_last]:
                shutil.rmtree(old, ignore_errors=True)
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
    if not (path / MARKER).is_file():
        raise CheckpointError(f"{path} is not a complete checkpoint (no {MARKER} marker)")
    try:
        weights = load_file(str(path / "model.safetensors"))
        trainer = json.loads((path / "trainer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, SafetensorError) as e:
        raise CheckpointError(f"{path} is not a readable checkpoint: {e}") from None
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
        optimizer.load_state_dict(load_state(path, "optimizer"))
    if restore_rng_state:
        rank, world = D.get_rank(), D.get_world_size()
        if int(trainer.get("world_size", 1)) != world:
            log.warning("checkpoint was written by %s ranks, resuming on %d: RNG streams restart",
                        trainer.get("world_size"), world)
        if (path / f"rng_rank{rank}.json").is_file():
            restore_rng(load_state(path, f"rng_rank{rank}"))
    return trainer
