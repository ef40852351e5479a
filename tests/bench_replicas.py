"""Miniature replicas of the paper's benchmarks in their exact published file formats (column
names, quoting, comment lines, split-file conventions, CRLF lists), with tiny real media: each
class has its own colour (and tone), so a probe can learn it. Every replica holds one clip the
annotations name but the download lacks, and one malformed annotation row (ImageNet: in its
``LOC_val_solution.csv`` layout).

Each ``write_*`` returns what the reader must find: ``{"classes": [...], subset: {file name:
label(s)}}``.
"""

from __future__ import annotations

import csv
import io
import json
from functools import lru_cache
from pathlib import Path

import numpy as np

COLOURS = [(220, 40, 40), (40, 200, 60), (50, 60, 220), (230, 210, 40), (200, 60, 200), (40, 200, 200),
           (250, 140, 20), (120, 120, 120)]


@lru_cache(maxsize=None)
def video_bytes(index: int, seconds: float = 1.2, container: str = "mp4", variant: int = 0) -> bytes:
    """A ``seconds``-long 48x64 clip at 10 fps of class ``index``'s colour (a little texture so
    ``variant`` clips differ), with a tone; mp4 (H.264 + AAC) or avi (MPEG-4 part 2, no audio)."""
    from vatt.data.encode import encode_mp4

    n = int(round(seconds * 10))
    rng = np.random.default_rng([index, variant])
    frames = np.empty((n, 48, 64, 3), np.uint8)
    frames[:] = np.array(COLOURS[index % len(COLOURS)], np.uint8)
    frames = np.clip(frames.astype(int) + rng.integers(-12, 13, frames.shape), 0, 255).astype(np.uint8)
    if container == "avi":
        return encode_mp4(frames, 10, None, codec="mpeg4", container="avi")
    t = np.arange(int(seconds * 16000)) / 16000
    audio = (0.3 * np.sin(2 * np.pi * (220 + 110 * index) * t)).astype(np.float32)
    return encode_mp4(frames, 10, audio)


@lru_cache(maxsize=None)
def wav_tone(index: int, variant: int = 0) -> bytes:
    from vatt.data.encode import wav_bytes

    t = np.arange(16000) / 16000
    rng = np.random.default_rng([index, variant])
    return wav_bytes(0.4 * np.sin(2 * np.pi * (200 + 150 * index) * t) + 0.01 * rng.standard_normal(len(t)), 16000)


@lru_cache(maxsize=None)
def jpeg(index: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (72, 56), COLOURS[index % len(COLOURS)]).save(buf, "JPEG")
    return buf.getvalue()


def _put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _csv(path: Path, header: list[str], rows: list[list], **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, **kw)
        w.writerow(header)
        w.writerows(rows)


# -- Kinetics ----------------------------------------------------------------------------------------
def write_kinetics(root: Path, classes=("abseiling", "air drumming", "zumba"), per_class=(2, 1), media=True) -> dict:
    """Official CSVs (K400 columns incl. ``is_cc``); train clips under ``train/<label>/``, val clips flat."""
    expect = {"classes": sorted(classes), "train": {}, "val": {}}
    for subset, folder, n in (("train", "train", per_class[0]), ("val", "val", per_class[1])):
        rows = []
        for ci, label in enumerate(classes):
            for j in range(n):
                yid = f"{subset[:2]}{ci}x{j}-_Ab"  # youtube ids hold '-' and '_'
                start = 10 * j + 3
                rows.append([label, yid, start, start + 10, subset if subset == "train" else "validate", 0])
                name = f"{yid}_{start:06d}_{start + 10:06d}.mp4"
                where = root / folder / label / name if subset == "train" else root / folder / name
                _put(where, video_bytes(sorted(classes).index(label), variant=j) if media else b"")
                expect[subset][name] = sorted(classes).index(label)
        rows.append([classes[0], "missingClip1", 0, 10, subset, 0])  # the mirror lacks this one
        rows.append([classes[1], "badRow", "n/a", 10, subset, 0])  # malformed time
        _csv(root / "annotations" / ("train.csv" if subset == "train" else "validate.csv"),
             ["label", "youtube_id", "time_start", "time_end", "split", "is_cc"], rows)
    return expect


