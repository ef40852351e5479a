"""Bad input never crashes a run: each kind is decoded, masked or skipped and counted; strict raises."""

import numpy as np
import pytest

from vatt.data import ClipRef, DataConfig, build_dataset, load_sample, make_loader
from vatt.data import decode as decode_mod
from vatt.data.encode import encode_mp4
from vatt.errors import DataError

CFG = DataConfig(num_frames=4, fps=10.0, crop_size=32, sample_rate=8000, num_samples=3200)
SRT = "1\n00:00:00,000 --> 00:00:02,000\na red ball rolls\n"


def frames(n=20, h=48, w=64):
    return np.stack([np.full((h, w, 3), 5 * k, np.uint8) for k in range(n)])


def tone(seconds=1.0, rate=16000, channels=1):
    t = np.arange(int(seconds * rate)) / rate
    x = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return x if channels == 1 else np.stack([x] * channels)


def good_mp4():
    return encode_mp4(frames(), 20, tone(), rate=16000)


# name -> (file name, bytes maker, sidecar text or None, expected outcome)
# outcome: ("skip", reason) = sample dropped and counted; ("mask", reason) = kept with a modality
# masked and counted; ("ok", None) = decoded normally.
KINDS = {
    "truncated": ("truncated.mp4", lambda: good_mp4()[: len(good_mp4()) // 2], SRT, ("skip", "not_media")),
    "zero_bytes": ("zero.mp4", lambda: b"", SRT, ("skip", "empty_file")),
    "wrong_extension_text": ("notes.mp4", lambda: b"this is not a video\n" * 20, SRT, ("skip", "not_media")),
    "wrong_extension_media": ("really_mp4.avi", good_mp4, SRT, ("ok", None)),
    "no_video_track": ("novideo.mp4", lambda: encode_mp4(None, 20, tone(), rate=16000), SRT, ("mask", "no_video_track")),
    "no_audio_track": ("noaudio.mp4", lambda: encode_mp4(frames(), 20, None), SRT, ("mask", "no_audio_track")),
    "single_frame": ("one.mp4", lambda: encode_mp4(frames(1), 20, tone(0.05), rate=16000), SRT, ("ok", None)),
    "odd_size": ("odd.mp4", lambda: encode_mp4(frames(10, 55, 97), 20, tone(), rate=16000, pix_fmt="yuv444p"), SRT, ("ok", None)),
    "variable_frame_rate": ("vfr.mp4", lambda: encode_mp4(frames(12), 20, tone(), rate=16000,
                            times=[0, .03, .1, .12, .3, .35, .5, .52, .6, .8, .85, .95]), SRT, ("ok", None)),
    "legacy_codecs_avi": ("legacy.avi", lambda: encode_mp4(frames(), 20, tone(), rate=16000, codec="mpeg4",
                          audio_codec="mp2", container="avi"), SRT, ("ok", None)),
    "mpeg_ps_offset_start": ("old.mpg", lambda: encode_mp4(frames(), 25, tone(), rate=16000, codec="mpeg1video",
                             audio_codec="mp2", container="mpeg"), SRT, ("ok", None)),
    "multichannel_odd_rate": ("surround.mp4", lambda: encode_mp4(frames(), 20, tone(1.0, 22050, 6), rate=22050), SRT, ("ok", None)),
    "malformed_subtitles": ("badsub.mp4", good_mp4, "1\ngarbage --> nonsense\nhello\n", ("mask", "bad_captions")),
    "non_utf8_subtitles": ("latin1.mp4", good_mp4, "1\n00:00:00,000 --> 00:00:01,000\ncaf\xe9\n".encode("latin-1"), ("ok", None)),
    "empty_captions": ("emptysub.mp4", good_mp4, "", ("mask", "empty_captions")),
}


def write_kind(folder, name):
    fname, make, sidecar, _ = KINDS[name]
    path = folder / fname
    path.write_bytes(make())
    if sidecar is not None:
        side = path.with_suffix(".srt")
        side.write_bytes(sidecar if isinstance(sidecar, bytes) else sidecar.encode())
    return path


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    for name in KINDS:
        write_kind(folder, name)
    return folder


def expected_counts():
    skips, masks = {}, {}
    for _, _, _, (what, reason) in KINDS.values():
        if what == "skip":
            skips[reason] = skips.get(reason, 0) + 1
        elif what == "mask":
            masks[reason] = masks.get(reason, 0) + 1
    return skips, masks


def test_every_bad_kind_is_decoded_masked_or_skipped_and_counted_across_workers(bad_folder):
    ds = build_dataset(f"folder:{bad_folder}", CFG, None, train=False)
    loader = make_loader(ds, batch_size=4, num_workers=2, drop_last=False)
    keys, masks = [], {}
    for batch in loader:
        assert batch["video"].shape[1:] == (4, 32, 32, 3) and batch["audio"].shape[1:] == (3200,)
        assert torch_finite(batch["video"]) and torch_finite(batch["audio"])
        for k, vm, am, tm in zip(batch["key"], batch["video_mask"], batch["audio_mask"], batch["text_mask"]):
            keys.append(k.rsplit("@", 1)[0])
            masks[keys[-1].rsplit("/", 1)[-1]] = (float(vm), float(am), float(tm))
    skips, masked = expected_counts()
    stats = ds.stats()
    assert stats == loader.stats()
    assert stats["bad"] == sum(skips.values()) and stats["reasons"] == skips
    assert stats["masked"] == masked
    assert stats["good"] == len(KINDS) - sum(skips.values()) == len(keys)
    assert masks["novideo.mp4"] == (0.0, 1.0, 1.0)
    assert masks["noaudio.mp4"] == (1.0, 0.0, 1.0)
    assert masks["badsub.mp4"] == (1.0, 1.0, 0.0) and masks["emptysub.mp4"] == (1.0, 1.0, 0.0)
    assert masks["latin1.mp4"] == (1.0, 1.0, 1.0) and masks["surround.mp4"] == (1.0, 1.0, 1.0)


def torch_finite(x):
    return bool(x.isfinite().all()) and float(x.abs().max()) <= 1.0


def test_training_replaces_bad_samples_so_batches_keep_their_size(bad_folder):
    ds = build_dataset(f"folder:{bad_folder}", CFG, None, train=True, seed=1)
    loader = make_loader(ds, batch_size=5, num_workers=0, drop_last=True)
    sizes = [len(b["key"]) for b in loader]
    assert sizes == [5, 5, 5]
    assert ds.stats()["bad"] >= 1 and set(ds.stats()["reasons"]) <= {"not_media", "empty_file"}


@pytest.mark.parametrize("name", [n for n, v in KINDS.items() if v[3][0] != "ok"])
def test_strict_mode_raises_with_path_and_reason(tmp_path, name):
    path = write_kind(tmp_path, name)
    ds = build_dataset(f"folder:{tmp_path}", CFG, None, train=True, strict=True)
    reason = KINDS[name][3][1]
    with pytest.raises(DataError) as err:
        ds[0]
    assert reason in str(err.value)
    assert path.stem in str(err.value)


@pytest.mark.parametrize("name", [n for n, v in KINDS.items() if v[3][0] == "ok"])
def test_unusual_but_valid_inputs_decode_even_in_strict_mode(tmp_path, name):
    write_kind(tmp_path, name)
    ds = build_dataset(f"folder:{tmp_path}", CFG, None, train=True, strict=True)
    item = ds[0]
    assert item["video"].shape == (4, 32, 32, 3) and item["video_mask"] == 1 and item["audio_mask"] == 1
    assert item["text_mask"] == 1 and item["_events"] == []


def test_huge_frames_are_refused_not_decoded(tmp_path, monkeypatch):
    monkeypatch.setattr(decode_mod, "MAX_FRAME_PIXELS", 64 * 48 - 1)  # a 64x48 clip counts as "huge"
    (tmp_path / "huge.mp4").write_bytes(good_mp4())
    ds = build_dataset(f"folder:{tmp_path}", CFG, None, train=False)
    batches = list(make_loader(ds, batch_size=2, num_workers=0, drop_last=False))
    assert batches == [] and ds.stats()["reasons"] == {"frame_too_large": 1}
    with pytest.raises(DataError, match="huge.mp4: frame_too_large"):
        build_dataset(f"folder:{tmp_path}", CFG, None, strict=True)[0]


def test_missing_file_in_a_manifest_is_skipped(tmp_path):
    (tmp_path / "ok.mp4").write_bytes(good_mp4())
    (tmp_path / "m.csv").write_text("path,caption\nok.mp4,a ball\ngone.mp4,a box\n")
    ds = build_dataset(str(tmp_path / "m.csv"), CFG, None, train=False)
    out = list(make_loader(ds, batch_size=2, num_workers=0, drop_last=False))
    assert len(out) == 1 and len(out[0]["key"]) == 1
    assert ds.stats()["reasons"] == {"missing_file": 1}


def test_truncated_streamable_file_falls_back_to_its_start_and_is_counted(tmp_path):
    # Matroska keeps its header in front: cut in half it still opens and claims the full 1.0 s.
    data = encode_mp4(frames(20), 20, tone(), rate=16000, container="matroska")
    path = tmp_path / "cut.mkv"
    path.write_bytes(data[: len(data) // 2])
    sample = load_sample(ClipRef(str(path), start=0.8), CFG, None, train=False)
    assert [e[1] for e in sample["_events"]] == ["truncated"]
    assert sample["key"].endswith("@0.00")
    brightness = (sample["video"].mean(dim=(1, 2, 3)) + 1) * 127.5
    np.testing.assert_allclose(brightness.numpy(), 5 * np.arange(0, 8, 2), atol=2.0)  # frames 0, 2, 4, 6
