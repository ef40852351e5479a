"""Exact top-k over unit vectors, and moment search over a window index (``vatt serve``).

:func:`top_k` is the one nearest-neighbour routine of the package (``vatt search`` uses it too):
one matrix product of the queries with the collection, then an exact top-k. The collection may
be a memory-mapped tensor (a ``vatt index`` on disk): nothing is copied, the product reads the
pages. FAISS's exact inner-product index (``IndexFlatIP``) is used instead when it is installed
and the collection is large, or when asked; it returns the same neighbours.

:class:`SearchEngine` answers moment queries: text -> video (S_vt), video -> video ("more like
this", S_va) and audio -> video (S_va). Hits of neighbouring windows of one file are merged
(:func:`merge_windows`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from ..embed import l2_normalize

log = logging.getLogger(__name__)

FAISS_MIN_ITEMS = 100_000  # below this a matrix product is as fast and needs nothing extra
MERGE_MARGIN = 0.1  # a neighbouring window joins a hit when its cosine is within this of the hit's best
MAX_K = 1000


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


class FaissIndex:
    """An exact FAISS inner-product index over ``[N, D]`` rows (built once, searched many times)."""

    def __init__(self, matrix: torch.Tensor):
        if not faiss_available():
            raise InputError("FAISS was requested but is not installed (pip install faiss-cpu)")
        import faiss

        self.index = faiss.IndexFlatIP(matrix.shape[1])
        self.index.add(np.ascontiguousarray(matrix.float().numpy()))
        self.ntotal = matrix.shape[0]

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        scores, idx = self.index.search(np.ascontiguousarray(queries.float().numpy()), k)
        return torch.from_numpy(scores), torch.from_numpy(idx).long()


def top_k(matrix: torch.Tensor, queries: torch.Tensor, k: int, *, faiss_index: FaissIndex | None = None
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` rows of ``matrix`` ``[N, D]`` with the largest inner product with each query.

    Returns ``(scores [Q, k], indices [Q, k])``, best first; equal scores keep the lower index
    first (also at the k-th place). ``k`` is capped at ``N``. Inputs are used as they are: pass
    unit vectors for cosine similarity. With ``faiss_index`` (built over the same matrix) FAISS
    does the search.
    """
    if matrix.dim() != 2 or queries.dim() != 2 or matrix.shape[1] != queries.shape[1]:
        raise InputError(f"expected [N, D] and [Q, D] with one D, got {list(matrix.shape)} and {list(queries.shape)}")
    if k < 1:
        raise InputError(f"k must be at least 1, got {k}")
    k = min(k, matrix.shape[0])
    if k == 0:
        return torch.zeros(queries.shape[0], 0), torch.zeros(queries.shape[0], 0, dtype=torch.long)
    if faiss_index is not None:
        return faiss_index.search(queries, k)
    sim = queries.float() @ matrix.float().t() if matrix.dtype != torch.float32 else queries.float() @ matrix.t()
    scores, idx = [], []
    for row in sim:
        # topk is O(N); then make the order exact: every score above the k-th value, then the
        # lowest-index items equal to it, sorted by (score desc, index asc).
        kth = torch.topk(row, k, sorted=False).values.min()
        above = torch.nonzero(row > kth).flatten()
        ties = torch.nonzero(row == kth).flatten()[: k - above.numel()]
        chosen = torch.cat([above, ties]).sort().values
        order = torch.sort(row[chosen], descending=True, stable=True).indices
        idx.append(chosen[order])
        scores.append(row[chosen[order]])
    return torch.stack(scores), torch.stack(idx)


# -- moments ---------------------------------------------------------------------------------------
@dataclass
class Hit:
    """One merged moment: ``rows`` are the index windows it covers; ``best`` the best of them."""

    file: int  # file number in the index
    start: float  # seconds
    end: float
    score: float  # cosine similarity of the best window
    best: int  # row of the best window (its thumbnail is the hit's)
    rows: list[int]


