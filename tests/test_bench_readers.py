"""Benchmark readers on miniature replicas in the published formats (tests/bench_replicas.py):
classes, splits and labels read right; a missing clip and a malformed row are counted, never a
crash; a wrong root or a file in the wrong format is one error naming what was expected."""

from pathlib import Path

import pytest

import bench_replicas as rep
from vatt.data.benchmarks import (read_audioset, read_esc50, read_hmdb51, read_imagenet, read_kinetics, read_moments,
                                  read_msrvtt, read_ucf101, read_youcook2, synset_names)
from vatt.errors import InputError


def _by_name(split) -> dict:
    return {Path(r.path).name: (r.label[0] if len(r.label) == 1 else sorted(r.label)) for r in split.refs}


def _counts(split) -> tuple[int, int]:
    return split.report.missing, split.report.malformed


def test_kinetics_reads_official_csvs_and_downloader_names(tmp_path):
    expect = rep.write_kinetics(tmp_path, media=False)
    train, val = read_kinetics(tmp_path, "train"), read_kinetics(tmp_path, "val")
    assert train.classes == val.classes == ["abseiling", "air drumming", "zumba"]  # sorted labels of train.csv
    assert _by_name(train) == expect["train"] and _by_name(val) == expect["val"]
    assert _counts(train) == _counts(val) == (1, 1)
    assert train.report.missing_examples == ["missingClip1_000000_000010"]
    assert "validate.csv" in val.report.malformed_examples[0]


def test_kinetics_full_videos_are_read_by_the_rows_span(tmp_path):
    rep.write_kinetics(tmp_path, media=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "missingClip1.mp4").write_bytes(b"")  # the whole YouTube video, not a clip
    ref = next(r for r in read_kinetics(tmp_path, "train").refs if r.path.endswith("missingClip1.mp4"))
    assert (ref.start, ref.end, ref.label) == (0.0, 10.0, [0])


def test_moments_in_time(tmp_path):
    expect = rep.write_moments(tmp_path)
    train, val = read_moments(tmp_path, "train"), read_moments(tmp_path, "val")
    assert train.classes == ["bathing", "juggling", "running"]  # moments_categories.txt order
    assert _by_name(train) == expect["train"] and _by_name(val) == expect["val"]
    assert _counts(train) == (1, 1)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_ucf101_three_splits_classind_order_and_case(tmp_path, k):
    expect = rep.write_ucf101(tmp_path, media=False)
    train, test = read_ucf101(tmp_path, "train", k), read_ucf101(tmp_path, "test", k)
    assert train.classes == test.classes == rep.UCF_CLASSES
    assert _by_name(train) == expect[k]["train"]  # v_HandStandPushups_* files land in HandstandPushups
    assert _by_name(test) == expect[k]["test"]
    assert _counts(train) == (1, 0) and _counts(test) == (0, 1)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_hmdb51_split_flags(tmp_path, k):
    expect = rep.write_hmdb51(tmp_path, media=False)
    train, test = read_hmdb51(tmp_path, "train", k), read_hmdb51(tmp_path, "test", k)
    assert train.classes == rep.HMDB_CLASSES
    assert _by_name(train) == expect[k]["train"] and _by_name(test) == expect[k]["test"]  # flag 0 in neither
    assert _counts(train) == (1, 1) and _counts(test) == (0, 1)


@pytest.mark.parametrize("fold", [1, 5])
def test_esc50_folds(tmp_path, fold):
    expect = rep.write_esc50(tmp_path)
    train, test = read_esc50(tmp_path, "train", fold), read_esc50(tmp_path, "test", fold)
    assert train.classes == rep.ESC_CLASSES and train.modality == "audio"
    assert _by_name(test) == {n: t for n, (f, t) in expect["folds"].items() if f == fold}
    assert _by_name(train) == {n: t for n, (f, t) in expect["folds"].items() if f != fold}
    assert all(r.audio_only for r in test.refs)
    assert test.report.missing == (1 if fold == 1 else 0) and test.report.malformed == 1


