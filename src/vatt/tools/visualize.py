"""Feature visualisation (SPEC §6): t-SNE of video and text features before and after the backbones.

"Before" is the mean over tokens of the sequence that enters the first Transformer layer (the
embedded input: voxel/word projections with positions, AGG token excluded); "after" is the
backbone's AGG output. Where video and text widths differ (modality-specific models such as
MBS: 1024 vs 512) the narrower features are zero-padded so both live in one t-SNE. Given a
modality-specific and a modality-agnostic model, the figure puts them side by side, as in the
paper's figure: the agnostic model's video and text features mix after the shared encoder.

Also :func:`retrieval_grid`: text queries beside the middle frames of their top-k videos.
"""

from __future__ import annotations

import io
import logging
import textwrap
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from ..errors import InputError

log = logging.getLogger(__name__)


def save_figure(fig, out_path) -> Path:
    """Save a matplotlib figure as PNG atomically (temp file in the same folder, then replace)."""
    from ..atomic_io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(out_path, buf.getvalue())
    return Path(out_path)


def _pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    try:
        import matplotlib
    except ImportError:
        raise InputError("plots need matplotlib: pip install 'vatt[eval]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def tsne_embed(x: np.ndarray, *, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    """2-D t-SNE coordinates ``[N, 2]`` of ``x`` ``[N, D]`` (perplexity capped below N)."""
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise InputError("t-SNE needs scikit-learn: pip install 'vatt[eval]'") from None

    x = np.asarray(x, dtype=np.float64)
    if len(x) < 3:
        raise InputError(f"t-SNE needs at least 3 points, got {len(x)}")
    perplexity = float(min(perplexity, (len(x) - 1) / 3))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)


def _pad_to(x: np.ndarray, width: int) -> np.ndarray:
    return x if x.shape[1] == width else np.pad(x, ((0, 0), (0, width - x.shape[1])))


def tsne_figure(panels: Mapping[str, Mapping[str, torch.Tensor | np.ndarray]] | Mapping[str, torch.Tensor | np.ndarray],
                out_path, *, perplexity: float = 30.0, seed: int = 0, title: str | None = None,
                labels: Mapping[str, Sequence] | None = None) -> Path:
    """Scatter the t-SNE of each panel's groups of features and save a PNG.

    Args:
        panels: ``{panel title: {group name: features [N_g, D_g]}}`` (one t-SNE per panel over
            all its groups, coloured by group; groups of different widths are zero-padded), or
            just ``{group name: features}`` for a single panel.
        out_path: the PNG to write (atomically).
        labels: optional ``{group name: [N_g] class ids}`` drawn as marker text colour shades.
    Returns:
        the PNG path.
    """
    plt = _pyplot()

    if panels and all(isinstance(v, (torch.Tensor, np.ndarray)) for v in panels.values()):
        panels = {title or "features": panels}
    if not panels:
        raise InputError("tsne_figure needs at least one panel of features")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.5), squeeze=False)
    markers = ["o", "^", "s", "D", "v", "P"]
    for ax, (name, groups) in zip(axes[0], panels.items()):
        arrays = {g: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)).reshape(len(v), -1)
                  for g, v in groups.items()}
        width = max(a.shape[1] for a in arrays.values())
        stacked = np.concatenate([_pad_to(a, width) for a in arrays.values()])
        coords = tsne_embed(stacked, perplexity=perplexity, seed=seed)
        start = 0
        for i, (g, a) in enumerate(arrays.items()):
            xy = coords[start : start + len(a)]
            start += len(a)
            c = None if labels is None or g not in labels else np.asarray(labels[g])
            ax.scatter(xy[:, 0], xy[:, 1], s=14, marker=markers[i % len(markers)], label=g, alpha=0.75,
                       c=c, cmap="tab10" if c is not None else None)
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title)
    path = save_figure(fig, out_path)
    plt.close(fig)
    log.info("wrote t-SNE figure %s", path)
    return path


# -- features before / after the backbones -------------------------------------------------------
def _first_layer(model, modality: str) -> torch.nn.Module:
    """The module whose input is the embedded token sequence (AGG at position 0)."""
    if model.config.modality_agnostic:
        return model.backbone.encoder
    backbone = getattr(model, f"{modality}_backbone")
    return backbone.blocks[0] if modality == "text" else backbone.encoder


@torch.no_grad()
def before_after_features(model, inputs: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """``{"before": {modality: [N, D]}, "after": {modality: [N, D]}}`` for ``video``/``text`` inputs.

    "before": mean over the non-AGG tokens entering the first Transformer layer (text: over
    non-padding words); "after": the AGG output of the backbone. Eval mode, no DropToken.
    """
    captured: dict[str, torch.Tensor] = {}
    model.eval()
    out: dict[str, dict[str, torch.Tensor]] = {"before": {}, "after": {}}
    for modality, x in inputs.items():
        layer = _first_layer(model, modality)
        hook = layer.register_forward_pre_hook(lambda _m, args: captured.__setitem__("x", args[0]))
        try:
            agg = model(**{modality: x})[f"{modality}_agg"]
        finally:
            hook.remove()
        tokens = captured.pop("x")[:, 1:]  # drop AGG
        if modality == "text":
            keep = (x.reshape(-1, x.shape[-1]) != 0).float().unsqueeze(-1)
            before = (tokens * keep).sum(1) / keep.sum(1).clamp_min(1.0)
        else:
            before = tokens.mean(1)
        out["before"][modality] = before.float().cpu()
        out["after"][modality] = agg.reshape(-1, agg.shape[-1]).float().cpu()
    return out


def feature_figure(models: Mapping[str, torch.nn.Module], video: torch.Tensor, text: torch.Tensor, out_path, *,
                   perplexity: float = 30.0, seed: int = 0) -> Path:
    """The paper's figure: per model, t-SNE of video and text features before and after the backbone.

    Args:
        models: ``{name: model}``, e.g. ``{"modality-specific": mbs, "modality-agnostic": ma}``.
        video: clips ``[N, T, H, W, 3]`` in [-1, 1]; text: ids ``[N, W]`` (one caption per clip).
    """
    panels = {}
    for name, model in models.items():
        feats = before_after_features(model, {"video": video, "text": text})
        for stage in ("before", "after"):
            panels[f"{name}: {stage} backbone"] = feats[stage]
    return tsne_figure(panels, out_path, perplexity=perplexity, seed=seed)


def visualize_source(model_dirs: Sequence[str], source, out_path, *, max_items: int = 200, perplexity: float = 30.0,
                     device="cpu", num_workers: int = 0, progress=None) -> tuple[Path, int]:
    """The paper's t-SNE figure for saved models (one per ``model_dirs``: give a modality-specific
    and a modality-agnostic one) on up to ``max_items`` clips of ``source`` (first window, centre
    caption). Returns ``(path, number of clips)``."""
    from ..embed import check_loader_args, eval_dataset, make_eval_loader
    from ..eval.retrieval import centre_caption
    from ..model import load_model
    from ..progress import track

    check_loader_args(8, num_workers)
    if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 2:
        raise InputError(f"max_items should be an integer >= 2 (t-SNE needs points to place), got {max_items!r}")
    if not isinstance(perplexity, (int, float)) or not 0 < perplexity < float("inf"):
        raise InputError(f"perplexity should be a number > 0, got {perplexity!r}")
    if Path(out_path).is_dir() or Path(out_path).parent.is_file():
        raise InputError(f"--out {out_path}: expected a file path for the PNG (its folder is a file, or it is a folder)")
    models = {}
    for path in model_dirs:
        m = load_model(path, device=device)
        kind = "modality-agnostic" if m.config.modality_agnostic else "modality-specific"
        models[f"{m.config.name} ({kind})" if len(model_dirs) > 1 else kind] = m
    first = next(iter(models.values()))
    dataset = eval_dataset(first, source, num_windows=1)
    videos, texts = [], []
    for batch in track(progress, make_eval_loader(dataset, 8, num_workers), total=min(len(dataset), max_items),
                       desc="decoding", unit="clip", size=lambda b: len(b["key"])):
        videos.append(batch["video"][:, 0])
        texts.append(torch.stack([ids[centre_caption(ids)] for ids in batch["text"]]))
        if sum(len(v) for v in videos) >= max_items:
            break
    if not videos:
        raise InputError(f"{source}: no usable clips to visualise")
    video, text = torch.cat(videos)[:max_items], torch.cat(texts)[:max_items]
    path = feature_figure(models, video.to(device), text.to(device), out_path, perplexity=perplexity)
    return path, len(video)


def retrieval_grid(queries: Sequence[str], frames: torch.Tensor, similarity: torch.Tensor, out_path, *,
                   k: int = 4, targets: Sequence[int] | None = None) -> Path:
    """Text queries beside the frames of their ``k`` most similar videos (correct one boxed green).

    Args:
        queries: ``Q`` sentences.
        frames: one frame per candidate video ``[N, H, W, 3]`` in [-1, 1] (e.g. the middle frame).
        similarity: ``[Q, N]`` scores.
        targets: the correct video per query (default: query i ↔ video i).
    """
    plt = _pyplot()

    q, n = similarity.shape
    if len(queries) != q or frames.shape[0] != n:
        raise InputError(f"expected {q} queries and {n} frames for a [{q}, {n}] similarity, got {len(queries)} and {frames.shape[0]}")
    k = min(k, n)
    targets = list(range(q)) if targets is None else list(targets)
    top = similarity.topk(k, dim=1).indices
    fig, axes = plt.subplots(q, k + 1, figsize=(2.0 * (k + 1) + 1.5, 2.0 * q), squeeze=False)
    images = ((frames.float().clamp(-1, 1) + 1) / 2).cpu().numpy()
    for i in range(q):
        axes[i][0].axis("off")
        axes[i][0].text(0.0, 0.5, textwrap.fill(queries[i], 28), fontsize=8, va="center")
        for j in range(k):
            ax = axes[i][j + 1]
            idx = int(top[i, j])
            ax.imshow(images[idx])
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{float(similarity[i, idx]):.2f}", fontsize=7)
            if idx == targets[i]:
                for spine in ax.spines.values():
                    spine.set_edgecolor("green")
                    spine.set_linewidth(3)
    path = save_figure(fig, out_path)
    plt.close(fig)
    return path