def merge_windows(rows: list[int], scores: list[float], file: np.ndarray, start: np.ndarray, end: np.ndarray,
                  k: int, margin: float = MERGE_MARGIN, exclude: set[int] | None = None) -> list[Hit]:
    """Group scored windows into at most ``k`` moments (non-maximum suppression along time).

    Windows are visited best first. A window that overlaps a hit of the same file joins it when its score is within ``margin`` of that hit's best score (the hit's time range
    grows); otherwise it is dropped (a weaker view of a moment already found). Any other window
    starts a new hit. ``margin=None`` keeps every window as its own hit. Windows in ``exclude``
    (e.g. the query window of "more like this") are skipped, and so is every hit containing them.
    """
    hits: list[Hit] = []
    exclude = exclude or set()
    for r, s in zip(rows, scores):
        f, a, b = int(file[r]), float(start[r]), float(end[r])
        if margin is None:
            if r not in exclude:
                hits.append(Hit(f, a, b, s, r, [r]))
            continue
        near = [h for h in hits if h.file == f and a <= h.end + 1e-3 and b >= h.start - 1e-3]
        if not near:
            hits.append(Hit(f, a, b, s, r, [r]))
            continue
        if s < max(h.score for h in near) - margin:
            continue
        keep = near[0]  # the best of them (hits are kept in best-first order)
        for h in near[1:]:
            keep.start, keep.end, keep.rows = min(keep.start, h.start), max(keep.end, h.end), keep.rows + h.rows
            hits.remove(h)
        keep.start, keep.end = min(keep.start, a), max(keep.end, b)
        keep.rows.append(r)
    out = [h for h in hits if not exclude.intersection(h.rows)]
    for h in out:
        h.rows.sort()
    return out[:k]


