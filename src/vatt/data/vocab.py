"""Caption sentences of training sources, for building a word vocabulary (``vatt vocab build``)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from .captions import CaptionError, read_captions
from .index import index_source, sample_to_ref
from .shards import iter_tar_samples

log = logging.getLogger(__name__)


def caption_texts(sources: list[str] | str) -> list[str]:
    """Every caption sentence of the given sources or caption files (for building a vocabulary)."""
    srcs = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    texts: list[str] = []

    def add_file(path) -> None:
        try:
            texts.extend(c.text for c in read_captions(path))
        except CaptionError as e:
            log.warning("skipping captions %s: %s", path, e)

    for src in map(str, srcs):
        p = Path(src)
        if p.is_file() and p.suffix.lower() in (".srt", ".vtt", ".txt") or (p.suffix.lower() == ".json" and _is_caption_json(p)):
            add_file(p)
            continue
        ix = index_source(src)
        for shard in ix.shards:
            for raw in iter_tar_samples(shard):
                caps = sample_to_ref(raw).captions
                texts.extend(c.text for c in caps or [])
        for r in ix.refs:
            if isinstance(r.captions, list):
                texts.extend(c.text for c in r.captions)
            elif r.captions:
                add_file(r.captions)
    return texts


def _is_caption_json(p: Path) -> bool:
    try:
        obj = json.loads(p.read_text(encoding="utf-8", errors="replace"))
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(obj, dict) and {"start", "end", "text"} <= set(obj)
