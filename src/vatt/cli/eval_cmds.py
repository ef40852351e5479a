"""``vatt eval retrieval|linear``, ``vatt embed``, ``vatt search``,
``vatt visualize``: argument parsing and tables only; the work is in :mod:`vatt.eval` and
:mod:`vatt.tools`."""

from __future__ import annotations

import argparse
import json
import sys

from .args import nonnegative_int, positive_float, positive_int
from .progress import Bars


def _print_table(headers: list[str], rows: list[list]) -> None:
    from ..tables import format_table

    print(format_table(rows, headers, align="numbers", rule=False))


def _dump(obj) -> None:
    json.dump(obj, sys.stdout, indent=2)
    print()


def _load(args):
    from ..model import load_model

    return load_model(args.model, device=args.device)


# -- vatt eval retrieval -------------------------------------------------------------------------
def _retrieval(args) -> int:
    from ..eval.retrieval import AVERAGES, zero_shot_retrieval

    model = _load(args)
    caption = int(args.caption) if args.caption.isdigit() else args.caption
    averages = AVERAGES if args.average == "both" else (args.average,)
    results = zero_shot_retrieval(model, args.data, num_windows=args.windows, batch_size=args.batch_size,
                                  device=args.device, num_workers=args.workers, average=list(averages),
                                  caption=caption, progress=None if args.json else Bars())
    if args.json:
        _dump(results)
        return 0
    n = next(iter(results.values()))["num_videos"]
    print(f"zero-shot retrieval on {n} videos, {args.windows} windows each (ties: pessimistic)")
    rows = []
    for average, res in results.items():
        for direction in ("text_to_video", "video_to_text", "audio_to_video", "video_to_audio"):
            if direction in res:
                m = res[direction]
                rows.append([direction.replace("_to_", "->"), average, *(f"{100 * m[k]:.1f}" for k in ("R@1", "R@5", "R@10")),
                             f"{m['MedR']:.1f}", f"{m['MeanR']:.2f}"])
    _print_table(["direction", "average", "R@1 %", "R@5 %", "R@10 %", "MedR", "MeanR"], rows)
    return 0


# -- vatt eval linear ----------------------------------------------------------------------------
def _linear(args) -> int:
    from ..eval.linear import CLASSIFIERS, linear_probe

    model = _load(args)
    if args.split:
        splits = [tuple(s) for s in args.split]
    elif args.train and args.test:
        splits = [(args.train, args.test)]
    else:
        raise _usage("give --train SRC --test SRC, or --split TRAIN TEST (repeatable)")
    classifiers = CLASSIFIERS if args.classifier == "both" else (args.classifier,)
    probes = linear_probe(model, None, None, splits=splits, modality=args.modality, classifier=list(classifiers),
                          num_windows=args.windows, train_windows=args.train_windows, device=args.device,
                          batch_size=args.batch_size, num_workers=args.workers, seed=args.seed, progress=None if args.json else Bars())
    info = next(iter(probes.values()))
    results = {c: {"accuracy": r["accuracy"], "top5": r["top5"], "split_accuracies": r["split_accuracies"]}
               for c, r in probes.items()}
    results["chance"], results["num_classes"] = info["chance"], info["num_classes"]
    results["train_windows"], results["test_windows"] = info["train_windows"], info["test_windows"]
    if args.json:
        _dump(results)
        return 0
    print(f"linear probe on frozen {args.modality} AGG features: {len(splits)} split(s), "
          f"{info['num_classes']} classes, chance {100 * info['chance']:.1f}%, windows per item: "
          f"{info['train_windows']} to train, {info['test_windows']} to test")
    _print_table(["classifier", "top-1 %", "top-5 %", "top-1 per split %"],
                 [[c, f"{100 * r['accuracy']:.1f}", f"{100 * r['top5']:.1f}", " ".join(f"{100 * a:.1f}" for a in r["split_accuracies"])]
                  for c, r in results.items() if c in classifiers])
    return 0


# -- vatt embed / vatt search --------------------------------------------------------------------
def _embed(args) -> int:
    from pathlib import Path

    from ..embed import embed_source, save_embeddings

    model = _load(args)
    tensors, meta = embed_source(model, args.src, num_windows=args.windows, batch_size=args.batch_size,
                                 device=args.device, num_workers=args.workers, progress=Bars())
    meta["model"] = str(Path(args.model).resolve())
    save_embeddings(args.out, tensors, meta)
    print(f"{len(meta['items'])} {meta['modality']} items -> {args.out}")
    _print_table(["tensor", "shape"], [[k, "x".join(map(str, v.shape))] for k, v in tensors.items()])
    return 0


