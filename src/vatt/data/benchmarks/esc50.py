"""ESC-50 in its published layout (the GitHub repository karolpiczak/ESC-50): ``audio/*.wav`` and
``meta/esc50.csv`` with columns ``filename,fold,target,category,esc10,src_file,take``. Fold K
(1..5) is the test set of split K and the other four folds its training set; class ids are the
``target`` column, names the ``category`` column.
"""

from __future__ import annotations

from pathlib import Path

from ..index import ClipRef
from .common import BenchmarkSplit, ReadReport, finish, find_file, read_csv_rows

LAYOUT = "ESC-50: meta/esc50.csv (filename,fold,target,category,...) and audio/<filename>"
FOLDS = (1, 2, 3, 4, 5)
COLUMNS = ("filename", "fold", "target", "category")


def read_esc50(root, subset: str = "train", split: int = 1, *, name: str = "esc50") -> BenchmarkSplit:
    """``subset`` ``"test"`` = fold ``split``, ``"train"`` = the four other folds."""
    root = Path(root)
    meta = find_file(root, ("meta/esc50.csv", "esc50.csv"), name, LAYOUT)
    base = meta.parent.parent if meta.parent.name == "meta" else meta.parent
    rows = read_csv_rows(meta, COLUMNS, name)
    names: dict[int, str] = {}
    for _, row in rows:
        if row.get("target", "").isdigit():
            names.setdefault(int(row["target"]), row.get("category", ""))
    classes = [names.get(i, str(i)) for i in range(max(names) + 1)] if names else []
    report, refs = ReadReport(), []
    for line, row in rows:
        report.rows += 1
        if not (row.get("fold", "").isdigit() and row.get("target", "").isdigit() and row.get("filename")):
            report.add_malformed(f"{meta.name}:{line}", "fold and target must be integers and filename given")
            continue
        if (int(row["fold"]) == split) != (subset == "test"):
            continue
        path = base / "audio" / row["filename"]
        if not path.is_file():
            report.add_missing(row["filename"])
            continue
        refs.append(ClipRef(str(path), label=[int(row["target"])], audio_only=True))
    return finish(f"{name} fold {split} {subset}", refs, classes, report, modality="audio")
