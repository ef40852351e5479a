"""Training batches with a resumable position, split by rank and loader worker.

Map-style datasets (folders, manifests, audio-only sets, in-memory datasets) get a global order
that depends only on the seed: epoch ``e`` is a permutation of the dataset drawn from
``(seed, e)``, cut into *slots* of ``micro_batch x world_size`` clips; rank ``r`` takes the
``r``-th ``micro_batch`` clips of each slot, and the DataLoader hands whole micro-batches to its
workers. Each clip's augmentation is drawn from ``(seed, epoch, index)``, so which worker (or
how many workers, or ranks) loads it makes no difference. The position is the number of slots
consumed; resuming at slot ``k`` yields exactly what the uninterrupted run would have.

Streams (WebDataset shards, weighted mixtures; :mod:`vatt.data.streams`) never end and are
deterministic given the seed, the rank and the number of loader workers; the position is, per
rank and loader worker, the stream position of the last batch consumed, plus which worker hands
out the next batch. A resumed stream continues exactly where the run stopped (same shard order,
consumed samples skipped) when the number of ranks and workers is unchanged; otherwise it
restarts with a new seed and says so.
"""

from __future__ import annotations

import logging
import signal
import threading
import weakref
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, Sampler

from .. import distributed as D

from ..data.loader import make_loader
from ..data.sample import load_with_retries
from ..data.stats import SampleStats
from ..errors import DataError, InputError

log = logging.getLogger(__name__)

MAX_LOADER_RESTARTS = 3  # per run; a loader that keeps failing is a problem to report, not retry

class LoaderFailed(DataError):
    """The data loader's workers died or stopped answering more often than we restart them."""


def _defer_worker_failure_reports(batches: "TrainBatches") -> None:
    """torch's SIGCHLD handler raises "DataLoader worker ... exited unexpectedly" wherever the
    main process happens to be (mid-backward, mid-checkpoint). Let it raise only while
    ``batches`` waits for data, where :meth:`TrainBatches.__next__` restarts the loader; between
    waits the failure is found by the worker health check at the next wait. The handler reads the
    flag of this ``batches`` object (held weakly), not a module global."""
    if threading.current_thread() is not threading.main_thread():
        return
    current = signal.getsignal(signal.SIGCHLD)
    inner = getattr(current, "_vatt_inner", current)  # ours from an earlier loader: wrap torch's again
    if not callable(inner):
        return
    ref = weakref.ref(batches)

    def handler(signum, frame):
        owner = ref()
        if owner is not None and owner.waiting:
            inner(signum, frame)

    handler._vatt_inner = inner
    signal.signal(signal.SIGCHLD, handler)


def _dead_workers(loader) -> list[str]:
    """Workers of the loader's current iterator that died (a stopped one is found by the timeout)."""
    out = []
    for w in loader.worker_processes():
        if w.exitcode not in (None, 0):  # 0: a stream's worker that finished its share
            out.append(f"pid {w.pid} exited with {w.exitcode}")
    return out


class SlotSampler(Sampler):
    """Endless ``(epoch, index)`` keys for one rank, ``micro_batch`` per slot, from slot ``start``."""

    def __init__(self, size: int, micro_batch: int, *, rank: int = 0, world_size: int = 1, seed: int = 0,
                 start: int = 0):
        per_slot = micro_batch * world_size
        if size < per_slot:
            raise InputError(
                f"the training set has {size} samples, fewer than one global micro-batch "
                f"({micro_batch} x {world_size} ranks); lower batch_size or add data"
            )
        self.size, self.micro, self.rank, self.seed, self.start = size, micro_batch, rank, seed, start
        self.per_epoch = size // per_slot  # a last incomplete slot is dropped, as drop_last does
        self.per_slot = per_slot

    def __iter__(self) -> Iterator[tuple[int, int]]:
        slot = self.start
        perm, perm_epoch = None, -1
        while True:
            epoch, k = divmod(slot, self.per_epoch)
            if epoch != perm_epoch:
                perm, perm_epoch = np.random.default_rng([self.seed, epoch]).permutation(self.size), epoch
            first = k * self.per_slot + self.rank * self.micro
            for idx in perm[first : first + self.micro]:
                yield epoch, int(idx)
            slot += 1


