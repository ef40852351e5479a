"""Fine-tuning (SPEC §5–§6) on the one training engine: video classification, audio multi-label
tagging, image classification. One process or many (torchrun, DDP; ``fsdp=true`` for the large
presets), bf16 autocast, checkpoints and ``--resume auto`` exactly as for pretraining
(:mod:`vatt.train.engine`).

One process / one node with 8 GPUs::

    vatt finetune --model runs/mbs --config video --train k400_train.csv --val k400_val.csv --out runs/k400
    torchrun --nproc-per-node 8 -m vatt.cli.main finetune --model runs/mbs --config video \
        --train k400_train.csv --val k400_val.csv --out runs/k400 --set precision=bf16 --resume auto

Recipes (official, followed here):

* **video**: AGG → dropout 0.5 → Linear(C); cross-entropy with label smoothing 0.1; SGD
  momentum 0.9, linear warmup then cosine to 0; the backbone's gradients are clipped to global
  norm 0.75 (the head's are not); test = 4 windows x 3 crops = 12 views per video, logits
  averaged; top-1 / top-5.
* **audio**: AGG → dropout → Linear(C) with bias −log(C−1) (a sigmoid prior of 1/C);
  binary cross-entropy weighted by inverse class frequency; mixup with λ ~ Beta(5, 5); test =
  window logits averaged; mAP / AUC / d′.
* **image**: a still image repeated along time for one voxel depth (4 frames in the paper's
  models → one temporal token); the model resamples its position tables to the new grid.
  Otherwise as video (the 3 crops of the single "window").

DropToken is off while fine-tuning (the official fine-tuning configs use drop rate 0).
``OUT`` is a run directory (:mod:`vatt.train.run_dir`): ``checkpoints/step_*`` (each a complete
fine-tuned model: ``vatt.load_model`` reads it), ``model/`` (the final one: the backbone with its
classification head and class names, so ``model.classify(x)`` works), ``results.json`` (the
multi-view test), ``metrics.jsonl``, ``summary.json``. The test is split over the ranks and
gathered, so its metrics equal one process's.
"""

from __future__ import annotations

import copy
import logging
import math
import tempfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from ..atomic_io import atomic_write_json
from ..config import ClassifierConfig
from ..config_engine import check_choice, check_number
from ..errors import ConfigError, InputError, nearest
from ..embed import make_eval_loader
from ..eval.metrics import multilabel_metrics, topk_accuracy
from ..model.heads import init_classifier_
from ..progress import Progress, track
from .config import RunConfig
from .engine import Engine, TrainResult, run_distributed
from .optim import WarmupCosineSchedule

log = logging.getLogger(__name__)

TASKS = ("video", "audio", "image")