class SearchEngine:
    """Moment search over a :class:`vatt.search.window_index.WindowIndex`.

    Args:
        index: the loaded index (memory-mapped).
        model: a loaded model for text and audio queries (None: only "more like this").
        use_faiss: None = FAISS when installed and the index has >= FAISS_MIN_ITEMS windows.
    """

    SPACES = {"text": "video_vt", "video": "video_va", "audio": "video_va"}

    def __init__(self, index, model=None, *, use_faiss: bool | None = None, merge_margin: float = MERGE_MARGIN):
        self.index, self.model, self.merge_margin = index, model, merge_margin
        if use_faiss is None:
            use_faiss = index.num_windows >= FAISS_MIN_ITEMS and faiss_available()
        self._faiss = {}
        if use_faiss and index.num_windows:
            for space in set(self.SPACES.values()):
                self._faiss[space] = FaissIndex(index.tensors[space])
        if model is not None:
            from ..data.config import DataConfig

            self.data_config = DataConfig.from_model_config(model.config)

    @property
    def can_search_text(self) -> bool:
        return self.model is not None and self.model.tokenizer is not None

    @property
    def can_search_audio(self) -> bool:
        return self.model is not None

    # -- queries ---------------------------------------------------------------------------------
    def _moments(self, space: str, query: torch.Tensor, k: int, exclude: set[int] | None = None,
                 merge: bool = True) -> list[Hit]:
        n = self.index.num_windows
        if n == 0:
            return []
        margin = self.merge_margin if merge else None
        pool = k + len(exclude or ())
        while True:
            # enough windows for k moments after merging: grow the pool until k hits or all windows
            pool = min(n, max(pool, 8 * k + 32))
            scores, idx = top_k(self.index.tensors[space], l2_normalize(query.float().reshape(1, -1)), pool,
                                faiss_index=self._faiss.get(space))
            hits = merge_windows(idx[0].tolist(), scores[0].tolist(), self.index.file, self.index.start,
                                 self.index.end, k, margin, exclude)
            if len(hits) >= k or pool >= n:
                return hits
            pool *= 4

    def text(self, query: str, k: int = 20, merge: bool = True) -> list[Hit]:
        """Moments whose video matches the sentence ``query`` (S_vt)."""
        return self.text_many([(query, k, merge)])[0]

    def text_many(self, queries: list[tuple[str, int, bool]]) -> list[list[Hit]]:
        """Several text queries ``(sentence, k, merge)`` at once: one forward of the text tower for
        all sentences and one matrix product with the index for all of them (``vatt serve``
        batches concurrent requests through this). Each answer equals :meth:`text` alone up to
        fp32 rounding."""
        if not self.can_search_text:
            raise InputError("text search needs a model with a vocabulary (serve with --model DIR)")
        if not queries:
            return []
        with torch.no_grad():
            vecs = self.model.encode_text([q for q, _, _ in queries])["text_vt"].float()
        space, n = self.SPACES["text"], self.index.num_windows
        if n == 0:
            return [[] for _ in queries]
        pool = min(n, max(8 * k + 32 for _, k, _ in queries))
        scores, idx = top_k(self.index.tensors[space], l2_normalize(vecs), pool, faiss_index=self._faiss.get(space))
        out = []
        for i, (_, k, merge) in enumerate(queries):
            margin = self.merge_margin if merge else None
            hits = merge_windows(idx[i].tolist(), scores[i].tolist(), self.index.file, self.index.start,
                                 self.index.end, k, margin)
            if len(hits) < k and pool < n:  # merging ate the pool: this one query looks further
                hits = self._moments(space, vecs[i], k, merge=merge)
            out.append(hits)
        return out

    def query_words(self, query: str) -> dict[str, list[str]]:
        """How the model reads ``query``: ``{"unknown": words outside its vocabulary (they all read
        as one <unk> word), "ignored": words past the text tower's length}``."""
        from ..text import OfficialWordTokenizer, normalize_words, official_words

        tok = self.model.tokenizer if self.model is not None else None
        if tok is None:
            return {"unknown": [], "ignored": []}
        words = official_words(query) if isinstance(tok, OfficialWordTokenizer) else normalize_words(query)
        limit = self.model.config.text.max_words
        ids = tok.encode_words(query, len(words) or 1)
        unknown = [w for w, i in zip(words[:limit], ids) if i == tok.unk_id]
        return {"unknown": list(dict.fromkeys(unknown)), "ignored": words[limit:]}

    def similar(self, row: int, k: int = 20, merge: bool = True) -> list[Hit]:
        """Moments whose video looks like window ``row`` (S_va); the query's own moment is left out."""
        if not 0 <= row < self.index.num_windows:
            raise InputError(f"unknown window id {row}")
        vec = torch.as_tensor(np.asarray(self.index.tensors["video_va"][row]))
        return self._moments(self.SPACES["video"], vec, k, exclude={row}, merge=merge)

    def audio(self, data: bytes, k: int = 20, merge: bool = True, max_seconds: float = 30.0) -> list[Hit]:
        """Moments whose video goes with the sound in the audio file ``data`` (S_va).

        The file is decoded from memory (never written to disk); its first ``max_seconds`` are
        cut into model-length windows whose unit S_va embeddings are averaged.
        """
        return self.audio_clips(self.decode_audio(data, max_seconds), k, merge)

    def decode_audio(self, data: bytes, max_seconds: float = 30.0) -> np.ndarray:
        """The model-length clips ``[n, S]`` of an uploaded audio file's first ``max_seconds``
        (no model needed: ``vatt serve`` decodes uploads outside its model lock)."""
        if not self.can_search_audio:
            raise InputError("audio search needs a model (serve with --model DIR)")
        from ..data.decode import MediaError, MediaReader

        cfg = self.data_config
        try:
            with MediaReader(data, name="the uploaded file") as reader:
                if not reader.info.has_audio:
                    raise InputError("the uploaded file has no audio track")
                span = min(max(reader.info.duration, cfg.clip_seconds), max_seconds)
                count = max(1, int(span // cfg.clip_seconds))
                clips = [reader.read(i * cfg.clip_seconds, num_frames=1, fps=cfg.fps, sample_rate=cfg.sample_rate,
                                     num_samples=cfg.num_samples, video=False).audio for i in range(count)]
        except MediaError as e:
            raise InputError(f"the uploaded file is not readable audio ({e.reason})") from None
        return np.stack(clips)

    def audio_clips(self, clips: np.ndarray, k: int = 20, merge: bool = True) -> list[Hit]:
        """Moments for decoded audio clips ``[n, S]`` (:meth:`decode_audio`): mean unit S_va."""
        with torch.no_grad():
            va = self.model.encode_audio(torch.from_numpy(clips))["audio_va"].float()
        return self._moments(self.SPACES["audio"], l2_normalize(va).mean(0), k, merge=merge)


def timed(fn, *args, **kwargs):
    """``(fn(*args, **kwargs), milliseconds)``."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, (time.perf_counter() - t0) * 1000.0