class SeededItems(Dataset):
    """Wraps a map-style dataset so item ``(epoch, index)`` is augmented with its own RNG.

    Datasets with a ``load(index, rng)`` method (:class:`vatt.data.ClipDataset`) get
    ``np.random.default_rng([seed, epoch, index])``; a bad sample is replaced by another drawn from
    the same RNG and counted (strict datasets raise). Other datasets are indexed directly.
    """

    def __init__(self, dataset: Dataset, seed: int = 0):
        self.dataset, self.seed = dataset, seed
        self._stats = getattr(dataset, "_stats", None) or SampleStats()
        self.train = True

    def __len__(self) -> int:
        return len(self.dataset)

    def stats(self) -> dict:
        return self._stats.as_dict()

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, idx = key
        ds = self.dataset
        if not hasattr(ds, "load"):
            item = dict(ds[idx])
            item.setdefault("key", str(idx))
            return item
        rng = np.random.default_rng([self.seed, epoch, idx])
        return load_with_retries(lambda i: ds.load(i, rng), idx, lambda i: ds.refs[i].path,
                                 tries=getattr(ds, "max_retries", 10), strict=getattr(ds, "strict", False),
                                 draw=lambda: int(rng.integers(0, len(ds))))


class TrainBatches:
    """Endless micro-batches for this rank with a JSON position (``state_dict``).

    Args:
        dataset: from :func:`vatt.data.build_dataset` (train=True), or any map-style dataset of
            Batch-contract items.
        micro_batch: clips per rank per micro-batch.
        start: slots (map-style) or batches (streams) already consumed.
        state: the saved :meth:`state_dict` of the run being resumed (streams resume from it).
    """

    def __init__(self, dataset, micro_batch: int, *, rank: int = 0, world_size: int = 1, seed: int = 0,
                 num_workers: int = 2, start: int = 0, state: dict | None = None, timeout: float = 0,
                 max_empty_batches: int | None = None):
        self.dataset, self.consumed = dataset, start
        self.streaming = isinstance(dataset, IterableDataset)
        self.rank, self.world_size, self.workers = rank, world_size, max(1, num_workers)
        timeout = timeout if num_workers > 0 else 0
        if self.streaming:
            self._start = self._stream_start((state or {}).get("stream"), seed, start)
            if hasattr(dataset, "resume_from"):
                dataset.resume_from(self._start)
            self.loader = make_loader(dataset, micro_batch, num_workers=num_workers, seed=seed,
                                      persistent_workers=False, timeout=timeout)
        else:
            items = SeededItems(dataset, seed)
            sampler = SlotSampler(len(dataset), micro_batch, rank=rank, world_size=world_size, seed=seed, start=start)
            self.loader = make_loader(items, micro_batch, num_workers=num_workers, sampler=sampler, seed=seed,
                                      persistent_workers=False, drop_last=True, timeout=timeout)
        self.loader.max_empty_batches = max_empty_batches
        self.timeout = timeout
        self.restarts = 0
        self._it = None
        # True while the main process waits for a batch: a stop request may interrupt only then
        # (vatt.train.engine.StopFlag reads it), and a dead worker is reported only then.
        self.waiting = False

    def _stream_start(self, saved: dict | None, seed: int, consumed: int) -> dict:
        fresh = {"workers": self.workers, "next": 0, "positions": [None] * self.workers}
        if not consumed:
            return fresh
        if (saved and saved.get("workers") == self.workers and saved.get("world_size") == self.world_size
                and len(saved.get("ranks", ())) == self.world_size):
            return saved["ranks"][self.rank] | {"workers": self.workers}
        # Positions belong to (rank, worker) slots that no longer exist: a new seed, not a replay.
        log.warning("the data stream cannot resume exactly (%s); it restarts with a new shuffle",
                    "ranks or loader workers changed" if saved else "the checkpoint has no stream position")
        if hasattr(self.dataset, "seed"):
            self.dataset.seed = seed * 7919 + consumed
        return fresh

    def __next__(self) -> dict:
        while True:
            if self._it is None:
                self._it = iter(self.loader)
                _defer_worker_failure_reports(self)
            dead = _dead_workers(self.loader)
            # torch's timeout covers the wait for a batch, not receiving it: a worker stopped while
            # sending a batch in shared memory blocks the receive forever. Past the timeout the
            # watchdog kills the workers, which ends that receive with an error handled below.
            watchdog = None
            if self.timeout > 0 and self.loader.worker_processes():
                watchdog = threading.Timer(self.timeout + 1, self._kill_workers)
                watchdog.daemon = True
                watchdog.start()
            self.waiting = True
            try:
                if dead:
                    raise RuntimeError(f"DataLoader worker(s) died: {', '.join(dead)}")
                batch = next(self._it)
            except (RuntimeError, ConnectionError, EOFError) as e:
                # torch: "DataLoader worker ... killed", "DataLoader timed out"; a batch in shared
                # memory whose sender died: ConnectionResetError / EOFError while receiving it.
                if isinstance(e, RuntimeError) and "DataLoader" not in str(e):
                    raise
                failure = (str(e).splitlines()[0].strip() if isinstance(e, RuntimeError)
                           else f"a worker died while sending a batch ({type(e).__name__})")
            else:
                failure = None
            finally:
                self.waiting = False
                if watchdog is not None:
                    watchdog.cancel()
            if failure is None:
                self.consumed += 1
                return batch
            self._restart(failure)

    def _kill_workers(self) -> None:
        for w in self.loader.worker_processes():
            if w.exitcode is None:
                w.kill()

    def _restart(self, why: str) -> None:
        """Replace a failed loader's workers and go on from the same position (map-style data
        resumes exactly; a stream restarts with a new seed, as after a resume)."""
        self._kill_workers()  # a stopped (SIGSTOP) worker would hold up the shutdown
        self.close()
        self.restarts += 1
        if self.restarts > MAX_LOADER_RESTARTS:
            raise LoaderFailed(f"the data loader failed {self.restarts} times (last: {why}); stopped")
        if isinstance(self.loader.sampler, SlotSampler):
            self.loader.sampler.start = self.consumed
        elif self.streaming and hasattr(self.dataset, "resume_from"):  # streams go on where they were
            self._start = self._my_position() | {"workers": self.workers}
            self.dataset.resume_from(self._start)
        log.warning("data loader failed (%s); restarted its workers at batch %d (restart %d of at most %d)",
                    why, self.consumed, self.restarts, MAX_LOADER_RESTARTS)

    def __iter__(self):
        return self

    def state_dict(self) -> dict:
        """JSON position; for streams it gathers every rank's (a collective: call on all ranks)."""
        state = {"consumed": self.consumed, "streaming": self.streaming}
        if not self.streaming:
            return state
        mine = self._my_position()
        ranks = [mine]
        if D.is_distributed():
            ranks = [None] * self.world_size
            torch.distributed.all_gather_object(ranks, mine)
        state["stream"] = {"workers": self.workers, "world_size": self.world_size, "ranks": ranks}
        return state

    def _my_position(self) -> dict:
        """This rank's stream position: the next worker and each worker's last position handed out."""
        positions = list(self._start["positions"])
        last = getattr(self.loader, "last_worker", None)
        for w, pos in getattr(self.loader, "positions", {}).items():
            positions[w] = pos
        return {"next": (last + 1) % self.workers if last is not None else self._start["next"],
                "positions": positions}

    def stats(self) -> dict:
        return self.loader.dataset._stats.as_dict()

    def close(self) -> None:
        """Stop the loader's worker processes (the position is kept: the next batch restarts them)."""
        self.loader.shutdown()
        self._it = None
