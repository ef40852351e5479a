"""Kinetics-400/600/700 and Moments in Time, in their published layouts.

Kinetics: the official CSVs ``train.csv`` / ``validate.csv`` (or ``val.csv``) / ``test.csv`` with
columns ``label,youtube_id,time_start,time_end,split`` (K400 adds ``is_cc``), at the root or in
``annotations/``; clips named as the common downloaders name them,
``<youtube_id>_<time_start:06d>_<time_end:06d>.mp4``, flat or under ``<split>/<label>/`` (any
folder below the root). A full video named ``<youtube_id>.mp4`` is used with the row's
start/end instead. Classes are the sorted labels of ``train.csv`` (the official class order).
The test protocol is the ``validate`` split (the test labels were never published for K400).

Moments in Time: ``trainingSet.csv`` / ``validationSet.csv`` (no header:
``label/file.mp4,label,agreements,disagreements``), ``moments_categories.txt`` (``label,index``)
and media under ``training/`` and ``validation/``.
"""

from __future__ import annotations

from pathlib import Path

from ..index import ClipRef
from .common import BenchmarkSplit, ReadReport, finish, find_file, index_media, read_csv_rows, read_text

KINETICS_LAYOUT = ("the official Kinetics CSVs (train.csv, validate.csv: label,youtube_id,time_start,time_end,split) "
                   "and clips <youtube_id>_<start:06d>_<end:06d>.mp4 below the root")
KINETICS_FILES = {"train": ("train.csv",), "val": ("validate.csv", "val.csv"), "test": ("test.csv",)}
KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end")


def clip_name(youtube_id: str, start: float, end: float) -> str:
    """The downloaders' clip name: ``abc_000010_000020`` for (``abc``, 10, 20)."""
    return f"{youtube_id}_{int(start):06d}_{int(end):06d}"


def read_kinetics(root, subset: str = "train", *, name: str = "kinetics400") -> BenchmarkSplit:
    """``subset`` ``"train"``, ``"val"`` (the test protocol) or ``"test"`` of a Kinetics download."""
    root = Path(root)
    csv_path = find_file(root, KINETICS_FILES[subset], name, KINETICS_LAYOUT)
    class_csv = next((csv_path.parent / f for f in KINETICS_FILES["train"] if (csv_path.parent / f).is_file()), csv_path)
    classes = sorted({row["label"] for _, row in read_csv_rows(class_csv, KINETICS_COLUMNS, name) if row.get("label")})
    lookup = {c: i for i, c in enumerate(classes)}
    media = index_media(root)
    report, refs = ReadReport(), []
    for line, row in read_csv_rows(csv_path, KINETICS_COLUMNS, name):
        report.rows += 1
        where = f"{csv_path.name}:{line}"
        try:
            start, end = float(row["time_start"]), float(row["time_end"])
        except (KeyError, ValueError):
            report.add_malformed(where, f"time_start/time_end not numbers ({row.get('time_start')!r}, {row.get('time_end')!r})")
            continue
        yid, label = row.get("youtube_id", ""), row.get("label", "")
        if not yid or label not in lookup:
            report.add_malformed(where, f"youtube_id {yid!r} / label {label!r} not in the {len(classes)} classes")
            continue
        clip = clip_name(yid, start, end)
        if clip in media:
            refs.append(ClipRef(media[clip], label=[lookup[label]]))
        elif yid in media:  # a full video: read the annotated span from it
            refs.append(ClipRef(media[yid], start, end, label=[lookup[label]]))
        else:
            report.add_missing(clip)
    return finish(f"{name} {subset}", refs, classes, report)


MIT_LAYOUT = ("Moments in Time: trainingSet.csv / validationSet.csv, moments_categories.txt and media under "
              "training/ and validation/")
MIT_FILES = {"train": ("trainingSet.csv",), "val": ("validationSet.csv",)}
MIT_FOLDERS = {"train": "training", "val": "validation"}


def read_moments(root, subset: str = "train", *, name: str = "mit") -> BenchmarkSplit:
    """``subset`` ``"train"`` or ``"val"`` of a Moments in Time download."""
    root = Path(root)
    csv_path = find_file(root, MIT_FILES[subset], name, MIT_LAYOUT)
    cats = find_file(root, ("moments_categories.txt",), name, MIT_LAYOUT)
    pairs = [ln.rsplit(",", 1) for ln in read_text(cats).splitlines() if ln.strip()]
    classes = [c for c, _ in sorted(pairs, key=lambda p: int(p[1]))]
    lookup = {c: i for i, c in enumerate(classes)}
    media_root = csv_path.parent / MIT_FOLDERS[subset]
    report, refs = ReadReport(), []
    for line, text in enumerate(read_text(csv_path).splitlines(), 1):
        if not text.strip():
            continue
        report.rows += 1
        parts = text.split(",")
        if len(parts) < 2 or parts[1] not in lookup:
            report.add_malformed(f"{csv_path.name}:{line}", f"expected 'label/file.mp4,label,...' with a known label, got {text[:60]!r}")
            continue
        path = media_root / parts[0]
        if path.is_file():
            refs.append(ClipRef(str(path), label=[lookup[parts[1]]]))
        else:
            report.add_missing(parts[0])
    return finish(f"{name} {subset}", refs, classes, report)
