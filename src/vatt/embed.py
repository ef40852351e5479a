"""Run a frozen model over data: per-window features of evaluation sets, and embedding files.

Its own layer (above ``data``, below ``eval``): evaluation protocols, the search engine, the
benchmark runner, fine-tuning's evaluation loader and the tools all extract embeddings here,
and none of them has to import another's package for it.

Evaluation sets come from :func:`vatt.data.build_eval_dataset`: one item per video with all its
views stacked (``"video"`` ``[V, T, H, W, 3]`` with ``V = num_windows x num_crops``, ``"audio"``
``[num_windows, S]``, ``"text"`` ``[5, W]``). The model sees the views as one flat batch; the
outputs are folded back to ``[N, V, D]``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from .progress import Progress, track
from .errors import CheckpointError, InputError
from .tagged_json import parse_tagged_json

log = logging.getLogger(__name__)

MODALITIES = ("video", "audio", "text")


def eval_dataset(model, source, *, num_windows: int = 4, num_crops: int = 1, classes=None) -> Dataset:
    """The evaluation set of ``source`` for ``model``'s input geometry.

    Args:
        source: anything :func:`vatt.data.build_eval_dataset` accepts (a folder, a manifest, a
            ``vatt data synth`` output ...), or an already built dataset, returned unchanged.
        classes: class names fixing the label ids of a labelled source (e.g. the training
            set's, so a test set missing some classes keeps the same ids).
    """
    if isinstance(source, Dataset):
        return source
    from .data.config import DataConfig
    from .data.datasets import build_eval_dataset

    cfg = DataConfig.from_model_config(model.config)
    return build_eval_dataset(source, cfg, model.tokenizer, num_windows=num_windows, num_crops=num_crops,
                              classes=classes)


def make_eval_loader(dataset: Dataset, batch_size: int, num_workers: int = 0, *, shuffle: bool = False,
                     drop_last: bool = False, seed: int = 0) -> Iterable[dict]:
    """Batches of a dataset in order (bad samples dropped and counted in ``dataset.stats()``).

    Uses :func:`vatt.data.loader.make_loader` for the data layer's datasets and the same collate
    function for any other map-style dataset of Batch-contract items.
    """
    from .data.loader import collate, make_loader

    if hasattr(dataset, "_stats"):
        return make_loader(dataset, batch_size, num_workers=num_workers, shuffle=shuffle, drop_last=drop_last,
                           seed=seed, persistent_workers=False, pin_memory=False)
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                        num_workers=num_workers, collate_fn=collate, generator=gen)
    return _Stripped(loader)


class _Stripped:
    """Re-iterable view of a loader that drops the data layer's private keys and empty batches."""

    def __init__(self, loader: DataLoader):
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        from .data.loader import unpack

        for batch in self.loader:
            batch = unpack(batch)
            batch.pop("_events", None)
            batch.pop("_good", None)
            if "key" in batch:
                yield batch


def _mask(batch: dict, modality: str, n: int) -> torch.Tensor:
    mask = batch.get(f"{modality}_mask")
    if mask is None:
        return torch.ones(n)
    return torch.as_tensor(mask, dtype=torch.float32).reshape(n)


@torch.no_grad()
def extract_features(model, dataset: Dataset, *, outputs: Sequence[str] = ("video_vt", "text_vt"),
                     batch_size: int = 8, device: str | torch.device = "cpu", num_workers: int = 0,
                     progress: Progress | None = None) -> dict:
    """Model outputs for every item and view of an evaluation set (``progress``: see
    :mod:`vatt.progress`, one unit per item).

    Args:
        outputs: model output names (``"video_vt"``, ``"video_va"``, ``"video_agg"``,
            ``"audio_va"``, ``"audio_agg"``, ``"text_vt"``, ``"text_agg"``); only the
            modalities they name are run.
        batch_size: items per forward (a forward sees ``batch_size x V`` video views).
    Returns:
        ``{name: float32 [N, views, D]}`` for each requested output (text: ``[N, 5, D]``), plus
        ``"video_mask"``/``"audio_mask"``/``"text_mask"`` ``[N]`` for the modalities run,
        ``"text_ids"`` ``[N, 5, W]`` when text is run,
        ``"label"`` (when items carry one) and ``"key"`` (list of N sample ids), all on CPU.
    """
    check_loader_args(batch_size, num_workers)
    wanted = {m: [o for o in outputs if o.startswith(m + "_")] for m in MODALITIES}
    unknown = [o for o in outputs if not any(o.startswith(m + "_") for m in MODALITIES)]
    if unknown:
        raise InputError(f"unknown model outputs {unknown}; expected names like 'video_vt', 'audio_agg'")
    was_training = model.training
    model.eval().to(device)
    loader = make_eval_loader(dataset, batch_size, num_workers)
    chunks: dict[str, list] = {}
    try:
        for batch in track(progress, loader, total=len(dataset), desc="embedding", unit="item",
                           size=lambda b: len(b["key"])):
            n = None
            for modality, names in wanted.items():
                if not names:
                    continue
                if modality not in batch:
                    raise InputError(f"the evaluation set has no '{modality}' (items have {sorted(batch)})")
                x = batch[modality]
                n, views = x.shape[0], x.shape[1]
                flat = x.reshape(n * views, *x.shape[2:]).to(device)
                out = model(**{modality: flat})
                for name in names:
                    if name not in out:
                        raise InputError(f"the model returned no '{name}' (it returned {sorted(out)})")
                    chunks.setdefault(name, []).append(out[name].float().reshape(n, views, -1).cpu())
                chunks.setdefault(f"{modality}_mask", []).append(_mask(batch, modality, n))
                if modality == "text":
                    chunks.setdefault("text_ids", []).append(x.reshape(n, views, -1))
            if "label" in batch:
                chunks.setdefault("label", []).append(torch.as_tensor(batch["label"]))
            chunks.setdefault("key", []).extend(batch.get("key", [None] * (n or 0)))
    finally:
        model.train(was_training)
    stats = dataset.stats() if hasattr(dataset, "stats") else {}
    if not chunks.get("key"):
        reasons = f" ({stats.get('bad', 0)} bad: {stats.get('reasons')})" if stats.get("bad") else ""
        raise InputError(f"the evaluation set has no usable item{reasons}; see `vatt data check` on the source")
    feats = {k: (v if k == "key" else torch.cat(v)) for k, v in chunks.items()}
    if stats:
        if stats.get("bad"):
            log.warning("%d of the evaluation items could not be read and were left out: %s",
                        stats["bad"], stats.get("reasons"))
    log.debug("extracted %s from %d items", sorted(feats), len(feats.get("key", [])))
    return feats


def check_loader_args(batch_size, num_workers) -> None:
    """InputError unless ``batch_size`` >= 1 and ``num_workers`` >= 0 are integers."""
    for name, value, low in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"{name} should be an integer >= {low}, got {value!r}")


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Unit-length rows along the last dimension (zero rows stay zero)."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


