"""Training streams never run dry, see every clip once per epoch, and resume where they stopped;
shards are read from URLs as webdataset users expect."""

import functools
import hashlib
import http.server
import json
import threading
from collections import defaultdict

import numpy as np
import pytest
import torch

from vatt.data import DataConfig, ShardDataset, build_dataset, list_shards, prepare_shards
from vatt.data.shards import iter_tar_samples
from vatt.train.batches import TrainBatches

CFG = DataConfig(num_frames=4, fps=10.0, crop_size=32, sample_rate=8000, num_samples=3200)


def base(key: str) -> str:
    return key.rsplit("@", 1)[0]


@pytest.fixture(scope="module")
def one_shard(synth_corpus, tmp_path_factory):
    """The 6 retrieval clips of the synth corpus in one shard."""
    out = tmp_path_factory.mktemp("one_shard")
    prepare_shards(str(synth_corpus / "retrieval"), out, max_count=100)
    assert len(list_shards(str(out))) == 1
    return out


def clip_keys(shard_dir) -> set[str]:
    return {f"{s}:{raw['__key__']}" for s in list_shards(str(shard_dir)) for raw in iter_tar_samples(s)}


def test_one_shard_two_workers_three_epochs_every_clip_once_per_epoch(one_shard):
    clips = clip_keys(one_shard)
    assert len(clips) == 6
    ds = build_dataset(str(one_shard), CFG, None, train=True, seed=1)
    batches = TrainBatches(ds, 3, num_workers=2, seed=1)
    # Each worker holds half the shard's samples (3 = one batch) per epoch; they alternate.
    keys = [base(k) for _ in range(8) for k in next(batches)["key"]]  # 4 epochs, never StopIteration
    epochs = [keys[i : i + 6] for i in range(0, len(keys), 6)]
    for epoch in epochs:
        assert sorted(epoch) == sorted(clips)  # every clip once, none twice
    assert epochs[0] != epochs[1] or epochs[1] != epochs[2]  # reshuffled (within-worker buffer)
    batches.close()


def test_three_sources_mixed_every_clip_once_per_epoch_of_its_source(synth_corpus, one_shard):
    sources = [str(one_shard), str(synth_corpus / "retrieval"), str(synth_corpus / "audio_only")]
    members = [clip_keys(one_shard), {str(p) for p in (synth_corpus / "retrieval").glob("*.mp4")},
               {str(p) for p in (synth_corpus / "audio_only").glob("*.wav")}]
    assert [len(m) for m in members] == [6, 6, 6]
    ds = build_dataset(sources, CFG, None, train=True, weights=[1, 1, 1], seed=2)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    seen = defaultdict(list)  # (member, epoch of that member) -> keys, over both workers
    last_epoch = defaultdict(int)  # (worker, member) -> newest epoch seen
    for n, s in enumerate(loader):
        worker, pos = s["_pos"]
        k = next(i for i, m in enumerate(members) if base(s["key"]) in m)
        epoch = pos["members"][k][0]
        seen[k, epoch].append(base(s["key"]))
        last_epoch[worker, k] = max(last_epoch[worker, k], epoch)
        if n == 120:
            break
    complete = 0
    for (k, epoch), keys in seen.items():
        if all(last_epoch[w, k] > epoch for w in range(2)):  # both workers finished this epoch
            assert sorted(keys) == sorted(members[k]), (k, epoch)
            complete += 1
    assert complete >= 3 * 3  # three complete epochs of each source at least


@pytest.mark.parametrize("mixed", [False, True])
def test_interrupted_stream_resumes_at_the_same_position(synth_corpus, one_shard, mixed):
    sources = [str(one_shard), str(synth_corpus / "audio_only")] if mixed else [str(one_shard)]

    def batches(**kw):
        ds = build_dataset(sources, CFG, None, train=True, seed=4, weights=[2, 1] if mixed else None)
        return TrainBatches(ds, 2, num_workers=2, seed=4, **kw)

    straight = batches()
    expected = [next(straight) for _ in range(7)]
    straight.close()
    first = batches()
    for _ in range(3):  # mid-epoch, and the next batch comes from worker 1
        next(first)
    state = json.loads(json.dumps(first.state_dict()))  # as trainer.json stores it
    first.close()
    resumed = batches(start=3, state=state)
    for want in expected[3:]:
        got = next(resumed)
        assert got["key"] == want["key"]
        assert torch.equal(got["video"], want["video"]) and torch.equal(got["audio"], want["audio"])
    resumed.close()


