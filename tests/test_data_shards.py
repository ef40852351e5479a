"""WebDataset shards: `vatt data prepare` round trip, cutting long videos, rank/worker split, bad shards."""

import json
import tarfile

import numpy as np
import torch

from vatt.cli.main import main
from vatt.data import (DataConfig, MediaReader, ShardDataset, build_dataset, list_shards, make_loader, prepare_shards,
                       split_shards)
from vatt.data.captions import Caption, write_srt
from vatt.data.encode import encode_mp4
from vatt.data.index import expand_braces
from vatt.data.shards import iter_tar_samples

CFG = DataConfig(num_frames=4, fps=10.0, crop_size=32, sample_rate=8000, num_samples=3200)


def test_prepared_shards_stream_back_the_same_clips(synth_corpus, synth_tokenizer, tmp_path):
    src = synth_corpus / "retrieval"
    assert main(["data", "prepare", str(src), str(tmp_path / "shards"), "--max-count", "2", "--workers", "2"]) == 0
    report = json.loads((tmp_path / "shards" / "prepare_report.json").read_text())
    assert report["clips"] == report["files_total"] == len(list(src.glob("*.mp4")))
    # parallel workers keep the source order: byte-identical to a single-process run
    prepare_shards(str(src), tmp_path / "serial", max_count=2)
    for name in report["shards"]:
        assert (tmp_path / "shards" / name).read_bytes() == (tmp_path / "serial" / name).read_bytes()
    assert len(report["shards"]) == (report["clips"] + 1) // 2 and report["skipped"] == []
    folder = build_dataset(str(src), CFG, synth_tokenizer, train=False)
    shards = build_dataset(str(tmp_path / "shards"), CFG, synth_tokenizer, train=False)
    assert isinstance(shards, ShardDataset)
    streamed = list(shards)
    assert len(streamed) == len(folder)
    for i, s in enumerate(streamed):
        ref = folder[i]
        for k in ("video", "audio", "text", "video_mask", "audio_mask", "text_mask"):
            assert torch.equal(s[k], ref[k]), k
        assert s["captions"] == ref["captions"] and s["text_mask"] == 1


def test_prepare_cuts_long_videos_and_their_captions_and_reports_skips(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    counter = np.stack([np.full((32, 48, 3), 2 * k, np.uint8) for k in range(100)])  # 5 s at 20 fps
    (src / "long.mp4").write_bytes(encode_mp4(counter, 20, 0.2 * np.ones(5 * 16000, np.float32), rate=16000))
    write_srt([Caption(0.5, 1.5, "one"), Caption(2.5, 3.5, "two"), Caption(3.8, 4.6, "three")], src / "long.srt")
    (src / "broken.mp4").write_bytes(b"")
    out = tmp_path / "out"
    report = prepare_shards(str(src), out, clip_seconds=2.0, max_count=10)
    assert report["clips"] == 3 and report["files_ok"] == 1
    assert report["skipped"] == [{"path": str(src / "broken.mp4"), "reason": "empty_file", "detail": ""}]
    assert json.loads((out / "prepare_report.json").read_text())["clips"] == 3
    with tarfile.open(out / "shard-00000.tar") as tar:
        names = tar.getnames()
        metas = [json.loads(tar.extractfile(n).read()) for n in names if n.endswith(".json")]
    assert [(m["start"], m["end"]) for m in metas] == [(0.0, 2.0), (2.0, 4.0), (4.0, 5.0)]
    assert [m["captions"]["text"] for m in metas] == [["one"], ["two", "three"], ["three"]]
    assert metas[1]["captions"]["start"] == [0.5, 1.8] and metas[2]["captions"]["end"] == [0.6]
    for k, raw in enumerate(iter_tar_samples(list_shards(str(out))[0])):
        with MediaReader(raw["mp4"]) as r:
            w = r.read(0.0, num_frames=2, fps=10.0, sample_rate=8000, num_samples=800)
        # the clip starts with the source frame at 2k seconds: counters 40k and 40k + 2 (brightness x2)
        np.testing.assert_allclose(w.frames.reshape(2, -1).mean(1), [80 * k, 80 * k + 4], atol=2.0)
        assert np.abs(w.audio).min() > 0.1  # audio present from the clip's first sample
    ds = ShardDataset(str(out), CFG, None, train=False)
    assert ds.num_shards == 1


def test_rank_worker_split_covers_every_shard_exactly_once_per_epoch():
    shards = [f"s{i:03d}.tar" for i in range(11)]
    orders = []
    for epoch in range(3):
        seen = []
        for rank in range(2):
            for worker in range(3):
                seen += split_shards(shards, rank=rank, world_size=2, worker=worker, num_workers=3, epoch=epoch, seed=5)
        assert sorted(seen) == shards  # every shard once, none twice
        orders.append(seen)
    assert orders[0] != orders[1]  # reshuffled each epoch, the same on every rank


def test_loader_workers_on_two_ranks_read_each_sample_once_per_epoch(synth_corpus, tmp_path):
    prepare_shards(str(synth_corpus / "pretrain"), tmp_path / "sh", max_count=3)
    n_clips = len(list((synth_corpus / "pretrain").glob("*.mp4")))
    keys = []
    for rank in range(2):
        ds = build_dataset(str(tmp_path / "sh"), CFG, None, train=True, rank=rank, world_size=2, seed=3)
        loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
        for s in loader:  # endless: stop at the first sample of epoch 1
            if s["_pos"][1][0] > 0:
                break
            keys.append(s["key"].rsplit("@", 1)[0])
    assert len(keys) == n_clips and len(set(keys)) == n_clips


def test_bad_shards_are_counted_and_the_stream_goes_on(synth_corpus, tmp_path):
    prepare_shards(str(synth_corpus / "retrieval"), tmp_path / "sh", max_count=4)
    shards = list_shards(str(tmp_path / "sh"))
    data = open(shards[0], "rb").read()
    with open(tmp_path / "sh" / "zz-broken.tar", "wb") as f:
        f.write(data[: len(data) // 3])
    ds = ShardDataset(str(tmp_path / "sh"), CFG, None, train=True, shuffle_buffer=2)
    stream = iter(make_loader(ds, batch_size=4, num_workers=0))
    many = [next(stream) for _ in range(6)]  # 6 x 4 samples: more than two epochs of 6 clips
    assert all(len(b["key"]) == 4 for b in many)  # training batches keep their size
    assert ds.stats()["reasons"].get("bad_shard", 0) >= 1
    ds2 = ShardDataset(str(tmp_path / "sh"), CFG, None, train=False)
    batches = list(make_loader(ds2, batch_size=4, num_workers=0, drop_last=False))
    assert ds2.stats()["reasons"].get("bad_shard") == 1
    assert sum(len(b["key"]) for b in batches) >= 1


def test_shard_patterns():
    assert expand_braces("a-{00..02}.tar") == ["a-00.tar", "a-01.tar", "a-02.tar"]
    assert expand_braces("{x,y}/{0..1}.tar") == ["x/0.tar", "x/1.tar", "y/0.tar", "y/1.tar"]
