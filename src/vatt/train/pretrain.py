"""Pretraining: the VATT model, the contrastive objective and the official Adam recipe on the
one engine (:mod:`vatt.train.engine`).

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

import logging
import os
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import Dataset

from .. import distributed as D
from ..errors import ConfigError, InputError
from ..objective import VattObjective
from ..text import WordTokenizer
from .config import TrainConfig
from .engine import Engine, TrainResult, run_distributed
from .optim import build_optimizer, build_schedule
from .perf import train_flops_per_clip

log = logging.getLogger(__name__)


class Pretraining(Engine):
    """Pretrain a VATT model from a :class:`TrainConfig` (see :class:`Engine` for the loop).

    Args:
        cfg: the run's configuration.
        sources: training data sources (see :func:`vatt.data.build_dataset`: one path or a list),
            or a built map-style dataset of Batch-contract items.
        run_dir: the run directory (created).
        resume: ``"auto"`` (newest complete checkpoint if any), a checkpoint path, or None.
        callback: called on rank 0 after every step with a metrics dict (progress bars).
        vocab: a tokenizer to use instead of ``cfg.vocab`` / building one.
    """

    task_name = "pretraining"

    def __init__(self, cfg: TrainConfig, sources, run_dir: str | os.PathLike, *, resume: str | None = None,
                 callback: Callable[[dict], None] | None = None, vocab: WordTokenizer | None = None):
        super().__init__(cfg, run_dir, resume=resume, callback=callback)
        # One path is one source (list("shards/") would be its characters).
        self.sources = [sources] if isinstance(sources, (str, os.PathLike)) else sources
        self.vocab = vocab
        self.objective = VattObjective(cfg.objective)
        if self.sharded and cfg.eval_every and cfg.data.eval_sources:
            raise ConfigError("fsdp=true with eval_every > 0: evaluation runs on rank 0 alone and cannot use a "
                              "sharded model; set eval_every=0 and run `vatt eval` on the checkpoints")

    # -- hooks ----------------------------------------------------------------------------------------
    def build(self) -> None:
        from .. import create_model

        cfg = self.cfg
        tokenizer = self._tokenizer()
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.model = self.prepare_model(create_model(cfg.model, vocab=tokenizer, **cfg.model_overrides))
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.schedule = build_schedule(self.optimizer, cfg.optim, cfg.steps)

    def build_dataset(self):
        if isinstance(self.sources, Dataset):
            return self.sources
        from ..data import DataConfig, build_dataset

        dcfg = DataConfig.from_model_config(self.cfg.model_config(), self.cfg.data.augment,
                                            max_member_mb=self.cfg.data.max_member_mb,
                                            device_augment=self.defer_augment)
        return build_dataset(list(self.sources), dcfg, self.model.tokenizer, train=True, seed=self.cfg.seed,
                             strict=self.cfg.data.strict, rank=self.rank, world_size=self.world)

    def compute_loss(self, batch: dict) -> dict[str, torch.Tensor]:
        with self.autocast():
            out = self.forward_model(video=batch["video"], audio=batch["audio"], text=batch["text"])
        losses = self.objective(out, batch)
        return {"loss": losses["loss"], "loss_va": losses["loss_va"], "loss_vt": losses["loss_vt"]}

    def clip_groups(self):
        return [(list(self.model.parameters()), self.cfg.optim.grad_clip)]

    def flops_per_clip(self) -> float:
        return train_flops_per_clip(self.model.config)

    def loader_options(self) -> dict:
        d = self.cfg.data
        return {"num_workers": d.num_workers, "timeout": d.timeout, "max_empty_batches": d.max_bad_batches}

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

    def finish(self, stopped: str) -> dict:
        self.save_final_model(stopped)
        return {}

    # -- the vocabulary -------------------------------------------------------------------------------
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


def pretrain(cfg: TrainConfig, sources, run_dir: str | os.PathLike, *, resume: str | None = None,
             callback: Callable[[dict], None] | None = None, vocab: WordTokenizer | None = None) -> TrainResult:
    """Pretrain a VATT model; joins the torchrun process group when launched by torchrun.

    See :class:`Pretraining` for the arguments. Raises :class:`TrainingDiverged` after
    ``cfg.max_bad_steps`` non-finite steps in a row (with a checkpoint of the last good state).
    """
    return run_distributed(cfg.device, lambda: Pretraining(cfg, sources, run_dir, resume=resume, callback=callback,
                                                           vocab=vocab).fit())
