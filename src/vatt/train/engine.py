"""The one training engine: pretraining and fine-tuning run the same loop.

:class:`Engine` owns everything that does not depend on what is trained: the run directory
(lock, ``--resume auto`` and the refusal without it, saved config; :mod:`vatt.train.run_dir`),
devices and the torchrun process group, DDP or FSDP2 wrapping, the step (autocast, gradient
accumulation, gradient clipping per parameter group, non-finite step skipping, fp16 scaling),
the learning-rate schedule, checkpoints (atomic, pickle-free, every rank's RNG;
:mod:`vatt.train.checkpoint`), SIGTERM/SIGINT checkpointing, the time limit, metrics with clips/s
and MFU, periodic evaluation and ``summary.json``.

A task subclasses it and fills in the hooks: :meth:`Engine.build` (model, optimiser, schedule),
:meth:`Engine.build_dataset`, :meth:`Engine.compute_loss`, :meth:`Engine.clip_groups`,
:meth:`Engine.evaluate`, :meth:`Engine.finish`. :class:`vatt.train.pretrain.Pretraining` and
:class:`vatt.train.finetune.FineTuning` are the two tasks.
"""

from __future__ import annotations

import contextlib
import gc
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

from .. import distributed as D
from ..data.transforms import finish_batch
from ..errors import CheckpointError, ConfigError, DataError, VattError
from . import checkpoint as C
from .batches import TrainBatches
from .perf import autocast, peak_flops, trainer_threads
from .run_dir import RunDirectory

log = logging.getLogger(__name__)

BATCH_TENSORS = ("video", "video_affine", "audio", "text", "video_mask", "audio_mask", "text_mask", "label")


class TrainingDiverged(VattError):
    """Too many consecutive steps had a non-finite loss or gradient."""


