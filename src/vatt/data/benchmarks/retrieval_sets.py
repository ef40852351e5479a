"""Text-video retrieval benchmarks in their published layouts: MSR-VTT and YouCook2.

MSR-VTT: ``MSRVTT_data.json`` (``{"videos": [{"video_id": "video0", ...}], "sentences":
[{"video_id": "video0", "caption": "..."}]}``: 20 captions per video) and the 1k-A test list
``MSRVTT_JSFUSION_test.csv`` (columns ``key,vid_key,video_id,sentence``: 1000 videos, one
sentence each); videos ``<video_id>.mp4`` anywhere below the root. Two caption protocols, both
on the 1k-A videos: ``"1k-A"`` (the list's one sentence per video: the protocol of the papers
VATT compares with, and our default) and ``"all"`` (all 20 captions of each video are queries).

YouCook2: ``youcookii_annotations_trainval.json`` (``{"database": {id: {"subset", "recipe_type",
"annotations": [{"segment": [start, end], "sentence"}]}}}``) and the full videos
(``raw_videos/<subset>/<recipe_type>/<id>.<ext>`` or ``<id>.<ext>`` anywhere below the root).
Each validation segment is one item read from its full video by start/end (nothing is cut on
disk); its sentence is its query.
"""

from __future__ import annotations

import json
from pathlib import Path

from ...errors import InputError
from ..captions import Caption
from ..index import ClipRef, VIDEO_SUFFIXES
from .common import BenchmarkSplit, ReadReport, finish, find_file, index_media, read_csv_rows, read_text

MSRVTT_LAYOUT = "MSR-VTT: MSRVTT_JSFUSION_test.csv (key,vid_key,video_id,sentence), MSRVTT_data.json and <video_id>.mp4"
MSRVTT_CAPTIONS = ("1k-A", "all")
YOUCOOK_LAYOUT = "YouCook2: youcookii_annotations_trainval.json and the full videos <id>.mp4 (e.g. raw_videos/validation/<recipe>/)"


def _json(path: Path, name: str, layout: str):
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise InputError(f"{name}: {path} is not JSON ({e.msg} at line {e.lineno}); expected {layout}") from None


def read_msrvtt(root, captions: str = "1k-A", *, name: str = "msrvtt") -> BenchmarkSplit:
    """The 1k-A test videos with their query captions (``captions``: ``"1k-A"`` or ``"all"``)."""
    if captions not in MSRVTT_CAPTIONS:
        raise InputError(f"{name}: captions must be one of {MSRVTT_CAPTIONS}, got {captions!r}")
    root = Path(root)
    test_list = find_file(root, ("MSRVTT_JSFUSION_test.csv",), name, MSRVTT_LAYOUT)
    rows = read_csv_rows(test_list, ("video_id", "sentence"), name)
    sentences: dict[str, list[str]] = {}
    if captions == "all":
        data = _json(find_file(root, ("MSRVTT_data.json",), name, MSRVTT_LAYOUT), name, MSRVTT_LAYOUT)
        if not isinstance(data, dict) or not isinstance(data.get("sentences"), list):
            raise InputError(f"{name}: MSRVTT_data.json has no 'sentences' list; expected {MSRVTT_LAYOUT}")
        for s in data["sentences"]:
            if isinstance(s, dict) and s.get("video_id") and s.get("caption"):
                sentences.setdefault(str(s["video_id"]), []).append(str(s["caption"]))
    media = index_media(root, VIDEO_SUFFIXES)
    report, refs = ReadReport(), []
    for line, row in rows:
        report.rows += 1
        vid = row.get("video_id", "")
        texts = sentences.get(vid, []) if captions == "all" else [row.get("sentence", "")]
        if not vid or not any(t.strip() for t in texts):
            report.add_malformed(f"{test_list.name}:{line}", f"video {vid!r} has no caption")
            continue
        if vid not in media:
            report.add_missing(vid)
            continue
        refs.append(ClipRef(media[vid], captions=[Caption(0.0, float("inf"), t) for t in texts]))
    return finish(f"{name} 1k-A ({captions} captions)", refs, None, report)


def read_youcook2(root, subset: str = "validation", *, name: str = "youcook2") -> BenchmarkSplit:
    """Every annotated segment of ``subset`` (``"validation"``: the test protocol, or ``"training"``)."""
    root = Path(root)
    path = find_file(root, ("youcookii_annotations_trainval.json",), name, YOUCOOK_LAYOUT)
    data = _json(path, name, YOUCOOK_LAYOUT)
    if not isinstance(data, dict) or not isinstance(data.get("database"), dict):
        raise InputError(f"{name}: {path.name} has no 'database' object; expected {YOUCOOK_LAYOUT}")
    media = index_media(root, VIDEO_SUFFIXES)
    report, refs = ReadReport(), []
    for vid, entry in sorted(data["database"].items()):
        if not isinstance(entry, dict) or entry.get("subset") != subset:
            continue
        video = media.get(vid)
        for i, ann in enumerate(entry.get("annotations") or []):
            report.rows += 1
            try:
                start, end = (float(t) for t in ann["segment"])
                sentence = str(ann["sentence"])
                assert end > start and sentence.strip()
            except (KeyError, TypeError, ValueError, AssertionError):
                report.add_malformed(f"{vid} segment {i}", "expected {'segment': [start, end], 'sentence': ...}")
                continue
            if video is None:
                report.add_missing(vid)
                continue
            refs.append(ClipRef(video, start, end, [Caption(start, end, sentence)]))
    return finish(f"{name} {subset}", refs, None, report)
