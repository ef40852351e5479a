"""Fine-tuning (SPEC §5–§6): video classification, audio multi-label tagging, image classification.

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
Checkpoints: ``OUT/checkpoint/`` holds ``model.safetensors`` (backbone + head),
``optimizer.safetensors`` and ``state.json`` (step, config, classes), written as a whole
(a fresh folder swapped in); rerunning the same command on the same ``OUT`` resumes from it, and
``OUT/results.json`` holds the test metrics.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..config_engine import ConfigBase, check_choice, check_number
from ..atomic_io import atomic_write_json, atomic_write_safetensors
from ..state_io import load_state, save_state
from ..progress import Progress, advance, start as start_phase, track
from ..schedule import lr_at
from ..errors import CheckpointError, ConfigError, InputError, nearest
from ..model.heads import init_classifier_
from .embed import make_eval_loader
from .metrics import multilabel_metrics, topk_accuracy

log = logging.getLogger(__name__)

TASKS = ("video", "audio", "image")


@dataclass
class FinetuneConfig(ConfigBase):
    """Fine-tuning hyper-parameters (defaults: the official video recipe, SPEC §5); presets by
    task (``load_finetune_config("audio")``), YAML files and ``--set`` overrides as for pretraining.

    ``steps``: optimisation steps; ``warmup_steps``: linear warmup (official 2.5k of 100k+
    steps; capped at a tenth of ``steps`` here so short runs still reach the peak rate).
    ``command``: the command line that made this config (written by the CLI; the first line of
    ``OUT/config.yaml``).
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
    crop_size: int | None = None  # None: the model's; larger crops resample the position tables
    checkpoint_every: int = 200
    num_workers: int = 0
    seed: int = 0
    command: str = ""

    def check(self) -> None:
        check_choice(self.task, "task", TASKS)
        for name in ("steps", "batch_size", "test_windows", "checkpoint_every"):
            check_number(getattr(self, name), name, low=1)
        for name in ("warmup_steps", "num_workers", "seed", "weight_decay", "backbone_clip_norm", "mixup_alpha"):
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
                 bias_init: float | None = None):
        super().__init__()
        self.backbone = model
        self.modality = modality
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


