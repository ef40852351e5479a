"""The run directory of a training run (pretraining or fine-tuning), apart from the loop.

What it owns: the run lock (one run per ``--out``), which checkpoints a start may resume from
(and the refusal to touch an existing run without ``--resume auto``), clearing half-written
checkpoints, the saved ``config.yaml`` and its comparison with the new one, ``metrics.jsonl``
(plus TensorBoard when installed) and ``summary.json``. Rank 0 writes; every rank reads.

Layout::

    RUN/config.yaml          the config, first line the command that made it
    RUN/checkpoints/step_*   complete checkpoints (vatt.train.checkpoint)
    RUN/metrics.jsonl        one JSON line per logged step / evaluation
    RUN/summary.json         how the last call ended (step, stop reason, speed, data counts)
    RUN/model/               the final model (vatt.load_model)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .. import distributed as D
from ..atomic_io import atomic_write_json
from ..errors import CheckpointError, ConfigError, InputError
from . import checkpoint as C
from .run_lock import RunLock

log = logging.getLogger(__name__)


class RunDirectory:
    """One run's folder. ``rank``: this process's rank (rank 0 writes, the others read)."""

    def __init__(self, path, rank: int = 0):
        self.path, self.rank = Path(path), rank
        self.metrics_path = self.path / "metrics.jsonl"
        self._lock = None
        self._tb = None

    # -- start ------------------------------------------------------------------------------------
    def lock(self) -> None:
        """Take the run lock (rank 0) before anything in the folder is touched."""
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"--out {self.path} is a file; the run directory must be a folder")
        if self.rank == 0:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock = RunLock(self.path).acquire()

    def resume_candidates(self, resume: str | None) -> list[Path]:
        """Checkpoints to try, newest first (``"auto"``: every complete one; a path: that one).

        Without ``resume`` an existing run is refused: a rerun never silently restarts or
        continues a run. The refusal is the same for pretraining and fine-tuning."""
        legacy = self.path / "checkpoint" / "state.json"
        if legacy.is_file():
            raise CheckpointError(f"{self.path} holds a fine-tuning checkpoint of an older vatt (checkpoint/state.json); "
                                  "it cannot be resumed by this version: choose another --out")
        if not resume:
            existing = C.latest_checkpoint(self.path)
            if existing is not None:
                raise CheckpointError(
                    f"{self.path} already holds checkpoints (newest: {existing.name}); pass --resume auto "
                    "(resume='auto') to continue that run, or choose another --out"
                )
            return []
        if resume == "auto":
            return C.list_checkpoints(self.path)[::-1]
        path = Path(resume)
        if not (path / C.MARKER).is_file():
            raise CheckpointError(f"--resume {path}: not a complete checkpoint directory (no {C.MARKER})")
        return [path]

    def prepare(self, cfg) -> None:
        """Clear half-written checkpoints and save ``cfg`` as ``config.yaml``, warning about any
        field that differs from the config saved by an earlier call (collective: ends in a barrier)."""
        if self.rank == 0:
            self.path.mkdir(parents=True, exist_ok=True)
            C.remove_incomplete(self.path)
            saved = self.path / "config.yaml"
            if saved.is_file():
                try:
                    old = type(cfg).load(saved).to_dict()
                    new = cfg.to_dict()
                    old.pop("command", None), new.pop("command", None)
                    changed = sorted(k for k in new if old.get(k) != new[k])
                    if changed:
                        log.warning("config differs from the run's saved config.yaml in %s", changed)
                except ConfigError as e:
                    log.warning("could not read the run's config.yaml: %s", e)
            cfg.save(saved)
        D.barrier()

    # -- during the run ---------------------------------------------------------------------------
    def open_metrics(self) -> None:
        """TensorBoard next to ``metrics.jsonl`` when it is installed (rank 0)."""
        if self.rank != 0:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # tensorboard not installed: metrics.jsonl only
            return
        self._tb = SummaryWriter(str(self.path / "tensorboard"))

    def log_metrics(self, record: dict) -> None:
        """Append one record (``step`` plus numbers) to ``metrics.jsonl`` and TensorBoard (rank 0)."""
        if self.rank != 0:
            return
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step":
                    self._tb.add_scalar(k, v, record["step"])

    def write_summary(self, summary: dict) -> None:
        if self.rank == 0:
            atomic_write_json(self.path / "summary.json", summary)

    # -- end --------------------------------------------------------------------------------------
    def close(self) -> None:
        """Close TensorBoard and release the lock (safe to call twice)."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None
