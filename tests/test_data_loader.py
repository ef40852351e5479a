"""Sources, transforms and the loader: the Batch contract, mixing, labelled sets, eval views."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vatt.cli.main import main
from vatt.data import DataConfig, build_dataset, build_eval_dataset, detect_kind, make_loader
from vatt.data import transforms
from vatt.errors import ConfigError
from vatt.text import WordTokenizer

CFG = DataConfig()  # tiny geometry: 8 frames at 10 fps, crop 64, 16 kHz x 12800, 16 words


def test_data_config_from_model_config_is_duck_typed():
    model_cfg = SimpleNamespace(video=SimpleNamespace(num_frames=32, fps=10, crop_size=224),
                                audio=SimpleNamespace(sample_rate=48000, num_samples=153600),
                                text=SimpleNamespace(max_words=16))
    cfg = DataConfig.from_model_config(model_cfg, crop_mode="inception")
    assert (cfg.num_frames, cfg.crop_size, cfg.sample_rate, cfg.num_samples, cfg.crop_mode) == (32, 224, 48000, 153600, "inception")
    assert cfg.clip_seconds == pytest.approx(3.2) and cfg.resize == 256
    with pytest.raises(ConfigError, match="crop_sise.*crop_size"):
        DataConfig.from_dict({"crop_sise": 3})


def test_loader_batches_follow_the_batch_contract(synth_corpus, synth_tokenizer):
    ds = build_dataset(str(synth_corpus / "pretrain"), CFG, synth_tokenizer, seed=0)
    loader = make_loader(ds, batch_size=4, num_workers=2, seed=0)
    batch = next(iter(loader))
    assert batch["video"].shape == (4, 8, 64, 64, 3) and batch["video"].dtype == torch.float32
    assert batch["audio"].shape == (4, 12800) and batch["audio"].dtype == torch.float32
    assert batch["text"].shape == (4, 5, 16) and batch["text"].dtype == torch.int64
    for m in ("video_mask", "audio_mask", "text_mask"):
        assert batch[m].shape == (4,) and batch[m].dtype == torch.float32 and bool((batch[m] == 1).all())
    assert -1 <= float(batch["video"].min()) < 0 < float(batch["video"].max()) <= 1
    assert float(batch["audio"].abs().max()) <= 1
    assert bool((batch["text"][:, :, 0] > 1).all())  # every sentence starts with a known word
    assert len(batch["key"]) == 4 and all("@" in k for k in batch["key"])
    # captions are those of the file, tokenised
    assert synth_tokenizer.decode(batch["text"][0, 0].tolist()) == " ".join(batch["captions"][0][0].lower().split())
    assert ds.stats()["bad"] == 0 and ds.stats()["good"] >= 4


def test_weighted_mix_with_audio_only_masks_video_and_text(synth_corpus, synth_tokenizer):
    ds = build_dataset([str(synth_corpus / "pretrain"), str(synth_corpus / "audio_only")], CFG, synth_tokenizer,
                       weights=[1, 1], seed=0)
    batch = next(iter(make_loader(ds, batch_size=16, num_workers=0)))
    audio_only = batch["video_mask"] == 0
    assert 0 < int(audio_only.sum()) < 16
    assert bool((batch["text_mask"][audio_only] == 0).all()) and bool((batch["audio_mask"] == 1).all())
    assert float(batch["video"][audio_only].abs().max()) == 0 and int(batch["text"][audio_only].abs().max()) == 0
    assert all(k.split("@")[0].endswith(".wav") == bool(a) for k, a in zip(batch["key"], audio_only))


def test_labelled_csv_and_class_folders(synth_corpus, tmp_path):
    train = build_dataset(str(synth_corpus / "labelled" / "train.csv"), CFG, None, train=False)
    assert train.classes == ["circle", "square", "triangle", "cross"] and train.multi_label is False
    batch = next(iter(make_loader(train, batch_size=4, num_workers=0, shuffle=False)))
    assert batch["label"].dtype == torch.int64 and batch["label"].tolist() == [0, 1, 2, 3]  # classes cycle
    # multi-label CSV with `a;b`
    media = sorted((synth_corpus / "labelled" / "media").glob("*.mp4"))
    (tmp_path / "ml.csv").write_text(f"path,label\n{media[0]},b;a\n{media[1]},c\n")
    ml = build_dataset(str(tmp_path / "ml.csv"), CFG, None, train=False)
    assert ml.multi_label and ml.classes == ["a", "b", "c"]
    assert ml[0]["label"].tolist() == [1.0, 1.0, 0.0] and ml[1]["label"].tolist() == [0.0, 0.0, 1.0]
    # class-per-folder
    for i, cls in enumerate(["dog", "cat", "dog"]):
        (tmp_path / "folders" / cls).mkdir(parents=True, exist_ok=True)
        (tmp_path / "folders" / cls / f"{i}.mp4").write_bytes(media[i].read_bytes())
    assert detect_kind(str(tmp_path / "folders"))[0] == "labelled"
    fd = build_dataset(str(tmp_path / "folders"), CFG, None, train=False)
    assert fd.classes == ["cat", "dog"] and [fd[i]["label"].item() for i in range(3)] == [0, 1, 1]


def test_source_type_detection(synth_corpus):
    assert detect_kind(str(synth_corpus / "pretrain"))[0] == "folder"
    assert detect_kind(str(synth_corpus / "audio_only"))[0] == "audio"
    assert detect_kind(str(synth_corpus / "labelled" / "train.csv"))[0] == "manifest"
    assert detect_kind("shards-{000..009}.tar")[0] == "shards"
    assert detect_kind(f"labelled:{synth_corpus / 'pretrain'}") == ("labelled", str(synth_corpus / "pretrain"))


def test_eval_dataset_views_are_window_major_and_match_the_single_crop_views(synth_corpus, synth_tokenizer):
    one = build_eval_dataset(str(synth_corpus / "retrieval"), CFG, synth_tokenizer, num_windows=4, num_crops=1)
    three = build_eval_dataset(str(synth_corpus / "retrieval"), CFG, synth_tokenizer, num_windows=4, num_crops=3)
    a, b = one[0], three[0]
    assert a["video"].shape == (4, 8, 64, 64, 3) and b["video"].shape == (12, 8, 64, 64, 3)
    assert a["audio"].shape == (4, 12800) and a["text"].shape == (5, 16)
    for w in range(4):
        assert torch.equal(b["video"][3 * w + 1], a["video"][w])  # the middle of 3 crops is the centre crop
    assert not torch.equal(a["video"][0], a["video"][3])  # windows differ (the object moves)
    assert torch.equal(one[0]["video"], a["video"])  # deterministic
    batch = next(iter(make_loader(one, batch_size=2, num_workers=0, drop_last=False)))
    assert batch["video"].shape == (2, 4, 8, 64, 64, 3)


def test_eval_centre_crop_equals_resize_then_crop():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(2, 96, 128, 3), dtype=np.uint8)
    cfg = DataConfig(crop_size=64, min_resize=96)  # no resize needed: crop the centre 64 x 64
    out = transforms.eval_video(frames, cfg)[0]
    ref = torch.from_numpy(frames[:, 16:80, 32:96]).float() / 127.5 - 1
    assert torch.allclose(out, ref, atol=1e-5)
    cfg2 = DataConfig(crop_size=32, min_resize=48)  # resize 96 -> 48 then centre crop 32
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    small = F.interpolate(x, size=(48, 64), mode="bilinear", antialias=True, align_corners=False)
    ref2 = small[:, :, 8:40, 16:48].permute(0, 2, 3, 1) * 2 - 1
    assert (transforms.eval_video(frames, cfg2)[0] - ref2).abs().mean() < 0.03


@pytest.mark.parametrize("mode", ["official", "inception"])
def test_train_augmentation_shapes_ranges_and_determinism(mode):
    frames = np.random.default_rng(1).integers(0, 256, size=(8, 96, 128, 3), dtype=np.uint8)
    cfg = DataConfig(crop_mode=mode)
    a = transforms.train_video(frames, cfg, np.random.default_rng(5))
    b = transforms.train_video(frames, cfg, np.random.default_rng(5))
    c = transforms.train_video(frames, cfg, np.random.default_rng(6))
    assert a.shape == (8, 64, 64, 3) and torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= -1 and float(a.max()) <= 1
    audio = np.sin(np.arange(1000) / 10).astype(np.float32)
    noisy = transforms.train_audio(audio, cfg, np.random.default_rng(0))
    assert 0.005 < float((noisy - torch.from_numpy(audio)).std()) < 0.015  # sigma = 0.01 max|x|


def test_vocab_build_and_data_check_commands(synth_corpus, tmp_path, capsys):
    out = tmp_path / "vocab.json"
    assert main(["vocab", "build", str(synth_corpus / "pretrain"), "--out", str(out)]) == 0
    tok = WordTokenizer.load(out)
    assert tok.words[:2] == ["<pad>", "<unk>"] and {"ball", "disc", "box", "wedge"} <= set(tok.index)
    capsys.readouterr()
    (tmp_path / "clips").mkdir()
    for p in sorted((synth_corpus / "retrieval").glob("retrieval_0000[01].*")):
        (tmp_path / "clips" / p.name).write_bytes(p.read_bytes())
    (tmp_path / "clips" / "empty.mp4").write_bytes(b"")
    assert main(["data", "check", str(tmp_path / "clips"), "--json"]) == 0
    import json

    report = json.loads(capsys.readouterr().out)
    assert (report["total"], report["good"], report["bad"]) == (3, 2, 1)
    assert report["reasons"] == {"empty_file": 1}
    assert {f["path"].rsplit("/", 1)[-1]: f["ok"] for f in report["files"]} == {
        "empty.mp4": False, "retrieval_00000.mp4": True, "retrieval_00001.mp4": True}


def sequential_color_jitter(x, b, c, s, turns):
    """Reference: the four adjustments one after another (float [..., 3] in [0, 1])."""
    luma = torch.tensor([0.299, 0.587, 0.114])
    x = x + b
    m = (x @ luma).mean()
    x = (x - m) * c + m
    g = (x @ luma).unsqueeze(-1)
    x = g + (x - g) * s
    yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    th = turns * 2 * np.pi
    rot = torch.tensor([[1.0, 0, 0], [0, np.cos(th), -np.sin(th)], [0, np.sin(th), np.cos(th)]], dtype=torch.float32)
    y = x @ yiq.T @ rot.T
    return (y @ torch.linalg.inv(yiq).T).clamp(0, 1)


def test_fused_color_jitter_equals_the_sequential_adjustments():
    x = torch.rand(4, 16, 16, 3)
    out = transforms.color_jitter(x.clone(), np.random.default_rng(3))
    r = np.random.default_rng(3)
    b, c, s, turns = r.uniform(-32 / 255, 32 / 255), r.uniform(0.6, 1.4), r.uniform(0.6, 1.4), r.uniform(-0.2, 0.2)
    assert torch.allclose(out, sequential_color_jitter(x, b, c, s, turns), atol=1e-5)
    grey = torch.full((1, 4, 4, 3), 0.5)  # a grey clip has no hue or saturation to change
    g = transforms.color_jitter(grey, np.random.default_rng(0))
    assert torch.allclose(g[..., 0], g[..., 1], atol=1e-5) and torch.allclose(g[..., 1], g[..., 2], atol=1e-5)


def reference_train_video(frames, cfg, rng):
    """Reference augmentation, step by step: box, crop + resize to float, flip, jitter, 2x - 1."""
    T, H, W, _ = frames.shape
    box = transforms._inception_box(H, W, rng) if cfg.crop_mode == "inception" else transforms._official_box(H, W, cfg, rng)
    x = transforms._crop_resize(frames, box, cfg.crop_size)
    if cfg.flip and rng.random() < 0.5:
        x = x.flip(2)
    if cfg.color_jitter and rng.random() < cfg.color_jitter_prob:
        x = transforms.color_jitter(x, rng)
    return x * 2 - 1


@pytest.mark.parametrize("shape", [(6, 96, 128), (4, 73, 100)])  # resized crops; crops already at size (scale 1)
def test_fast_train_augmentation_equals_the_step_by_step_reference(shape):
    frames = np.random.default_rng(2).integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    for mode in ("official", "inception"):
        cfg = DataConfig(crop_mode=mode)
        for seed in range(12):  # covers flipped / not, jittered / not
            out = transforms.train_video(frames, cfg, np.random.default_rng(seed))
            ref = reference_train_video(frames, cfg, np.random.default_rng(seed))
            assert out.shape == ref.shape and out.is_contiguous()
            assert torch.allclose(out, ref, atol=1e-5), (mode, seed, float((out - ref).abs().max()))


@pytest.mark.parametrize("shape", [(6, 96, 128), (4, 73, 100)])
def test_deferred_colour_equals_the_step_by_step_reference(shape):
    """Workers hand over uint8 crops + a colour map; the batched map on the device gives what the
    step-by-step reference gives (and what the float worker path gives) within fp32 rounding,
    drawing the same random numbers (the next draw after each clip is the same)."""
    frames = np.random.default_rng(2).integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    for mode in ("official", "inception"):
        cfg = DataConfig(crop_mode=mode, device_augment=True)
        clips, maps, refs, floats = [], [], [], []
        for seed in range(12):  # covers flipped / not, jittered / not
            r1, r2, r3 = (np.random.default_rng(seed) for _ in range(3))
            u8, color = transforms.train_video_deferred(frames, cfg, r1)
            assert u8.dtype == torch.uint8 and color.shape == (3, 4)
            refs.append(reference_train_video(frames, cfg, r2))
            floats.append(transforms.train_video(frames, cfg, r3))
            assert r1.random() == r2.random() == r3.random()  # the same draws, in the same order
            clips.append(u8)
            maps.append(color)
        out = transforms.finish_batch({"video": torch.stack(clips), "video_affine": torch.stack(maps), "audio": 1})
        assert set(out) == {"video", "audio"} and out["video"].dtype == torch.float32
        torch.testing.assert_close(out["video"], torch.stack(refs), atol=1e-5, rtol=0)
        torch.testing.assert_close(out["video"], torch.stack(floats), atol=1e-6, rtol=0)
        assert out["video"].min() >= -1 and out["video"].max() <= 1


def test_device_augment_samples_travel_as_uint8_and_the_engine_finishes_them(synth_corpus):
    from vatt.data import build_dataset
    from vatt.data.loader import collate
    from vatt.train.engine import to_device

    cfg = DataConfig(device_augment=True)
    ds = build_dataset(str(synth_corpus / "pretrain"), cfg, None, train=True, seed=0)
    ref = build_dataset(str(synth_corpus / "pretrain"), DataConfig(), None, train=True, seed=0)
    items = [ds.load(i, np.random.default_rng([0, i])) for i in range(3)]
    floats = [ref.load(i, np.random.default_rng([0, i])) for i in range(3)]
    assert items[0]["video"].dtype == torch.uint8 and items[0]["video"].element_size() * 4 == floats[0]["video"].element_size()
    batch = to_device(collate(items), torch.device("cpu"))
    assert "video_affine" not in batch
    torch.testing.assert_close(batch["video"], torch.stack([f["video"] for f in floats]), atol=1e-6, rtol=0)
    torch.testing.assert_close(batch["audio"], torch.stack([f["audio"] for f in floats]))


def test_train_augmentation_is_the_same_in_a_worker_and_in_the_main_process():
    # Workers run one torch thread, the main process (num_workers=0) several: same clip, same bits.
    frames = np.random.default_rng(3).integers(0, 256, size=(8, 96, 128, 3), dtype=np.uint8)
    cfg = DataConfig()
    before = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            outs.append([transforms.train_video(frames, cfg, np.random.default_rng(s)) for s in range(8)])
            assert torch.get_num_threads() == threads  # left as it was
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(*outs))


def test_class_per_folder_of_audio_files_is_a_labelled_set(synth_corpus, tmp_path):
    wavs = sorted((synth_corpus / "audio_only").glob("*.wav"))[:4]
    for i, w in enumerate(wavs):
        d = tmp_path / ("dog" if i % 2 else "rain")
        d.mkdir(exist_ok=True)
        (d / w.name).write_bytes(w.read_bytes())
    assert detect_kind(str(tmp_path))[0] == "labelled"
    ds = build_dataset(str(tmp_path), CFG, None, train=False)
    item = ds[0]
    assert ds.classes == ["dog", "rain"] and item["video_mask"] == 0 and item["audio_mask"] == 1
    assert [ds.classes[ds[i]["label"].item()] for i in range(4)] == [r.path.split("/")[-2] for r in ds.refs]


def test_mixed_streams_differ_between_ranks(synth_corpus):
    srcs = [str(synth_corpus / "pretrain"), str(synth_corpus / "audio_only")]
    keys = []
    for rank in range(2):
        ds = build_dataset(srcs, CFG, None, weights=[1, 1], seed=0, rank=rank, world_size=2)
        it = iter(ds)
        keys.append([next(it)["key"] for _ in range(4)])
    assert keys[0] != keys[1]


def test_manifest_spans_limit_the_windows_and_keep_eval_keys_unique(synth_corpus, tmp_path):
    clip = sorted((synth_corpus / "pretrain").glob("*.mp4"))[0]
    (tmp_path / "spans.csv").write_text(f"path,start,end,caption\n{clip},0.0,1.0,first part\n{clip},1.2,2.4,second part\n")
    ds = build_dataset(str(tmp_path / "spans.csv"), CFG, None, train=True)
    for _ in range(5):
        start = float(ds[1]["key"].rsplit("@", 1)[1])
        assert 1.2 <= start <= 2.4 - CFG.clip_seconds + 1e-6
    assert ds[0]["captions"] == ["first part"] * 5
    ev = build_eval_dataset(str(tmp_path / "spans.csv"), CFG, None, num_windows=2)
    assert [ev[0]["key"], ev[1]["key"]] == [f"{clip}@0.00-1.00", f"{clip}@1.20-2.40"]


def test_manifest_errors_name_the_rows_and_latin1_manifests_are_read(synth_corpus, tmp_path):
    from vatt.errors import InputError

    media = sorted((synth_corpus / "labelled" / "media").glob("*.mp4"))
    (tmp_path / "gap.csv").write_text(f"path,label\n{media[0]},a\n{media[1]},\n")
    with pytest.raises(InputError, match=r"rows \[3\] have no label"):
        build_dataset(str(tmp_path / "gap.csv"), CFG, None)
    (tmp_path / "l1.csv").write_bytes(f"path,caption\n{media[0]},caf\xe9 au lait\n".encode("latin-1"))
    assert build_dataset(str(tmp_path / "l1.csv"), CFG, None, train=False)[0]["captions"][0] == "café au lait"


def test_training_defers_the_colour_step_to_an_accelerator_only(synth_corpus, tmp_path):
    """On the CPU the loader workers finish the clips (float, in parallel); the main process
    would otherwise run the colour step serially between steps, counted as step time. On an
    accelerator the workers hand over uint8 and the step finishes them there."""
    from vatt.train import Pretraining
    from vatt.train.config import TrainConfig

    cfg = TrainConfig.from_dict({"model": "tiny", "steps": 1, "batch_size": 2})
    trainer = Pretraining(cfg, [str(synth_corpus / "pretrain")], tmp_path / "run")
    assert trainer.device.type == "cpu" and trainer.defer_augment is False
    trainer.build()  # the model and its vocabulary
    item = trainer.build_dataset().load(0, np.random.default_rng(0))
    assert item["video"].dtype == torch.float32 and "video_affine" not in item
    trainer.device = torch.device("meta")  # stands for any accelerator: only the type is read
    assert trainer.defer_augment is True
    item = trainer.build_dataset().load(0, np.random.default_rng(0))
    assert item["video"].dtype == torch.uint8 and item["video_affine"].shape == (3, 4)


def test_colour_jitter_uses_the_exact_channel_means_of_the_uint8_clip():
    """The mean that centres contrast is the exact per-channel mean (integer sums), in the float
    and the deferred path alike, at any frame count (no int32 overflow at the paper geometry)."""
    g = torch.Generator().manual_seed(0)
    for shape in [(2, 3, 5, 7), (32, 3, 224, 224)]:
        x = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
        exact = x.double().mean(dim=(0, 2, 3)) / 255.0
        torch.testing.assert_close(transforms._channel_means(x).double(), exact, rtol=0, atol=1e-7)
    full = torch.full((160, 3, 256, 256), 255, dtype=torch.uint8)  # 2.7e9 per channel: past int32 if summed at once
    assert torch.equal(transforms._channel_means(full), torch.ones(3))


def test_a_worker_batch_crosses_in_one_shared_buffer_and_unpacks_to_the_same_tensors(monkeypatch):
    """Each tensor storage a loader worker hands over costs the main process a socket handshake
    with the worker (5.2 ms per 6-tensor batch measured): in a worker, collate stacks every key
    into one buffer, and unpacking gives views equal to the plain stacks, for any mix of dtypes."""
    from vatt.data import loader as L

    g = torch.Generator().manual_seed(0)
    items = [{"video": torch.randint(0, 256, (3, 5, 7, 3), dtype=torch.uint8, generator=g),
              "video_affine": torch.randn(3, 4, generator=g), "audio": torch.randn(11, generator=g),
              "text": torch.randint(0, 99, (5, 16), generator=g), "video_mask": torch.tensor(1.0),
              "key": f"k{i}", "captions": ["a"]} for i in range(3)]
    plain = L.collate(items)
    monkeypatch.setattr(L, "get_worker_info", lambda: object())  # as in a loader worker
    packed = L.collate(items)
    assert [k for k, v in packed.items() if torch.is_tensor(v)] == ["_packed"]
    out = L.unpack(packed)
    keys = ["video", "video_affine", "audio", "text", "video_mask"]
    for k in keys:
        assert out[k].dtype == plain[k].dtype and torch.equal(out[k], plain[k]), k
    assert len({out[k].untyped_storage().data_ptr() for k in keys}) == 1
    assert out["key"] == plain["key"] and "_layout" not in out


def test_loader_workers_and_the_main_process_give_the_same_batches(synth_corpus, synth_tokenizer):
    ds = build_eval_dataset(str(synth_corpus / "pretrain"), CFG, synth_tokenizer, num_windows=1)
    inproc = list(make_loader(ds, batch_size=4, num_workers=0, drop_last=False))
    workers = list(make_loader(ds, batch_size=4, num_workers=2, drop_last=False, persistent_workers=False))
    assert len(inproc) == len(workers) > 1
    for a, b in zip(inproc, workers):
        assert a.keys() == b.keys() and a["key"] == b["key"]
        tensors = [k for k, v in b.items() if torch.is_tensor(v)]
        assert len({b[k].untyped_storage().data_ptr() for k in tensors}) == 1  # one buffer crossed
        assert all(torch.equal(a[k], b[k]) for k in tensors)


def test_eval_loader_of_any_dataset_unpacks_worker_batches(synth_corpus, synth_tokenizer):
    """``make_eval_loader`` over a plain map-style dataset (a rank's Subset in the multi-view test)."""
    from torch.utils.data import Subset

    from vatt.embed import make_eval_loader

    ds = Subset(build_eval_dataset(str(synth_corpus / "pretrain"), CFG, synth_tokenizer, num_windows=1), [0, 2, 4, 6, 8])
    inproc, workers = (list(make_eval_loader(ds, 2, n)) for n in (0, 2))
    assert [b["key"] for b in inproc] == [b["key"] for b in workers] and len(workers) == 3
    assert all("_packed" not in b and torch.equal(a["video"], b["video"]) for a, b in zip(inproc, workers))
