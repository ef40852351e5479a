"""The built-in end-to-end demo (``vatt demo``): synthetic corpus -> pretrain -> evaluate -> report.

Steps, all on this machine (default: the ``tiny`` preset on CPU, ~10 minutes of pretraining):

1. ``vatt data synth`` corpus (shapes, tones and narrations that share meaning; docs/DATA.md),
   sized to the budget: ``100 x minutes`` pretraining clips (at least 200), so that a machine that
   fills the budget sees each clip a bounded number of times instead of memorising a small corpus.
2. Vocabulary from the pretraining captions; ``windows_per_clip`` augmented windows of every
   pretraining and audio-only clip decoded once through the real pipeline (decoding dominates
   on a small CPU, so the demo trains from these in-memory windows; ``vatt pretrain`` streams).
3. Pretraining with the trainer of :mod:`vatt.train` for as many steps as fit the time budget
   (measured on the first batches), at most ``MAX_PASSES`` passes over the pretraining clips,
   into ``OUT/run``. Every ~1/12 of the run the model is scored on the held-out ``validation/``
   clips (text<->video mean rank; never the test clips) and the best weights are kept.
4. The selected weights (``OUT/model``) and the same architecture at random initialisation are
   evaluated: zero-shot text->video retrieval on the held-out ``retrieval/`` clips and a linear
   probe of the motion (right / down / bounce; shape is barely learnt by this 64x64 two-layer model
   in minutes, see docs/TRAINING.md) trained on ``labelled/train``, tested on ``labelled/test``,
   both on the average of 4 windows per clip (the paper trains on one centre window; for motion
   that leaves the classifier a different feature distribution at test: docs/TRAINING.md).
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
from .progress import Progress, track
from .tables import format_table
from .train.config import TrainConfig, load_train_config

log = logging.getLogger(__name__)

DEMO_DEFAULTS = {  # per preset
    "tiny": {
        "clips_per_minute": 100,  # pretraining clips per minute of budget (a quiet 2-core CPU: ~300 steps of 32)
        "min_clips": 200,  # 500 steps: 1000 clips give better retrieval, 200 a better probe (docs/TRAINING.md)
        "probe_train": 400,  # labelled clips (at most 2 x clips), 4 windows averaged each
        "probe_test": 200,  # (at most clips), 4 windows averaged each
        "probe_windows": 4,  # train and test alike (eval/linear.py: train_windows), docs/TRAINING.md#vatt-demo
        "probe_label": "motion",  # right / down / bounce (chance 1/3); see docs/TRAINING.md#vatt-demo
    },
}
MAX_PASSES = 100  # planned steps never see a pretraining clip more often than this
VALIDATION_EVALS = 12  # validation scores over a planned run


def default_clips(minutes: float, preset: str = "tiny") -> int:
    """Pretraining clips for a ``minutes`` budget: enough that a fast machine does not memorise them."""
    d = DEMO_DEFAULTS.get(preset, DEMO_DEFAULTS["tiny"])
    return max(d["min_clips"], int(round(d["clips_per_minute"] * minutes)))


def default_windows(clips: int) -> int:
    """Cached windows per clip: 4 for a small corpus, 2 from 400 clips (decoding time and memory)."""
    return max(2, min(4, 800 // max(1, clips)))


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

    from .train.pretrain import Pretraining

    probe = cfg.override({"steps": steps + 1, "checkpoint_every": 10**9, "log_every": 10**9, "data.num_workers": 0,
                          "eval_every": 0})
    trainer = Pretraining(probe, data, run_dir, vocab=vocab)
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


class CheckpointSelector:
    """Wraps the trainer's per-step callback: every ``every`` steps it scores the model on the
    validation set (mean rank of the right clip, text->video and video->text averaged; lower is
    better) and keeps a copy of the best weights. Validation clips are neither trained on nor
    tested on."""

    def __init__(self, val_set, every: int, device, callback=None):
        self.val_set, self.every, self.device, self.callback = val_set, max(1, every), device, callback
        self.trainer = None  # set before fit()
        self.history: list[dict] = []
        self.best: tuple[float, int, dict] | None = None

    def score(self, model, step: int) -> dict:
        from .embed import extract_features
        from .eval.retrieval import retrieval_from_features

        dev = torch.device(self.device)
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            feats = extract_features(model, self.val_set, outputs=["video_vt", "text_vt"], batch_size=8,
                                     device=self.device)
        ret = retrieval_from_features(feats)
        t2v, v2t = ret["text_to_video"], ret["video_to_text"]
        rec = {"step": step, "mean_rank": (t2v["MeanR"] + v2t["MeanR"]) / 2, "R@5": t2v["R@5"], "MedR": t2v["MedR"]}
        self.history.append(rec)
        if self.best is None or rec["mean_rank"] < self.best[0]:
            self.best = (rec["mean_rank"], step, {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
        log.debug("step %d: validation mean rank %.2f (text->video R@5 %.3f, MedR %.1f)", step, rec["mean_rank"],
                 rec["R@5"], rec["MedR"])
        return rec

    def __call__(self, m: dict) -> None:
        if self.callback is not None:
            self.callback(m)
        if "eval" in m or self.trainer is None or m["step"] % self.every:
            return
        rec = self.score(self.trainer.model, m["step"])
        if self.callback is not None:
            self.callback({"step": m["step"], "validation": rec})


# -- plots --------------------------------------------------------------------------------------
def plot_losses(metrics_path: Path, out_path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .tools.visualize import save_figure

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
    path = save_figure(fig, out_path)
    plt.close(fig)
    return path


# -- evaluation ---------------------------------------------------------------------------------
def evaluate_models(models: dict, retrieval_set: ItemList, probe_train: ItemList, probe_test: ItemList, *,
                    device, plots_dir: Path | None = None, probe_windows: int = 4) -> dict:
    """Retrieval + linear probe (``probe_windows`` averaged per training and test clip) for each
    model; optional grid and t-SNE plots."""
    from .embed import extract_features
    from .eval.linear import linear_probe
    from .eval.retrieval import retrieval_from_features, text_queries, window_similarity

    results, feats_by_model = {}, {}
    for name, model in models.items():
        feats = extract_features(model, retrieval_set, outputs=["video_vt", "text_vt"], batch_size=8, device=device)
        feats_by_model[name] = feats
        ret = retrieval_from_features(feats)
        probe = linear_probe(model, probe_train, probe_test, modality="video", classifier="logistic",
                             num_windows=probe_windows, train_windows=probe_windows, device=device)
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
        clips: pretraining clips to generate (default :func:`default_clips`: 100 per minute, >= 200).
        windows_per_clip: augmented windows decoded per clip (default :func:`default_windows`).
        corpus: use an existing ``vatt data synth`` output instead of generating one (it needs a
            ``validation/`` split, generator version 2).
        overrides: training config overrides (``key=value``), as for ``vatt pretrain``.
        steps: a fixed number of pretraining steps instead of filling ``minutes`` (no time limit, no
            pass bound; ``minutes`` still sizes the default corpus).
        progress: phases (corpus, decoding, evaluation); see :mod:`vatt.progress`.
        callback: the trainer's per-step metrics callback (the CLI's training bar); it also gets
            ``{"step", "validation": {...}}`` after each validation score.
    """
    t_start = time.perf_counter()
    threads = torch.get_num_threads()
    try:
        return _run_demo(out, minutes, preset, device, clips, windows_per_clip, overrides, corpus, steps, num_workers,
                         progress, callback, seed, t_start, threads)
    finally:
        torch.set_num_threads(threads)