def _search(args) -> int:
    from ..search.embeddings import search

    hits = search(args.file, args.query, k=args.k, model=args.model, use_faiss=args.faiss)
    if args.json:
        _dump([h.__dict__ for h in hits])
        return 0
    _print_table(["item", "rank", "score"], [[h.item, h.rank, h.score] for h in hits])
    return 0


# -- vatt visualize ------------------------------------------------------------------------------
def _visualize(args) -> int:
    from ..tools.visualize import visualize_source

    path, n = visualize_source(args.model, args.data, args.out, max_items=args.max_items, perplexity=args.perplexity,
                               device=args.device, num_workers=args.workers, progress=Bars())
    print(f"t-SNE of {n} clips and captions, {len(args.model)} model(s) -> {path}")
    return 0


def _usage(msg: str):
    from ..errors import InputError

    return InputError(msg)


# -- registration --------------------------------------------------------------------------------
def _common(p, *, data_workers: bool = True) -> None:
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="items per forward (default: 8)")
    if data_workers:
        p.add_argument("--workers", type=nonnegative_int, default=0, help="decoding processes (default: 0)")


def register(sub) -> None:
    ev = sub.add_parser("eval", help="evaluate a model: zero-shot retrieval, linear probe")
    ev_sub = ev.add_subparsers(dest="eval_command", metavar="PROTOCOL")
    ev.set_defaults(func=lambda args: ev.print_help() or 2)

    p = ev_sub.add_parser("retrieval", help="zero-shot text<->video (and audio<->video) retrieval")
    p.add_argument("--model", required=True, help="model directory (save_pretrained) or run directory")
    p.add_argument("--data", required=True, help="evaluation source: videos with captions (see docs/DATA.md)")
    p.add_argument("--windows", type=positive_int, default=4, help="windows per video (default: 4)")
    p.add_argument("--average", choices=("both", "embeddings", "similarities"), default="both",
                   help="how windows are combined (default: both)")
    p.add_argument("--caption", default="centre", help="query caption: centre (default), mean, or an index 0-4")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    _common(p)
    p.set_defaults(func=_retrieval)

    p = ev_sub.add_parser("linear", help="linear probe on frozen AGG features")
    p.add_argument("--model", required=True)
    p.add_argument("--train", help="labelled training source")
    p.add_argument("--test", help="labelled test source")
    p.add_argument("--split", nargs=2, action="append", metavar=("TRAIN", "TEST"),
                   help="a train/test pair; repeat for several splits (the means are reported)")
    p.add_argument("--modality", choices=("video", "audio"), default="video")
    p.add_argument("--classifier", choices=("logistic", "official", "both"), default="both",
                   help="official: the official code's evaluator (low-rank head, 1000 epochs, window probabilities "
                        "averaged); logistic: logistic regression on standardised, window-averaged features; "
                        "both (default)")
    p.add_argument("--windows", type=positive_int, default=4, help="test windows per item (default: 4)")
    p.add_argument("--train-windows", type=positive_int, default=1,
                   help="training windows averaged per item (default: 1, the centre window, as in the paper; "
                        "set it to --windows to train on the features the test uses)")
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--json", action="store_true")
    _common(p)
    p.set_defaults(func=_linear)

    p = sub.add_parser("embed", help="embed a folder of videos, of audio files, or a text file (one sentence a line)")
    p.add_argument("src")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--windows", type=positive_int, default=4, help="windows averaged per clip (default: 4)")
    _common(p)
    p.set_defaults(func=_embed)

    p = sub.add_parser("search", help="search an embeddings file with a sentence")
    p.add_argument("file", help="a file written by `vatt embed`")
    p.add_argument("query", help='a sentence, e.g. "a red ball bounces"')
    p.add_argument("-k", type=positive_int, default=10, help="results to show (default: 10)")
    p.add_argument("--model", help="model directory (default: the one recorded in FILE)")
    p.add_argument("--faiss", action=argparse.BooleanOptionalAction, default=None,
                   help="use FAISS (default: when installed and the collection is large)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_search)

    p = sub.add_parser("visualize", help="t-SNE of video and text features before/after the backbones")
    p.add_argument("--model", required=True, action="append",
                   help="model directory; give twice (modality-specific, modality-agnostic) for the paper's figure")
    p.add_argument("--data", required=True, help="videos with captions")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--max-items", type=positive_int, default=200)
    p.add_argument("--perplexity", type=positive_float, default=30.0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=nonnegative_int, default=0)
    p.set_defaults(func=_visualize)

