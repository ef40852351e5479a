"""AudioSet in its published layout: the segment lists ``balanced_train_segments.csv``,
``unbalanced_train_segments.csv``, ``eval_segments.csv`` (three ``#`` comment lines, then
``YTID, start_seconds, end_seconds, "mid1,mid2,..."``; quoted, multi-label) and
``class_labels_indices.csv`` (``index,mid,display_name``: the 527 classes and their order).
Media: one file per segment as downloaders write them: ``<YTID>``, ``Y<YTID>``,
``<YTID>_<start>`` or ``<YTID>_<start>_<end>`` (start/end as integers, ``%.1f`` or ``%.3f``
seconds), wav/flac/mp3/... or a video file, anywhere below the root. A file is taken to hold
the 10-second segment itself. Labels are multi-hot.
"""

from __future__ import annotations

import csv
from pathlib import Path

from ...errors import InputError
from ..index import ClipRef, VIDEO_SUFFIXES
from .common import BenchmarkSplit, ReadReport, finish, find_file, index_media, read_csv_rows, read_text

LAYOUT = ("AudioSet: class_labels_indices.csv, {balanced_train,unbalanced_train,eval}_segments.csv and one media "
          "file per segment named <YTID>[_<start>[_<end>]] below the root")
SUBSETS = {"train": ("balanced_train_segments.csv", "unbalanced_train_segments.csv"),
           "balanced": ("balanced_train_segments.csv",), "eval": ("eval_segments.csv",)}


def segment_names(ytid: str, start: float, end: float) -> list[str]:
    """The names downloaders give a segment's file (without suffix), most specific first."""
    names = []
    for fmt in ("{:d}", "{:.1f}", "{:.3f}", "{:06d}"):
        s, e = (int(start), int(end)) if "d" in fmt else (start, end)
        names += [f"{ytid}_{fmt.format(s)}_{fmt.format(e)}", f"{ytid}_{fmt.format(s)}"]
    return names + [ytid, f"Y{ytid}"]


def read_class_indices(root: Path, name: str) -> tuple[list[str], list[str]]:
    """``(mids, display names)`` in index order from ``class_labels_indices.csv``."""
    path = find_file(root, ("class_labels_indices.csv",), name, LAYOUT)
    rows = sorted((int(r["index"]), r["mid"], r["display_name"])
                  for _, r in read_csv_rows(path, ("index", "mid", "display_name"), name) if r.get("index", "").isdigit())
    return [m for _, m, _ in rows], [d for _, _, d in rows]


def read_audioset(root, subset: str = "train", *, name: str = "audioset") -> BenchmarkSplit:
    """``subset`` ``"train"`` (balanced + unbalanced, whichever lists exist: the official fine-tuning
    set), ``"balanced"`` or ``"eval"`` (the test protocol). Classes are the display names."""
    root = Path(root)
    mids, display = read_class_indices(root, name)
    lookup = {m: i for i, m in enumerate(mids)}
    lists = [p for f in SUBSETS[subset] for p in [_find_optional(root, f)] if p is not None]
    if not lists:
        find_file(root, SUBSETS[subset][:1], name, LAYOUT)  # raises, naming the layout
    media = index_media(root)
    report, refs = ReadReport(), []
    for path in lists:
        data = [ln for ln in read_text(path).splitlines() if ln.strip() and not ln.startswith("#")]
        for line, values in enumerate(csv.reader(data, skipinitialspace=True), 1):
            report.rows += 1
            where = f"{path.name}:{line}"
            try:
                ytid, start, end = values[0].strip(), float(values[1]), float(values[2])
                labels = [lab.strip() for lab in values[3].split(",") if lab.strip()]
            except (IndexError, ValueError):
                report.add_malformed(where, f"expected 'YTID, start, end, \"mid,...\"', got {','.join(values)[:60]!r}")
                continue
            unknown = [lab for lab in labels if lab not in lookup]
            if not labels or unknown:
                report.add_malformed(where, f"labels {unknown or labels} not in class_labels_indices.csv")
                continue
            found = next((media[n] for n in segment_names(ytid, start, end) if n in media), None)
            if found is None:
                report.add_missing(ytid)
                continue
            refs.append(ClipRef(found, label=sorted(lookup[lab] for lab in labels),
                                audio_only=Path(found).suffix.lower() not in VIDEO_SUFFIXES))
    return finish(f"{name} {subset}", refs, display, report, multi_label=True, modality="audio")


def _find_optional(root: Path, filename: str) -> Path | None:
    try:
        return find_file(root, (filename,), "audioset", LAYOUT)
    except InputError:
        return None
