"""HMDB51 in its published layout: videos ``<class>/<name>.avi`` (the unpacked per-class RARs)
and the split files of ``test_train_splits.rar`` (``testTrainMulti_7030_splits/``):
``<class>_test_splitK.txt`` with lines ``<name>.avi F`` where F is 1 (train), 2 (test) or 0
(unused), K = 1, 2, 3. Classes are the sorted class names of the split files.
"""

from __future__ import annotations

import re
from pathlib import Path

from ...errors import InputError
from ..index import ClipRef
from .common import BenchmarkSplit, ReadReport, finish, index_media, read_text

LAYOUT = "<class>/*.avi and testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt"
SPLITS = (1, 2, 3)
FLAGS = {"train": "1", "test": "2"}


def read_hmdb51(root, subset: str = "train", split: int = 1, *, name: str = "hmdb51") -> BenchmarkSplit:
    """``subset`` ``"train"`` (flag 1) or ``"test"`` (flag 2) of split ``split`` (1, 2 or 3)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{name}: root {root} is not a folder; expected {LAYOUT}")
    pattern = re.compile(rf"^(.+)_test_split{split}\.txt$")
    files = sorted((m.group(1), p) for p in root.rglob(f"*_test_split{split}.txt") if (m := pattern.match(p.name)))
    if not files:
        raise InputError(f"{name}: no *_test_split{split}.txt files under {root}; expected {LAYOUT}")
    classes = [c for c, _ in files]
    media = index_media(root)
    report, refs = ReadReport(), []
    for label, (cls, path) in enumerate(files):
        for line, text in enumerate(read_text(path).splitlines(), 1):
            if not text.strip():
                continue
            report.rows += 1
            parts = text.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                report.add_malformed(f"{path.name}:{line}", f"expected '<video>.avi 0|1|2', got {text.strip()[:60]!r}")
                continue
            if parts[1] != FLAGS[subset]:
                continue
            video = media.get(parts[0])
            if video is None:
                report.add_missing(f"{cls}/{parts[0]}")
                continue
            refs.append(ClipRef(video, label=[label]))
    return finish(f"{name} split {split} {subset}", refs, classes, report)
