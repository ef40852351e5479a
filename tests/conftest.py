"""Shared test set-up: deterministic, small thread count (the CI machine has 2 cores)."""

import os

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "2")
torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory):
    """A small demo corpus (``vatt data synth`` layout, 24 pretraining clips, seed 0), made once
    per test session: pretrain/, audio_only/, labelled/{train,test}.csv, retrieval/, corpus.json."""
    from vatt.data.synth import make_corpus

    out = tmp_path_factory.mktemp("synth_corpus")
    make_corpus(out, clips=24, seed=0)
    return out


@pytest.fixture(scope="session")
def synth_tokenizer(synth_corpus):
    """WordTokenizer built from the synth corpus' pretraining captions (as `vatt vocab build` does)."""
    from vatt.data import caption_texts
    from vatt.text import WordTokenizer

    return WordTokenizer.build(caption_texts(str(synth_corpus / "pretrain")))


TRAIN_STEPS = 30  # all 6 clips rank first after 30 steps (measured); loss 0.35


@pytest.fixture(scope="session")
def memorised_model(synth_corpus, synth_tokenizer, tmp_path_factory):
    """A tiny model trained briefly (video-text NCE, Adam, full batch, a few seconds) on the demo
    corpus' retrieval clips, each paired with its centre caption, so that it has memorised them;
    saved with save_pretrained. Returns (model dir, the query caption of each clip, clip keys).
    Shared by the slow search tests (test_search, test_search_app, test_search_browser)."""
    import vatt
    from vatt.data.config import DataConfig
    from vatt.data.datasets import build_dataset
    from vatt.eval.retrieval import centre_caption
    from vatt.objective import VattObjective

    torch.manual_seed(0)
    model = vatt.create_model("tiny", vocab=synth_tokenizer, **{"dropout": 0.0, "attention_dropout": 0.0,
                                                                 "video.drop_rate": 0.0})
    ds = build_dataset(str(synth_corpus / "retrieval"), DataConfig.from_model_config(model.config),
                       synth_tokenizer, train=False)
    items = [ds[i] for i in range(len(ds))]
    batch = {k: torch.stack([it[k] for it in items]) for k in ("video", "text", "video_mask", "text_mask")}
    centre = [centre_caption(t) for t in batch["text"]]
    batch["text"] = torch.stack([t[c : c + 1] for t, c in zip(batch["text"], centre)])  # [B, 1, 16]
    objective = VattObjective()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(TRAIN_STEPS):
        loss = objective(model(video=batch["video"], text=batch["text"]), batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = tmp_path_factory.mktemp("memorised") / "model"
    model.save_pretrained(out)
    return out, [it["captions"][c] for it, c in zip(items, centre)], [it["key"] for it in items]
