"""Timed captions: reading subtitle sidecars and picking a clip's sentences.

Formats: SubRip ``.srt``, WebVTT ``.vtt``, HowTo100M-style JSON (``{"start": [...], "end": [...],
"text": [...]}`` in seconds) and a plain ``.txt`` (one untimed caption per line, each spanning the
whole clip). Files that are not valid UTF-8 are read as Latin-1 (every byte decodes), with a
warning, so a wrongly encoded subtitle still gives words rather than a skipped clip.

A clip's text (SPEC §4, MIL-NCE): the caption overlapping the window's centre plus the
``n - 1`` captions nearest to the centre in time, ``n = 5`` sentences of 16 words.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError

log = logging.getLogger(__name__)

CAPTION_SUFFIXES = (".srt", ".vtt", ".json", ".txt")


class CaptionError(DataError):
    """A caption file is missing, malformed or empty; ``reason`` is a short code."""

    def __init__(self, path, reason: str, detail: str = ""):
        self.path, self.reason, self.detail = str(path), reason, detail
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))


@dataclass(frozen=True)
class Caption:
    """One sentence with its time span in seconds."""

    start: float
    end: float
    text: str


_TIME = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{1,2})[,.](\d{1,3})")


def _seconds(stamp: str) -> float:
    m = _TIME.fullmatch(stamp.strip())
    if not m:
        raise ValueError(f"bad timestamp {stamp!r}")
    h, mnt, s, frac = m.groups()
    return int(h or 0) * 3600 + int(mnt) * 60 + int(s) + int(frac.ljust(3, "0")) / 1000


def decode_text(data: bytes, path: str = "") -> str:
    """UTF-8 (BOM allowed), else Latin-1 with a warning; never raises."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        log.warning("%s is not UTF-8; reading it as Latin-1", path)
        return data.decode("latin-1")


def parse_subtitles(text: str, path: str = "<text>") -> list[Caption]:
    """Parse SRT or WebVTT cues (the ``-->`` lines); cue settings and tags are dropped."""
    caps: list[Caption] = []
    blocks = re.split(r"\n\s*\n", text.replace("\r\n", "\n").replace("\r", "\n"))
    bad = 0
    for block in blocks:
        lines = [ln for ln in block.strip().split("\n") if ln.strip()]
        k = next((i for i, ln in enumerate(lines) if "-->" in ln), None)
        if k is None:
            continue
        left, _, right = lines[k].partition("-->")
        try:
            start, end = _seconds(left), _seconds(right.strip().split()[0] if right.strip() else "")
        except (ValueError, IndexError):
            bad += 1
            continue
        body = " ".join(re.sub(r"<[^>]*>|\{[^}]*\}", "", ln).strip() for ln in lines[k + 1 :]).strip()
        if body:
            caps.append(Caption(start, max(start, end), body))
    if bad and not caps:
        raise CaptionError(path, "bad_captions", f"{bad} cue(s) with unreadable timestamps")
    if bad:
        log.warning("%s: skipped %d cue(s) with unreadable timestamps", path, bad)
    return sorted(caps, key=lambda c: (c.start, c.end))


def parse_json_captions(obj, path: str = "<json>") -> list[Caption]:
    """HowTo100M layout ``{"start": [...], "end": [...], "text": [...]}`` or a list of
    ``{"start", "end", "text"}`` objects."""
    try:
        if isinstance(obj, dict):
            starts, ends, texts = obj["start"], obj["end"], obj["text"]
            if not (len(starts) == len(ends) == len(texts)):
                raise ValueError("start/end/text lists differ in length")
            rows = zip(starts, ends, texts)
        else:
            rows = ((d["start"], d["end"], d["text"]) for d in obj)
        caps = [Caption(float(s), max(float(s), float(e)), str(t).strip()) for s, e, t in rows]
    except (KeyError, TypeError, ValueError) as e:
        raise CaptionError(path, "bad_captions", f"expected start/end/text lists: {e}") from None
    return sorted((c for c in caps if c.text), key=lambda c: (c.start, c.end))


def read_captions(path: str | os.PathLike, duration: float = float("inf")) -> list[Caption]:
    """Read a caption file by extension. Raises :class:`CaptionError` when unusable."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise CaptionError(p, "missing_captions", str(e)) from None
    text = decode_text(data, str(p))
    suffix = p.suffix.lower()
    if suffix == ".json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise CaptionError(p, "bad_captions", f"invalid JSON: {e}") from None
        return parse_json_captions(obj, str(p))
    if suffix == ".txt":
        return [Caption(0.0, duration, ln.strip()) for ln in text.splitlines() if ln.strip()]
    return parse_subtitles(text, str(p))


def find_sidecar(media: str | os.PathLike) -> Path | None:
    """The caption file next to ``media`` with the same stem (``.srt``, ``.vtt``, ``.json``, ``.txt``)."""
    m = Path(media)
    for suffix in CAPTION_SUFFIXES:
        cand = m.with_suffix(suffix)
        if cand.is_file():
            return cand
    return None


def select_captions(captions: list[Caption], center: float, n: int = 5) -> list[str]:
    """The caption at time ``center`` (seconds) and its ``n - 1`` nearest neighbours in time.

    Distance of a caption to the centre is 0 when its span contains the centre, else the gap to
    its nearer end; ties go to the earlier caption. The result lists the selected captions in
    time order, so the centre caption sits among its neighbours. When fewer than ``n``
    captions exist they are repeated in the same order to fill ``n`` (every entry stays a true
    positive for MIL-NCE; padding with empty sentences would add meaningless candidates).
    Returns ``[]`` for no captions.
    """
    if not captions:
        return []

    def distance(ic):
        i, c = ic
        gap = 0.0 if c.start <= center <= c.end else min(abs(c.start - center), abs(c.end - center))
        return (gap, i)

    chosen = sorted(i for i, _ in sorted(enumerate(captions), key=distance)[:n])
    texts = [captions[i].text for i in chosen]
    return [texts[k % len(texts)] for k in range(n)]


def write_srt(captions: list[Caption], path: str | os.PathLike) -> None:
    """Write captions as SubRip atomically (used by the synthetic corpus and tests)."""
    from ..atomic_io import atomic_write_text

    def stamp(t: float) -> str:
        ms = int(round(t * 1000))
        return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"

    parts = [f"{i}\n{stamp(c.start)} --> {stamp(c.end)}\n{c.text}\n" for i, c in enumerate(captions, 1)]
    atomic_write_text(path, "\n".join(parts))
