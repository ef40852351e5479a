"""The pretraining loop: one process or many (torchrun), resumable, with checkpoints and metrics.

One process (CPU or one GPU)::

    vatt pretrain --config tiny --data corpus/pretrain corpus/audio_only --out runs/tiny

One node, 8 GPUs / several nodes (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK)::

    torchrun --nproc-per-node 8 -m vatt.cli.main pretrain --config mbs --data shards/ --out runs/mbs
    torchrun --nnodes 4 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m vatt.cli.main pretrain --config mbs --data shards/ --out runs/mbs

Rerunning the same command on the same ``--out`` with ``--resume auto`` continues from the
newest complete checkpoint. Library code: progress goes to ``callback`` and the log, never print.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from .. import distributed as D
from ..atomic_io import atomic_write_json
from ..errors import CheckpointError, ConfigError, DataError, InputError, VattError
from ..objective import VattObjective
from ..text import WordTokenizer
from . import checkpoint as C
from .batches import TrainBatches, waiting_for_data
from .run_lock import RunLock
from .config import TrainConfig
from .optim import build_optimizer, build_schedule
from .perf import autocast, peak_flops, train_flops_per_clip

log = logging.getLogger(__name__)

BATCH_TENSORS = ("video", "audio", "text", "video_mask", "audio_mask", "text_mask")


class TrainingDiverged(VattError):
    """Too many consecutive steps had a non-finite loss or gradient."""


@dataclass
class TrainResult:
    """What a call to :func:`pretrain` did.

    ``stopped``: "done" (all steps), "time" (``max_minutes``), "signal" (SIGTERM/SIGINT).
    ``seconds`` and ``clips_per_second`` cover this call's training steps only.
    """

    run_dir: Path
    step: int
    stopped: str
    seconds: float
    clips_per_second: float
    final_loss: float | None
    skipped_steps: int
    data: dict = field(default_factory=dict)
    checkpoint: Path | None = None
    signal: int | None = None


# -- helpers -----------------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{D.get_local_rank()}" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device={name!r} but CUDA is not available; use device=cpu")
        return torch.device(f"cuda:{D.get_local_rank()}" if name == "cuda" else name)
    return torch.device(name)


def _to_device(batch: dict, device: torch.device) -> dict:
    out = dict(batch)
    for k in BATCH_TENSORS:
        if k in out:
            out[k] = out[k].to(device, non_blocking=True)
    return out


class _StopWhileWaiting(Exception):
    """A stop was requested while the main process waited for data (the step never ran)."""


class _StopFlag:
    """Turns SIGTERM/SIGINT into a request to checkpoint and stop after the current step.

    ``interrupt_waits``: a request that arrives while waiting for data (a stuck or empty loader)
    ends the wait at once instead of after it (one process only: under torchrun every rank must
    take the same number of steps).
    """

    def __init__(self, interrupt_waits: bool = False):
        self.signum: int | None = None
        self.interrupt_waits = interrupt_waits
        self._old: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.signum = signum
        log.warning("received %s: saving a checkpoint after this step", signal.Signals(signum).name)
        if self.interrupt_waits and waiting_for_data():
            raise _StopWhileWaiting

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


# -- the run -----------------------------------------------------------------------------------
class Trainer:
    """Builds everything a run needs from a :class:`TrainConfig` and trains.

    Args:
        cfg: the run's configuration.
        sources: training data sources (see :func:`vatt.data.build_dataset`), or a built
            map-style dataset of Batch-contract items.
        run_dir: the run directory (created).
        resume: ``"auto"`` (newest complete checkpoint if any), a checkpoint path, or None.
        callback: called on rank 0 after every step with a metrics dict (progress bars).
        vocab: a tokenizer to use instead of ``cfg.vocab`` / building one.
    """

    def __init__(self, cfg: TrainConfig, sources, run_dir: str | os.PathLike, *, resume: str | None = None,
                 callback: Callable[[dict], None] | None = None, vocab: WordTokenizer | None = None):
        self.cfg, self.sources, self.run_dir = cfg, sources, Path(run_dir)
        self.resume, self.callback, self.vocab = resume, callback, vocab
        self.device = resolve_device(cfg.device)
        self.rank, self.world = D.get_rank(), D.get_world_size()
        self.micro = cfg.micro_batch_size(self.world)
        if cfg.precision == "fp16" and self.device.type != "cuda":
            raise ConfigError("precision=fp16 needs a GPU (it uses a gradient scaler); on CPU use bf16 or fp32")
        self.objective = VattObjective(cfg.objective)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self._tb = None
        self.sharded = bool(cfg.fsdp) and self.world > 1
        if self.sharded and cfg.eval_every and cfg.data.eval_sources:
            raise ConfigError("fsdp=true with eval_every > 0: evaluation runs on rank 0 alone and cannot use a "
                              "sharded model; set eval_every=0 and run `vatt eval` on the checkpoints")

    # -- set-up ---------------------------------------------------------------------------------
    def _prepare_run_dir(self) -> None:
        if self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            C.remove_incomplete(self.run_dir)
            saved = self.run_dir / "config.yaml"
            if saved.is_file():
                try:
                    old = TrainConfig.load(saved).to_dict()
                    new = self.cfg.to_dict()
                    old.pop("command", None), new.pop("command", None)
                    changed = sorted(k for k in new if old.get(k) != new[k])
                    if changed:
                        log.warning("config differs from the run's saved config.yaml in %s", changed)
                except ConfigError as e:
                    log.warning("could not read the run's config.yaml: %s", e)
            self.cfg.save(saved)
        D.barrier()

    def _build_dataset(self, tokenizer):
        if isinstance(self.sources, Dataset):
            return self.sources
        from ..data import DataConfig, build_dataset

        dcfg = DataConfig.from_model_config(self.cfg.model_config(), self.cfg.data.augment,
                                            max_member_mb=self.cfg.data.max_member_mb)
        return build_dataset(list(self.sources), dcfg, tokenizer, train=True, seed=self.cfg.seed,
                             strict=self.cfg.data.strict, rank=self.rank, world_size=self.world)

    def _tokenizer(self) -> WordTokenizer:
        """The run's vocabulary: given, from ``cfg.vocab``, saved in the run dir, or built."""
        if self.vocab is not None:
            return self.vocab
        if self.cfg.vocab:
            return WordTokenizer.load(self.cfg.vocab)
        saved = self.run_dir / "vocab.json"
        if not saved.is_file():
            from ..data.vocab import caption_texts

            if self.rank == 0:
                if isinstance(self.sources, Dataset):
                    raise InputError("an in-memory dataset needs a vocabulary: pass vocab= or set cfg.vocab")
                captions = caption_texts(list(self.sources))
                size = self.cfg.model_config().text.vocab_size
                tok = WordTokenizer.build(captions, max_size=size)
                tok.save(saved)
                log.info("built a vocabulary of %d words from %d captions", len(tok), len(captions))
            D.barrier()
        return WordTokenizer.load(saved)

    def _lock_run_dir(self) -> None:
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise InputError(f"--out {self.run_dir} is a file; the run directory must be a folder")
        if self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._lock = RunLock(self.run_dir).acquire()  # before anything in the folder is touched

    def setup(self) -> None:
        cfg = self.cfg
        self._lock_run_dir()
        candidates = self._find_resume()
        self._prepare_run_dir()
        from .. import create_model

        tokenizer = self._tokenizer()
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.model = create_model(cfg.model, vocab=tokenizer, **cfg.model_overrides).to(self.device)
        self.model.train()
        if self.world > 1:
            self.model = D.convert_sync_batchnorm(self.model)
        if cfg.activation_checkpointing:
            log.info("activation checkpointing on %d blocks", self.model.set_grad_checkpointing(True))
        if self.sharded:  # before the optimiser: it must hold the DTensor shards
            from .fsdp import shard_model

            log.info("FSDP2: %d transformer blocks + the root sharded over %d ranks",
                     shard_model(self.model, cfg.precision), self.world)
        elif cfg.fsdp:
            log.info("fsdp=true with one process: FSDP is pointless here, training unsharded")
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.schedule = build_schedule(self.optimizer, cfg.optim, cfg.steps)
        self.scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" else None
        self.step, self.skipped, self.bad_in_row = 0, 0, 0
        self.elapsed_before = 0.0
        start_slot, data_state = 0, None
        ckpt, skipped = None, []
        for candidate in candidates:  # newest first; with --resume auto a damaged one is skipped
            try:
                state = C.load_checkpoint(candidate, model=self.model, optimizer=self.optimizer,
                                          sharded=self.sharded)
                self.schedule.load_state_dict(state["schedule"])
                if self.scaler is not None and state.get("scaler"):
                    self.scaler.load_state_dict(state["scaler"])
            except CheckpointError as e:
                if self.resume != "auto":
                    raise
                log.warning("skipping damaged checkpoint %s: %s", candidate.name, e)
                skipped.append(candidate.name)
                continue
            except (KeyError, TypeError, ValueError, RuntimeError) as e:  # the grad scaler's state
                raise CheckpointError(f"{candidate}: damaged trainer state ({type(e).__name__}: {e})") from None
            ckpt = candidate
            self.step = int(state["step"])
            self.skipped = int(state.get("skipped_steps", 0))
            self.bad_in_row = int(state.get("bad_in_row", 0))
            self.elapsed_before = float(state.get("elapsed_seconds", 0.0))
            data_state = state.get("data", {})
            start_slot = int(data_state.get("consumed", self.step * cfg.grad_accum))
            log.info("resumed from %s at step %d", ckpt, self.step)
            if skipped:
                log.warning("resumed from %s, the newest intact checkpoint (skipped damaged: %s)",
                            ckpt.name, ", ".join(skipped))
            break
        if candidates and ckpt is None:
            raise CheckpointError(f"no intact checkpoint in {self.run_dir / 'checkpoints'} (all damaged: "
                                  f"{', '.join(skipped)}); move them away and start again, or resume from a copy")
        self.skipped_checkpoints = skipped
        if ckpt is None:
            # Different DropToken/dropout draws per rank, as in any data-parallel run.
            torch.manual_seed(cfg.seed + 1 + self.rank)
        self.resumed_from = ckpt
        self.dataset = self._build_dataset(self.model.tokenizer)
        self.batches = TrainBatches(self.dataset, self.micro, rank=self.rank, world_size=self.world, seed=cfg.seed,
                                    num_workers=cfg.data.num_workers, start=start_slot, state=data_state,
                                    timeout=cfg.data.timeout, max_empty_batches=cfg.data.max_bad_batches)
        self.forward_model: nn.Module = self.model
        if self.world > 1 and not self.sharded:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            # BatchNorm statistics are already global (SyncBatchNorm): no buffer broadcast per step.
            import inspect

            no_sync = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DDP).parameters
                       else "broadcast_buffers")  # the name changed in recent torch
            self.forward_model = DDP(self.model, device_ids=ids, **{no_sync: False})
        if cfg.compile:
            self.forward_model = torch.compile(self.forward_model)
        # MFU (nanoGPT's estimate_mfu): model FLOPs of forward + backward per clip / peak FLOP/s.
        self.flops_per_clip = train_flops_per_clip(self.model.config)
        self.peak_flops, peak_source = peak_flops(str(self.device), cfg.precision)
        if self.rank == 0:
            self._open_tensorboard()
            n = self.model.num_parameters()
            log.info("MFU against %.1f TFLOP/s per device (%s); %.2f GFLOPs per training clip",
                     self.peak_flops / 1e12, peak_source, self.flops_per_clip / 1e9)
            log.info("model %s: %.2fM parameters; %d rank(s) x %d clips x %d accumulation = %d clips/step on %s",
                     cfg.model, n / 1e6, self.world, self.micro, cfg.grad_accum, cfg.batch_size, self.device)

    def _find_resume(self) -> list[Path]:
        """Checkpoints to try, newest first (``auto``: every complete one; a path: that one)."""
        if not self.resume:
            existing = C.latest_checkpoint(self.run_dir)
            if existing is not None:
                raise CheckpointError(
                    f"{self.run_dir} already holds checkpoints (newest: {existing.name}); pass --resume auto "
                    "(resume='auto') to continue that run, or choose another --out"
                )
            return []
        if self.resume == "auto":
            return C.list_checkpoints(self.run_dir)[::-1]
        path = Path(self.resume)
        if not (path / C.MARKER).is_file():
            raise CheckpointError(f"--resume {path}: not a complete checkpoint directory (no {C.MARKER})")
        return [path]

    def _open_tensorboard(self) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # tensorboard not installed: metrics.jsonl only
            return
        self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))

    # -- one optimiser step ---------------------------------------------------------------------
    def _autocast(self):
        return autocast(self.device.type, self.cfg.precision)

    def train_step(self) -> dict:
        cfg = self.cfg
        t0 = time.perf_counter()
        wait = 0.0
        sums = torch.zeros(3, device=self.device)
        clips = 0
        self._consumed_at_step = self.batches.consumed  # where a step that never finished restarts
        for micro in range(cfg.grad_accum):
            tw = time.perf_counter()
            batch = _to_device(next(self.batches), self.device)
            wait += time.perf_counter() - tw
            clips += batch["video"].shape[0]
            sync = micro == cfg.grad_accum - 1 or not hasattr(self.forward_model, "no_sync")
            ctx = contextlib.nullcontext() if sync else self.forward_model.no_sync()
            with ctx:
                with self._autocast():
                    out = self.forward_model(video=batch["video"], audio=batch["audio"], text=batch["text"])
                losses = self.objective(out, batch)
                loss = losses["loss"] / cfg.grad_accum
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            sums += torch.stack([losses["loss"].detach(), losses["loss_va"].detach(), losses["loss_vt"].detach()])
        sums = D.all_reduce_mean(sums / cfg.grad_accum)  # the global-batch losses
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else math.inf)
        if hasattr(grad_norm, "full_tensor"):  # FSDP2: a DTensor of per-rank partial norms
            grad_norm = grad_norm.full_tensor()
        loss_ok = bool(torch.isfinite(sums).all())
        grad_ok = bool(torch.isfinite(grad_norm))
        lr = self.schedule.lr
        if self.scaler is not None:
            # fp16: overflowing gradients are the scaler's business (it skips and lowers the scale).
            ok = loss_ok
            if ok:
                self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            ok = loss_ok and grad_ok
            if ok:
                self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()
        self.step += 1
        if ok:
            self.bad_in_row = 0
        else:
            self.skipped += 1
            self.bad_in_row += 1
            log.warning("step %d skipped: non-finite %s (loss %s, grad norm %s)", self.step,
                        "loss" if not loss_ok else "gradient", sums.tolist(), float(grad_norm))
        seconds = time.perf_counter() - t0
        clips_global = clips * self.world
        return {
            "step": self.step, "loss": float(sums[0]), "loss_va": float(sums[1]), "loss_vt": float(sums[2]),
            "lr": lr, "grad_norm": float(grad_norm), "clips_per_second": clips_global / max(seconds, 1e-9),
            "mfu": self.flops_per_clip * clips / max(seconds, 1e-9) / self.peak_flops,
            "data_wait": wait / max(seconds, 1e-9), "step_seconds": seconds, "skipped": not ok,
        }

    # -- checkpoints, metrics, evaluation ---------------------------------------------------------
    def trainer_state(self, elapsed: float) -> dict:
        return {
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "data": self.batches.state_dict(),
            "skipped_steps": self.skipped,
            "bad_in_row": self.bad_in_row,
            "elapsed_seconds": elapsed,
            "data_stats": self.batches.stats(),
        }

    def save(self, elapsed: float) -> Path | None:
        return C.save_checkpoint(self.run_dir, self.step, model=self.model, optimizer=self.optimizer,
                                 trainer_state=self.trainer_state(elapsed), keep_last=self.cfg.keep_last,
                                 sharded=self.sharded)

    def log_metrics(self, record: dict) -> None:
        if self.rank != 0:
            return
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step":
                    self._tb.add_scalar(k, v, record["step"])

    def evaluate(self) -> dict | None:
        """Zero-shot retrieval on the held-out sources (rank 0; other ranks wait)."""
        result = None
        if self.rank == 0 and self.cfg.data.eval_sources:
            from ..eval.retrieval import zero_shot_retrieval

            result = {}
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                for src in self.cfg.data.eval_sources:
                    r = zero_shot_retrieval(self.model, src, num_windows=self.cfg.data.eval_windows,
                                            batch_size=self.cfg.data.eval_batch_size, device=self.device)
                    name = Path(str(src)).name or str(src)
                    for direction in ("text_to_video", "video_to_text"):
                        for k, v in r.get(direction, {}).items():
                            result[f"eval/{name}/{direction}/{k}"] = v
            self.model.train()
        D.barrier()
        return result

    def _agree(self, flag: bool) -> bool:
        """True on every rank when any rank says True (stop requests must be collective)."""
        if not D.is_distributed():
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item() > 0)

    # -- the loop --------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        cfg = self.cfg
        try:
            self.setup()
        except BaseException:
            self.close()  # release the run lock
            raise
        start_step = self.step
        t_start = time.perf_counter()
        last: dict = {}
        stopped = "done"
        ckpt_path = None
        stop_flag = _StopFlag(interrupt_waits=self.world == 1)
        try:
            with stop_flag:
                while self.step < cfg.steps:
                    try:
                        last = self.train_step()
                    except _StopWhileWaiting:  # the step never ran: save the last complete one
                        self._abandon_step()
                        ckpt_path = self.save(self.elapsed_before + time.perf_counter() - t_start)
                        stopped = "signal"
                        break
                    except DataError as e:  # no usable data, or a loader that keeps failing
                        self._abandon_step()
                        # Under torchrun the other ranks are not here to write their part: the
                        # newest periodic checkpoint stands (torchrun stops them when this one exits).
                        ckpt = (self.save(self.elapsed_before + time.perf_counter() - t_start) if self.world == 1
                                else C.latest_checkpoint(self.run_dir))
                        raise DataError(f"{e} (at step {self.step}; checkpoint {ckpt or self.run_dir}; fix the "
                                        "data and rerun with --resume auto)") from None
                    elapsed = self.elapsed_before + time.perf_counter() - t_start
                    if self.rank == 0:
                        if self.step % cfg.log_every == 0 or self.step == cfg.steps or last["skipped"]:
                            self.log_metrics({k: v for k, v in last.items() if k != "skipped"}
                                             | {"skipped_total": self.skipped, "elapsed": elapsed})
                        if self.callback is not None:
                            self.callback(dict(last, skipped_total=self.skipped, total_steps=cfg.steps))
                    if self.bad_in_row >= cfg.max_bad_steps:
                        ckpt = self.save(elapsed)
                        raise TrainingDiverged(
                            f"{self.bad_in_row} steps in a row had a non-finite loss or gradient (up to step "
                            f"{self.step}); stopped. The last good weights are in {ckpt or self.run_dir}. Try a lower "
                            f"optim.lr, precision=fp32, or check the data."
                        )
                    if cfg.eval_every and self.step % cfg.eval_every == 0:
                        ev = self.evaluate()
                        if ev:
                            self.log_metrics({"step": self.step, **ev})
                            if self.callback is not None:
                                self.callback({"step": self.step, "eval": ev})
                    out_of_time = cfg.max_minutes > 0 and time.perf_counter() - t_start > cfg.max_minutes * 60
                    stop = self._agree(stop_flag.signum is not None or out_of_time)
                    if stop or self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                        ckpt_path = self.save(elapsed)
                    if stop:
                        stopped = "signal" if stop_flag.signum is not None else "time"
                        break
            seconds = time.perf_counter() - t_start
            final = self.model
            if self.sharded and stopped in ("done", "time"):  # gather the full weights (collective)
                from .fsdp import full_states, saveable

                final = saveable(self.model, full_states(self.model, None)[0])
            if self.rank == 0 and stopped in ("done", "time"):  # a planned end, unlike a signal
                final.save_pretrained(self.run_dir / "model")
                log.info("saved the final model in %s", self.run_dir / "model")
            D.barrier()
            data_stats = self._gather_data_stats()
            steps_run = self.step - start_step
            clips = steps_run * cfg.batch_size
            result = TrainResult(
                run_dir=self.run_dir, step=self.step, stopped=stopped, seconds=seconds,
                clips_per_second=clips / seconds if seconds > 0 else 0.0,
                final_loss=last.get("loss"), skipped_steps=self.skipped, data=data_stats,
                checkpoint=ckpt_path, signal=stop_flag.signum,
            )
            if self.rank == 0:
                atomic_write_json(self.run_dir / "summary.json", {
                    "step": result.step, "stopped": stopped, "seconds": seconds,
                    "clips_per_second": result.clips_per_second, "final_loss": result.final_loss,
                    "skipped_steps": self.skipped, "data": data_stats,
                    "resumed_from": str(self.resumed_from) if self.resumed_from else None,
                })
            return result
        finally:
            self.close()

    def _abandon_step(self) -> None:
        """Forget a step that did not finish: its gradients and the batches it drew."""
        self.optimizer.zero_grad(set_to_none=True)
        self.batches.consumed = getattr(self, "_consumed_at_step", self.batches.consumed)
        self.batches.close()

    def close(self) -> None:
        """Stop the loader workers, release the DDP wrapper and the run lock (safe to call twice)."""
        if getattr(self, "batches", None) is not None:
            self.batches.close()
        if getattr(self, "_lock", None) is not None:
            self._lock.release()
            self._lock = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        # Drop the DDP wrapper now: destroying it after its process group aborts the process.
        if hasattr(self, "model"):
            self.forward_model = self.model
        gc.collect()

    def _gather_data_stats(self) -> dict:
        stats = self.batches.stats()
        if not D.is_distributed():
            return stats
        everyone: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(everyone, stats)
        total = {"good": 0, "bad": 0, "reasons": {}, "masked": {}}
        for s in everyone:
            total["good"] += s["good"]
            total["bad"] += s["bad"]
            for key in ("reasons", "masked"):
                for r, n in s[key].items():
                    total[key][r] = total[key].get(r, 0) + n
        return total


def pretrain(cfg: TrainConfig, sources, run_dir: str | os.PathLike, *, resume: str | None = None,
             callback: Callable[[dict], None] | None = None, vocab: WordTokenizer | None = None) -> TrainResult:
    """Pretrain a VATT model; joins the torchrun process group when launched by torchrun.

    See :class:`Trainer` for the arguments. Raises :class:`TrainingDiverged` after
    ``cfg.max_bad_steps`` non-finite steps in a row (with a checkpoint of the last good state).
    """
    device = resolve_device(cfg.device)
    created = D.init_from_env(device)
    try:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        return Trainer(cfg, sources, run_dir, resume=resume, callback=callback, vocab=vocab).fit()
    finally:
        if created:
            D.cleanup()