@dataclass
class FinetuneConfig(RunConfig):
    """Fine-tuning: the engine's settings (:class:`RunConfig`: steps, batch_size, grad_accum,
    precision, fsdp, device, checkpoint cadence, ``eval_every`` = the multi-view test on the
    validation set every N steps) and the recipe (defaults: the official video recipe, SPEC §5).
    Presets by task (``load_finetune_config("audio")``), YAML files and ``--set`` overrides as for
    pretraining.

    ``warmup_steps``: linear warmup (official 2.5k of 100k+ steps; capped at a tenth of
    ``steps`` here so short runs still reach the peak rate). ``test_batch_size``: items per
    forward at test (each holds ``test_windows x test_crops`` views).
    """

    task: str = "video"
    steps: int = 1000
    batch_size: int = 8
    lr: float = 0.005
    momentum: float = 0.9
    weight_decay: float = 0.0
    warmup_steps: int = 2500
    label_smoothing: float = 0.1
    head_dropout: float = 0.5
    backbone_clip_norm: float = 0.75
    mixup_alpha: float = 5.0  # audio: λ ~ Beta(alpha, alpha); 0 turns mixup off
    test_windows: int = 4
    test_crops: int = 3
    test_batch_size: int = 4
    crop_size: int | None = None  # None: the model's; larger crops resample the position tables
    checkpoint_every: int = 200
    keep_last: int = 2
    num_workers: int = 0

    def check(self) -> None:
        check_choice(self.task, "task", TASKS)
        super().check()
        for name in ("test_windows", "test_batch_size"):
            check_number(getattr(self, name), name, low=1)
        for name in ("warmup_steps", "num_workers", "weight_decay", "backbone_clip_norm", "mixup_alpha"):
            check_number(getattr(self, name), name, low=0)
        check_number(self.lr, "lr", low=0, high=10)  # 0 is allowed: a frozen run that only tests
        check_number(self.momentum, "momentum", low=0, high=1, high_open=True)
        check_number(self.label_smoothing, "label_smoothing", low=0, high=1, high_open=True)
        check_number(self.head_dropout, "head_dropout", low=0, high=1, high_open=True)
        if self.test_crops not in (1, 3):
            raise ConfigError(f"test_crops must be 1 or 3, got {self.test_crops}")
        if self.crop_size is not None:
            check_number(self.crop_size, "crop_size", low=16, high=8192)

    @property
    def modality(self) -> str:
        return "audio" if self.task == "audio" else "video"

    @property
    def effective_warmup(self) -> int:
        return min(self.warmup_steps, max(1, self.steps // 10))


def load_finetune_config(name_or_path: str = "video", overrides=None) -> FinetuneConfig:
    """A task preset (``video``, ``audio``, ``image``: the official recipe of that task) or a YAML
    file, then dotted/``key=value`` overrides."""
    from pathlib import Path as _Path

    if name_or_path in TASKS:
        cfg = FinetuneConfig(task=name_or_path)
    elif _Path(name_or_path).is_file() or str(name_or_path).endswith((".yaml", ".yml", ".json")):
        cfg = FinetuneConfig.load(name_or_path)
    else:
        raise ConfigError(f"--config expects a task preset ({', '.join(TASKS)}) or a YAML file; got "
                          f"{name_or_path!r}{nearest(str(name_or_path), TASKS)}")
    return cfg.override(overrides) if overrides else cfg


class Classifier(nn.Module):
    """A VATT backbone's AGG feature → dropout → Linear(C).

    Args:
        model: a :class:`vatt.model.VATT`; only its ``modality`` backbone is used. A model with
            its own classification head for ``modality`` and C classes (e.g. a converted official
            fine-tune, ``config.classifier``) starts from that head.
        modality: ``"video"`` or ``"audio"``.
        num_classes: C.
        bias_init: initial bias of the linear head (default: the official one, below).

    The head starts as the official one (see :func:`vatt.model.heads.classifier_head`):
    Glorot-normal kernel and zero bias for video, Glorot-uniform kernel and bias −log(C−1) for
    audio (multi-label).
    """

    def __init__(self, model: nn.Module, modality: str, num_classes: int, *, dropout: float = 0.5,
                 bias_init: float | None = None, classes: list[str] | None = None):
        super().__init__()
        self.backbone = model
        self.modality = modality
        self.classes = list(classes) if classes is not None else None
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(model.feature_dim(modality), num_classes)
        init_classifier_(self.head, multilabel=modality == "audio")
        if bias_init is not None:
            nn.init.constant_(self.head.bias, bias_init)
        own, own_cfg = getattr(model, "classifier", None), model.config.classifier
        if own is not None and own_cfg.modality == modality and own.out_features == num_classes:
            self.head.load_state_dict(own.state_dict())

    def features(self, x: torch.Tensor) -> torch.Tensor:
        # The backbone alone: the common-space heads (and their BatchNorm) play no part here.
        return self.backbone.features(x, self.modality)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: video ``[B, T, H, W, 3]`` or audio ``[B, S]`` -> logits ``[B, C]``."""
        return self.head(self.dropout(self.features(x)))

    # -- the saved form: a VATT model whose classification head is this head ----------------------
    def transformer_blocks(self):
        return self.backbone.transformer_blocks()

    def set_grad_checkpointing(self, enable: bool = True) -> int:
        return self.backbone.set_grad_checkpointing(enable)

    @property
    def tokenizer(self):
        return self.backbone.tokenizer

    @property
    def config(self):
        """The backbone's config with this head as its ``classifier`` (what is saved)."""
        cfg = copy.deepcopy(self.backbone.config)
        cfg.classifier = ClassifierConfig(modality=self.modality, num_classes=self.head.out_features,
                                          multilabel=self.modality == "audio", classes=self.classes)
        return cfg

    def save_pretrained(self, directory, state: dict | None = None):
        """Write a VATT model directory (``vatt.load_model`` reads it; ``model.classify`` uses this
        head). ``state``: full tensors of this module (FSDP gathers them), default its own."""
        state = self.state_dict() if state is None else state
        saved = {k[len("backbone."):]: v for k, v in state.items()
                 if k.startswith("backbone.") and not k.startswith("backbone.classifier.")}
        saved.update({"classifier." + k[len("head."):]: v for k, v in state.items() if k.startswith("head.")})
        view = SimpleNamespace(state_dict=lambda: saved, tokenizer=self.tokenizer, config=self.config)
        return type(self.backbone).save_pretrained(view, directory)

    def state_from_saved(self, weights: dict) -> dict:
        """The inverse of :meth:`save_pretrained`'s renaming: saved keys -> this module's keys."""
        out = {("head." + k[len("classifier."):]) if k.startswith("classifier.") else "backbone." + k: v
               for k, v in weights.items()}
        own = getattr(self.backbone, "classifier", None)  # a converted model's own head: not trained
        if own is not None:
            out.update({"backbone.classifier." + k: v for k, v in own.state_dict().items()})
        return out


# -- multi-view evaluation -----------------------------------------------------------------------
@torch.no_grad()
def predict_views(classifier: nn.Module, dataset: Dataset, *, batch_size: int = 4, device="cpu",
                  num_workers: int = 0, progress: Progress | None = None, rank: int = 0,
                  world_size: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits averaged over every view of each item.

    Items carry ``"video"`` ``[V, T, H, W, 3]`` (V = windows x crops, 12 for the paper's test)
    or ``"audio"`` ``[W, S]``; the classifier sees all views of a batch as one flat batch.
    Returns ``(logits [N, C], labels)`` in dataset order.

    ``rank``/``world_size`` (collective when ``world_size > 1``): each rank tests items
    ``rank, rank + world_size, ...`` (padded to the same count, so every rank runs the same
    number of forwards, as FSDP needs), then every rank gets all of them, in order.
    """
    modality = getattr(classifier, "modality", "video")
    was_training = classifier.training
    classifier.eval().to(device)
    n_items = len(dataset)
    if n_items == 0:
        raise InputError("the test set is empty")
    mine = list(range(rank, n_items, world_size))
    per_rank = math.ceil(n_items / world_size)
    mine += [mine[-1] if mine else 0] * (per_rank - len(mine))  # padding, dropped after the gather
    subset = dataset if world_size == 1 else Subset(dataset, mine)
    loader = make_eval_loader(subset, batch_size, num_workers)
    logits, labels = [], []
    try:
        for batch in track(progress, loader, total=len(subset), desc="testing", unit="item",
                           size=lambda b: len(b["label"])):
            x = batch[modality]
            n, views = x.shape[:2]
            out = classifier(x.reshape(n * views, *x.shape[2:]).to(device)).float().cpu()
            logits.append(out.reshape(n, views, -1).mean(1))
            labels.append(torch.as_tensor(batch["label"]))
    finally:
        classifier.train(was_training)
    if not logits:
        raise InputError("the test set is empty")
    logits, labels = torch.cat(logits), torch.cat(labels)
    if world_size == 1:
        return logits, labels
    if len(logits) != per_rank:
        raise InputError(f"rank {rank} could read {len(logits)} of its {per_rank} test items; a distributed test "
                         "needs every item readable (run `vatt data check` on the test set)")
    gathered = []
    for t in (logits, labels):  # equal shapes on every rank: a plain all_gather
        t = t.to(device)
        parts = [torch.empty_like(t) for _ in range(world_size)]
        torch.distributed.all_gather(parts, t)
        # item r + j * world_size sits at row j of rank r's part
        gathered.append(torch.stack([p.cpu() for p in parts], dim=1).flatten(0, 1)[:n_items])
    return gathered[0], gathered[1]


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """top-1/top-5 for single-label ``labels [N]``; mAP/AUC/d′ for multi-hot ``labels [N, C]``."""
    if labels.dim() == 2:
        return multilabel_metrics(torch.sigmoid(logits), labels)
    return topk_accuracy(logits, labels, ks=(1, 5))


# -- optimisation --------------------------------------------------------------------------------
def inverse_frequency_weights(labels: torch.Tensor) -> torch.Tensor:
    """Per-class weights ``[C]`` ∝ 1 / (number of positives), normalised to mean 1 (multi-hot ``[N, C]``)."""
    counts = labels.float().sum(0).clamp_min(1.0)
    w = 1.0 / counts
    return w * (len(w) / w.sum())


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float,
          generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Blend each sample with a shuffled partner: ``λ x + (1−λ) x[perm]``, one λ ~ Beta(α, α) per
    batch. ``generator`` for the partners (default: torch's global RNG, which checkpoints save)."""
    if alpha <= 0 or len(x) < 2:
        return x, y
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(len(x), generator=generator, device="cpu").to(x.device)
    return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]


def task_loss(logits: torch.Tensor, y: torch.Tensor, cfg: FinetuneConfig,
              pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """The recipe's loss of ``logits [B, C]``: cross-entropy with label smoothing (single-label
    ``y [B]``), or binary cross-entropy weighted per class by ``pos_weight [C]`` (audio: ``y``
    multi-hot or mixed ``[B, C]``)."""
    logits = logits.float()
    if cfg.task == "audio":
        per_class = nn.functional.binary_cross_entropy_with_logits(logits, y.float(), reduction="none")
        return (per_class * (pos_weight if pos_weight is not None else 1.0)).mean()
    return nn.functional.cross_entropy(logits, y.long(), label_smoothing=cfg.label_smoothing)


# -- data ----------------------------------------------------------------------------------------
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class ImageFolder(Dataset):
    """Class-per-folder images as one-token-deep "videos" (``ROOT/<class>/<image>``).

    Each image becomes ``[depth, crop, crop, 3]`` in [-1, 1] (``depth`` = the video voxel's
    temporal size, so it is one temporal token). Training: the video augmentation of
    :mod:`vatt.data.transforms`; test: ``num_crops`` views stacked as ``[V, depth, crop, crop, 3]``.

    Not torchvision's ``ImageFolder``: torchvision's wheels are built against one torch release
    each (the one matching the pinned CPU torch here does not import: "operator torchvision::nms
    does not exist"), and the package must not pin users' torch; this class is 40 lines. The same
    holds for crop parameters (``RandomResizedCrop.get_params``) in :mod:`vatt.data.transforms`.
    """

    def __init__(self, root, data_cfg, depth: int, *, train: bool, num_crops: int = 1, classes=None, seed: int = 0):
        root = Path(root)
        if not root.is_dir():
            raise InputError(f"expected a folder of class folders of images, got {root}")
        self.classes = list(classes) if classes is not None else sorted(p.name for p in root.iterdir() if p.is_dir())
        self.items = [(p, i) for i, c in enumerate(self.classes) if (root / c).is_dir()
                      for p in sorted((root / c).iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS]
        if not self.items:
            raise InputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in class folders under {root}")
        self.cfg, self.depth, self.train, self.num_crops, self.seed = data_cfg, depth, train, num_crops, seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        import numpy as np
        from PIL import Image

        from ..data import transforms

        path, label = self.items[i]
        try:
            with Image.open(path) as im:
                frame = np.asarray(im.convert("RGB"))
        except OSError as e:
            raise InputError(f"cannot read image {path}: {e}") from None
        frames = np.repeat(frame[None], self.depth, axis=0)  # a still, repeated along time
        if self.train:
            rng = np.random.default_rng([self.seed, torch.initial_seed() % 2**63, i])
            video = transforms.train_video(frames, self.cfg, rng)
        else:
            video = transforms.eval_video(frames, self.cfg, self.num_crops)
        return {"video": video, "label": torch.tensor(label), "key": str(path)}


def _data_config(model, cfg: FinetuneConfig):
    """The model's clip geometry, with the fine-tuning crop size and, for images, one voxel depth."""
    from ..data.config import DataConfig

    data = DataConfig.from_model_config(model.config)
    if cfg.crop_size:
        data = data.replace(crop_size=cfg.crop_size)
    return data.replace(num_frames=_image_depth(model)) if cfg.task == "image" else data


def build_train_dataset(model, source, cfg: FinetuneConfig, classes=None, device_augment: bool = False) -> Dataset:
    """Augmented training clips of a labelled source (one random window per item and epoch);
    ``device_augment``: uint8 clips for the engine to finish on the device (``Engine.defer_augment``)."""
    if isinstance(source, Dataset):
        return source
    if cfg.task == "image":
        return ImageFolder(source, _data_config(model, cfg), _image_depth(model),
                           train=True, seed=cfg.seed)
    from ..data.datasets import build_dataset

    data = _data_config(model, cfg).replace(device_augment=device_augment)
    return build_dataset(source, data, model.tokenizer, train=True, seed=cfg.seed, classes=classes)


def build_test_dataset(model, source, cfg: FinetuneConfig, classes=None) -> Dataset:
    """Multi-view test items: ``test_windows x test_crops`` video views, or ``test_windows`` audio windows."""
    if isinstance(source, Dataset):
        return source
    if cfg.task == "image":
        return ImageFolder(source, _data_config(model, cfg), _image_depth(model),
                           train=False, num_crops=cfg.test_crops, classes=classes)
    from ..data.datasets import build_eval_dataset

    crops = cfg.test_crops if cfg.task == "video" else 1
    return build_eval_dataset(source, _data_config(model, cfg), model.tokenizer, num_windows=cfg.test_windows,
                              num_crops=crops, classes=classes)


def _image_depth(model) -> int:
    return int(model.config.video.patch_size[0])


# -- the run --------------------------------------------------------------------------------------
def make_optimizer(classifier: Classifier, cfg: FinetuneConfig) -> torch.optim.SGD:
    """SGD with momentum; group 0 = backbone (gradient-clipped), group 1 = head."""
    return torch.optim.SGD([{"params": list(classifier.backbone.parameters())},
                            {"params": list(classifier.head.parameters())}],
                           lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


class FineTuning(Engine):
    """Fine-tune ``model`` on a labelled training source with the one engine (see
    :class:`vatt.train.engine.Engine`); the multi-view test of ``val_source`` runs every
    ``eval_every`` steps and at the end (``results.json``).

    Args:
        model: a VATT model (its backbone is trained in place). Under torchrun every rank passes
            the same model (e.g. each loads it with ``vatt.load_model``).
        train_source, val_source: labelled sources (video/audio: docs/DATA.md; image: a folder of
            class folders) or built datasets (with ``classes``).
        cfg: a :class:`FinetuneConfig`.
        run_dir, resume, callback: as for :class:`vatt.train.engine.Engine`.
        progress: reports the test phase (the steps go to ``callback``).
    """

    task_name = "fine-tuning"

    def __init__(self, model, train_source, val_source, cfg: FinetuneConfig, run_dir, *, resume: str | None = None,
                 callback: Callable[[dict], None] | None = None, progress: Progress | None = None):
        super().__init__(cfg, run_dir, resume=resume, callback=callback)
        self.backbone, self.train_source, self.val_source = model, train_source, val_source
        self.progress = progress
        self.recent_losses: deque[float] = deque(maxlen=20)
        self._test_set = None

    # -- hooks ----------------------------------------------------------------------------------------
    def build(self) -> None:
        cfg = self.cfg
        _no_droptoken(self.backbone)
        self.train_set = build_train_dataset(self.backbone, self.train_source, cfg, device_augment=self.defer_augment)
        self.classes = getattr(self.train_set, "classes", None)
        multilabel = cfg.task == "audio"
        self.num_classes, label_stats = _label_info(self.train_set, self.classes, multilabel)
        bias = -math.log(self.num_classes - 1) if multilabel and self.num_classes > 1 else 0.0
        torch.manual_seed(cfg.seed)  # the same head on every rank
        classifier = Classifier(self.backbone, cfg.modality, self.num_classes, dropout=cfg.head_dropout,
                                bias_init=bias, classes=self.classes)
        self.model = self.prepare_model(classifier)
        self.pos_weight = inverse_frequency_weights(label_stats).to(self.device) if multilabel else None
        self.optimizer = make_optimizer(self.model, cfg)
        # Official: linear warmup, then cosine to 0.
        self.schedule = WarmupCosineSchedule(self.optimizer, peak=cfg.lr, final=0.0,
                                             warmup_steps=cfg.effective_warmup, total_steps=cfg.steps)

    def build_dataset(self):
        return self.train_set

    def check_checkpoint(self, path: Path) -> None:
        import json

        try:
            saved = json.loads((path / "config.json").read_text(encoding="utf-8"))["config"].get("classifier") or {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return  # a damaged checkpoint: the loader says so
        classes = saved.get("classes")
        if classes is not None and self.classes is not None and list(classes) != list(self.classes):
            raise ConfigError(f"{path} was fine-tuned on {len(classes)} classes ({', '.join(map(str, classes[:5]))}"
                              f"{', ...' if len(classes) > 5 else ''}); this training set has {len(self.classes)} "
                              f"({', '.join(map(str, self.classes[:5]))}{', ...' if len(self.classes) > 5 else ''}). "
                              "Resume with the same training set, or choose another --out")

    def compute_loss(self, batch: dict) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        x, y = batch[cfg.modality], batch["label"]
        if cfg.task == "audio":
            x, y = mixup(x, _multi_hot(y, self.num_classes), cfg.mixup_alpha)
        with self.autocast():
            logits = self.forward_model(x)
        return {"loss": task_loss(logits, y, cfg, self.pos_weight)}

    def clip_groups(self):
        # Official: only the backbone's gradients are clipped; the head's are not.
        return [(list(self.model.backbone.parameters()), self.cfg.backbone_clip_norm),
                (list(self.model.head.parameters()), 0.0)]

    def flops_per_clip(self) -> float:
        from ..model.flops import forward_flops

        m = copy.deepcopy(self.backbone.config)
        m.classifier = None
        data = _data_config(self.backbone, self.cfg)
        geometry = {"video.crop_size": data.crop_size, "video.num_frames": data.num_frames}
        with torch.random.fork_rng(devices=[]):
            return 3.0 * forward_flops(m.override(geometry), drop_rate=0.0, modalities=(self.cfg.modality,))

    def loader_options(self) -> dict:
        return {"num_workers": self.cfg.num_workers, "timeout": 0, "max_empty_batches": None}

    def ddp_options(self) -> dict:
        # The other towers and the common-space heads take no part in a classification forward.
        return {"find_unused_parameters": True}

    def train_step(self) -> dict:
        metrics = super().train_step()
        if not metrics["skipped"]:
            self.recent_losses.append(metrics["loss"])
        return metrics

    def evaluate(self) -> dict | None:
        metrics = self.test()
        return {f"eval/{k}": v for k, v in metrics.items() if isinstance(v, float)}

    def finish(self, stopped: str) -> dict:
        self.save_final_model(stopped)
        if stopped == "signal":  # resumed later; the test runs at the end of the run
            return {}
        cfg = self.cfg
        result = {"task": cfg.task, "steps": self.step, "num_classes": self.num_classes,
                  "chance": 1.0 / self.num_classes, "classes": self.classes,
                  "train_loss": sum(self.recent_losses) / max(1, len(self.recent_losses)), **self.test()}
        log.info("fine-tuning %s: %s", cfg.task, {k: v for k, v in result.items() if k != "classes"})
        if self.rank == 0:
            atomic_write_json(self.run_dir / "results.json", result)
        return result

    # -- the multi-view test ------------------------------------------------------------------------
    def test(self) -> dict:
        """Multi-view test of the validation source, split over the ranks (collective)."""
        cfg = self.cfg
        if self._test_set is None:
            self._test_set = build_test_dataset(self.backbone, self.val_source, cfg, self.classes)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            logits, labels = predict_views(self.model, self._test_set, batch_size=cfg.test_batch_size,
                                           device=self.device, num_workers=cfg.num_workers,
                                           progress=self.progress if self.rank == 0 else None,
                                           rank=self.rank, world_size=self.world)
        self.model.train()
        return {"num_test": len(labels), **classification_metrics(logits, labels)}


def finetune(model, train_source, val_source, out_dir=None, *, config: FinetuneConfig | None = None,
             device: str | None = None, progress: Progress | None = None, resume: str | None = None,
             callback: Callable[[dict], None] | None = None, **overrides) -> dict:
    """Fine-tune ``model`` on a labelled ``train_source`` and test on ``val_source``; joins the
    torchrun process group when launched by torchrun.

    Args:
        model: a VATT model (changed in place: its backbone is trained).
        train_source, val_source: labelled sources (video/audio: see docs/DATA.md; image: a
            folder of class folders) or built datasets.
        out_dir: the run directory (checkpoints, ``model/``, ``results.json``); an existing run
            is refused unless ``resume="auto"``, as for pretraining. None: a temporary folder.
        config: :class:`FinetuneConfig`; ``device`` and ``overrides`` replace its fields.
    Returns:
        ``{"task", "steps", "num_classes", "classes", "chance", "train_loss", "num_test",`` and for
        video/image ``"top1", "top5"`` (fractions) or for audio ``"mAP", "AUC", "d_prime"}``;
        empty when a signal stopped the run (rerun with ``resume="auto"``).
    """
    cfg = config or FinetuneConfig()
    if device is not None:
        overrides["device"] = str(device)
    if overrides:
        cfg = cfg.override(overrides)
    return finetune_run(model, train_source, val_source, out_dir, cfg, progress=progress, resume=resume,
                        callback=callback).metrics


def finetune_run(model, train_source, val_source, out_dir, cfg: FinetuneConfig, *, progress=None, resume=None,
                 callback=None) -> TrainResult:
    """:func:`finetune` returning the whole :class:`TrainResult` (how the run stopped, speed, data)."""
    def run(directory):
        return run_distributed(cfg.device, lambda: FineTuning(model, train_source, val_source, cfg, directory,
                                                              resume=resume, callback=callback,
                                                              progress=progress).fit())

    if out_dir is not None:
        return run(out_dir)
    with tempfile.TemporaryDirectory(prefix="vatt-finetune-") as tmp:
        return run(tmp)


def _no_droptoken(model) -> None:
    """Fine-tuning keeps every token (official fine-tuning configs use drop rate 0)."""
    model.set_droptoken_rates(video=0.0, audio=0.0)


def _label_info(dataset: Dataset, classes, multilabel: bool) -> tuple[int, torch.Tensor]:
    """Number of classes and (multi-label task) the ``[N, C]`` multi-hot label matrix of the training set."""
    if not classes:
        raise InputError("fine-tuning needs a labelled training set (class folders, or a manifest with a "
                         "'label' column; see docs/DATA.md)")
    num_classes = len(classes)
    if not multilabel:
        return num_classes, torch.empty(0)
    matrix = torch.zeros(len(dataset), num_classes)
    refs = getattr(dataset, "refs", None)
    for i in range(len(dataset)):
        label = refs[i].label if refs is not None else _as_indices(dataset[i]["label"])
        matrix[i, label] = 1.0
    return num_classes, matrix


def _as_indices(label) -> list[int]:
    label = torch.as_tensor(label)
    return label.nonzero().flatten().tolist() if label.dim() == 1 else [int(label)]


def _multi_hot(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Single-label ids ``[B]`` -> one-hot ``[B, C]``; multi-hot ``[B, C]`` unchanged."""
    return nn.functional.one_hot(y.long(), num_classes).float() if y.dim() == 1 else y.float()
