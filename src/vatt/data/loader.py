"""Batches in the Batch contract (docs/ARCHITECTURE.md), with bad samples skipped and counted.

Workers decode and augment (uint8 -> float32 in [-1, 1] happens in the worker, or, for training
batches with ``DataConfig.device_augment``, on the training device:
:func:`vatt.data.transforms.finish_batch`); the main
process receives stacked tensors plus each sample's problem report and adds the reports to the
dataset's statistics, so ``dataset.stats()`` / ``loader.stats()`` are exact with any number of
workers.
"""

from __future__ import annotations

import logging
import signal
import sys

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..errors import DataError, VattError

log = logging.getLogger(__name__)

_TENSOR_KEYS = ("video", "video_affine", "audio", "text", "video_mask", "audio_mask", "text_mask", "label")


def collate(samples: list[dict]) -> dict:
    """Stack samples into a batch dict; drops ``"_skip"`` markers but keeps their reports.

    Returns the Batch-contract keys plus ``"captions"`` (list of lists of str) and the private
    ``"_events"`` / ``"_good"`` consumed by :class:`VattLoader`. An all-bad batch has no tensors.
    """
    events = [e for s in samples for e in s.get("_events", ())]
    good = [s for s in samples if not s.get("_skip")]
    batch: dict = {"_events": events, "_good": len(good)}
    if samples and "_pos" in samples[-1]:  # a stream's batch comes from one worker, in order
        batch["_pos"] = samples[-1]["_pos"]
    if not good:
        return batch
    stacks = {k: [s[k] for s in good] for k in _TENSOR_KEYS if k in good[0]}
    if get_worker_info() is not None:
        batch.update(_packed_stacks(stacks))
    else:
        batch.update({k: torch.stack(v) for k, v in stacks.items()})
    batch["key"] = [s["key"] for s in good]
    batch["captions"] = [s.get("captions", []) for s in good]
    return batch


_ALIGN = 64


def _packed_stacks(stacks: dict[str, list[torch.Tensor]]) -> dict:
    """Stack each key's samples into one shared byte buffer: ``{"_packed": buffer, "_layout": [...]}``.

    A loader worker hands a batch to the main process through shared memory, one file descriptor
    per tensor storage, and each descriptor costs the main process a socket handshake with the
    worker's resource-sharer thread (which waits for the worker's GIL): 5.2 ms per 6-tensor demo
    batch, 5% of a tiny training step, against ~1 ms for one buffer (docs/DATA.md). Stacking
    writes straight into the buffer, so packing adds no copy. :func:`unpack` restores the keys.
    """
    layout, total = [], 0
    for k, items in stacks.items():
        shape = (len(items), *items[0].shape)
        nbytes = items[0].element_size() * items[0].numel() * len(items)
        layout.append((k, items[0].dtype, shape, total))
        total += -(-nbytes // _ALIGN) * _ALIGN
    buffer = torch.empty(total, dtype=torch.uint8)
    for k, dtype, shape, offset in layout:
        torch.stack(stacks[k], out=_view(buffer, dtype, shape, offset))
    return {"_packed": buffer, "_layout": layout}


def _view(buffer: torch.Tensor, dtype: torch.dtype, shape: tuple, offset: int) -> torch.Tensor:
    n = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
    return buffer[offset:offset + n].view(dtype).view(shape)


def unpack(batch: dict) -> dict:
    """Turn a worker's packed batch (:func:`collate` in a loader worker) back into its tensor keys
    (views of the one buffer, no copy); other batches are returned unchanged."""
    buffer = batch.pop("_packed", None)
    if buffer is not None:
        for k, dtype, shape, offset in batch.pop("_layout"):
            batch[k] = _view(buffer, dtype, shape, offset)
    return batch


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Let glibc reuse freed blocks of up to ``mmap_threshold`` bytes instead of unmapping them.

    A paper-geometry clip allocates and frees several 10-20 MB arrays (decoded frames, the float
    clip); by default glibc serves each from a fresh ``mmap``, and faulting its pages in again
    (~9,000 page faults per clip) took ~40% of a worker's CPU time (measured 43 -> 25 CPU ms per
    clip). Loader workers call this at start; the cost is that a worker keeps its high-water mark
    of freed memory (about one clip's worth). 32 MB is the largest threshold glibc accepts on
    64-bit. Returns False where it does not apply (not glibc).
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(libc.mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)))
    except (OSError, AttributeError):  # not Linux/glibc (macOS, musl, Windows)
        return False


def _one_line_errors(batches):
    """Our errors raised in a loader worker come back with the worker's traceback in the message;
    keep the error's own last line so the CLI can still print one line."""
    try:
        yield from batches
    except VattError as e:
        lines = str(e).strip().splitlines()
        if len(lines) < 2:
            raise
        last = lines[-1]
        prefix = f"{type(e).__module__}.{type(e).__qualname__}: "
        msg = last[len(prefix):] if last.startswith(prefix) else last
        try:
            err = type(e)(msg)
        except TypeError:  # an error class with another constructor
            err = DataError(msg)
        raise err from None