def _run_demo(out, minutes, preset, device, clips, windows_per_clip, overrides, corpus, steps, num_workers, progress,
              callback, seed, t_start, threads) -> dict:
    from . import create_model, load_model
    from .data import DataConfig, build_dataset, build_eval_dataset, make_corpus
    from .data.vocab import caption_texts
    from .errors import InputError
    from .text import WordTokenizer
    from .train.engine import resolve_device
    from .train.pretrain import Pretraining

    out = Path(out)
    defaults = DEMO_DEFAULTS.get(preset, DEMO_DEFAULTS["tiny"])
    clips = clips or default_clips(minutes, preset)
    windows_per_clip = windows_per_clip or default_windows(clips)
    cfg = load_train_config(preset, [f"device={device}", *overrides])  # bad settings: refused before any work
    dev = resolve_device(cfg.device)
    out.mkdir(parents=True, exist_ok=True)

    # 1. corpus
    corpus = Path(corpus) if corpus is not None else out / "corpus"
    if not (corpus / "corpus.json").is_file():
        sizes = {"labelled_train": min(defaults["probe_train"], 2 * clips),
                 "labelled_test": min(defaults["probe_test"], clips)}
        log.info("generating the synthetic corpus (%d pretraining clips) in %s", clips, corpus)
        make_corpus(corpus, clips=clips, seed=seed, workers=max(1, min(2, os.cpu_count() or 1)),
                    progress=progress, label=defaults["probe_label"], **sizes)
    meta = json.loads((corpus / "corpus.json").read_text())
    src = {k: str(corpus / v) for k, v in meta["sources"].items()}
    if "validation" not in src:
        raise InputError(f"{corpus} has no validation/ split (made by an older `vatt data synth`); "
                         "generate it again or leave out --corpus")

    # 2. vocabulary, decoded training windows, the validation set
    t_train = time.perf_counter()
    vocab = WordTokenizer.build(caption_texts([src["pretrain"]]))
    model_cfg = cfg.model_config()
    dcfg = DataConfig.from_model_config(model_cfg, cfg.data.augment)
    train_sources = [src["pretrain"], src["audio_only"]]
    dataset = build_dataset(train_sources, dcfg, vocab, train=True, seed=cfg.seed)
    windows, data_stats = cache_windows(dataset, windows_per_clip, seed=cfg.seed, num_workers=num_workers,
                                        progress=progress)
    train_clips = len(dataset)
    val_set = materialise(build_eval_dataset(src["validation"], dcfg, vocab, num_windows=4), progress,
                          "decoding validation set")

    # 3. pretraining, sized to the budget and bounded in passes over the clips
    left = minutes * 60 - (time.perf_counter() - t_train)
    max_steps = max(10, MAX_PASSES * train_clips // cfg.batch_size)
    fixed = steps is not None
    if steps is None:
        # A shared CPU's speed varies: plan 1.5x the steps the measured speed allows and let the
        # time limit end the run (the schedule is then cut, not stretched); an idle machine
        # finishes the whole schedule early instead of idling.
        per_step = _seconds_per_step(cfg, windows, vocab, out / ".step-probe")
        if threads > 1 and dev.type == "cpu":
            # On a CPU shared with other jobs, intra-op threads wait for each other (measured here at
            # load 8 on 2 cores: 2.5 s a step with 2 threads, 0.6 s with 1): keep the faster.
            torch.set_num_threads(1)
            one = _seconds_per_step(cfg, windows, vocab, out / ".step-probe")
            log.info("%.2f s/step with %d threads, %.2f s/step with 1", per_step, threads, one)
            if one < per_step:
                per_step = one
            else:
                torch.set_num_threads(threads)
        steps = min(max_steps, max(10, int(1.5 * left / per_step)))
        log.info("planning %d steps (%.2f s/step measured, %.1f min left, at most %d passes = %d steps)", steps,
                 per_step, left / 60, MAX_PASSES, max_steps)
    warmup = min(cfg.optim.warmup_steps, max(1, steps // 10))
    cfg = cfg.override({"steps": steps, "optim.warmup_steps": warmup, "checkpoint_every": max(50, steps // 5),
                        "data.num_workers": 0,
                        "max_minutes": max(0.5, left / 60) if minutes and not fixed else 0.0})
    cfg.command = f"vatt demo --out {out} --minutes {minutes} --preset {preset} --device {device}"
    selector = CheckpointSelector(val_set, max(10, steps // VALIDATION_EVALS), str(dev), callback)
    trainer = Pretraining(cfg, windows, out / "run", vocab=vocab, callback=selector)
    selector.trainer = trainer
    result = trainer.fit()
    if not selector.history or selector.history[-1]["step"] != result.step:
        selector.score(trainer.model, result.step)  # the last weights compete too
    best_score, best_step, best_state = selector.best
    trainer.model.load_state_dict(best_state)
    trainer.model.save_pretrained(out / "model")
    del trainer
    train_seconds = time.perf_counter() - t_train

    # 4. evaluation: the selected weights vs the same architecture at random initialisation
    trained = load_model(out / "model", device=dev)
    torch.manual_seed(cfg.seed)
    random_init = create_model(cfg.model, vocab=vocab, **cfg.model_overrides).to(dev).eval()
    retrieval_set = materialise(build_eval_dataset(src["retrieval"], dcfg, vocab, num_windows=4), progress,
                                "decoding retrieval set")
    classes = meta.get("classes")
    pw = defaults["probe_windows"]
    probe_train = materialise(build_eval_dataset(src["train"], dcfg, vocab, num_windows=pw, classes=classes),
                              progress, "decoding probe train set")
    probe_test = materialise(build_eval_dataset(src["test"], dcfg, vocab, num_windows=pw, classes=classes),
                             progress, "decoding probe test set")
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    results = evaluate_models({"pretrained": trained, "random_init": random_init}, retrieval_set, probe_train,
                              probe_test, device=dev, plots_dir=plots, probe_windows=pw)
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
                         "classes": classes, "label": meta.get("label"), "num_train": len(probe_train),
                         "num_test": len(probe_test),
                         "classifier": "logistic", "windows": pw,
                         "features": f"video AGG, {pw} windows averaged per training and test clip"},
        "train": {"steps": result.step, "planned_steps": steps, "max_steps": max_steps,
                  "passes": round(result.step * cfg.batch_size / train_clips, 1), "train_clips": train_clips,
                  "seconds": round(result.seconds, 1),
                  "clips_per_second": round(result.clips_per_second, 2), "final_loss": result.final_loss,
                  "phase_seconds": round(train_seconds, 1), "stopped": result.stopped,
                  "batch_size": cfg.batch_size, "windows_cached": len(windows), "data": data_stats},
        "checkpoint": {"step": best_step, "selected_by": "validation mean rank (text<->video)",
                       "validation_mean_rank": round(best_score, 3), "num_validation": len(val_set),
                       "path": str(out / "model"), "history": selector.history},
        "config": {"preset": preset, "device": str(dev), "minutes": minutes, "clips": meta["counts"],
                   "windows_per_clip": windows_per_clip, "vocab_size": len(vocab), "seed": seed,
                   "threads": torch.get_num_threads()},
        "total_seconds": round(time.perf_counter() - t_start, 1),
        "plots": sorted(p.name for p in plots.glob("*.png")),
    }
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", format_report_markdown(report))
    log.info("demo finished in %.1f min; report in %s", report["total_seconds"] / 60, out / "report.md")
    return report


def _counts(clips: int, **sizes) -> dict:
    from .data.synth import default_counts

    return default_counts(clips, **sizes)


def _fmt(x) -> str:
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def format_report_table(report: dict) -> str:
    """The demo's results as an aligned text table."""
    rr, lp, tr = report["retrieval"], report["linear_probe"], report["train"]
    rows = []
    for k in ("R@1", "R@5", "R@10", "MedR"):
        chance = _fmt(rr["chance_R@1"]) if k == "R@1" else ""
        rows.append((f"text->video {k}", _fmt(rr["pretrained"][k]), _fmt(rr["random_init"][k]), chance))
    label = f" ({lp['label']})" if lp.get("label") else ""
    rows.append((f"linear probe accuracy{label}", _fmt(lp["pretrained"]), _fmt(lp["random_init"]), _fmt(lp["chance"])))
    table = format_table(rows, ("", "pretrained", "random init", "chance"))
    ck = report["checkpoint"]
    return (table + "\n\n" + f"pretraining: {tr['steps']} steps of {tr['batch_size']} clips in {tr['seconds']:.0f} s "
            f"({tr['clips_per_second']:.1f} clips/s), {tr['passes']:.0f} passes over {tr['train_clips']} clips, "
            f"final loss {tr['final_loss']:.3f}\n"
            f"evaluated: the weights of step {ck['step']} (best of {len(ck['history'])} validation scores on "
            f"{ck['num_validation']} other held-out clips)")


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
        f"{report['linear_probe'].get('windows', 1)} windows averaged per clip, "
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
