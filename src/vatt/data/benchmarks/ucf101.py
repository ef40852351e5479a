"""UCF101 in its published layout: ``UCF-101/<Class>/v_<Class>_gXX_cYY.avi`` and the split lists
of ``UCF101TrainTestSplits-RecognitionTask.zip`` (``ucfTrainTestlist/``): ``classInd.txt``
(``1 ApplyEyeMakeup``), ``trainlist0K.txt`` (``Class/v_..._c01.avi 1``) and ``testlist0K.txt``
(``Class/v_..._c01.avi``), K = 1, 2, 3. Class ids follow ``classInd.txt``. Class folder names
are matched without case (the lists write ``HandStandPushups`` for the ``HandstandPushups``
class).
"""

from __future__ import annotations

from pathlib import Path

from ..index import ClipRef
from .common import BenchmarkSplit, ReadReport, finish, find_file, index_media, read_text

LAYOUT = "UCF-101/<Class>/*.avi and ucfTrainTestlist/{classInd.txt, trainlist0K.txt, testlist0K.txt}"
SPLITS = (1, 2, 3)


def read_ucf101(root, subset: str = "train", split: int = 1, *, name: str = "ucf101") -> BenchmarkSplit:
    """``subset`` ``"train"`` or ``"test"`` of split ``split`` (1, 2 or 3)."""
    root = Path(root)
    class_file = find_file(root, ("classInd.txt",), name, LAYOUT)
    pairs = [ln.split() for ln in read_text(class_file).splitlines() if ln.strip()]
    classes = [c for _, c in sorted(pairs, key=lambda p: int(p[0]))]
    lookup = {c.lower(): i for i, c in enumerate(classes)}
    list_name = f"{'trainlist' if subset == 'train' else 'testlist'}{split:02d}.txt"
    list_file = find_file(class_file.parent, (list_name,), name, LAYOUT, max_depth=0)
    media = index_media(root)
    report, refs = ReadReport(), []
    for line, text in enumerate(read_text(list_file).splitlines(), 1):
        if not text.strip():
            continue
        report.rows += 1
        parts = text.split()
        rel = parts[0].replace("\\", "/")
        label = lookup.get(rel.split("/")[0].lower()) if "/" in rel else None
        if label is None and len(parts) > 1 and parts[1].isdigit() and 1 <= int(parts[1]) <= len(classes):
            label = int(parts[1]) - 1
        if label is None:
            report.add_malformed(f"{list_file.name}:{line}", f"no known class in {text.strip()[:60]!r}")
            continue
        path = media.get(rel.rsplit("/", 1)[-1])
        if path is None:
            report.add_missing(rel)
            continue
        refs.append(ClipRef(path, label=[label]))
    return finish(f"{name} split {split} {subset}", refs, classes, report)
