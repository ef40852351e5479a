"""The built-in end-to-end demo (``vatt demo``): synthetic corpus -> pretrain -> evaluate -> report.

Steps, all on this machine (default: the ``tiny`` preset on CPU, ~10 minutes of pretraining):

1. ``vatt data synth`` corpus (shapes, tones and narrations that share meaning; docs/DATA.md).
2. Vocabulary from the pretraining captions; ``windows_per_clip`` augmented windows of every
   pretraining and audio-only clip decoded once through the real pipeline (decoding dominates
   on a small CPU, so the demo trains from these in-memory windows; ``vatt pretrain`` streams).
3. Pretraining with :func:`vatt.train.pretrain` for as many steps as fit the time budget
   (measured on the first batches), into ``OUT/run`` (checkpoints, metrics, final model).
4. Zero-shot text->video retrieval on the held-out ``retrieval/`` clips and a linear probe
   (shape classes) for the trained model and for the same architecture at random init.
5. ``report.json``, ``report.md`` and PNG plots: loss curves, a retrieval example grid, t-SNE of
   video and text embeddings (trained vs random init).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Sequence

import torch
from torch.utils.data import Dataset

from .atomic_io import atomic_write_json, atomic_write_text
from .progress import Progress, advance, start as start_phase, track
from .tables import format_table
from .train.config import TrainConfig, load_train_config

log = logging.getLogger(__name__)

DEMO_DEFAULTS = {  # per preset: corpus size and windows cached per clip
    "tiny": {"clips": 200, "windows_per_clip": 4},
}


class ClipMemory(Dataset):
    """Batch-contract items held in memory (video as uint8 to save 4x, audio as float16)."""

    def __init__(self, items: list[dict], classes=None):
        self.video = torch.stack([((it["video"].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8) for it in items])
        self.audio = torch.stack([it["audio"].to(torch.float16) for it in items])
        self.text = torch.stack([it["text"] for it in items])
        self.masks = {k: torch.stack([torch.as_tensor(it[k], dtype=torch.float32) for it in items])
                      for k in ("video_mask", "audio_mask", "text_mask")}
        self.keys = [it.get("key", str(i)) for i, it in enumerate(items)]
        self.classes = classes

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> dict:
        item = {"video": self.video[i].float() / 127.5 - 1.0, "audio": self.audio[i].float(), "text": self.text[i],
                "key": self.keys[i]}
        item.update({k: v[i] for k, v in self.masks.items()})
        return item


class ItemList(Dataset):
    """A materialised evaluation set (decoded once, evaluated for both models)."""

    def __init__(self, items: list[dict], classes=None):
        self.items, self.classes = items, classes

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def cache_windows(dataset, windows_per_clip: int, *, seed: int = 0, num_workers: int = 2,
                  progress: Progress | None = None) -> tuple[ClipMemory, dict]:
    """Decode ``windows_per_clip`` augmented windows of every clip (item ``(w, i)`` uses the RNG
    of :class:`vatt.train.batches.SeededItems`, as pretraining would). Returns the windows and
    the data statistics (good / bad / reasons)."""
    from .data.loader import make_loader
    from .train.batches import SeededItems

    items = SeededItems(dataset, seed)
    keys = [(w, i) for w in range(windows_per_clip) for i in range(len(dataset))]
    loader = make_loader(items, 16, num_workers=num_workers, sampler=keys, shuffle=False, drop_last=False,
                         persistent_workers=False, seed=seed)
    out: list[dict] = []
    for batch in track(progress, loader, total=len(keys), desc="decoding windows", unit="clip",
                       size=lambda b: len(b["key"])):
        for j in range(len(batch["key"])):
            out.append({k: batch[k][j] for k in ("video", "audio", "text", "video_mask", "audio_mask", "text_mask")}
                       | {"key": batch["key"][j]})
    return ClipMemory(out), loader.stats()


def materialise(dataset, progress: Progress | None = None, desc: str = "decoding") -> ItemList:
    items = []
    for i in track(progress, range(len(dataset)), desc=desc, unit="clip"):
        it = dataset[i]
        if not it.get("_skip"):
            it = {k: v for k, v in it.items() if k != "_events"}
            items.append(it)
    return ItemList(items, getattr(dataset, "classes", None))


def _seconds_per_step(cfg: TrainConfig, data: Dataset, vocab, run_dir: Path, steps: int = 3) -> float:
    """Median time of the trainer's own optimiser step for this config (precision, compile,
    accumulation included), after one warm-up step; measured in a scratch run directory."""
    import shutil

    from .train.loop import Trainer

    probe = cfg.override({"steps": steps + 1, "checkpoint_every": 10**9, "log_every": 10**9, "data.num_workers": 0,
                          "eval_every": 0})
    trainer = Trainer(probe, data, run_dir, vocab=vocab)
    try:
        trainer.setup()
        times = []
        for _ in range(steps + 1):
            t0 = time.perf_counter()
            trainer.train_step()
            times.append(time.perf_counter() - t0)
    finally:
        trainer.close()
        shutil.rmtree(run_dir, ignore_errors=True)
    return sorted(times[1:])[len(times[1:]) // 2]


# -- plots --------------------------------------------------------------------------------------
def plot_losses(metrics_path: Path, out_path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .tools.visualize import _save_figure

    rows = [json.loads(ln) for ln in metrics_path.read_text().splitlines() if ln.strip()]
    rows = [r for r in rows if "loss" in r and math.isfinite(r["loss"])]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [r["step"] for r in rows]
    for key, label in (("loss", "total"), ("loss_va", "video-audio (NCE)"), ("loss_vt", "video-text (MIL-NCE)")):
        ax.plot(steps, [r[key] for r in rows], label=label, lw=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("pretraining loss")
    ax.legend()
    ax.grid(alpha=0.3)
    path = _save_figure(fig, out_path)
    plt.close(fig)
    return path


# -- evaluation ---------------------------------------------------------------------------------
def evaluate_models(models: dict, retrieval_set: ItemList, probe_train: ItemList, probe_test: ItemList, *,
                    device, plots_dir: Path | None = None) -> dict:
    """Retrieval + linear probe for each model; optional grid and t-SNE plots."""
    from .eval.embed import extract_features
    from .eval.linear import linear_probe
    from .eval.retrieval import retrieval_from_features, text_queries, window_similarity

    results, feats_by_model = {}, {}
    for name, model in models.items():
        feats = extract_features(model, retrieval_set, outputs=["video_vt", "text_vt"], batch_size=8, device=device)
        feats_by_model[name] = feats
        ret = retrieval_from_features(feats)
        probe = linear_probe(model, probe_train, probe_test, modality="video", classifier="logistic",
                             num_windows=4, device=device)
        results[name] = {"retrieval": ret, "linear_probe": probe}
    if plots_dir is not None:
        from .tools.visualize import retrieval_grid, tsne_figure

        feats = feats_by_model["pretrained"]
        queries = text_queries(feats)
        sim = window_similarity(queries, feats["video_vt"])
        n_show = min(6, len(retrieval_set))
        tok = models["pretrained"].tokenizer
        ids = feats["text_ids"]
        centre = text_queries({"text_vt": ids.float(), "text_ids": ids})[:, 0].long()
        sentences = [tok.decode(centre[i].tolist()) for i in range(n_show)]
        frames = torch.stack([it["video"][0, it["video"].shape[1] // 2] for it in retrieval_set.items])
        retrieval_grid(sentences, frames, sim[:n_show], plots_dir / "retrieval_examples.png", k=4)
        panels = {}
        for name, f in feats_by_model.items():
            panels[f"{name}: S_vt embeddings"] = {"video": f["video_vt"].mean(1), "text": text_queries(f)[:, 0]}
        n = len(retrieval_set)
        tsne_figure(panels, plots_dir / "tsne_video_text.png", perplexity=max(2.0, min(30.0, (n - 1) / 3)))
    return results


# -- the demo -----------------------------------------------------------------------------------
def run_demo(out: str | os.PathLike, *, minutes: float = 10.0, preset: str = "tiny", device: str = "cpu",
             clips: int | None = None, windows_per_clip: int | None = None, overrides: Sequence[str] = (),
             corpus: str | os.PathLike | None = None, steps: int | None = None, num_workers: int = 2,
             progress: Progress | None = None, callback=None, seed: int = 0) -> dict:
    """Run the demo into ``out`` and return the report (also written to ``out/report.json``).

    Args:
        minutes: time budget of the pretraining phase (window decoding + optimisation).
        preset: training preset (``tiny``; larger ones want a GPU and more ``minutes``).
        device: "cpu", "cuda" or "auto".
        clips: pretraining clips to generate (default 200 for tiny).
        corpus: use an existing ``vatt data synth`` output instead of generating one.
        overrides: training config overrides (``key=value``), as for ``vatt pretrain``.
        steps: a fixed number of pretraining steps instead of filling ``minutes`` (tests).
        progress: phases (corpus, decoding, evaluation); see :mod:`vatt.progress`.
        callback: the trainer's per-step metrics callback (the CLI's training bar).
    """
    from . import create_model, load_model
    from .data import DataConfig, build_dataset, build_eval_dataset, make_corpus
    from .data.vocab import caption_texts
    from .text import WordTokenizer
    from .train.loop import pretrain, resolve_device

    t_start = time.perf_counter()
    out = Path(out)
    defaults = DEMO_DEFAULTS.get(preset, DEMO_DEFAULTS["tiny"])
    clips = clips or defaults["clips"]
    windows_per_clip = windows_per_clip or defaults["windows_per_clip"]
    cfg = load_train_config(preset, [f"device={device}", *overrides])  # bad settings: refused before any work
    dev = resolve_device(cfg.device)
    out.mkdir(parents=True, exist_ok=True)

    # 1. corpus
    corpus = Path(corpus) if corpus is not None else out / "corpus"
    if not (corpus / "corpus.json").is_file():
        log.info("generating the synthetic corpus (%d clips) in %s", clips, corpus)
        start_phase(progress, sum(_counts(clips).values()), "synthetic corpus", "file")
        make_corpus(corpus, clips=clips, seed=seed, workers=max(1, min(2, os.cpu_count() or 1)),
                    progress=(lambda n=1: advance(progress, n)) if progress else None)
    meta = json.loads((corpus / "corpus.json").read_text())
    src = {k: str(corpus / v) for k, v in meta["sources"].items()}

    # 2. vocabulary and decoded training windows
    t_train = time.perf_counter()
    vocab = WordTokenizer.build(caption_texts([src["pretrain"]]))
    model_cfg = cfg.model_config()
    dcfg = DataConfig.from_model_config(model_cfg, cfg.data.augment)
    train_sources = [src["pretrain"], src["audio_only"]]
    dataset = build_dataset(train_sources, dcfg, vocab, train=True, seed=cfg.seed)
    windows, data_stats = cache_windows(dataset, windows_per_clip, seed=cfg.seed, num_workers=num_workers,
                                        progress=progress)

    # 3. pretraining, sized to the budget
    left = minutes * 60 - (time.perf_counter() - t_train)
    if steps is None:
        # A shared CPU's speed varies: plan 1.5x the steps the measured speed allows and let the
        # time limit end the run (the schedule is then cut, not stretched); an idle machine
        # finishes the whole schedule early instead of idling.
        per_step = _seconds_per_step(cfg, windows, vocab, out / ".step-probe")
        steps = max(10, int(1.5 * left / per_step))
        log.info("planning %d steps (%.2f s/step measured, %.1f min left)", steps, per_step, left / 60)
    warmup = min(cfg.optim.warmup_steps, max(1, steps // 10))
    cfg = cfg.override({"steps": steps, "optim.warmup_steps": warmup, "checkpoint_every": max(50, steps // 5),
                        "data.num_workers": 0, "max_minutes": max(0.5, left / 60) if minutes else 0.0})
    cfg.command = f"vatt demo --out {out} --minutes {minutes} --preset {preset} --device {device}"
    result = pretrain(cfg, windows, out / "run", vocab=vocab, callback=callback)
    train_seconds = time.perf_counter() - t_train

    # 4. evaluation: the trained model vs the same architecture at random initialisation
    trained = load_model(out / "run", device=dev)  # run/model: written at the end or the time limit
    torch.manual_seed(cfg.seed)
    random_init = create_model(cfg.model, vocab=vocab, **cfg.model_overrides).to(dev).eval()
    retrieval_set = materialise(build_eval_dataset(src["retrieval"], dcfg, vocab, num_windows=4), progress,
                                "decoding retrieval set")
    classes = meta.get("classes")
    probe_train = materialise(build_eval_dataset(src["train"], dcfg, vocab, num_windows=1, classes=classes),
                              progress, "decoding probe train set")
    probe_test = materialise(build_eval_dataset(src["test"], dcfg, vocab, num_windows=4, classes=classes),
                             progress, "decoding probe test set")
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    results = evaluate_models({"pretrained": trained, "random_init": random_init}, retrieval_set, probe_train,
                              probe_test, device=dev, plots_dir=plots)
    plot_losses(out / "run" / "metrics.jsonl", plots / "loss_curves.png")

    # 5. report
    def r(name, direction="text_to_video"):
        res = results[name]["retrieval"][direction]
        return {k: res[k] for k in ("R@1", "R@5", "R@10", "MedR", "MeanR")}

    n_videos = results["pretrained"]["retrieval"]["num_videos"]
    report = {
        "retrieval": {"pretrained": r("pretrained"), "random_init": r("random_init"), "chance_R@1": 1.0 / n_videos,
                      "num_videos": n_videos, "direction": "text_to_video", "num_windows": 4,
                      "video_to_text": {"pretrained": r("pretrained", "video_to_text"),
                                        "random_init": r("random_init", "video_to_text")}},
        "linear_probe": {"pretrained": results["pretrained"]["linear_probe"]["accuracy"],
                         "random_init": results["random_init"]["linear_probe"]["accuracy"],
                         "chance": results["pretrained"]["linear_probe"]["chance"],
                         "classes": classes, "num_train": len(probe_train), "num_test": len(probe_test),
                         "classifier": "logistic", "features": "video AGG, 4 windows averaged at test"},
        "train": {"steps": result.step, "seconds": round(result.seconds, 1),
                  "clips_per_second": round(result.clips_per_second, 2), "final_loss": result.final_loss,
                  "phase_seconds": round(train_seconds, 1), "stopped": result.stopped,
                  "batch_size": cfg.batch_size, "windows_cached": len(windows), "data": data_stats},
        "config": {"preset": preset, "device": str(dev), "minutes": minutes, "clips": meta["counts"],
                   "vocab_size": len(vocab), "seed": seed},
        "total_seconds": round(time.perf_counter() - t_start, 1),
        "plots": sorted(p.name for p in plots.glob("*.png")),
    }
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", format_report_markdown(report))
    log.info("demo finished in %.1f min; report in %s", report["total_seconds"] / 60, out / "report.md")
    return report


def _counts(clips: int) -> dict:
    from .data.synth import default_counts

    return default_counts(clips)


def _fmt(x) -> str:
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def format_report_table(report: dict) -> str:
    """The demo's results as an aligned text table."""
    rr, lp, tr = report["retrieval"], report["linear_probe"], report["train"]
    rows = []
    for k in ("R@1", "R@5", "R@10", "MedR"):
        chance = _fmt(rr["chance_R@1"]) if k == "R@1" else ""
        rows.append((f"text->video {k}", _fmt(rr["pretrained"][k]), _fmt(rr["random_init"][k]), chance))
    rows.append(("linear probe accuracy", _fmt(lp["pretrained"]), _fmt(lp["random_init"]), _fmt(lp["chance"])))
    table = format_table(rows, ("", "pretrained", "random init", "chance"))
    return (table + "\n\n" + f"pretraining: {tr['steps']} steps in {tr['seconds']:.0f} s "
            f"({tr['clips_per_second']:.1f} clips/s), final loss {tr['final_loss']:.3f}")


def format_report_markdown(report: dict) -> str:
    rr = report["retrieval"]
    cfgd = report["config"]
    lines = [
        "# VATT demo report",
        "",
        f"Preset `{cfgd['preset']}` on `{cfgd['device']}`, synthetic corpus {cfgd['clips']}, "
        f"vocabulary {cfgd['vocab_size']} words. Total time {report['total_seconds'] / 60:.1f} min.",
        "",
        f"Zero-shot text->video retrieval on {rr['num_videos']} held-out videos (4 windows each), and a "
        f"linear probe (logistic regression on frozen video AGG features, "
        f"{report['linear_probe']['num_train']} train / {report['linear_probe']['num_test']} test clips, "
        f"classes {report['linear_probe']['classes']}):",
        "",
        "```",
        format_report_table(report),
        "```",
        "",
        "R@K are fractions of queries whose video is in the top K; MedR is the median rank (1 = best).",
        "",
        "![loss curves](plots/loss_curves.png)",
        "",
        "![retrieval examples](plots/retrieval_examples.png)",
        "",
        "![t-SNE of video and text embeddings](plots/tsne_video_text.png)",
        "",
    ]
    return "\n".join(lines)
