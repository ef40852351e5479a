"""Metrics of the downstream protocols (SPEC §6): retrieval ranks, top-k accuracy, mAP / AUC / d′.

All functions take torch tensors (CPU or GPU) and return Python floats or CPU tensors.

Ties in retrieval are *pessimistic* by default: the rank of the correct item is the number of
candidates whose score is greater than **or equal to** its own (itself included). A model whose
embeddings collapsed to a constant therefore gets the worst rank, never a perfect R@1. The
optimistic convention (1 + number of strictly greater scores) is available with
``ties="optimistic"``.

Why AP and ROC-AUC are written here rather than taken from scikit-learn: scikit-learn (51 MB
installed, plus 113 MB of SciPy) is only in the optional ``eval`` extra, while fine-tuning on AudioSet-style
sets needs these metrics in the core install; the tests check both against
``sklearn.metrics.average_precision_score`` / ``roc_auc_score`` to 1e-10, tied scores included.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from ..errors import InputError

TIES = ("pessimistic", "optimistic")


def _check_matrix(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise InputError(f"{name} must be a 2-D tensor [N, M], got {getattr(x, 'shape', type(x).__name__)}")


def retrieval_ranks(similarity: torch.Tensor, targets: torch.Tensor | None = None, *,
                    ties: str = "pessimistic") -> torch.Tensor:
    """1-based rank of each query's correct candidate.

    Args:
        similarity: ``[Nq, Nc]`` scores, higher = more similar.
        targets: ``[Nq]`` index of the correct candidate per query; default ``arange(Nq)``
            (the diagonal, which needs ``Nq <= Nc``).
        ties: ``"pessimistic"`` (rank = #scores >= correct score) or ``"optimistic"``
            (rank = 1 + #scores > correct score).
    Returns:
        int64 ``[Nq]`` ranks in ``[1, Nc]``.
    """
    _check_matrix("similarity", similarity)
    if ties not in TIES:
        raise InputError(f"ties must be one of {TIES}, got {ties!r}")
    nq, nc = similarity.shape
    if targets is None:
        if nq > nc:
            raise InputError(f"diagonal targets need no more queries than candidates, got {nq} > {nc}")
        targets = torch.arange(nq, device=similarity.device)
    targets = torch.as_tensor(targets, device=similarity.device).long()
    if targets.shape != (nq,) or (nq and (targets.min() < 0 or targets.max() >= nc)):
        raise InputError(f"targets must be [{nq}] indices in [0, {nc}), got {list(targets.shape)}")
    sim = similarity.float()
    correct = sim.gather(1, targets[:, None])  # [Nq, 1]
    if ties == "pessimistic":
        ranks = (sim >= correct).sum(1)
    else:
        ranks = 1 + (sim > correct).sum(1)
    return ranks.long().cpu()


def recall_metrics(ranks: torch.Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """``{"R@k": fraction of ranks <= k, "MedR": median rank, "MeanR": mean rank}``.

    The median of an even number of ranks is the mean of the two middle ones (numpy's rule).
    """
    ranks = torch.as_tensor(ranks).double().flatten()
    if ranks.numel() == 0:
        raise InputError("no queries to compute retrieval metrics on")
    out = {f"R@{k}": float((ranks <= k).double().mean()) for k in ks}
    s = ranks.sort().values
    n = s.numel()
    out["MedR"] = float(s[n // 2]) if n % 2 else float((s[n // 2 - 1] + s[n // 2]) / 2)
    out["MeanR"] = float(ranks.mean())
    return out


def retrieval_metrics(similarity: torch.Tensor, targets: torch.Tensor | None = None, *,
                      ks: Sequence[int] = (1, 5, 10), ties: str = "pessimistic") -> dict[str, float]:
    """R@k / MedR / MeanR of a ``[Nq, Nc]`` similarity matrix (see :func:`retrieval_ranks`)."""
    return recall_metrics(retrieval_ranks(similarity, targets, ties=ties), ks)


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """``{"top1": ..., "top5": ...}`` fractions for ``logits [N, C]`` and int ``labels [N]``.

    k larger than C counts every item as correct. Ties in the logits are broken by
    ``torch.topk`` (lowest index first on CPU).
    """
    _check_matrix("logits", logits)
    labels = torch.as_tensor(labels, device=logits.device).long()
    if labels.shape != logits.shape[:1]:
        raise InputError(f"labels must be [{logits.shape[0]}], got {list(labels.shape)}")
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices  # [N, kmax]
    hit = top == labels[:, None]
    return {f"top{k}": float(hit[:, :min(k, kmax)].any(1).double().mean()) for k in ks}


def _check_multilabel(scores: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    _check_matrix("scores", scores)
    targets = torch.as_tensor(targets)
    if targets.shape != scores.shape:
        raise InputError(f"targets must have the shape of scores {list(scores.shape)}, got {list(targets.shape)}")
    return scores.double().cpu(), (targets.cpu() > 0.5)


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-class average precision ``[C]`` of multi-label ``scores [N, C]`` vs 0/1 ``targets``.

    AP = sum over distinct score thresholds of (recall step) x (precision there), the
    definition scikit-learn uses (no interpolation); tied scores form one threshold. Classes
    with no positive are NaN.
    """
    scores, targets = _check_multilabel(scores, targets)
    aps = []
    for c in range(scores.shape[1]):
        s, y = scores[:, c], targets[:, c].double()
        npos = y.sum()
        if npos == 0:
            aps.append(float("nan"))
            continue
        order = torch.argsort(s, descending=True, stable=True)
        s, y = s[order], y[order]
        tp = y.cumsum(0)
        # keep only the last index of each run of equal scores (one threshold per distinct score)
        last = torch.ones_like(s, dtype=torch.bool)
        last[:-1] = s[1:] != s[:-1]
        tp, count = tp[last], torch.arange(1, len(s) + 1, dtype=torch.float64)[last]
        precision, recall = tp / count, tp / npos
        recall_step = torch.diff(recall, prepend=recall.new_zeros(1))
        aps.append(float((recall_step * precision).sum()))
    return torch.tensor(aps, dtype=torch.float64)


def roc_auc(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-class area under the ROC curve ``[C]`` (Mann–Whitney form; a tie counts 1/2).

    Equal to the trapezoidal ROC AUC. Classes with only positives or only negatives are NaN.
    """
    scores, targets = _check_multilabel(scores, targets)
    aucs = []
    for c in range(scores.shape[1]):
        s, y = scores[:, c], targets[:, c]
        pos, neg = s[y], s[~y]
        if len(pos) == 0 or len(neg) == 0:
            aucs.append(float("nan"))
            continue
        # average ranks (tied scores share their mean rank) -> U statistic of the positives
        order = torch.argsort(s, stable=True)
        _, inverse, counts = torch.unique_consecutive(s[order], return_inverse=True, return_counts=True)
        mean_rank = counts.cumsum(0).double() - (counts.double() - 1) / 2
        ranks = torch.empty_like(s)
        ranks[order] = mean_rank[inverse]
        u = ranks[y].sum() - len(pos) * (len(pos) + 1) / 2
        aucs.append(float(u / (len(pos) * len(neg))))
    return torch.tensor(aucs, dtype=torch.float64)


def d_prime(auc: float) -> float:
    """Sensitivity index d′ = √2 · Φ⁻¹(AUC) (AudioSet convention, from the mean AUC)."""
    auc = min(max(float(auc), 1e-12), 1 - 1e-12)
    return math.sqrt(2.0) * float(torch.special.ndtri(torch.tensor(auc, dtype=torch.float64)))


def multilabel_metrics(scores: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """``{"mAP", "AUC", "d_prime"}``: means over the classes where each is defined."""
    ap = average_precision(scores, targets)
    auc = roc_auc(scores, targets)
    m_ap = float(ap[~ap.isnan()].mean()) if (~ap.isnan()).any() else float("nan")
    m_auc = float(auc[~auc.isnan()].mean()) if (~auc.isnan()).any() else float("nan")
    return {"mAP": m_ap, "AUC": m_auc, "d_prime": d_prime(m_auc) if not math.isnan(m_auc) else float("nan")}