# -- embedding files (vatt embed / vatt search) ---------------------------------------------------
EMBEDDINGS_FORMAT = "vatt-embeddings"
TEXT_SUFFIXES = (".txt",)
OUTPUTS = {
    "video": ("video_vt", "video_va", "video_agg"),
    "audio": ("audio_va", "audio_agg"),
    "text": ("text_vt", "text_agg"),
}
COMMON_SPACES = ("video_vt", "video_va", "audio_va", "text_vt")


def read_sentences(path) -> list[str]:
    """Non-empty lines of a UTF-8 text file (one sentence a line)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise InputError(f"{path} is not UTF-8 text: {e}") from None
    sentences = [ln.strip() for ln in lines if ln.strip()]
    if not sentences:
        raise InputError(f"{path} holds no sentences (expected one sentence a line)")
    return sentences


@torch.no_grad()
def embed_texts(model, sentences: Sequence[str], *, batch_size: int = 256, device="cpu") -> dict[str, torch.Tensor]:
    """``{"text_vt": [N, 256] unit vectors, "text_agg": [N, Dt]}`` of sentences (eval mode)."""
    if model.tokenizer is None:
        raise InputError("this model has no vocabulary, so it cannot embed sentences")
    model.eval().to(device)
    parts: dict[str, list] = {}
    for i in range(0, len(sentences), batch_size):
        out = model.encode_text(list(sentences[i : i + batch_size]))
        for name in OUTPUTS["text"]:
            parts.setdefault(name, []).append(out[name].float().cpu())
    feats = {k: torch.cat(v) for k, v in parts.items()}
    feats["text_vt"] = l2_normalize(feats["text_vt"])
    return feats


def pool_windows(feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``[N, V, D]`` per-window outputs -> one ``[N, D]`` vector per item.

    Common-space embeddings: mean of the unit window vectors, normalised again (the retrieval
    "average embeddings" rule); AGG features: plain mean over windows.
    """
    pooled = {}
    for name, x in feats.items():
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or name == "text_ids":
            continue
        pooled[name] = l2_normalize(l2_normalize(x).mean(1)) if name in COMMON_SPACES else x.mean(1)
    return pooled


