"""The one reader of vatt's own JSON files, each a JSON object tagged with ``"format"``.

Four files carry such a tag: a model's ``config.json`` (``vatt-model``), a vocabulary
(``vatt-vocab``), a search index's ``index.json`` (``vatt-search-index``) and the header of an
embeddings file (``vatt-embeddings``). They are read here so that a damaged, foreign or
hand-edited file gets the same one-line :class:`~vatt.errors.CheckpointError` everywhere:
the path, what it should be, and the tag it should carry. Keys beyond the tag are each
reader's own business (it checks them after this)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import CheckpointError


def parse_tagged_json(text: str | bytes | None, fmt: str, source, what: str) -> dict:
    """The JSON object in ``text`` if it is one and its ``"format"`` is ``fmt``; else one
    CheckpointError naming ``source`` (a path or a description) and ``what`` it should be."""
    try:
        data = json.loads(text) if text else None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{source} is not valid JSON (expected {what}): {e}") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        found = data.get("format") if isinstance(data, dict) else None
        raise CheckpointError(f"{source} is not {what} (expected format '{fmt}'"
                              + (f", found '{found}')" if isinstance(found, str) else ")"))
    return data


def read_tagged_json(path: str | os.PathLike, fmt: str, what: str) -> dict:
    """:func:`parse_tagged_json` of the file at ``path`` (which the caller has found to exist)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path} cannot be read (expected {what}): {e.strerror or e}") from None
    return parse_tagged_json(raw, fmt, path, what)