# ---------------------------------------------------------------------------------------------
# Shards over HTTP
# ---------------------------------------------------------------------------------------------
class _DroppingHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files; for names containing 'drop' it sends the headers and a third of the bytes,
    then closes the connection (a server or proxy failing mid-shard)."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        if "drop" not in self.path:
            return super().do_GET()
        data = open(self.translate_path(self.path), "rb").read()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 3])
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture()
def http_server():
    servers = []

    def serve(folder):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                 functools.partial(_DroppingHandler, directory=str(folder)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def test_training_from_http_shards_equals_training_from_the_local_shards(synth_corpus, tmp_path, http_server):
    prepare_shards(str(synth_corpus / "retrieval"), tmp_path / "sh", max_count=2)
    assert len(list_shards(str(tmp_path / "sh"))) == 3
    url = http_server(tmp_path / "sh") + "/shard-{00000..00002}.tar"

    def first_batches(source):
        b = TrainBatches(build_dataset(source, CFG, None, train=True, seed=5), 2, num_workers=2, seed=5)
        out = [next(b) for _ in range(5)]  # more than one epoch
        b.close()
        return out

    local, remote = first_batches(str(tmp_path / "sh")), first_batches(url)
    for a, b in zip(local, remote):
        assert [k.rsplit(".tar:", 1)[1] for k in a["key"]] == [k.rsplit(".tar:", 1)[1] for k in b["key"]]
        for k in ("video", "audio", "text", "video_mask", "audio_mask", "text_mask"):
            assert torch.equal(a[k], b[k]), k


def test_a_connection_dropped_mid_shard_is_a_counted_bad_shard_and_training_goes_on(one_shard, tmp_path,
                                                                                   http_server):
    shard = list_shards(str(one_shard))[0]
    (tmp_path / "ok-0.tar").write_bytes(open(shard, "rb").read())
    (tmp_path / "drop-1.tar").write_bytes(open(shard, "rb").read())
    url = http_server(tmp_path) + "/{ok-0,drop-1}.tar"
    ds = build_dataset(url, CFG, None, train=True, seed=0)
    batches = TrainBatches(ds, 3, num_workers=0, seed=0)
    got = [next(batches) for _ in range(6)]  # 18 clips: the good shard's 6 three times over
    assert all(len(b["key"]) == 3 for b in got)
    stats = batches.stats()
    assert stats["reasons"].get("bad_shard", 0) >= 2  # once per epoch
    assert stats["good"] == 18


def test_pipe_and_fsspec_urls_read_the_same_samples(one_shard):
    import fsspec

    shard = list_shards(str(one_shard))[0]
    want = [(r["__key__"], r["mp4"]) for r in iter_tar_samples(shard)]
    with fsspec.open("memory://bucket/shard-0.tar", "wb") as f:
        f.write(open(shard, "rb").read())
    for url in (f"pipe:cat {shard}", "memory://bucket/shard-0.tar", f"file://{shard}"):
        assert [(r["__key__"], r["mp4"]) for r in iter_tar_samples(url)] == want, url
    globbed = list_shards("memory://bucket/shard-*.tar")  # listed through fsspec
    assert len(globbed) == 1 and [(r["__key__"], r["mp4"]) for r in iter_tar_samples(globbed[0])] == want


def test_object_store_urls_without_their_backend_are_one_line(tmp_path, capsys):
    from vatt.cli.main import main

    pytest.importorskip("fsspec")
    try:
        import s3fs  # noqa: F401

        pytest.skip("s3fs is installed")
    except ImportError:
        pass
    assert main(["data", "check", "s3://bucket/shard-{000..009}.tar"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "s3fs" in err[0]


# ---------------------------------------------------------------------------------------------
# Partitioned prepare
# ---------------------------------------------------------------------------------------------
def _payloads(folder) -> dict[str, str]:
    """sample key -> hash of all its members (names and bytes)."""
    out = {}
    for s in list_shards(str(folder)):
        for raw in iter_tar_samples(s):
            h = hashlib.sha256()
            for ext in sorted(k for k in raw if not k.startswith("__")):
                h.update(ext.encode() + raw[ext])
            assert raw["__key__"] not in out, "duplicate sample"
            out[raw["__key__"]] = h.hexdigest()
    return out


def test_prepare_parts_union_equals_the_one_machine_run(synth_corpus, tmp_path):
    from vatt.cli.main import main

    src = str(synth_corpus / "retrieval")
    one = prepare_shards(src, tmp_path / "one", max_count=2)
    names = set()
    for i in range(3):
        assert main(["data", "prepare", src, str(tmp_path / "parts"), "--max-count", "2", "--part", f"{i}/3"]) == 0
        report = json.loads((tmp_path / "parts" / f"prepare_report.{i:05d}-of-00003.json").read_text())
        assert not names & set(report["shards"])  # shard names never collide
        names |= set(report["shards"])
    assert main(["data", "merge-reports", str(tmp_path / "parts")]) == 0
    merged = json.loads((tmp_path / "parts" / "prepare_report.json").read_text())
    assert _payloads(tmp_path / "parts") == _payloads(tmp_path / "one")
    for key in ("files_total", "files_ok", "clips", "skipped", "source"):
        assert merged[key] == one[key], key
    assert sorted(merged["shards"]) == sorted(names) == sorted(p.name for p in (tmp_path / "parts").glob("*.tar"))


def test_merge_reports_names_missing_parts(synth_corpus, tmp_path, capsys):
    from vatt.cli.main import main

    prepare_shards(str(synth_corpus / "retrieval"), tmp_path, part=(1, 3))
    assert main(["data", "merge-reports", str(tmp_path)]) == 2
    assert "parts [0, 2] of 3" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Readers and layouts
# ---------------------------------------------------------------------------------------------
def test_shards_are_readable_by_the_webdataset_package(synth_corpus, tmp_path):
    wds = pytest.importorskip("webdataset")
    prepare_shards(str(synth_corpus / "retrieval"), tmp_path / "v", max_count=4)
    prepare_shards(str(synth_corpus / "audio_only"), tmp_path / "a", max_count=4)
    for folder in (tmp_path / "v", tmp_path / "a"):
        shards = list_shards(str(folder))
        ours = [{k: v for k, v in r.items() if not k.startswith("__")} | {"__key__": r["__key__"]}
                for s in shards for r in iter_tar_samples(s)]
        theirs = [{k: v for k, v in r.items() if not k.startswith("__")} | {"__key__": r["__key__"]}
                  for r in wds.WebDataset(shards, shardshuffle=False, empty_check=False)]
        assert theirs == ours and len(ours) == 6


def test_audio_only_members_stream_with_video_masked(synth_corpus, tmp_path):
    prepare_shards(str(synth_corpus / "audio_only"), tmp_path / "a")
    samples = list(ShardDataset(str(tmp_path / "a"), CFG, None, train=False))
    assert len(samples) == 6
    assert all(s["video_mask"] == 0 and s["audio_mask"] == 1 for s in samples)


def test_oga_is_audio_and_other_files_are_counted_as_ignored(synth_corpus, tmp_path, caplog):
    from vatt.data import index_source

    wav = next((synth_corpus / "audio_only").glob("*.wav"))
    (tmp_path / "a.oga").write_bytes(wav.read_bytes())  # FFmpeg reads by content
    (tmp_path / "cover.jpg").write_bytes(b"\xff\xd8")
    (tmp_path / "notes.pdf").write_bytes(b"%PDF")
    with caplog.at_level("WARNING"):
        ix = index_source(str(tmp_path))
    assert ix.kind == "audio" and [r.path for r in ix.refs] == [str(tmp_path / "a.oga")]
    assert ix.ignored == 2 and "2 file(s) neither video nor audio" in caplog.text
    s = build_dataset(str(tmp_path), CFG, None, train=False)[0]
    assert s["audio_mask"] == 1 and np.abs(s["audio"].numpy()).max() > 0
    report = prepare_shards(str(tmp_path), tmp_path / "out")
    assert report["ignored"] == 2 and report["clips"] == 1


# ---------------------------------------------------------------------------------------------
# Two ranks (gloo): the split covers every clip once, and each rank resumes its own position
# ---------------------------------------------------------------------------------------------
def _two_rank_stream(rank, world, port, shard_dir, out):
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        def batches(**kw):
            ds = build_dataset(shard_dir, CFG, None, train=True, seed=6, rank=rank, world_size=world)
            return TrainBatches(ds, 2, rank=rank, world_size=world, num_workers=2, seed=6, **kw)

        straight = batches()
        want = [next(straight)["key"] for _ in range(8)]
        straight.close()
        first = batches()
        for _ in range(3):
            next(first)
        state = json.loads(json.dumps(first.state_dict()))  # a collective: every rank's position
        first.close()
        resumed = batches(start=3, state=state)
        got = [next(resumed)["key"] for _ in range(5)]
        resumed.close()
        with open(f"{out}/rank{rank}.json", "w") as f:
            json.dump({"want": want, "got": got, "saved_ranks": len(state["stream"]["ranks"])}, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_split_every_clip_once_per_epoch_and_resume_their_own_positions(synth_corpus, tmp_path):
    import torch.multiprocessing as mp
    from test_objective import free_port

    prepare_shards(str(synth_corpus / "pretrain"), tmp_path / "sh")  # 24 clips, one shard, 4 workers in all
    mp.spawn(_two_rank_stream, args=(2, free_port(), str(tmp_path / "sh"), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    # 6 clips per worker per epoch = 3 batches of 2; a rank's 2 workers alternate: 6 batches = epoch 0.
    epoch0 = [base(k) for r in ranks for b in r["want"][:6] for k in b]
    assert len(epoch0) == 24 and set(epoch0) == clip_keys(tmp_path / "sh")
    for r in ranks:
        assert r["saved_ranks"] == 2 and r["got"] == r["want"][3:]


def test_a_stream_with_no_readable_sample_stops_with_one_line(tmp_path):
    from vatt.errors import DataError

    (tmp_path / "broken.tar").write_bytes(b"not a tar at all" * 100)
    batches = TrainBatches(build_dataset(str(tmp_path), CFG, None, train=True), 2, num_workers=1)
    with pytest.raises(DataError) as err:
        next(batches)  # raised in the loader worker, after two epochs of nothing but bad shards
    assert len(str(err.value).splitlines()) == 1 and "every sample was bad" in str(err.value)
    batches.close()
