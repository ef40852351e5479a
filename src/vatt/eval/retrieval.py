"""Zero-shot retrieval (SPEC §6): text→video, video→text, audio↔video, no training.

Protocol: every test video is cut into ``num_windows`` evenly spaced windows (centre crop); the
model embeds each window into S_vt (256-d, for text) and S_va (512-d, for audio); embeddings are
L2-normalised. Two ways to turn windows into one score per (query, video):

* ``average="embeddings"``: mean of the normalised window embeddings, normalised again,
  then cosine similarity;
* ``average="similarities"``: cosine similarity with each window, then the mean.

For audio↔video both sides have windows: the mean is over all (audio window, video window)
pairs. Each video has one text query (``caption="centre"``, the default): the caption at the
video's centre. Evaluation items carry the 5 captions nearest the video's middle in time order,
repeated in order when a video has fewer; the query is the middle one of the distinct captions
(exactly the centre caption when the centre has two neighbours on each side). ``caption`` may
instead be an index into the 5, or ``"mean"`` (the 5 embeddings averaged like windows). Ranks
use pessimistic ties (:mod:`vatt.eval.metrics`).
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch

from ..errors import InputError
from ..progress import Progress
from ..embed import eval_dataset, extract_features, l2_normalize
from .metrics import retrieval_metrics

log = logging.getLogger(__name__)

AVERAGES = ("embeddings", "similarities")


def window_similarity(queries: torch.Tensor, candidates: torch.Tensor, average: str = "embeddings") -> torch.Tensor:
    """Cosine similarity ``[Nq, Nc]`` of multi-window queries ``[Nq, Wq, D]`` and candidates ``[Nc, Wc, D]``.

    ``"embeddings"``: windows' unit vectors averaged and re-normalised on each side, then one
    cosine. ``"similarities"``: mean over all ``Wq x Wc`` window pairs of the cosines.
    """
    if average not in AVERAGES:
        raise InputError(f"average must be one of {AVERAGES}, got {average!r}")
    if queries.dim() != 3 or candidates.dim() != 3 or queries.shape[-1] != candidates.shape[-1]:
        raise InputError(f"expected [Nq, Wq, D] and [Nc, Wc, D], got {list(queries.shape)} and {list(candidates.shape)}")
    q, c = l2_normalize(queries.float()), l2_normalize(candidates.float())
    if average == "embeddings":
        return l2_normalize(q.mean(1)) @ l2_normalize(c.mean(1)).t()
    # mean_{i,j} <q_i, c_j> = <mean_i q_i, mean_j c_j>: exact and O(N^2 D) instead of O(N^2 W^2 D)
    return q.mean(1) @ c.mean(1).t()


def centre_caption(ids: torch.Tensor) -> int:
    """Index in ``ids`` ``[5, W]`` of the middle distinct caption (first occurrences, in order)."""
    firsts: list[int] = []
    for i in range(ids.shape[0]):
        if not any(torch.equal(ids[i], ids[j]) for j in firsts):
            firsts.append(i)
    return firsts[(len(firsts) - 1) // 2]


def text_queries(feats: dict, caption: str | int = "centre") -> torch.Tensor:
    """One query per item ``[N, 1, D]`` from ``feats["text_vt"]`` ``[N, 5, D]`` (``"mean"``: ``[N, 5, D]``)."""
    text = feats["text_vt"]
    if caption == "mean":
        return text
    if caption == "centre":
        if "text_ids" not in feats:
            raise InputError("caption='centre' needs the caption ids ('text_ids') in the features")
        index = torch.tensor([centre_caption(ids) for ids in feats["text_ids"]])
    elif isinstance(caption, int) and 0 <= caption < text.shape[1]:
        index = torch.full((text.shape[0],), caption)
    else:
        raise InputError(f"caption must be 'centre', 'mean' or an index in [0, {text.shape[1]}), got {caption!r}")
    return text[torch.arange(text.shape[0]), index][:, None]


def retrieval_from_features(feats: dict, *, average: str = "embeddings", caption: str | int = "centre",
                            ties: str = "pessimistic") -> dict:
    """Retrieval metrics from :func:`vatt.embed.extract_features` output.

    Needs ``"video_vt"`` ``[N, V, 256]`` and ``"text_vt"`` ``[N, 5, 256]``; adds audio↔video
    when ``"video_va"`` and ``"audio_va"`` are present. Items whose text (audio) mask is 0 are
    left out of the text (audio) directions.
    Returns ``{"text_to_video": {"R@1", "R@5", "R@10", "MedR", "MeanR"}, "video_to_text": ...,
    ["audio_to_video", "video_to_audio",] "num_videos": N, "average": average}``.
    """
    n = feats["video_vt"].shape[0]
    if n < 2:
        raise InputError(f"retrieval needs at least 2 videos, got {n}")
    result: dict = {"average": average, "num_videos": n}
    # A pair needs both sides: an audio-only item's zero video is not a video to retrieve.
    video_mask = feats.get("video_mask", torch.ones(n)) > 0
    text_mask = (feats.get("text_mask", torch.ones(n)) > 0) & video_mask
    if "text_vt" in feats and text_mask.sum() >= 2:
        text = text_queries(feats, caption)[text_mask]
        sim = window_similarity(text, feats["video_vt"][text_mask], average)  # [N, N]
        result["text_to_video"] = retrieval_metrics(sim, ties=ties)
        result["video_to_text"] = retrieval_metrics(sim.t(), ties=ties)
        result["num_text_queries"] = int(text_mask.sum())
    audio_mask = (feats.get("audio_mask", torch.zeros(n)) > 0) & video_mask
    if "audio_va" in feats and "video_va" in feats and audio_mask.sum() >= 2:
        sim = window_similarity(feats["audio_va"][audio_mask], feats["video_va"][audio_mask], average)
        result["audio_to_video"] = retrieval_metrics(sim, ties=ties)
        result["video_to_audio"] = retrieval_metrics(sim.t(), ties=ties)
        result["num_audio_queries"] = int(audio_mask.sum())
    if "text_to_video" not in result and "audio_to_video" not in result:
        raise InputError(
            f"nothing to retrieve: of {n} items, {int(video_mask.sum())} have a video, {int(text_mask.sum())} a video "
            f"with captions and {int(audio_mask.sum())} a video with audio (retrieval needs at least 2 pairs); "
            "is this an audio-only set?"
        )
    return result


def zero_shot_retrieval(model, source, *, num_windows: int = 4, batch_size: int = 8, device="cpu",
                        num_workers: int = 0, average: str | Sequence[str] = "embeddings",
                        caption: str | int = "centre", with_audio: bool = True,
                        progress: Progress | None = None) -> dict:
    """Zero-shot text↔video (and audio↔video) retrieval of ``model`` on ``source``.

    Args:
        source: an evaluation source for :func:`vatt.data.build_eval_dataset` (or a built one).
        num_windows: windows per video (paper: 4).
        average: ``"embeddings"`` or ``"similarities"`` (see the module docstring), or a list of
            them: the features are extracted once and the result is ``{average: result}``.
        caption: which caption is each video's query (see the module docstring).
    Returns:
        see :func:`retrieval_from_features`; R@K are fractions in [0, 1], ranks are 1-based.
    """
    averages = [average] if isinstance(average, str) else list(average)
    for a in averages:
        if a not in AVERAGES:
            raise InputError(f"average must be one of {AVERAGES}, got {a!r}")
    dataset = eval_dataset(model, source, num_windows=num_windows)
    outputs = ["video_vt", "text_vt"] + (["video_va", "audio_va"] if with_audio else [])
    feats = extract_features(model, dataset, outputs=available_outputs(dataset, outputs), batch_size=batch_size,
                             device=device, num_workers=num_workers, progress=progress)
    results = {a: retrieval_from_features(feats, average=a, caption=caption) for a in averages}
    for a, result in results.items():
        log.info("zero-shot retrieval on %d videos (%s): %s", result["num_videos"], a,
                 {k: v for k, v in result.get("text_to_video", {}).items()})
    return results[average] if isinstance(average, str) else results


def available_outputs(dataset, outputs: list[str]) -> list[str]:
    """Drop the outputs of modalities the dataset's items do not carry at all.

    Items that carry a modality with mask 0 (e.g. a video without an audio track) are kept and
    left out later by :func:`retrieval_from_features`.
    """
    if len(dataset) == 0:
        raise InputError("the evaluation set is empty")
    item = dataset[0]
    return [name for name in outputs if name.split("_")[0] in item]
