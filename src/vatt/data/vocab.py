"""Caption sentences of training sources, for building a word vocabulary (``vatt vocab build``)."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path

from ..errors import DataError

from .captions import CaptionError, read_captions
from .index import index_source, sample_to_ref
from .shards import iter_tar_samples

log = logging.getLogger(__name__)


def caption_texts(sources: list[str] | str, skipped: Counter | None = None) -> list[str]:
    """Every caption sentence of the given sources or caption files (for building a vocabulary).

    Unreadable caption files, bad shard samples and broken shards are skipped (a vocabulary
    does not need every sentence); their counts by reason are added to ``skipped`` when given,
    and logged. A shard source none of whose shards can be read is a :class:`DataError`.
    """
    srcs = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    texts: list[str] = []
    bad: Counter = Counter() if skipped is None else skipped

    def add_file(path) -> None:
        try:
            texts.extend(c.text for c in read_captions(path))
        except CaptionError as e:
            bad[e.reason] += 1
            log.warning("skipping captions %s: %s", path, e)

    for src in map(str, srcs):
        p = Path(src)
        if p.is_file() and p.suffix.lower() in (".srt", ".vtt", ".txt") or (p.suffix.lower() == ".json" and _is_caption_json(p)):
            add_file(p)
            continue
        ix = index_source(src)
        failed = []
        for shard in ix.shards:
            try:
                for raw in iter_tar_samples(shard):
                    try:
                        caps = sample_to_ref(raw).captions
                    except DataError as e:
                        bad[getattr(e, "reason", "bad_sample")] += 1
                        log.warning("skipping %s", e)
                        continue
                    texts.extend(c.text for c in caps or [])
            except DataError as e:
                bad["bad_shard"] += 1
                failed.append(str(e))
                log.warning("%s", e)
        if ix.shards and len(failed) == len(ix.shards):
            raise DataError(f"none of the {len(failed)} shard(s) of {src} could be read; first: {failed[0]}")
        for r in ix.refs:
            if isinstance(r.captions, list):
                texts.extend(c.text for c in r.captions)
            elif r.captions:
                add_file(r.captions)
    if bad:
        log.warning("caption texts: skipped %s", ", ".join(f"{n} {reason}" for reason, n in sorted(bad.items())))
    return texts


def _is_caption_json(p: Path) -> bool:
    try:
        obj = json.loads(p.read_text(encoding="utf-8", errors="replace"))
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(obj, dict) and {"start", "end", "text"} <= set(obj)
