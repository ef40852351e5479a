"""What every benchmark reader returns, and the checks they share.

A reader turns the folder a user downloaded (in the benchmark's own published layout) into
:class:`BenchmarkSplit` objects: :class:`~vatt.data.index.ClipRef` lists with the class names,
plus a :class:`ReadReport` of what could not be used. Missing media (Kinetics mirrors miss 5-10%
of the clips) and malformed annotation rows are counted and reported, never a crash; a root that
is not the benchmark's layout at all is one :class:`~vatt.errors.InputError` naming what was
expected.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import InputError
from ..captions import decode_text
from ..index import ClipRef, MEDIA_SUFFIXES

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_EXAMPLES = 5  # examples of missing files / malformed rows kept in a report


@dataclass
class ReadReport:
    """What a reader could not use: ``missing`` media files named by the annotations (count and a
    few examples) and ``malformed`` annotation rows (count and a few ``"file:line: why"``)."""

    rows: int = 0
    missing: int = 0
    malformed: int = 0
    missing_examples: list[str] = field(default_factory=list)
    malformed_examples: list[str] = field(default_factory=list)

    def add_missing(self, what: str) -> None:
        self.missing += 1
        if len(self.missing_examples) < _EXAMPLES:
            self.missing_examples.append(what)

    def add_malformed(self, where: str, why: str) -> None:
        self.malformed += 1
        if len(self.malformed_examples) < _EXAMPLES:
            self.malformed_examples.append(f"{where}: {why}")

    def to_dict(self) -> dict:
        return {"rows": self.rows, "missing": self.missing, "malformed": self.malformed,
                "missing_examples": self.missing_examples, "malformed_examples": self.malformed_examples}

    def summary(self) -> str:
        """``"1000 rows: 52 media files missing, 1 malformed row"`` (empty when nothing is wrong)."""
        parts = []
        if self.missing:
            parts.append(f"{self.missing} media file(s) missing (e.g. {', '.join(self.missing_examples[:2])})")
        if self.malformed:
            parts.append(f"{self.malformed} malformed row(s) (e.g. {self.malformed_examples[0]})")
        return f"{self.rows} annotation rows: " + "; ".join(parts) if parts else ""


@dataclass
class BenchmarkSplit:
    """One subset of a benchmark, ready for :class:`vatt.data.datasets.ClipDataset`.

    ``refs``: the usable items in annotation order (missing files and bad rows left out);
    ``classes``: class names fixing the label ids (None for retrieval sets); ``multi_label``:
    labels are sets (AudioSet); ``modality``: ``"video"``, ``"audio"`` or ``"image"``.
    """

    name: str
    refs: list[ClipRef]
    classes: list[str] | None
    report: ReadReport
    multi_label: bool = False
    modality: str = "video"

    def __len__(self) -> int:
        return len(self.refs)


def require(path: Path, benchmark: str, layout: str) -> Path:
    """``path`` if it exists, else one InputError naming the benchmark's expected layout."""
    if not path.exists():
        raise InputError(f"{benchmark}: {path} not found; expected {layout}")
    return path


def find_file(root: Path, names: tuple[str, ...], benchmark: str, layout: str, max_depth: int = 3) -> Path:
    """The first of ``names`` found at ``root`` or up to ``max_depth`` folders below it (downloads
    unpack into one or two extra folders), else one InputError naming the expected layout."""
    if not root.is_dir():
        raise InputError(f"{benchmark}: root {root} is not a folder; expected {layout}")
    level = [root]
    for _ in range(max_depth + 1):
        for folder in level:
            for name in names:
                if (folder / name).is_file():
                    return folder / name
        level = [d for f in level for d in sorted(f.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    raise InputError(f"{benchmark}: none of {', '.join(names)} under {root}; expected {layout}")


def index_media(root: Path, suffixes: tuple[str, ...] = MEDIA_SUFFIXES) -> dict[str, str]:
    """Every media file under ``root`` by its stem (and by its name), for looking clips up by the
    names their downloaders give them. The first path in sorted order wins a clash. Walks with
    ``os.walk`` and keeps plain strings: AudioSet and Kinetics hold 10^5-10^6 files."""
    found: dict[str, str] = {}
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            stem, dot, ext = name.rpartition(".")
            if dot and "." + ext.lower() in suffixes and not name.startswith("."):
                path = os.path.join(folder, name)
                found.setdefault(stem, path)
                found.setdefault(name, path)
    return found


def read_text(path: Path) -> str:
    try:
        return decode_text(path.read_bytes(), str(path))
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from None


def read_csv_rows(path: Path, required: tuple[str, ...], benchmark: str) -> list[tuple[int, dict]]:
    """``[(line number, row)]`` of a CSV with a header; a header missing ``required`` columns is
    one InputError (a file in the wrong format); short rows lack keys, for the caller to report."""
    reader = csv.reader(read_text(path).splitlines())
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise InputError(f"{benchmark}: {path} is empty; expected a CSV with columns {', '.join(required)}") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise InputError(f"{benchmark}: {path} has columns {header}; expected {', '.join(required)}")
    rows = []
    for i, values in enumerate(reader):
        if not values or all(not v.strip() for v in values):
            continue
        rows.append((i + 2, dict(zip(header, (v.strip() for v in values)))))
    return rows


def finish(name: str, refs: list[ClipRef], classes, report: ReadReport, **kw) -> BenchmarkSplit:
    """The split, with a warning when files were missing or rows malformed; an error when nothing
    at all could be used (the wrong root, most likely)."""
    if report.missing or report.malformed:
        log.warning("%s: %s", name, report.summary())
    if not refs:
        detail = report.summary() or "the annotations list no items"
        raise InputError(f"{name}: no usable items ({detail}); is --root the benchmark's download folder?")
    return BenchmarkSplit(name, refs, classes, report, **kw)
