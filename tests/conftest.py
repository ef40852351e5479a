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