def _quiet_closed_pipes(exc_type, exc, tb) -> None:
    if issubclass(exc_type, (BrokenPipeError, ConnectionResetError)):
        return
    sys.__excepthook__(exc_type, exc, tb)


def _worker_init(_):
    torch.set_num_threads(1)
    # SIGTERM / Ctrl-C reach the whole process group (Slurm, Kubernetes, `kill -- -PGID`): the
    # main process checkpoints and stops its workers itself; a worker dying first would turn a
    # clean stop into "DataLoader worker killed by signal" without a checkpoint.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # When the main process stops the loader while a batch's file descriptors are being handed
    # over, multiprocessing's resource-sharer thread in this worker reports the closed pipe through
    # sys.excepthook: a traceback on the user's terminal for a normal stop. Keep those quiet.
    sys.excepthook = _quiet_closed_pipes
    keep_freed_memory()


class VattLoader(DataLoader):
    """A :class:`torch.utils.data.DataLoader` that yields only non-empty batches and records
    skipped / masked samples in ``dataset.stats()``.

    For streams (:mod:`vatt.data.streams`) it also records, per loader worker, the stream
    position of the last batch handed out (``positions``, ``last_worker``), all-bad batches
    included, so a trainer can save exactly what it consumed.

    ``max_empty_batches``: after this many all-bad batches in a row raise :class:`DataError`
    (e.g. every training file disappeared) instead of skipping forever; None = never.
    """

    positions: dict
    last_worker: int | None = None
    max_empty_batches: int | None = None
    _current = None

    def worker_processes(self) -> list:
        """The worker processes of the newest iterator (for health checks); [] in-process."""
        return list(getattr(self._current, "_workers", ()))

    def shutdown(self) -> None:
        """Stop the newest iterator's workers now. Workers ignore SIGTERM (see ``_worker_init``), so
        one that does not exit by itself (stopped, or stuck in a decoder) is killed."""
        it, self._current = self._current, None
        if it is None:
            return
        workers = list(getattr(it, "_workers", ()))
        try:
            if hasattr(it, "_shutdown_workers"):
                it._shutdown_workers()
        except RuntimeError as e:
            # torch's SIGCHLD handler reports a worker that died while exiting (seen: SIGABRT in a
            # forked worker of a gloo process at exit); we are stopping the workers anyway.
            if "DataLoader worker" not in str(e):
                raise
            log.debug("a loader worker died while shutting down: %s", e)
        for w in workers:
            if w.is_alive():
                w.kill()
                w.join(timeout=5)

    def __iter__(self):
        stats = self.dataset._stats
        self.positions = {}
        empty = 0
        self._current = super().__iter__()
        for batch in _one_line_errors(self._current):
            batch = unpack(batch)
            events = batch.pop("_events")
            stats.record(events, good=batch.pop("_good"))
            if "_pos" in batch:
                self.last_worker, self.positions[self.last_worker] = batch.pop("_pos")
            if "key" in batch:
                empty = 0
                yield batch
                continue
            empty += 1
            if self.max_empty_batches is not None and empty >= self.max_empty_batches:
                reasons = sorted({f"{reason} {path}" for path, reason, *_ in events})[:3]
                raise DataError(f"{empty} batches in a row had no usable sample (latest problems: "
                                f"{', '.join(reasons)[:300] or 'unknown'}); did the data files disappear or break?")

    def stats(self) -> dict:
        return self.dataset.stats()


def make_loader(dataset, batch_size: int, *, num_workers: int = 2, shuffle: bool | None = None,
                drop_last: bool = True, seed: int = 0, pin_memory: bool | None = None,
                prefetch_factor: int = 2, persistent_workers: bool = True, sampler=None,
                timeout: float = 0) -> VattLoader:
    """A loader of Batch-contract dicts.

    Args:
        dataset: from :func:`build_dataset` / :func:`build_eval_dataset`.
        batch_size: samples per batch (per process).
        num_workers: decoding processes (0 = in the main process).
        shuffle: default: on for map-style training datasets, off otherwise.
        drop_last: drop a last incomplete batch (training). Evaluation batches can also be
            smaller when bad samples are dropped.
        seed: seeds the shuffling and the workers' augmentation.
        pin_memory: default: when CUDA is available.
        sampler: e.g. a ``DistributedSampler`` for map-style datasets under torchrun.
        timeout: seconds to wait for one batch from the workers before raising (0 = forever).
    """
    iterable = isinstance(dataset, IterableDataset)
    if shuffle is None:
        shuffle = (not iterable) and sampler is None and bool(getattr(dataset, "train", False))
    if iterable:
        shuffle = False
    g = torch.Generator()
    g.manual_seed(seed)
    kw = {}
    if num_workers > 0:
        kw = dict(prefetch_factor=prefetch_factor, persistent_workers=persistent_workers, worker_init_fn=_worker_init,
                  timeout=timeout)
    return VattLoader(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler, num_workers=num_workers,
                      collate_fn=collate, drop_last=drop_last, generator=g,
                      pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory, **kw)
