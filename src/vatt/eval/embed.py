"""Run a frozen model over an evaluation set: per-window embeddings of every item.

Evaluation sets come from :func:`vatt.data.build_eval_dataset`: one item per video with all its
views stacked (``"video"`` ``[V, T, H, W, 3]`` with ``V = num_windows x num_crops``, ``"audio"``
``[num_windows, S]``, ``"text"`` ``[5, W]``). The model sees the views as one flat batch; the
outputs are folded back to ``[N, V, D]``.
"""

from __future__ import annotations

import logging
from typing import Iterable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import InputError

log = logging.getLogger(__name__)

MODALITIES = ("video", "audio", "text")


def eval_dataset(model, source, *, num_windows: int = 4, num_crops: int = 1) -> Dataset:
    """The evaluation set of ``source`` for ``model``'s input geometry.

    Args:
        source: anything :func:`vatt.data.build_eval_dataset` accepts (a folder, a manifest, a
            ``vatt data synth`` output ...), or an already built dataset, returned unchanged.
    """
    if isinstance(source, Dataset):
        return source
    from ..data import DataConfig, build_eval_dataset  # the data layer sits beside eval, not below model

    cfg = DataConfig.from_model_config(model.config)
    return build_eval_dataset(source, cfg, model.tokenizer, num_windows=num_windows, num_crops=num_crops)


def collate_views(items: list[dict]) -> dict:
    """Stack tensors of equal shape; everything else (keys, paths) becomes a list."""
    out = {}
    for name in items[0]:
        values = [it[name] for it in items]
        if isinstance(values[0], torch.Tensor):
            out[name] = torch.stack(values)
        elif isinstance(values[0], (int, float, bool)):
            out[name] = torch.tensor(values)
        else:
            out[name] = values
    return out


def _mask(batch: dict, modality: str, n: int) -> torch.Tensor:
    mask = batch.get(f"{modality}_mask")
    if mask is None:
        return torch.ones(n)
    return torch.as_tensor(mask, dtype=torch.float32).reshape(n)


@torch.no_grad()
def extract_features(model, dataset: Dataset, *, outputs: Sequence[str] = ("video_vt", "text_vt"),
                     batch_size: int = 8, device: str | torch.device = "cpu", num_workers: int = 0,
                     progress: bool = False) -> dict:
    """Model outputs for every item and view of an evaluation set.

    Args:
        outputs: model output names (``"video_vt"``, ``"video_va"``, ``"video_agg"``,
            ``"audio_va"``, ``"audio_agg"``, ``"text_vt"``, ``"text_agg"``); only the
            modalities they name are run.
        batch_size: items per forward (a forward sees ``batch_size x V`` video views).
    Returns:
        ``{name: float32 [N, views, D]}`` for each requested output (text: ``[N, 5, D]``), plus
        ``"video_mask"``/``"audio_mask"``/``"text_mask"`` ``[N]`` for the modalities run,
        ``"label"`` (when items carry one) and ``"key"`` (list of N sample ids), all on CPU.
    """
    wanted = {m: [o for o in outputs if o.startswith(m + "_")] for m in MODALITIES}
    unknown = [o for o in outputs if not any(o.startswith(m + "_") for m in MODALITIES)]
    if unknown:
        raise InputError(f"unknown model outputs {unknown}; expected names like 'video_vt', 'audio_agg'")
    was_training = model.training
    model.eval().to(device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_views)
    chunks: dict[str, list] = {}
    try:
        iterator: Iterable = loader
        if progress:
            from tqdm import tqdm

            iterator = tqdm(loader, desc="embedding", unit="batch", leave=False)
        for batch in iterator:
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
            if "label" in batch:
                chunks.setdefault("label", []).append(torch.as_tensor(batch["label"]))
            chunks.setdefault("key", []).extend(batch.get("key", [None] * (n or 0)))
    finally:
        model.train(was_training)
    feats = {k: (v if k == "key" else torch.cat(v)) for k, v in chunks.items()}
    log.debug("extracted %s from %d items", sorted(feats), len(feats.get("key", [])))
    return feats


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Unit-length rows along the last dimension (zero rows stay zero)."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)