def embed_source(model, source, *, num_windows: int = 4, batch_size: int = 8, device="cpu", num_workers: int = 0,
                 progress: Progress | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Embeddings of a folder of videos, a folder of audio files, or a text file.

    Returns ``(tensors, meta)``: tensors ``{name: [N, D]}`` (video: ``video_vt``, ``video_va``,
    ``video_agg``; audio: ``audio_va``, ``audio_agg``; text: ``text_vt``, ``text_agg``; common
    spaces L2-normalised, see :func:`pool_windows`) and meta ``{"modality", "items"}`` where
    ``items`` are the source paths (text: the sentences), in row order.
    """
    src = str(source)
    if Path(src).is_file() and Path(src).suffix.lower() in TEXT_SUFFIXES:
        sentences = read_sentences(src)
        return embed_texts(model, sentences, device=device), {"modality": "text", "items": sentences}
    from .data.index import detect_kind

    kind, _ = detect_kind(src)
    modality = "audio" if kind == "audio" else "video"
    dataset = eval_dataset(model, src, num_windows=num_windows)
    feats = extract_features(model, dataset, outputs=OUTPUTS[modality], batch_size=batch_size, device=device,
                             num_workers=num_workers, progress=progress)
    mask = feats[f"{modality}_mask"] > 0
    keys = [k for k, keep in zip(feats["key"], mask.tolist()) if keep]
    if len(keys) < len(feats["key"]):
        log.warning("%d items have no %s and were left out", len(feats["key"]) - len(keys), modality)
    tensors = {k: v[mask] for k, v in pool_windows(feats).items()}
    return tensors, {"modality": modality, "items": keys, "num_windows": num_windows}


def save_embeddings(path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write ``tensors`` as safetensors with ``meta`` (JSON) in its header, atomically.

    The header's ``"vatt"`` entry holds ``{"format": "vatt-embeddings", "modality", "items",
    "model", ...}`` so one file is self-describing (``safetensors`` readers show it as metadata).
    """
    from .atomic_io import atomic_write_safetensors

    n = {v.shape[0] for v in tensors.values()}
    if len(n) != 1 or n.pop() != len(meta.get("items", [])):
        raise InputError("every tensor needs one row per item in meta['items']")
    header = {"vatt": json.dumps({"format": EMBEDDINGS_FORMAT, **meta}, ensure_ascii=False)}
    atomic_write_safetensors(path, {k: v.float() for k, v in tensors.items()}, metadata=header)
    return Path(path)


def load_embeddings(path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a :func:`save_embeddings` file: ``(tensors, meta)``."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError(f"embeddings file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path} is not a safetensors embeddings file (from `vatt embed`): {e}") from None
    meta = parse_tagged_json(header.get("vatt"), EMBEDDINGS_FORMAT, f"{path}'s 'vatt' header",
                             "a vatt embeddings header (write the file with `vatt embed`)")
    _check_embeddings(path, tensors, meta)
    return tensors, meta


def _check_embeddings(path, tensors: dict, meta: dict) -> None:
    """Refuse a damaged or hand-edited file: a modality we know, ``items`` a list of strings, one
    ``[N, D]`` finite row per item in every tensor, and the modality's common-space tensors present."""
    modality, items = meta.get("modality"), meta.get("items")
    if modality not in OUTPUTS:
        raise CheckpointError(f"{path}: header modality should be one of {', '.join(OUTPUTS)}, got {modality!r}")
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise CheckpointError(f"{path}: header 'items' should be a list of strings (one per row), "
                              f"got {type(items).__name__}")
    missing = [k for k in OUTPUTS[modality][:1] if k not in tensors]  # its first common-space embedding
    if missing:
        raise CheckpointError(f"{path}: a {modality} embeddings file needs tensors {missing}; it has {sorted(tensors)}")
    for name, x in tensors.items():
        if x.dim() != 2 or x.shape[0] != len(items):
            raise CheckpointError(f"{path}: tensor {name} should be [{len(items)}, D] (one row per item in the "
                                  f"header), got {list(x.shape)}")
        bad = (~torch.isfinite(x.float()).all(dim=1)).nonzero().flatten().tolist()
        if bad:
            raise CheckpointError(f"{path}: {len(bad)} rows of {name} are not finite (rows {bad[:5]}); re-embed the "
                                  "source")
