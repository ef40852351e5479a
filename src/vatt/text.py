"""Word-level text tokenization, as in VATT: lowercase, strip punctuation, split on whitespace.

* :class:`WordTokenizer` (our vocabularies): ids ``<pad>`` = 0, ``<unk>`` = 1, then words by
  decreasing frequency (ties alphabetical) so a vocabulary built twice from the same captions is
  identical; punctuation becomes a word break.
* :class:`OfficialWordTokenizer`: the official vocabulary file (DMVR ``WordTokenizer`` format,
  lines ``word`` or ``idx word``, with ``<pad> <bos> <eos> <unk>``) and the official rules:
  ASCII punctuation deleted, ASCII lower-cased, whitespace split, unknown words -> ``<unk>``.

Sequences are cut or padded to a fixed number of words (16 in the paper). There is no BOS/EOS
token: the official VATT data pipeline calls the DMVR tokenizer with ``prepend_bos`` and
``append_eos`` off (their defaults in ``vatt/data/processing.add_text``).
"""

from __future__ import annotations

import json
import os
import re
import string
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import torch

from .atomic_io import atomic_write_text
from .errors import CheckpointError, InputError
from .tagged_json import read_tagged_json

VOCAB_FORMAT = "vatt-vocab"

PAD, UNK = "<pad>", "<unk>"
MAX_VOCAB = 2**16
_PUNCT = re.compile(r"[^\w\s]|_", flags=re.UNICODE)


def normalize_words(text: str) -> list[str]:
    """``"Hello, World!"`` -> ``["hello", "world"]`` (punctuation becomes a word break)."""
    if not isinstance(text, str):
        raise InputError(f"expected a caption string, got {type(text).__name__}")
    return _PUNCT.sub(" ", text.lower()).split()


def _check_words(words: list) -> None:
    """A vocabulary is a list of distinct strings that fits the word table."""
    if not all(isinstance(w, str) for w in words):
        i = next(i for i, w in enumerate(words) if not isinstance(w, str))
        raise InputError(f"a vocabulary holds words (strings); got {words[i]!r} at position {i}")
    if len(words) > MAX_VOCAB:
        raise InputError(f"vocabulary has {len(words)} entries; at most {MAX_VOCAB} fit the word table")
    if len(set(words)) != len(words):
        raise InputError("vocabulary has repeated words")


class WordTokenizer:
    """Maps sentences to fixed-length id sequences with a fixed vocabulary.

    Args:
        words: the vocabulary in id order; must start with ``<pad>``, ``<unk>``.
    """

    def __init__(self, words: Sequence[str]):
        words = list(words)
        _check_words(words)
        if words[:2] != [PAD, UNK]:
            raise InputError(f"a vocabulary must start with '{PAD}', '{UNK}'; got {words[:2]}")
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
        payload = {"format": VOCAB_FORMAT, "words": self.words}
        atomic_write_text(path, json.dumps(payload, ensure_ascii=False))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "WordTokenizer":
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"vocabulary file not found: {path}")
        data = read_tagged_json(path, VOCAB_FORMAT, "a vatt vocabulary")
        if not isinstance(data.get("words"), list):
            raise CheckpointError(f"{path} is not a vatt vocabulary (its 'words' should be a list)")
        try:
            if data.get("rules") == OfficialWordTokenizer.RULES:
                return OfficialWordTokenizer(data["words"])
            return cls(data["words"])
        except InputError as e:
            raise CheckpointError(f"{path}: {e}") from None


_ASCII_PUNCT = str.maketrans("", "", string.punctuation)
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def official_words(text: str) -> list[str]:
    """The official (DMVR) word split: delete ASCII punctuation (``[[:punct:]]``), lower-case
    ASCII letters (``tf.strings.lower``), split on whitespace. ``"Don't stop!"`` -> ``["dont", "stop"]``."""
    if not isinstance(text, str):
        raise InputError(f"expected a caption string, got {type(text).__name__}")
    return text.translate(_ASCII_PUNCT).translate(_ASCII_LOWER).split()


class OfficialWordTokenizer(WordTokenizer):
    """The official VATT vocabulary and tokenisation rules (DMVR ``WordTokenizer``).

    Args:
        words: the vocabulary in id order (id ``i`` = ``words[i]``); must contain ``<pad>``
            (at id 0: the model masks id 0 as padding), ``<bos>``, ``<eos>`` and ``<unk>``.

    Read the official text file with :meth:`from_file`. Unlike :class:`WordTokenizer`,
    punctuation is deleted (``"don't"`` -> ``"dont"``) and only ASCII is lower-cased.
    """

    RULES = "official"
    SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")

    def __init__(self, words: Sequence[str]):
        words = list(words)
        _check_words(words)
        missing = [w for w in self.SPECIALS if w not in words]
        if missing:
            raise InputError(f"an official vocabulary must contain {' '.join(self.SPECIALS)}; missing {' '.join(missing)}")
        if words[0] != PAD:
            raise InputError(f"'<pad>' must have id 0 (the model masks id 0 as padding); it has id {words.index(PAD)}")
        self.words = words
        self.index = {w: i for i, w in enumerate(words)}

    @property
    def unk_id(self) -> int:
        return self.index["<unk>"]

    @property
    def bos_id(self) -> int:
        return self.index["<bos>"]

    @property
    def eos_id(self) -> int:
        return self.index["<eos>"]

    def encode_words(self, text: str, max_words: int = 16) -> list[int]:
        unk = self.unk_id
        ids = [self.index.get(w, unk) for w in official_words(text)][:max_words]
        return ids + [0] * (max_words - len(ids))

    def save(self, path: str | os.PathLike) -> None:
        payload = {"format": VOCAB_FORMAT, "rules": self.RULES, "words": self.words}
        atomic_write_text(path, json.dumps(payload, ensure_ascii=False))

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "OfficialWordTokenizer":
        """Read an official vocabulary text file: one ``word`` per line (id = line number) or
        ``idx word`` per line. Ids must be unique and cover ``0 .. n-1``."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"vocabulary file not found: {path}")
        by_id: dict[int, str] = {}
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise InputError(f"{path} is not a UTF-8 text vocabulary: {e}") from None
        for n, line in enumerate(lines):
            parts = line.strip().split(" ")
            if len(parts) not in (1, 2) or not parts[-1]:
                raise InputError(f"{path}:{n + 1}: expected 'word' or 'idx word', got {line.strip()!r}")
            try:
                idx = int(parts[0]) if len(parts) == 2 else n
            except ValueError:
                raise InputError(f"{path}:{n + 1}: expected 'idx word' with an integer idx, got {line.strip()!r}") from None
            if idx in by_id:
                raise InputError(f"{path}:{n + 1}: id {idx} appears twice")
            by_id[idx] = parts[-1]
        if sorted(by_id) != list(range(len(by_id))):
            gap = next(i for i in range(len(by_id) + 1) if i not in by_id)
            raise InputError(f"{path}: ids must cover 0..{len(by_id) - 1} without gaps; id {gap} is missing")
        return cls([by_id[i] for i in range(len(by_id))])