# -- multi-view evaluation -----------------------------------------------------------------------
@torch.no_grad()
def predict_views(classifier: nn.Module, dataset: Dataset, *, batch_size: int = 4, device="cpu",
                  num_workers: int = 0, progress: Progress | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits averaged over every view of each item.

    Items carry ``"video"`` ``[V, T, H, W, 3]`` (V = windows x crops, 12 for the paper's test)
    or ``"audio"`` ``[W, S]``; the classifier sees all views of a batch as one flat batch.
    Returns ``(logits [N, C], labels)``.
    """
    modality = getattr(classifier, "modality", "video")
    was_training = classifier.training
    classifier.eval().to(device)
    loader = make_eval_loader(dataset, batch_size, num_workers)
    logits, labels = [], []
    try:
        for batch in track(progress, loader, total=len(dataset), desc="testing", unit="item",
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
    return torch.cat(logits), torch.cat(labels)


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


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Blend each sample with a shuffled partner: ``λ x + (1−λ) x[perm]``, one λ ~ Beta(α, α) per batch."""
    if alpha <= 0 or len(x) < 2:
        return x, y
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(len(x), generator=generator)
    return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]


def _loop(loader: DataLoader) -> Iterator[dict]:
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise InputError("the training set is empty")


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


def build_train_dataset(model, source, cfg: FinetuneConfig, classes=None) -> Dataset:
    """Augmented training clips of a labelled source (one random window per item and epoch)."""
    if isinstance(source, Dataset):
        return source
    if cfg.task == "image":
        return ImageFolder(source, _data_config(model, cfg), _image_depth(model),
                           train=True, seed=cfg.seed)
    from ..data.datasets import build_dataset

    return build_dataset(source, _data_config(model, cfg), model.tokenizer, train=True, seed=cfg.seed, classes=classes)


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


# -- checkpoints ---------------------------------------------------------------------------------
FORMAT = "vatt-finetune-2"  # 2: optimizer state through vatt.state_io (optimizer.safetensors + .json)


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None


def save_checkpoint(out_dir, classifier: Classifier, optimizer: torch.optim.Optimizer, step: int, info: dict) -> Path:
    """Write ``out_dir/checkpoint/`` as a whole: files go to a fresh folder, then it is swapped in."""
    out_dir = Path(out_dir)
    final, new, old = out_dir / "checkpoint", out_dir / ".checkpoint.new", out_dir / ".checkpoint.old"
    import shutil

    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    atomic_write_safetensors(new / "model.safetensors", classifier.state_dict())
    save_state(new, "optimizer", optimizer.state_dict())  # optimizer.safetensors + optimizer.json
    atomic_write_json(new / "state.json", {"format": FORMAT, "step": step, **info})
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(ckpt_dir, classifier: Classifier, optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Restore a :func:`save_checkpoint` folder into ``classifier`` (and ``optimizer``); returns state.json."""
    ckpt_dir = Path(ckpt_dir)
    state_path = ckpt_dir / "state.json"
    if not state_path.is_file():
        raise CheckpointError(f"{ckpt_dir} is not a fine-tuning checkpoint (no state.json)")
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{state_path} is corrupt: {e}") from None
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{state_path} is not a vatt fine-tuning state (format {state.get('format')!r})")
    weights = _load_tensors(ckpt_dir / "model.safetensors")
    try:
        missing, unexpected = classifier.load_state_dict(weights, strict=False)
    except RuntimeError as e:  # shape mismatch, e.g. another number of classes
        raise CheckpointError(f"{ckpt_dir} does not match this classifier: {str(e).splitlines()[-1].strip()}") from None
    if missing or unexpected:
        raise CheckpointError(f"{ckpt_dir} does not match this classifier: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if optimizer is not None:
        try:
            optimizer.load_state_dict(load_state(ckpt_dir, "optimizer"))
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{ckpt_dir}: the optimizer state does not fit this classifier ({e})") from None
    return state


def make_optimizer(classifier: Classifier, cfg: FinetuneConfig) -> torch.optim.SGD:
    """SGD with momentum; group 0 = backbone (gradient-clipped), group 1 = head."""
    return torch.optim.SGD([{"params": list(classifier.backbone.parameters())},
                            {"params": list(classifier.head.parameters())}],
                           lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def train_step(classifier: Classifier, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               cfg: FinetuneConfig, *, pos_weight: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """One optimisation step of the task's loss; returns the (detached) loss.

    Single-label: cross-entropy with label smoothing. Multi-label (``cfg.task == "audio"``):
    mixup, then binary cross-entropy weighted per class by ``pos_weight`` ``[C]``. Only the
    backbone's gradients (optimizer group 0) are clipped to ``cfg.backbone_clip_norm``.
    """
    num_classes = classifier.head.out_features
    if cfg.task == "audio":
        x, y = mixup(x, _multi_hot(y, num_classes), cfg.mixup_alpha, generator or torch.Generator())
        per_class = nn.functional.binary_cross_entropy_with_logits(classifier(x), y, reduction="none")
        loss = (per_class * (pos_weight if pos_weight is not None else 1.0)).mean()
    else:
        loss = nn.functional.cross_entropy(classifier(x), y.long(), label_smoothing=cfg.label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.backbone_clip_norm > 0:
        torch.nn.utils.clip_grad_norm_(optimizer.param_groups[0]["params"], cfg.backbone_clip_norm)
    optimizer.step()
    return loss.detach()


# -- the protocol --------------------------------------------------------------------------------
def finetune(model, train_source, val_source, out_dir=None, *, config: FinetuneConfig | None = None,
             device="cpu", progress: Progress | None = None, **overrides) -> dict:
    """Fine-tune ``model`` on a labelled ``train_source`` and test on ``val_source``.

    Args:
        model: a VATT model (changed in place: its backbone is trained).
        train_source, val_source: labelled sources (video/audio: see docs/DATA.md; image: a
            folder of class folders) or built datasets.
        out_dir: where checkpoints go (resumed when present); None keeps everything in memory.
        config: :class:`FinetuneConfig`; ``overrides`` replace its fields (``steps=200``).
    Returns:
        ``{"task", "steps", "num_classes", "chance", "train_loss",`` and for video/image
        ``"top1", "top5"`` (fractions) or for audio ``"mAP", "AUC", "d_prime"}``.
    """
    cfg = (config or FinetuneConfig()).override(overrides) if overrides else (config or FinetuneConfig())
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        cfg.save(Path(out_dir) / "config.yaml")  # starts with the command that made it
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    _no_droptoken(model)
    train_set = build_train_dataset(model, train_source, cfg)
    classes = getattr(train_set, "classes", None)
    multilabel = cfg.task == "audio"
    num_classes, label_stats = _label_info(train_set, classes, multilabel)
    bias = -math.log(num_classes - 1) if multilabel and num_classes > 1 else 0.0
    classifier = Classifier(model, cfg.modality, num_classes, dropout=cfg.head_dropout, bias_init=bias).to(device)
    optimizer = make_optimizer(classifier, cfg)
    start = 0
    if out_dir is not None and (Path(out_dir) / "checkpoint").is_dir():
        state = load_checkpoint(Path(out_dir) / "checkpoint", classifier, optimizer)
        start = int(state["step"])
        log.info("resuming fine-tuning from step %d of %d (%s)", start, cfg.steps, out_dir)
    pos_weight = inverse_frequency_weights(label_stats).to(device) if multilabel else None
    batches = _loop(make_eval_loader(train_set, cfg.batch_size, cfg.num_workers, shuffle=True,
                                     drop_last=len(train_set) > cfg.batch_size, seed=cfg.seed))
    info = {"config": cfg.to_dict(), "classes": classes, "num_classes": num_classes}
    start_phase(progress, cfg.steps, f"fine-tune {cfg.task}", "step")
    advance(progress, start)
    classifier.train()
    losses = []
    for step in range(start, cfg.steps):
        batch = next(batches)
        x, y = batch[cfg.modality].to(device), torch.as_tensor(batch["label"]).to(device)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, peak=cfg.lr, final=0.0, warmup_steps=cfg.effective_warmup, total_steps=cfg.steps)
        loss = train_step(classifier, optimizer, x, y, cfg, pos_weight=pos_weight, generator=gen)
        losses.append(loss.item())
        advance(progress, 1, loss=f"{losses[-1]:.4f}")
        if out_dir is not None and ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps):
            save_checkpoint(out_dir, classifier, optimizer, step + 1, info)
    test_set = build_test_dataset(model, val_source, cfg, classes)
    logits, labels = predict_views(classifier, test_set, device=device, num_workers=cfg.num_workers,
                                   progress=progress)
    metrics = classification_metrics(logits, labels)
    result = {"task": cfg.task, "steps": cfg.steps, "num_classes": num_classes, "num_test": len(labels),
              "chance": 1.0 / num_classes, "train_loss": sum(losses[-20:]) / max(1, len(losses[-20:])), **metrics}
    log.info("fine-tuning %s: %s", cfg.task, result)
    if out_dir is not None:
        atomic_write_json(Path(out_dir) / "results.json", result)
    return result


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
