"""Run one benchmark row's protocol on a downloaded benchmark and compare with the paper.

Every protocol is the generic library function run on the benchmark's own files, read by
:mod:`vatt.data.benchmarks` (nothing is converted to CSV first):

* ``finetune`` rows (Kinetics, Moments in Time, AudioSet, ImageNet): a model that already carries
  a classifier for the benchmark's classes (a converted official fine-tune, ``vatt convert
  official``) is **evaluated as it is** with :func:`vatt.train.finetune.predict_views` (12 views,
  logits averaged); any other model is fine-tuned with :func:`vatt.train.finetune.finetune` and
  its recipe (``FinetuneConfig``), then tested the same way. ``train=True`` fine-tunes a
  converted fine-tune again.
* ``linear`` rows (UCF101, HMDB51: 3 splits; ESC-50: 5 folds): :func:`vatt.eval.linear.linear_probe`
  over every split (one centre window to train, 4 windows to test), the mean reported;
  ``split=K`` runs one.
* ``retrieval`` rows (YouCook2, MSR-VTT): :func:`vatt.eval.retrieval.zero_shot_retrieval`
  (4 windows, both averagings; the row reports "average embeddings"); MSR-VTT's 20-caption
  protocol ranks the videos for every caption (:func:`caption_retrieval`).
* ``zero_shot=True`` on any single-label benchmark: :func:`vatt.eval.zero_shot.zero_shot_classify`
  on the test subset(s) from the class names (beyond the paper).

Official code vs paper (the official code is the default): fine-tuning and testing at the
model's 224² crop (the official fine-tuning configs; the paper also reports 320², ``--set
crop_size=320``); the linear rows' classifier is the official low-rank head (Linear(128) → dropout
→ Linear(C); ``classifier="logistic"`` for a plain linear model, as the paper's wording suggests);
Kinetics is tested on its ``validate`` split.

Results are fractions inside the library; the comparison table shows percent like the paper.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch

from ..atomic_io import atomic_write_json, atomic_write_text
from ..errors import InputError
from ..progress import Progress
from ..tables import format_table
from ..data.benchmarks import (BenchmarkSplit, clip_dataset, read_audioset, read_esc50, read_hmdb51, read_imagenet,
                               read_kinetics, read_moments, read_msrvtt, read_ucf101, read_youcook2, synset_names)
from ..data.config import DataConfig
from ..distributed import get_rank
from ..embed import embed_texts, extract_features
from ..train.finetune import (Classifier, FinetuneConfig, ImageFolder, classification_metrics, finetune,
                             load_finetune_config, predict_views)
from ..eval.linear import linear_probe
from ..eval.metrics import retrieval_metrics
from ..eval.retrieval import AVERAGES, window_similarity, zero_shot_retrieval
from ..eval.zero_shot import DEFAULT_TEMPLATES, zero_shot_classify
from .registry import Benchmark, get_benchmark

log = logging.getLogger(__name__)


# -- reading ---------------------------------------------------------------------------------------
def read_subset(bench: Benchmark, root, subset: str, split: int | str | None = None) -> BenchmarkSplit:
    """The reader of ``bench`` on ``root`` for ``subset`` (and split / fold / caption protocol)."""
    name = bench.name
    if bench.reader in ("ucf101", "hmdb51", "esc50"):
        reader = {"ucf101": read_ucf101, "hmdb51": read_hmdb51, "esc50": read_esc50}[bench.reader]
        return reader(root, subset, int(split or bench.splits[0]), name=name)
    if bench.reader == "msrvtt":
        return read_msrvtt(root, str(split or "1k-A"), name=name)
    reader = {"kinetics": read_kinetics, "moments": read_moments, "audioset": read_audioset,
              "imagenet": read_imagenet, "youcook2": read_youcook2}[bench.reader]
    return reader(root, subset, name=name)


class ImageList(ImageFolder):
    """ImageNet items from a reader (flat ``val/`` with ``LOC_val_solution.csv`` included) as the
    fine-tuning image dataset: the same transforms as :class:`vatt.train.finetune.ImageFolder`."""

    def __init__(self, split: BenchmarkSplit, data_cfg, depth: int, *, train: bool, num_crops: int = 1, seed: int = 0):
        self.classes = list(split.classes or [])
        self.items = [(Path(r.path), r.label[0]) for r in split.refs]
        self.cfg, self.depth, self.train, self.num_crops, self.seed = data_cfg, depth, train, num_crops, seed


def _data_config(model, cfg: FinetuneConfig) -> DataConfig:
    # As vatt.train.finetune builds it: the model's geometry, the fine-tuning crop, one voxel deep for images.
    data = DataConfig.from_model_config(model.config)
    if cfg.crop_size:
        data = data.replace(crop_size=cfg.crop_size)
    return data.replace(num_frames=int(model.config.video.patch_size[0])) if cfg.task == "image" else data


def finetune_datasets(model, train_split: BenchmarkSplit | None, test_split: BenchmarkSplit, cfg: FinetuneConfig):
    """``(train dataset or None, test dataset)`` exactly as :func:`vatt.train.finetune.finetune` builds
    them from sources: augmented single windows to train; ``test_windows x test_crops`` views to test."""
    data = _data_config(model, cfg)
    if cfg.task == "image":
        depth = int(model.config.video.patch_size[0])
        train = ImageList(train_split, data, depth, train=True, seed=cfg.seed) if train_split else None
        return train, ImageList(test_split, data, depth, train=False, num_crops=cfg.test_crops)
    train = clip_dataset(train_split, data, model.tokenizer, train=True, seed=cfg.seed) if train_split else None
    crops = cfg.test_crops if cfg.task == "video" else 1
    return train, clip_dataset(test_split, data, model.tokenizer, train=False, num_windows=cfg.test_windows,
                               num_crops=crops)


def linear_datasets(bench: Benchmark, root, model, splits: Sequence[int], num_windows: int = 4):
    """``([(train set, test set) per split], reports)`` for the linear protocol: the centre window of
    each training item, ``num_windows`` windows of each test item, as :func:`vatt.eval.linear.linear_probe`
    builds them from sources (``train_windows=1``)."""
    data = DataConfig.from_model_config(model.config)
    pairs, reports = [], {}
    for k in splits:
        tr, te = (read_subset(bench, root, s, k) for s in bench.subsets)
        reports[f"split {k} train"], reports[f"split {k} test"] = tr.report.to_dict(), te.report.to_dict()
        pairs.append((clip_dataset(tr, data, model.tokenizer, train=False, num_windows=1),
                      clip_dataset(te, data, model.tokenizer, train=False, num_windows=num_windows)))
    return pairs, reports


def has_classifier_for(model, modality: str, classes: Sequence[str]) -> bool:
    """Whether ``model`` carries a classification head for these classes (a converted fine-tune)."""
    c = model.config.classifier
    if c is None or c.modality != modality or c.num_classes != len(classes):
        return False
    if c.classes and list(c.classes) != list(classes):
        raise InputError(f"the model's classifier names its {c.num_classes} classes in another order than the "
                         f"benchmark (first: {list(c.classes)[:3]} vs {list(classes)[:3]})")
    return True


def check_split(bench: Benchmark, split):
    """``split`` as the row understands it, or one InputError listing what it accepts."""
    if split is None:
        return None
    if bench.splits:
        allowed = bench.splits
    elif bench.name == "audioset":
        allowed = ("train", "balanced")
    elif bench.name == "msrvtt":
        allowed = ("1k-A", "all")
    else:
        raise InputError(f"{bench.name} has one train/test split; --split applies to "
                         "ucf101/hmdb51 (1-3), esc50 (1-5), audioset (train|balanced), msrvtt (1k-A|all)")
    value = int(split) if bench.splits and str(split).isdigit() else split
    if value not in allowed:
        raise InputError(f"{bench.name}: --split must be one of {', '.join(map(str, allowed))}, got {split!r}")
    return value


# -- protocols -------------------------------------------------------------------------------------
def caption_retrieval(model, dataset, captions: Sequence[Sequence[str]], *, num_windows: int = 4,
                      average: str = "embeddings", batch_size: int = 8, device="cpu", num_workers: int = 0,
                      progress: Progress | None = None) -> dict:
    """Text→video retrieval where video ``i`` has several query captions ``captions[i]`` (MSR-VTT's
    20): every caption ranks all videos; R@K and ranks are over all captions."""
    refs = getattr(dataset, "refs", None)
    if refs is None or len(refs) != len(captions) or any(r.start is not None or r.end is not None for r in refs):
        raise InputError("caption_retrieval needs a ClipDataset of whole videos, one caption list per video")
    feats = extract_features(model, dataset, outputs=["video_vt"], batch_size=batch_size, device=device,
                             num_workers=num_workers, progress=progress)
    by_key = {r.path: i for i, r in enumerate(refs)}  # an evaluation item's key is its path (whole videos)
    rows = [by_key[k] for k in feats["key"]]  # unreadable videos were left out, and so are their captions
    texts = [t for i in rows for t in captions[i]]
    targets = torch.tensor([j for j, i in enumerate(rows) for _ in captions[i]])
    queries = embed_texts(model, texts, device=device)["text_vt"][:, None]
    sim = window_similarity(queries, feats["video_vt"], average)
    return {"text_to_video": retrieval_metrics(sim, targets), "num_videos": len(rows), "num_text_queries": len(texts),
            "average": average}


def _finetune_row(bench, root, model, split, cfg, train, out_dir, used, device, progress, batch_size, num_workers,
                  resume=None):
    train_subset = str(split) if bench.name == "audioset" and split else bench.subsets[0]
    test_split = read_subset(bench, root, bench.subsets[1])
    reports = {bench.subsets[1]: test_split.report.to_dict()}
    modality = "audio" if cfg.task == "audio" else "video"
    if not train and has_classifier_for(model, modality, test_split.classes):
        _, test_set = finetune_datasets(model, None, test_split, cfg)
        used[bench.subsets[1]] = test_set
        # eval() first: predict_views restores the mode it found, and a new module starts in train mode
        clf = Classifier(model, modality, len(test_split.classes), dropout=cfg.head_dropout).eval()
        logits, labels = predict_views(clf, test_set, batch_size=batch_size, device=device, num_workers=num_workers,
                                       progress=progress)
        result = {"mode": "converted classifier (no training)", "num_classes": len(test_split.classes),
                  "num_test": len(labels), **classification_metrics(logits, labels)}
        return result, reports, {"logits": logits, "labels": labels}
    train_split = read_subset(bench, root, train_subset)
    reports[train_subset] = train_split.report.to_dict()
    if list(train_split.classes) != list(test_split.classes):
        raise InputError(f"{bench.name}: the train and test subsets list different classes")
    train_set, test_set = finetune_datasets(model, train_split, test_split, cfg)
    used[train_subset], used[bench.subsets[1]] = train_set, test_set
    result = finetune(model, train_set, test_set, out_dir, config=cfg, device=device, progress=progress, resume=resume)
    return {"mode": "fine-tuned", **result}, reports, {}


def class_names(bench: Benchmark, root, classes: list[str]) -> list[str]:
    """The names zero-shot classification embeds: ImageNet wnids become their first synset name."""
    if bench.name == "imagenet":
        names = synset_names(root)
        return [names.get(c, c) for c in classes]
    return classes


def run_benchmark(name: str, root, model, *, split: int | str | None = None, out_dir=None, zero_shot: bool = False,
                  templates: Sequence[str] = DEFAULT_TEMPLATES, config: FinetuneConfig | None = None,
                  train: bool = False, classifier: str = "official", num_windows: int = 4, batch_size: int = 8,
                  num_workers: int = 0, device="cpu", seed: int = 0, progress: Progress | None = None,
                  resume: str | None = None) -> dict:
    """Run benchmark ``name``'s protocol on the download at ``root`` with ``model``.

    Args:
        split: UCF101/HMDB51 split or ESC-50 fold to run alone (default: all, averaged); AudioSet's
            training list (``"balanced"`` or ``"train"``, the default: balanced + unbalanced);
            MSR-VTT's caption protocol (``"1k-A"``, the default, or ``"all"``).
        out_dir: where ``bench.json`` and ``bench.md`` go (and fine-tuning checkpoints).
        zero_shot: classify the test subset(s) from the class names instead of the row's protocol.
        templates: prompt templates for ``zero_shot``.
        config: the fine-tuning recipe (default: the task's official preset).
        train: fine-tune even a model that already has a classifier for the benchmark.
        resume: fine-tuning rows: ``"auto"`` continues the run in ``out_dir`` (an existing run is
            refused without it, as for ``vatt finetune``).
        classifier: the linear probe's classifier (``"official"`` or ``"logistic"``).
    Returns:
        ``{"benchmark", "title", "protocol", "mode", "model", "metrics" (fractions, as the
        library returns them), "ours" / "paper" (percent, for the table), "reports" (missing
        files and malformed rows per subset), "settings"}``.
    """
    bench = get_benchmark(name)
    split = check_split(bench, split)
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{bench.name}: --root {root} is not a folder; expected {bench.layout}")
    common = dict(batch_size=batch_size, device=device, num_workers=num_workers, progress=progress)
    extra: dict = {}
    used: dict = {}  # subset -> the dataset read, for the count of files the decoder could not read
    if zero_shot:
        metrics, reports = _zero_shot_row(bench, root, model, split, templates, num_windows, used, common)
        mode = "zero-shot classification from class names"
    elif bench.protocol == "finetune":
        cfg = config or load_finetune_config(bench.task)
        if cfg.task != bench.task:
            raise InputError(f"{bench.name} is a {bench.task} benchmark; the fine-tuning config is for {cfg.task}")
        metrics, reports, extra = _finetune_row(bench, root, model, split, cfg, train, out_dir, used, **common,
                                                resume=resume)
        mode = metrics.pop("mode")
    elif bench.protocol == "linear":
        splits = [int(split)] if split else list(bench.splits)
        pairs, reports = linear_datasets(bench, root, model, splits, num_windows)
        used.update({f"split {k} {part}": ds for k, pair in zip(splits, pairs) for part, ds in zip(("train", "test"), pair)})
        metrics = linear_probe(model, None, None, splits=pairs, modality=bench.task, classifier=classifier,
                               num_windows=num_windows, seed=seed, **common)
        mode = f"linear probe ({classifier}), splits {splits}"
    else:
        metrics, reports = _retrieval_row(bench, root, model, split, num_windows, used, common)
        mode = metrics.pop("mode")
    for subset, dataset in used.items():
        stats = dataset.stats() if hasattr(dataset, "stats") else {}
        reports[subset]["unreadable"] = stats.get("bad", 0)
        reports[subset]["unreadable_reasons"] = stats.get("reasons", {})
    result = {"benchmark": bench.name, "title": bench.title, "protocol": bench.describe_protocol(), "mode": mode,
              "model": model.config.name, "root": str(root), "metrics": metrics, "reports": reports,
              "settings": {"split": split, "num_windows": num_windows, "zero_shot": zero_shot,
                           "templates": list(templates) if zero_shot else None}}
    result["ours"] = ours_percent(bench, metrics, zero_shot)
    result["paper"] = [{"model": r.model, "preset": r.preset, **r.metrics} for r in bench.paper] if not zero_shot else []
    if out_dir is not None and get_rank() == 0:  # under torchrun (fine-tuning rows) one rank writes
        write_results(result, out_dir)
    result.update(extra)  # tensors (logits) for callers; not written
    return result


def _zero_shot_row(bench, root, model, split, templates, num_windows, used, common):
    if bench.protocol == "retrieval" or bench.task == "audio":
        raise InputError(f"zero-shot classification needs a labelled video or image benchmark; {bench.name} is not one")
    splits = ([int(split)] if split else list(bench.splits)) or [None]
    results, reports = [], {}
    for k in splits:
        test = read_subset(bench, root, bench.subsets[1], k)
        subset = f"{bench.subsets[1]}" + (f" split {k}" if k else "")
        reports[subset] = test.report.to_dict()
        if bench.task == "image":
            cfg = load_finetune_config("image")
            _, dataset = finetune_datasets(model, None, test, cfg)
        else:
            dataset = clip_dataset(test, DataConfig.from_model_config(model.config), model.tokenizer, train=False,
                                   num_windows=num_windows)
        used[subset] = dataset
        results.append(zero_shot_classify(model, dataset, class_names(bench, root, test.classes), templates=templates,
                                          num_windows=num_windows, **common))
    metrics = {k: sum(r[k] for r in results) / len(results) for k in ("top1", "top5")}
    metrics.update(split_top1=[r["top1"] for r in results], num_classes=results[0]["num_classes"],
                   chance=results[0]["chance"], num_test=sum(r["num_test"] for r in results))
    return metrics, reports


def _retrieval_row(bench, root, model, split, num_windows, used, common):
    captions = str(split or "1k-A")
    split_ = read_subset(bench, root, bench.subsets[1], captions if bench.name == "msrvtt" else None)
    dataset = clip_dataset(split_, DataConfig.from_model_config(model.config), model.tokenizer, train=False,
                           num_windows=num_windows)
    reports = {bench.subsets[1] or "test": split_.report.to_dict()}
    used[bench.subsets[1] or "test"] = dataset
    if bench.name == "msrvtt" and captions == "all":
        texts = [[c.text for c in r.captions] for r in split_.refs]
        res = caption_retrieval(model, dataset, texts, num_windows=num_windows, **common)
        return {"mode": "zero-shot retrieval, all 20 captions per video", "embeddings": res}, reports
    res = zero_shot_retrieval(model, dataset, num_windows=num_windows, average=list(AVERAGES), with_audio=False,
                              **common)
    return {"mode": "zero-shot retrieval, one caption per item", **res}, reports


# -- output ----------------------------------------------------------------------------------------
def ours_percent(bench: Benchmark, metrics: dict, zero_shot: bool = False) -> dict:
    """The row's metrics as the paper prints them: percent (d′ and ranks as they are)."""
    if bench.protocol == "retrieval" and not zero_shot:
        t2v = metrics["embeddings"]["text_to_video"]
        return {"R@1": 100 * t2v["R@1"], "R@5": 100 * t2v["R@5"], "R@10": 100 * t2v["R@10"], "MedR": t2v["MedR"]}
    if bench.protocol == "linear" and not zero_shot:
        return {"accuracy": 100 * metrics["accuracy"], "top5": 100 * metrics["top5"]}
    keys = ("mAP", "AUC") if "mAP" in metrics else ("top1", "top5")
    out = {k: 100 * metrics[k] for k in keys if k in metrics}
    if "d_prime" in metrics:
        out["d_prime"] = metrics["d_prime"]
    return out


def result_table(result: dict) -> tuple[list[str], list[list]]:
    """``(header, rows)``: one row per metric, our value beside each published one."""
    paper = result.get("paper", [])
    header = ["metric", "ours"] + [f"{p['model']} (paper)" for p in paper]
    rows = []
    for key, value in result["ours"].items():
        rows.append([key, f"{value:.3f}" if key == "d_prime" else f"{value:.1f}"]
                    + [("—" if key not in p else f"{p[key]}") for p in paper])
    return header, rows


def problem_lines(reports: dict) -> list[str]:
    """One line per subset that lost items: files missing, rows malformed, media unreadable."""
    out = []
    for subset, r in reports.items():
        if r["missing"] or r["malformed"] or r.get("unreadable"):
            line = f"{subset}: {r['missing']} of {r['rows']} media files missing, {r['malformed']} malformed rows"
            examples = r["missing_examples"][:1] + r["malformed_examples"][:1]
            line += f" (e.g. {'; '.join(examples)})" if examples else ""
            if r.get("unreadable"):
                line += f", {r['unreadable']} unreadable ({', '.join(f'{k} {v}' for k, v in r['unreadable_reasons'].items())})"
            out.append(line)
    return out


def to_markdown(result: dict) -> str:
    header, rows = result_table(result)
    lines = [f"# {result['title']}: {result['mode']}", "", f"Protocol: {result['protocol']}. Model: "
             f"`{result['model']}`. Data: `{result['root']}`.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    settings = {k: v for k, v in result["settings"].items() if v not in (None, False)}
    lines[2] += " Run with: " + ", ".join(f"{k}={v}" for k, v in settings.items()) + "."
    problems = problem_lines(result["reports"])
    if problems:
        lines += ["", "Not used:"] + [f"- {line}" for line in problems]
    return "\n".join(lines) + "\n"


def write_results(result: dict, out_dir) -> tuple[Path, Path]:
    """``OUT/bench.json`` (everything but tensors) and ``OUT/bench.md`` (the comparison table);
    not ``results.json``, which fine-tuning writes in the same folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plain = {k: v for k, v in result.items() if not isinstance(v, torch.Tensor)}
    atomic_write_json(out / "bench.json", plain)
    atomic_write_text(out / "bench.md", to_markdown(result))
    return out / "bench.json", out / "bench.md"


def format_result(result: dict) -> str:
    header, rows = result_table(result)
    return format_table(rows, header, align="numbers", rule=False)
