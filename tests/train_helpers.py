"""Helpers shared by the training tests: an in-memory dataset and small configurations."""

import torch
from torch.utils.data import Dataset

from vatt.text import WordTokenizer
from vatt.train import load_train_config

VOCAB = WordTokenizer(["<pad>", "<unk>"] + [f"w{i}" for i in range(62)])


class MemoryClips(Dataset):
    """``n`` random Batch-contract items for the tiny geometry (8x64x64 video, 12800 audio samples).

    ``no_text`` lists the items without text (audio-only-like: text mask 0).
    """

    def __init__(self, n: int = 16, seed: int = 0, no_text=()):
        g = torch.Generator().manual_seed(seed)
        self.video = torch.rand(n, 8, 64, 64, 3, generator=g) * 2 - 1
        self.audio = torch.rand(n, 12800, generator=g) * 2 - 1
        self.text = torch.randint(2, len(VOCAB), (n, 5, 16), generator=g)
        self.text_mask = torch.ones(n)
        self.text_mask[list(no_text)] = 0.0

    def __len__(self):
        return len(self.video)

    def __getitem__(self, i):
        return {
            "video": self.video[i], "audio": self.audio[i], "text": self.text[i],
            "video_mask": torch.tensor(1.0), "audio_mask": torch.tensor(1.0), "text_mask": self.text_mask[i],
            "key": f"clip{i}",
        }


def tiny_config(*overrides, deterministic=False):
    """The tiny preset, in-process data loading, metrics every step, and ``key=value`` overrides."""
    base = ["data.num_workers=0", "log_every=1", "batch_size=4", "steps=4", "checkpoint_every=1000"]
    if deterministic:  # no RNG in the forward: data-parallel runs can match one process exactly
        base += ["model.video.drop_rate=0", "model.audio.drop_rate=0", "model.dropout=0", "model.attention_dropout=0"]
    return load_train_config("tiny", base + list(overrides))


def read_metrics(run_dir):
    import json

    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(ln) for ln in lines]