def test_audioset_multi_hot_quoted_mids_and_file_names(tmp_path):
    expect = rep.write_audioset(tmp_path)
    train, ev = read_audioset(tmp_path, "train"), read_audioset(tmp_path, "eval")
    assert train.classes == ["Speech", "Male speech, man speaking", "Child speech, kid speaking", "Gush"]
    assert train.multi_label and ev.multi_label
    assert _by_name(train) == {n: (v[0] if len(v) == 1 else v) for n, v in expect["train"].items()}
    assert _by_name(ev) == {n: (v[0] if len(v) == 1 else v) for n, v in expect["eval"].items()}
    assert _counts(train) == (1, 1) and _counts(ev) == (0, 1)
    assert read_audioset(tmp_path, "balanced").refs == train.refs  # no unbalanced list here


@pytest.mark.parametrize("flat", [True, False])
def test_imagenet_val_by_solution_csv_or_folders(tmp_path, flat):
    expect = rep.write_imagenet(tmp_path, flat_val=flat)
    train, val = read_imagenet(tmp_path, "train"), read_imagenet(tmp_path, "val")
    assert train.classes == rep.WNIDS and val.modality == "image"
    assert _by_name(train) == expect["train"] and _by_name(val) == expect["val"]
    assert _counts(val) == ((1, 1) if flat else (0, 0))
    assert synset_names(tmp_path)["n01484850"] == "great white shark"


@pytest.mark.parametrize("captions", ["1k-A", "all"])
def test_msrvtt_1ka_videos_with_one_or_twenty_captions(tmp_path, captions):
    expect = rep.write_msrvtt(tmp_path)
    split = read_msrvtt(tmp_path, captions)
    assert [Path(r.path).stem for r in split.refs] == expect["videos"]  # list order
    texts = {Path(r.path).stem: [c.text for c in r.captions] for r in split.refs}
    if captions == "1k-A":
        assert texts == {v: [s] for v, s in expect["sentence"].items()}
    else:
        assert texts == expect["captions"] and all(len(t) == 20 for t in texts.values())
    assert split.report.missing == 1 and split.report.malformed == 1  # video8888: no sentence, no captions


def test_youcook2_segments_are_spans_of_the_full_videos(tmp_path):
    expect = rep.write_youcook2(tmp_path)
    val = read_youcook2(tmp_path)
    got = [(Path(r.path).stem, r.start, r.end, r.captions[0].text) for r in val.refs]
    assert got == sorted(expect["validation"])  # videos in id order, segments in annotation order
    assert all(r.captions[0].start == r.start and r.captions[0].end == r.end for r in val.refs)
    assert val.report.missing == 2 and val.report.malformed == 1  # notDownload's two segments; [5, 3]
    assert len(read_youcook2(tmp_path, "training")) == 2


@pytest.mark.parametrize("reader, args, expected", [
    (read_kinetics, ("train",), "train.csv"),
    (read_ucf101, ("train", 1), "classInd.txt"),
    (read_hmdb51, ("train", 1), "_test_split1.txt"),
    (read_esc50, ("train", 1), "esc50.csv"),
    (read_audioset, ("eval",), "class_labels_indices.csv"),
    (read_imagenet, ("val",), "train/"),
    (read_msrvtt, ("1k-A",), "MSRVTT_JSFUSION_test.csv"),
    (read_youcook2, ("validation",), "youcookii_annotations_trainval.json"),
    (read_moments, ("train",), "trainingSet.csv"),
])
def test_wrong_root_is_one_line_naming_the_layout(tmp_path, reader, args, expected):
    (tmp_path / "some_video.mp4").write_bytes(b"")
    with pytest.raises(InputError) as e:
        reader(tmp_path, *args)
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_file_in_the_wrong_format_names_the_expected_columns(tmp_path):
    (tmp_path / "train.csv").write_text("path,label\na.mp4,x\n")  # our manifest format, not Kinetics'
    with pytest.raises(InputError, match="expected label, youtube_id, time_start, time_end"):
        read_kinetics(tmp_path, "train")
    (tmp_path / "youcookii_annotations_trainval.json").write_text("{not json")
    with pytest.raises(InputError, match="is not JSON"):
        read_youcook2(tmp_path)


def test_annotations_without_any_downloaded_media_is_an_error_with_counts(tmp_path):
    rep.write_kinetics(tmp_path, media=False)
    for p in tmp_path.rglob("*.mp4"):
        p.unlink()
    with pytest.raises(InputError, match=r"no usable items \(8 annotation rows: 7 media file"):
        read_kinetics(tmp_path, "train")
