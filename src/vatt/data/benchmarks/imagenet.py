"""ImageNet (ILSVRC-2012) in its published layouts: training images ``train/<wnid>/*.JPEG``;
validation images either sorted into ``val/<wnid>/`` or flat in ``val/`` with the Kaggle
``LOC_val_solution.csv`` (``ImageId,PredictionString``; the first word of the prediction string
is the image's wnid). Both may sit below ``ILSVRC/Data/CLS-LOC/``. Classes are the sorted wnids
of ``train/``; ``LOC_synset_mapping.txt`` (``wnid name, name``), when present, gives the
readable names (:func:`synset_names`).
"""

from __future__ import annotations

from pathlib import Path

from ...errors import InputError
from ..index import ClipRef
from .common import IMAGE_SUFFIXES, BenchmarkSplit, ReadReport, finish, find_file, read_csv_rows, read_text

LAYOUT = "ImageNet: train/<wnid>/*.JPEG and val/<wnid>/*.JPEG or val/*.JPEG with LOC_val_solution.csv"


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _data_root(root: Path) -> Path:
    for cand in (root, root / "ILSVRC/Data/CLS-LOC", root / "Data/CLS-LOC"):
        if (cand / "train").is_dir():
            return cand
    raise InputError(f"imagenet: no train/ folder under {root}; expected {LAYOUT}")


def read_imagenet(root, subset: str = "train", *, name: str = "imagenet") -> BenchmarkSplit:
    """``subset`` ``"train"`` or ``"val"`` (the test protocol); items are image paths."""
    root = Path(root)
    data = _data_root(root)
    classes = sorted(p.name for p in (data / "train").iterdir() if p.is_dir())
    lookup = {c: i for i, c in enumerate(classes)}
    report, refs = ReadReport(), []
    if subset == "train" or any((data / "val" / c).is_dir() for c in classes[:50]):
        folder = data / subset
        for c in classes:
            for p in _images(folder / c) if (folder / c).is_dir() else []:
                report.rows += 1
                refs.append(ClipRef(str(p), label=[lookup[c]]))
        return finish(f"{name} {subset}", refs, classes, report, modality="image")
    solution = find_file(root, ("LOC_val_solution.csv",), name, LAYOUT)
    for line, row in read_csv_rows(solution, ("ImageId", "PredictionString"), name):
        report.rows += 1
        wnid = (row.get("PredictionString") or "").split(" ")[0]
        if wnid not in lookup or not row.get("ImageId"):
            report.add_malformed(f"{solution.name}:{line}", f"class {wnid!r} is not a train/ folder")
            continue
        path = next((data / "val" / f"{row['ImageId']}{s}" for s in (".JPEG", ".jpeg", ".jpg", ".png")
                     if (data / "val" / f"{row['ImageId']}{s}").is_file()), None)
        if path is None:
            report.add_missing(row["ImageId"])
            continue
        refs.append(ClipRef(str(path), label=[lookup[wnid]]))
    return finish(f"{name} {subset}", refs, classes, report, modality="image")


def synset_names(root) -> dict[str, str]:
    """``{wnid: "tench"}`` from ``LOC_synset_mapping.txt`` (the first name of each line), or {}."""
    try:
        path = find_file(Path(root), ("LOC_synset_mapping.txt",), "imagenet", LAYOUT)
    except InputError:
        return {}
    out = {}
    for ln in read_text(path).splitlines():
        wnid, _, names = ln.strip().partition(" ")
        if wnid:
            out[wnid] = names.split(",")[0].strip()
    return out