def write_moments(root: Path, classes=("bathing", "juggling", "running")) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    (root / "moments_categories.txt").write_text("".join(f"{c},{i}\n" for i, c in enumerate(classes)))
    expect = {"classes": list(classes), "train": {}, "val": {}}
    for subset, csv_name, folder in (("train", "trainingSet.csv", "training"), ("val", "validationSet.csv", "validation")):
        lines = []
        for ci, c in enumerate(classes):
            rel = f"{c}/{subset}_{c}_{ci}.mp4"
            _put(root / folder / rel, video_bytes(ci))
            lines.append(f"{rel},{c},3,0")
            expect[subset][Path(rel).name] = ci
        lines += [f"{classes[0]}/gone.mp4,{classes[0]},2,1", "just-one-field"]
        (root / csv_name).write_text("\n".join(lines) + "\n")
    return expect


# -- UCF101 / HMDB51 ---------------------------------------------------------------------------------
UCF_CLASSES = ["ApplyEyeMakeup", "BoxingPunchingBag", "HandstandPushups"]


def _ucf_file(cls: str, g: int, c: int) -> str:
    stem = "HandStandPushups" if cls == "HandstandPushups" else cls  # the real files' spelling
    return f"v_{stem}_g{g:02d}_c{c:02d}.avi"


def write_ucf101(root: Path, media=True) -> dict:
    """``UCF-101/<Class>/*.avi`` + ``ucfTrainTestlist/`` (CRLF lists, as published). Groups 1-4 of
    each class; split K tests on group K (train: the others), like the real group-wise splits."""
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_bytes("".join(f"{i + 1} {c}\r\n" for i, c in enumerate(UCF_CLASSES)).encode())
    for ci, cls in enumerate(UCF_CLASSES):
        for g in range(1, 5):
            _put(root / "UCF-101" / cls / _ucf_file(cls, g, 1), video_bytes(ci, container="avi", variant=g) if media else b"")
    expect = {"classes": UCF_CLASSES}
    for k in (1, 2, 3):
        train = [f"{cls}/{_ucf_file(cls, g, 1)} {ci + 1}" for ci, cls in enumerate(UCF_CLASSES) for g in range(1, 5) if g != k]
        test = [f"{cls}/{_ucf_file(cls, k, 1)}" for cls in UCF_CLASSES]
        train.append(f"ApplyEyeMakeup/{_ucf_file('ApplyEyeMakeup', 7, 1)} 1")  # not downloaded
        test.append("NoSuchClass/v_NoSuchClass_g01_c01.avi")  # malformed: unknown class
        (lists / f"trainlist{k:02d}.txt").write_bytes(("\r\n".join(train) + "\r\n").encode())
        (lists / f"testlist{k:02d}.txt").write_bytes(("\r\n".join(test) + "\r\n").encode())
        expect[k] = {"train": {_ucf_file(c, g, 1): ci for ci, c in enumerate(UCF_CLASSES) for g in range(1, 5) if g != k},
                     "test": {_ucf_file(c, k, 1): ci for ci, c in enumerate(UCF_CLASSES)}}
    return expect


HMDB_CLASSES = ["brush_hair", "cartwheel", "ride_bike"]


