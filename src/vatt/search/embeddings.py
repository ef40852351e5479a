"""Nearest-neighbour search in an embeddings file written by ``vatt embed``.

A text query is embedded with the model that made the file (its path is in the file's header;
``model=`` overrides it) into S_vt and compared by cosine similarity with the collection's
S_vt embeddings (videos, or sentences). Audio lives only in S_va, which text does not share, so
an audio collection cannot be searched by text. Search is exact: a matrix product by default,
FAISS's exact inner-product index (``IndexFlatIP``) when FAISS is installed and the collection
is large (``use_faiss=None``) or when asked (``use_faiss=True``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..errors import InputError
from ..embed import embed_texts, l2_normalize, load_embeddings
from .engine import FAISS_MIN_ITEMS, FaissIndex, faiss_available, top_k

log = logging.getLogger(__name__)

TEXT_SPACE = {"video": "video_vt", "text": "text_vt"}


@dataclass
class Neighbour:
    """One item of an embeddings file near the query (:class:`vatt.search.engine.Hit` is a moment)."""

    rank: int  # 1-based
    score: float  # cosine similarity in [-1, 1]
    item: str  # source path (or sentence)
    index: int  # row in the embeddings file


def nearest(collection: torch.Tensor, queries: torch.Tensor, k: int = 10, *, use_faiss: bool | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` cosine neighbours: ``(scores [Q, k], indices [Q, k])``, best first.

    ``collection`` ``[N, D]`` and ``queries`` ``[Q, D]`` are normalised here, then
    :func:`vatt.search.engine.top_k` (shared with ``vatt serve``) finds them. Ties keep the lower
    index first.
    """
    if collection.dim() != 2 or queries.dim() != 2 or collection.shape[1] != queries.shape[1]:
        raise InputError(f"expected [N, D] and [Q, D] with one D, got {list(collection.shape)} and {list(queries.shape)}")
    c, q = l2_normalize(collection.float()), l2_normalize(queries.float())
    if use_faiss is None:
        use_faiss = collection.shape[0] >= FAISS_MIN_ITEMS and faiss_available()
    return top_k(c, q, k, faiss_index=FaissIndex(c) if use_faiss else None)


def search(path, query: str, *, k: int = 10, model=None, use_faiss: bool | None = None) -> list[Neighbour]:
    """The ``k`` items of the embeddings file ``path`` closest to the sentence ``query``.

    Args:
        model: a loaded model or a model directory; default: the ``model`` recorded in the file.
    """
    if not isinstance(query, str) or not query.strip():
        raise InputError("the query must be a non-empty sentence")
    tensors, meta = load_embeddings(path)
    modality = meta.get("modality")
    if modality not in TEXT_SPACE:
        raise InputError(f"{path} holds {modality} embeddings; text search needs a video or text collection "
                         "(audio shares only S_va with video, not S_vt with text)")
    model = _resolve_model(model, meta, path)
    query_vec = embed_texts(model, [query])["text_vt"]
    scores, idx = nearest(tensors[TEXT_SPACE[modality]], query_vec, k, use_faiss=use_faiss)
    items = meta["items"]
    return [Neighbour(rank=r + 1, score=float(s), item=items[int(i)], index=int(i))
            for r, (s, i) in enumerate(zip(scores[0].tolist(), idx[0].tolist()))]


def _resolve_model(model, meta: dict, path):
    if model is not None and not isinstance(model, (str, bytes)) and not hasattr(model, "__fspath__"):
        return model
    from ..model import load_model

    where = model or meta.get("model")
    if not where:
        raise InputError(f"{path} does not say which model made it; pass --model DIR")
    return load_model(where)
