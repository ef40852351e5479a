"""Word-level text tokenization, as in VATT: lowercase, strip punctuation, split on whitespace.

Ids: ``<pad>`` = 0, ``<unk>`` = 1, then words by decreasing frequency (ties alphabetical) so a
vocabulary built twice from the same captions is identical. Sequences are cut or padded to a fixed
number of words (16 in the paper); there is no BOS/EOS token.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import torch

from .atomic_io import atomic_write_text
from .errors import CheckpointError, InputError

PAD, UNK = "<pad>", "<unk>"
MAX_VOCAB = 2**16
_PUNCT = re.compile(r"[^\w\s]|_", flags=re.UNICODE)


def normalize_words(text: str) -> list[str]:
    """``"Hello, World!"`` -> ``["hello", "world"]`` (punctuation becomes a word break)."""
    if not isinstance(text, str):
        raise InputError(f"expected a caption string, got {type(text).__name__}")
    return _PUNCT.sub(" ", text.lower()).split()


class WordTokenizer:
    """Maps sentences to fixed-length id sequences with a fixed vocabulary.

    Args:
        words: the vocabulary in id order; must start with ``<pad>``, ``<unk>``.
    """

    def __init__(self, words: Sequence[str]):
        words = list(words)
        if not all(isinstance(w, str) for w in words):
            i = next(i for i, w in enumerate(words) if not isinstance(w, str))
            raise InputError(f"a vocabulary holds words (strings); got {words[i]!r} at position {i}")
        if words[:2] != [PAD, UNK]:
            raise InputError(f"a vocabulary must start with '{PAD}', '{UNK}'; got {words[:2]}")
        if len(words) > MAX_VOCAB:
            raise InputError(f"vocabulary has {len(words)} entries; at most {MAX_VOCAB} fit the word table")
        if len(set(words)) != len(words):
            raise InputError("vocabulary has repeated words")
        self.words = words
        self.index = {w: i for i, w in enumerate(words)}

    def __len__(self) -> int:
        return len(self.words)

    def __eq__(self, other) -> bool:
        return isinstance(other, WordTokenizer) and other.words == self.words

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return 1

    @classmethod
    def build(cls, texts: Iterable[str], max_size: int = MAX_VOCAB, min_count: int = 1) -> "WordTokenizer":
        """Vocabulary of the most frequent words in ``texts`` (at most ``max_size`` ids incl. specials)."""
        if not 2 < max_size <= MAX_VOCAB:
            raise InputError(f"max_size must be in (2, {MAX_VOCAB}], got {max_size}")
        counts = Counter(w for t in texts for w in normalize_words(t))
        ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls([PAD, UNK] + ranked[: max_size - 2])

    def encode_words(self, text: str, max_words: int = 16) -> list[int]:
        ids = [self.index.get(w, 1) for w in normalize_words(text)][:max_words]
        return ids + [0] * (max_words - len(ids))

    def encode(self, texts: str | Sequence[str], max_words: int = 16) -> torch.Tensor:
        """A sentence -> ``[max_words]`` int64; a list of sentences -> ``[N, max_words]``."""
        if isinstance(texts, str):
            return torch.tensor(self.encode_words(texts, max_words), dtype=torch.long)
        if not all(isinstance(t, str) for t in texts):
            raise InputError("expected a string or a list of strings")
        rows = [self.encode_words(t, max_words) for t in texts]
        return torch.tensor(rows, dtype=torch.long).reshape(len(rows), max_words)

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.words[int(i)] for i in ids if int(i) != 0)

    # -- files ---------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write ``{"format": "vatt-vocab", "words": [...]}`` atomically."""
        payload = {"format": "vatt-vocab", "words": self.words}
        atomic_write_text(path, json.dumps(payload, ensure_ascii=False))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "WordTokenizer":
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"vocabulary file not found: {path}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path} is not a vatt vocabulary (JSON with 'words'): {e}") from None
        if not isinstance(data, dict) or data.get("format") != "vatt-vocab" or not isinstance(data.get("words"), list):
            raise CheckpointError(f"{path} is not a vatt vocabulary (expected format 'vatt-vocab')")
        try:
            return cls(data["words"])
        except InputError as e:
            raise CheckpointError(f"{path}: {e}") from None