def write_hmdb51(root: Path, media=True) -> dict:
    """``<class>/*.avi`` + ``testTrainMulti_7030_splits/<class>_test_splitK.txt`` (``name.avi F `` with
    the published trailing space; F = 1 train, 2 test, 0 unused)."""
    splits = root / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True)
    names = {c: [f"{c}_clip{i}_f_nm_np1_fr_goo_{i}.avi" for i in range(4)] for c in HMDB_CLASSES}
    for ci, c in enumerate(HMDB_CLASSES):
        for i, n in enumerate(names[c]):
            _put(root / "hmdb51_org" / c / n, video_bytes(ci, container="avi", variant=i) if media else b"")
    expect = {"classes": HMDB_CLASSES}
    for k in (1, 2, 3):
        expect[k] = {"train": {}, "test": {}}
        for ci, c in enumerate(HMDB_CLASSES):
            flags = {n: ("2" if i == k - 1 else "0" if i == 3 else "1") for i, n in enumerate(names[c])}
            lines = [f"{n} {f} " for n, f in flags.items()]
            if ci == 0:
                lines += ["never_downloaded.avi 1 ", "broken line without flag"]
            (splits / f"{c}_test_split{k}.txt").write_text("\n".join(lines) + "\n")
            for n, f in flags.items():
                if f != "0":
                    expect[k]["train" if f == "1" else "test"][n] = ci
    return expect


# -- ESC-50 / AudioSet ---------------------------------------------------------------------------------
ESC_CLASSES = ["dog", "rooster", "rain"]  # targets 0, 1, 17 -> here 0, 1, 2


def write_esc50(root: Path) -> dict:
    rows, expect = [], {"classes": ESC_CLASSES, "folds": {}}
    for fold in range(1, 6):
        for target, cat in enumerate(ESC_CLASSES):
            for take in "AB":
                name = f"{fold}-{100000 + 10 * target + fold}-{take}-{target}.wav"
                _put(root / "audio" / name, wav_tone(target, variant=fold * 2 + (take == "B")))
                rows.append([name, fold, target, cat, str(target == 0), 100000 + target, take])
                expect["folds"][name] = (fold, target)
    rows.append(["1-999999-A-0.wav", 1, 0, "dog", "True", 999999, "A"])  # missing audio
    rows.append(["1-888888-A-x.wav", "one", "x", "dog", "True", 888888, "A"])  # malformed
    _csv(root / "meta" / "esc50.csv", ["filename", "fold", "target", "category", "esc10", "src_file", "take"], rows)
    return expect


AUDIOSET_CLASSES = [("/m/09x0r", "Speech"), ("/m/05zppz", "Male speech, man speaking"), ("/m/0ytgt", "Child speech, kid speaking"),
                    ("/t/dd00088", "Gush")]