@dataclass
class TrainResult:
    """What a call to :meth:`Engine.fit` did.

    ``stopped``: "done" (all steps), "time" (``max_minutes``), "signal" (SIGTERM/SIGINT).
    ``seconds`` and ``clips_per_second`` cover this call's training steps only.
    ``metrics``: the task's final results (fine-tuning: the multi-view test), when it has them.
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
    metrics: dict = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{D.get_local_rank()}" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device={name!r} but CUDA is not available; use device=cpu")
        return torch.device(f"cuda:{D.get_local_rank()}" if name == "cuda" else name)
    return torch.device(name)


def to_device(batch: dict, device: torch.device) -> dict:
    """Move a batch's tensors to ``device`` and finish deferred clips there (uint8 frames and
    their colour maps -> float in [-1, 1]; ``DataConfig.device_augment``)."""
    out = dict(batch)
    for k in BATCH_TENSORS:
        if k in out and isinstance(out[k], torch.Tensor):
            out[k] = out[k].to(device, non_blocking=True)
    return finish_batch(out)


def run_distributed(cfg_device: str, run: Callable[[], Any]):
    """Join the torchrun process group (when launched by torchrun) around ``run()``."""
    device = resolve_device(cfg_device)
    created = D.init_from_env(device)
    try:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        return run()
    finally:
        if created:
            D.cleanup()


class StopWhileWaiting(Exception):
    """A stop was requested while the main process waited for data (the step never ran)."""


class StopFlag:
    """Turns SIGTERM/SIGINT into a request to checkpoint and stop after the current step.

    ``waiting``: a callable, true while the main process waits for data; a request that arrives
    then ends the wait at once instead of after it (one process only: under torchrun every rank
    must take the same number of steps, so pass None there).
    """

    def __init__(self, waiting: Callable[[], bool] | None = None):
        self.signum: int | None = None
        self.waiting = waiting
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
        if self.waiting is not None and self.waiting():
            raise StopWhileWaiting

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


class Engine:
    """The training loop shared by every task; subclasses fill in the hooks below.

    Args:
        cfg: the run's config: any :class:`vatt.train.config.RunConfig` (steps, batch_size,
            grad_accum, precision, device, seed, checkpoint/log/eval cadence, limits).
        run_dir: the run directory (created).
        resume: ``"auto"`` (newest complete checkpoint if any), a checkpoint path, or None
            (an existing run is then refused).
        callback: called on rank 0 after every step with a metrics dict (progress bars), and
            with ``{"step", "eval"}`` after an evaluation.
    """

    #: what the progress bars and logs call this task
    task_name = "training"

    def __init__(self, cfg, run_dir: str | os.PathLike, *, resume: str | None = None,
                 callback: Callable[[dict], None] | None = None):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.resume, self.callback = resume, callback
        self.device = resolve_device(cfg.device)
        self.rank, self.world = D.get_rank(), D.get_world_size()
        self.micro = cfg.micro_batch_size(self.world)
        if cfg.precision == "fp16" and self.device.type != "cuda":
            raise ConfigError("precision=fp16 needs a GPU (it uses a gradient scaler); on CPU use bf16 or fp32")
        self.sharded = bool(cfg.fsdp) and self.world > 1
        self.run = RunDirectory(self.run_dir, self.rank)
        self.batches: TrainBatches | None = None

    # -- hooks a task fills in --------------------------------------------------------------------
    def build(self) -> None:
        """Set ``self.model`` (the bare module, on ``self.device``, in train mode), then
        ``self.optimizer`` and ``self.schedule`` (after :meth:`shard` for FSDP)."""
        raise NotImplementedError

    @property
    def defer_augment(self) -> bool:
        """Whether loader workers hand over uint8 clips for :func:`to_device` to finish
        (``DataConfig.device_augment``): on an accelerator, yes (a quarter of the bytes, the colour
        step batched on the device); on the CPU, no: the main process would run the colour step
        serially between steps while the workers idle (measured on the streaming tiny run, 2
        cores: data wait 11% of the step with it, see docs/DATA.md)."""
        return self.device.type != "cpu"

    def build_dataset(self):
        """The training dataset (map-style or a stream) for :class:`TrainBatches`."""
        raise NotImplementedError

    def compute_loss(self, batch: dict) -> dict[str, torch.Tensor]:
        """Forward ``batch`` through ``self.forward_model`` (under :meth:`autocast`): ``{"loss":
        the loss to back-propagate, other names: detached scalars to log}`` (same keys every step)."""
        raise NotImplementedError

    def clip_groups(self) -> list[tuple[list[nn.Parameter], float]]:
        """``[(parameters, max norm), ...]``: each group is clipped to its own global norm
        (0 = not clipped); together they must cover every trained parameter."""
        return [(list(self.model.parameters()), 0.0)]

    def flops_per_clip(self) -> float:
        """Model FLOPs of forward + backward of one training clip (for MFU)."""
        return 0.0

    def loader_options(self) -> dict:
        """``num_workers``, ``timeout``, ``max_empty_batches`` of the training loader."""
        return {"num_workers": 0, "timeout": 0, "max_empty_batches": None}

    def ddp_options(self) -> dict:
        """Extra ``DistributedDataParallel`` arguments."""
        return {}

    def trainer_extra(self) -> dict:
        """Task state saved in ``trainer.json`` (JSON); restored by :meth:`load_extra`."""
        return {}

    def load_extra(self, state: dict) -> None:
        pass

    def check_checkpoint(self, path: Path) -> None:
        """Raise a ConfigError when the checkpoint at ``path`` belongs to another kind of run (a
        mismatch to explain, not damage to skip)."""

    def evaluate(self) -> dict | None:
        """Periodic evaluation (every ``eval_every`` steps); called on every rank."""
        return None

    def finish(self, stopped: str) -> dict:
        """After the loop (every rank): the final model, final evaluation; returns results."""
        return {}

    # -- shared pieces a task's build() uses --------------------------------------------------------
    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Move to the device, train mode, SyncBatchNorm on 2+ ranks, activation checkpointing
        and FSDP2 sharding as configured. Build the optimiser after this."""
        cfg = self.cfg
        model = model.to(self.device).train()
        if cfg.precision == "fp64":
            model = model.double()  # the model casts its float inputs to its own dtype
        if self.world > 1:
            model = D.convert_sync_batchnorm(model)
        if cfg.activation_checkpointing:
            log.info("activation checkpointing on %d blocks", model.set_grad_checkpointing(True))
        if self.sharded:  # before the optimiser: it must hold the DTensor shards
            from .fsdp import shard_model

            log.info("FSDP2: %d transformer blocks + the root sharded over %d ranks",
                     shard_model(model, cfg.precision), self.world)
        elif cfg.fsdp:
            log.info("fsdp=true with one process: FSDP is pointless here, training unsharded")
        return model

    def autocast(self):
        return autocast(self.device.type, self.cfg.precision)

    # -- set-up -------------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg = self.cfg
        self.run.lock()
        candidates = self.run.resume_candidates(self.resume)
        self.run.prepare(cfg)
        self.build()
        self.scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" else None
        self.step, self.skipped, self.bad_in_row = 0, 0, 0
        self.elapsed_before = 0.0
        start_slot, data_state = self._restore(candidates)
        if self.resumed_from is None:
            # Different dropout/DropToken/mixup draws per rank, as in any data-parallel run.
            torch.manual_seed(cfg.seed + 1 + self.rank)
        self.dataset = self.build_dataset()
        opts = self.loader_options()
        self.batches = TrainBatches(self.dataset, self.micro, rank=self.rank, world_size=self.world, seed=cfg.seed,
                                    num_workers=opts["num_workers"], start=start_slot, state=data_state,
                                    timeout=opts["timeout"], max_empty_batches=opts["max_empty_batches"])
        self.forward_model: nn.Module = self.model
        if self.world > 1 and not self.sharded:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            # BatchNorm statistics are already global (SyncBatchNorm): no buffer broadcast per step.
            import inspect

            no_sync = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DDP).parameters
                       else "broadcast_buffers")  # the name changed in recent torch
            self.forward_model = DDP(self.model, device_ids=ids, **{no_sync: False}, **self.ddp_options())
        if cfg.compile:
            self.forward_model = torch.compile(self.forward_model)
        # MFU (nanoGPT's estimate_mfu): model FLOPs of forward + backward per clip / peak FLOP/s.
        self._flops_per_clip = self.flops_per_clip()
        self.peak_flops, peak_source = peak_flops(str(self.device), cfg.precision)
        if self.rank == 0:
            self.run.open_metrics()
            log.info("MFU against %.1f TFLOP/s per device (%s); %.2f GFLOPs per training clip",
                     self.peak_flops / 1e12, peak_source, self._flops_per_clip / 1e9)
            n = sum(p.numel() for p in self.model.parameters())
            log.info("%s: %.2fM parameters; %d rank(s) x %d clips x %d accumulation = %d clips/step on %s",
                     self.task_name, n / 1e6, self.world, self.micro, cfg.grad_accum, cfg.batch_size, self.device)

    def _restore(self, candidates: list[Path]) -> tuple[int, dict | None]:
        """Load the newest intact checkpoint of ``candidates``; returns the data position."""
        cfg = self.cfg
        self.resumed_from, skipped = None, []
        for candidate in candidates:  # newest first; with --resume auto a damaged one is skipped
            self.check_checkpoint(candidate)
            try:
                state = C.load_checkpoint(candidate, model=self.model, optimizer=self.optimizer,
                                          sharded=self.sharded)
                self.schedule.load_state_dict(state["schedule"])
                if self.scaler is not None and state.get("scaler"):
                    self.scaler.load_state_dict(state["scaler"])
                self.load_extra(state.get("task", {}))
            except CheckpointError as e:
                if self.resume != "auto":
                    raise
                log.warning("skipping damaged checkpoint %s: %s", candidate.name, e)
                skipped.append(candidate.name)
                continue
            except (KeyError, TypeError, ValueError, RuntimeError) as e:  # the grad scaler's state
                raise CheckpointError(f"{candidate}: damaged trainer state ({type(e).__name__}: {e})") from None
            self.resumed_from = candidate
            self.step = int(state["step"])
            self.skipped = int(state.get("skipped_steps", 0))
            self.bad_in_row = int(state.get("bad_in_row", 0))
            self.elapsed_before = float(state.get("elapsed_seconds", 0.0))
            data_state = state.get("data", {})
            log.info("resumed from %s at step %d", candidate, self.step)
            if skipped:
                log.warning("resumed from %s, the newest intact checkpoint (skipped damaged: %s)",
                            candidate.name, ", ".join(skipped))
            self.skipped_checkpoints = skipped
            return int(data_state.get("consumed", self.step * cfg.grad_accum)), data_state
        if candidates:
            raise CheckpointError(f"no intact checkpoint in {self.run_dir / 'checkpoints'} (all damaged: "
                                  f"{', '.join(skipped)}); move them away and start again, or resume from a copy")
        self.skipped_checkpoints = skipped
        return 0, None

    # -- one optimiser step -------------------------------------------------------------------------
    def train_step(self) -> dict:
        cfg = self.cfg
        t0 = time.perf_counter()
        wait = 0.0
        sums, names = None, None
        clips = 0
        self._consumed_at_step = self.batches.consumed  # where a step that never finished restarts
        for micro in range(cfg.grad_accum):
            tw = time.perf_counter()
            batch = next(self.batches)
            wait += time.perf_counter() - tw  # the loader's share only: finishing the clips is step work
            batch = to_device(batch, self.device)
            clips += batch["video" if "video" in batch else "audio"].shape[0]
            sync = micro == cfg.grad_accum - 1 or not hasattr(self.forward_model, "no_sync")
            ctx = contextlib.nullcontext() if sync else self.forward_model.no_sync()
            with ctx:
                losses = self.compute_loss(batch)
                loss = losses["loss"] / cfg.grad_accum
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            names = names or list(losses)
            values = torch.stack([losses[k].detach().double().reshape(()) for k in names])
            sums = values if sums is None else sums + values
        sums = D.all_reduce_mean(sums / cfg.grad_accum)  # the global-batch losses
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        grad_norm = self._clip()
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
            "step": self.step, **{k: float(v) for k, v in zip(names, sums)},
            "lr": lr, "grad_norm": float(grad_norm), "clips_per_second": clips_global / max(seconds, 1e-9),
            "mfu": self._flops_per_clip * clips / max(seconds, 1e-9) / self.peak_flops,
            "data_wait": wait / max(seconds, 1e-9), "step_seconds": seconds, "skipped": not ok,
        }

    def _clip(self) -> torch.Tensor:
        """Clip each group of :meth:`clip_groups` to its norm; returns the global norm of all."""
        squares = []
        for params, max_norm in self.clip_groups():
            params = [p for p in params if p.grad is not None]
            if not params:
                continue
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else math.inf)
            if hasattr(norm, "full_tensor"):  # FSDP2: a DTensor of per-rank partial norms
                norm = norm.full_tensor()
            squares.append(norm.float() ** 2)
        return torch.stack(squares).sum().sqrt() if squares else torch.zeros(())

    # -- checkpoints --------------------------------------------------------------------------------
    def trainer_state(self, elapsed: float) -> dict:
        return {
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "data": self.batches.state_dict(),
            "skipped_steps": self.skipped,
            "bad_in_row": self.bad_in_row,
            "elapsed_seconds": elapsed,
            "data_stats": self.batches.stats(),
            "task": self.trainer_extra(),
        }

    def save(self, elapsed: float) -> Path | None:
        return C.save_checkpoint(self.run_dir, self.step, model=self.model, optimizer=self.optimizer,
                                 trainer_state=self.trainer_state(elapsed), keep_last=self.cfg.keep_last,
                                 sharded=self.sharded)

    def log_metrics(self, record: dict) -> None:
        self.run.log_metrics(record)

    def _agree(self, flag: bool) -> bool:
        """True on every rank when any rank says True (stop requests must be collective)."""
        if not D.is_distributed():
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item() > 0)

    # -- the loop -----------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        cfg = self.cfg
        try:
            self.setup()
        except BaseException:
            self.close()  # release the run lock
            raise
        start_step = self.step
        threads = torch.get_num_threads()  # what evaluation and the caller get back
        step_threads = trainer_threads(cfg.cpu_threads, self.device.type, self.loader_options()["num_workers"], threads)
        if step_threads != threads:
            workers = self.loader_options()["num_workers"]
            log.info("%d intra-op thread%s for the training steps (the CPU is shared with %d loader worker%s; "
                     "cpu_threads=N to choose)", step_threads, "s"[: step_threads != 1], workers, "s"[: workers != 1])
        torch.set_num_threads(step_threads)
        t_start = time.perf_counter()
        last: dict = {}
        stopped = "done"
        ckpt_path = None
        batches = self.batches
        stop_flag = StopFlag(waiting=(lambda: batches.waiting) if self.world == 1 else None)
        try:
            with stop_flag:
                while self.step < cfg.steps:
                    try:
                        last = self.train_step()
                    except StopWhileWaiting:  # the step never ran: save the last complete one
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
                            f"{self.step}); stopped. The last good weights are in {ckpt or self.run_dir}. Try a "
                            "lower learning rate, precision=fp32, or check the data."
                        )
                    if cfg.eval_every and self.step % cfg.eval_every == 0:
                        torch.set_num_threads(threads)  # the loader's workers wait meanwhile
                        ev = self.evaluate()
                        torch.set_num_threads(step_threads)
                        if ev and self.rank == 0:
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
            self.batches.close()  # the loader's workers are not needed for the final evaluation
            torch.set_num_threads(threads)
            metrics = self.finish(stopped)
            D.barrier()
            data_stats = self._gather_data_stats()
            clips = (self.step - start_step) * cfg.batch_size
            result = TrainResult(
                run_dir=self.run_dir, step=self.step, stopped=stopped, seconds=seconds,
                clips_per_second=clips / seconds if seconds > 0 else 0.0,
                final_loss=last.get("loss"), skipped_steps=self.skipped, data=data_stats,
                checkpoint=ckpt_path, signal=stop_flag.signum, metrics=metrics or {},
            )
            self.run.write_summary({
                "step": result.step, "stopped": stopped, "seconds": seconds,
                "clips_per_second": result.clips_per_second, "final_loss": result.final_loss,
                "skipped_steps": self.skipped, "data": data_stats,
                "resumed_from": str(self.resumed_from) if self.resumed_from else None,
                **({"metrics": metrics} if metrics else {}),
            })
            return result
        finally:
            torch.set_num_threads(threads)
            self.close()

    def save_final_model(self, stopped: str) -> None:
        """``RUN/model`` after a planned end ("done"/"time"; collective under FSDP)."""
        if stopped not in ("done", "time"):
            return
        final = self.model
        if self.sharded:  # gather the full weights (collective)
            from .fsdp import full_states, saveable

            final = saveable(self.model, full_states(self.model, None)[0])
        if self.rank == 0:
            final.save_pretrained(self.run_dir / "model")
            log.info("saved the final model in %s", self.run_dir / "model")

    def _abandon_step(self) -> None:
        """Forget a step that did not finish: its gradients and the batches it drew."""
        self.optimizer.zero_grad(set_to_none=True)
        self.batches.consumed = getattr(self, "_consumed_at_step", self.batches.consumed)
        self.batches.close()

    def close(self) -> None:
        """Stop the loader workers, release the DDP wrapper and the run lock (safe to call twice)."""
        if self.batches is not None:
            self.batches.close()
        self.run.close()
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