def write_audioset(root: Path, classes=AUDIOSET_CLASSES) -> dict:
    """``class_labels_indices.csv`` (quoted names with commas) and segment lists with their three
    ``#`` lines and quoted multi-label MIDs; files named ``<YTID>_<start>.wav``, ``Y<YTID>.wav`` and
    ``<YTID>_<start>_<end>.wav`` (``%.3f``)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "class_labels_indices.csv", "w", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_MINIMAL)
        w.writerow(["index", "mid", "display_name"])
        for i, (mid, name) in enumerate(classes):
            w.writerow([i, mid, name])
    expect = {"classes": [n for _, n in classes]}
    segments = {
        "balanced_train_segments.csv": [("--PJHxphWEs", 30.0, 40.0, [0, 3], "{y}_30.wav"),
                                        ("-0Gj8-vB1q4", 20.0, 30.0, [1, 0], "Y{y}.wav"),
                                        ("-1pRmoJIGQc", 11.0, 21.0, [2], "{y}_11.000_21.000.wav"),
                                        ("-2PDE7hUArE", 0.0, 10.0, [3], None)],  # not downloaded
        "eval_segments.csv": [("--4gqARaEJE", 0.0, 10.0, [0, 1, 2], "{y}_0.wav"),
                              ("--BfvyPmVMo", 20.0, 30.0, [3], "{y}_20.wav")],
    }
    for fname, segs in segments.items():
        lines = ["# Segments csv created Sun Mar  5 10:54:31 2017", f"# num_ytids={len(segs)}, num_segs={len(segs)}, "
                 "num_unique_labels=4, num_positive_labels=6", "# YTID, start_seconds, end_seconds, positive_labels"]
        subset = {}
        for i, (y, s, e, labels, pattern) in enumerate(segs):
            mids = ",".join(AUDIOSET_CLASSES[j][0] for j in labels)
            lines.append(f'{y}, {s:.3f}, {e:.3f}, "{mids}"')
            if pattern:
                name = pattern.format(y=y)
                _put(root / "audio" / fname.split("_segments")[0] / name, wav_tone(labels[0], variant=i))
                subset[name] = sorted(labels)
        lines.append('badYtid, start, 10.000, "/m/09x0r"')  # malformed
        (root / fname).write_text("\n".join(lines) + "\n")
        expect["train" if fname.startswith("balanced") else "eval"] = subset
    return expect


# -- ImageNet --------------------------------------------------------------------------------------------
WNIDS = ["n01440764", "n01443537", "n01484850"]


def write_imagenet(root: Path, flat_val: bool = True) -> dict:
    """Kaggle layout: ``ILSVRC/Data/CLS-LOC/{train/<wnid>/, val/}``, ``LOC_val_solution.csv``,
    ``LOC_synset_mapping.txt``; or ``val/<wnid>/`` with ``flat_val=False``."""
    data = root / "ILSVRC" / "Data" / "CLS-LOC"
    root.mkdir(parents=True, exist_ok=True)
    (root / "LOC_synset_mapping.txt").write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n"
                                                 "n01484850 great white shark, white shark, man-eater\n")
    expect = {"classes": WNIDS, "train": {}, "val": {}}
    for ci, w in enumerate(WNIDS):
        for j in range(2):
            name = f"{w}_{1000 + j}.JPEG"
            _put(data / "train" / w / name, jpeg(ci))
            expect["train"][name] = ci
    rows = []
    for ci, w in enumerate(WNIDS):
        image = f"ILSVRC2012_val_{ci + 1:08d}"
        _put(data / "val" / (f"{image}.JPEG" if flat_val else f"{w}/{image}.JPEG"), jpeg(ci))
        rows.append([image, f"{w} 1 2 50 60 {w} 5 5 30 30"])
        expect["val"][f"{image}.JPEG"] = ci
    rows += [["ILSVRC2012_val_00000099", f"{WNIDS[0]} 1 1 2 2"], ["ILSVRC2012_val_00000098", "n99999999 1 1 2 2"]]
    if flat_val:
        _csv(root / "LOC_val_solution.csv", ["ImageId", "PredictionString"], rows)
    return expect


# -- MSR-VTT / YouCook2 ------------------------------------------------------------------------------------
def write_msrvtt(root: Path, n: int = 3) -> dict:
    """``msrvtt_data/MSRVTT_data.json`` (20 captions a video), ``MSRVTT_JSFUSION_test.csv`` (its
    unnamed index column) and ``MSRVTT/videos/all/videoN.mp4``; one listed video is missing."""
    ids = [7010 + i for i in range(n)] + [9999]
    videos = [{"category": 9, "url": "https://www.youtube.com/watch?v=x", "video_id": f"video{i}", "start time": 1.0,
               "end time": 2.2, "split": "test", "id": i} for i in ids]
    colours = ["red", "green", "blue", "yellow", "purple"]
    sentences = [{"caption": f"a {colours[k]} square number {c}", "video_id": f"video{i}", "sen_id": 20 * k + c}
                 for k, i in enumerate(ids) for c in range(20)]
    (root / "msrvtt_data").mkdir(parents=True)
    (root / "msrvtt_data" / "MSRVTT_data.json").write_text(json.dumps({"videos": videos, "sentences": sentences}))
    rows = [[k, f"ret{k}", f"msr{i}", f"video{i}", f"the {colours[k]} square"] for k, i in enumerate(ids)]
    rows.append([len(ids), "retX", "msrX", "video8888", ""])  # malformed: no sentence
    _csv(root / "msrvtt_data" / "MSRVTT_JSFUSION_test.csv", ["", "key", "vid_key", "video_id", "sentence"], rows)
    for k, i in enumerate(ids[:-1]):
        _put(root / "MSRVTT" / "videos" / "all" / f"video{i}.mp4", video_bytes(k))
    return {"videos": [f"video{i}" for i in ids[:-1]], "sentence": {f"video{i}": f"the {colours[k]} square"
                                                                   for k, i in enumerate(ids[:-1])},
            "captions": {f"video{i}": [s["caption"] for s in sentences if s["video_id"] == f"video{i}"] for i in ids[:-1]}}


def write_youcook2(root: Path) -> dict:
    """``youcookii_annotations_trainval.json`` and full videos under
    ``raw_videos/<subset>/<recipe>/<id>.mp4``: two validation videos with two segments each, one
    training video, one validation video not downloaded, one malformed segment."""
    db, expect = {}, {"validation": [], "training": []}
    specs = [("xHr8X2Wpmno", "validation", "113", 0), ("V53XmPeyjIU", "validation", "201", 2),
             ("GLd3aX16zBg", "training", "101", 4), ("notDownload", "validation", "113", None)]
    for vid, subset, recipe, colour in specs:
        anns = [{"segment": [0, 2], "id": 0, "sentence": f"colour {colour} first step"},
                {"segment": [2, 4], "id": 1, "sentence": f"colour {colour} second step"}]
        if vid == "V53XmPeyjIU":
            anns.append({"segment": [5, 3], "id": 2, "sentence": "ends before it starts"})  # malformed
        db[vid] = {"duration": 4.2, "subset": subset, "recipe_type": recipe, "annotations": anns,
                   "video_url": f"https://www.youtube.com/watch?v={vid}"}
        if colour is not None:
            _put(root / "raw_videos" / subset / recipe / f"{vid}.mp4", _two_part_video(colour))
            expect[subset] += [(vid, 0.0, 2.0, anns[0]["sentence"]), (vid, 2.0, 4.0, anns[1]["sentence"])]
    (root / "youcookii_annotations_trainval.json").write_text(json.dumps({"database": db}))
    return expect


@lru_cache(maxsize=None)
def _two_part_video(colour: int) -> bytes:
    """4.2 s: colour ``colour`` for 2 s, then ``colour + 1``: each segment looks different."""
    from vatt.data.encode import encode_mp4

    frames = np.empty((42, 48, 64, 3), np.uint8)
    frames[:20] = COLOURS[colour]
    frames[20:] = COLOURS[colour + 1]
    return encode_mp4(frames, 10, None)


# -- the generic path, by hand ----------------------------------------------------------------------------
WORDS = ("a the video of square red green blue yellow purple number colour first second step apply eye makeup "
         "boxing punching bag handstand pushups dog rooster rain " + " ".join(str(i) for i in range(20)))


def tiny_model_dir(folder: Path) -> Path:
    """A freshly initialised ``tiny`` model (seed 0) with a vocabulary of the replicas' words, saved."""
    import torch

    import vatt
    from vatt.text import WordTokenizer

    torch.manual_seed(0)
    vatt.create_model("tiny", vocab=WordTokenizer.build([WORDS])).save_pretrained(folder / "model")
    return folder / "model"


def write_manifest(path: Path, refs, classes=None, caption=False, multi=False) -> str:
    """What a user would write by hand for `vatt eval` / `vatt finetune`: ``path,start,end[,label][,caption]``
    (and ``classes.txt`` beside it, fixing the label ids); ``multi``: every label, ``a;b``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "start", "end"] + (["label"] if classes else []) + (["caption"] if caption else []))
        for r in refs:
            row = [r.path, "" if r.start is None else r.start, "" if r.end is None else r.end]
            row += [";".join(classes[i] for i in (r.label if multi else r.label[:1]))] if classes else []
            row += [r.captions[0].text] if caption else []
            w.writerow(row)
    if classes:
        (path.parent / "classes.txt").write_text("\n".join(classes) + "\n")
    return str(path)
