"""``vatt bench list|NAME`` and ``vatt classify``: argument parsing and tables only; the work is in
:mod:`vatt.bench` and :mod:`vatt.eval.zero_shot`."""

from __future__ import annotations

import json
import sys

from .args import nonnegative_int, positive_int
from .progress import Bars


def _dump(obj) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    print()


# -- vatt bench list -------------------------------------------------------------------------------
def _list(args) -> int:
    from ..bench.registry import BENCHMARKS
    from ..tables import format_table

    rows = []
    for b in BENCHMARKS.values():
        paper = "; ".join(f"{p.model} " + " / ".join(f"{k} {v}" for k, v in p.metrics.items()) for p in b.paper) or "—"
        preset = b.paper[0].preset if b.paper else "mbs"
        rows.append({"name": b.name, "title": b.title, "protocol": b.describe_protocol(), "paper": paper,
                     "gpu_hours": float(f"{b.estimated_gpu_hours():.2g}"), "cost_model": preset, "layout": b.layout,
                     "url": b.url, "notes": b.notes,
                     "paper_rows": [{"model": p.model, "preset": p.preset, **p.metrics} for p in b.paper]})
    if args.json:
        _dump(rows)
        return 0
    if args.markdown:
        print("| benchmark | where to get it | expected layout | command | paper | GPU-hours (est.) |")
        print("|---|---|---|---|---|---:|")
        for r in rows:
            print(f"| {r['title']} | {r['url']} | `{r['layout']}` | `vatt bench {r['name']} --root DIR --model DIR` | "
                  f"{r['paper']} | {r['gpu_hours']} ({r['cost_model']}) |")
        return 0
    short = [r["paper"].split("; ")[0] + (f" (+{r['paper'].count('; ')} more)" if "; " in r["paper"] else "") for r in rows]
    print(format_table([[r["name"], r["protocol"], s, f"{r['gpu_hours']} ({r['cost_model']})"] for r, s in zip(rows, short)],
                       ["benchmark", "protocol", "paper", "GPU-h est."], rule=False))
    print("GPU-hours: compute only, H100 bf16 at 40% MFU, official step counts, fine-tuning batch 64 assumed; "
          "see docs/BENCHMARKS.md")
    return 0


# -- vatt bench NAME -------------------------------------------------------------------------------
def _bench(args) -> int:
    if args.name == "list":
        return _list(args)
    import shlex

    from ..bench.run import format_result, problem_lines, run_benchmark
    from ..bench.registry import get_benchmark
    from ..config_engine import parse_overrides
    from ..errors import InputError
    from ..train.finetune import load_finetune_config
    from ..model import load_model

    bench = get_benchmark(args.name)
    if args.root is None or args.model is None:
        raise InputError(f"vatt bench {bench.name} needs --root DIR (the benchmark's download) and --model DIR")
    config = None
    if bench.protocol == "finetune":
        overrides = parse_overrides(args.overrides)
        if args.steps is not None:
            overrides["steps"] = args.steps
        if args.windows is not None:
            overrides["test_windows"] = args.windows
        config = load_finetune_config(args.config or bench.task, overrides)
        config.command = shlex.join(["vatt", *map(str, args.argv)])
    elif args.overrides or args.steps or args.config:
        raise InputError(f"{bench.name} is a {bench.protocol} benchmark: --config/--set/--steps apply to fine-tuning rows")
    model = load_model(args.model, device=args.device)
    split = int(args.split) if args.split and args.split.isdigit() else args.split
    result = run_benchmark(bench.name, args.root, model, split=split, out_dir=args.out, zero_shot=args.zero_shot,
                           templates=args.template or ("{}",), config=config, train=args.train,
                           classifier=args.classifier, num_windows=args.windows or 4, batch_size=args.batch_size,
                           num_workers=args.workers, device=args.device, progress=None if args.json else Bars(),
                           resume=args.resume)
    if args.json:
        _dump({k: v for k, v in result.items() if k not in ("logits", "labels")})
        return 0
    print(f"{result['title']}: {result['mode']}")
    print(f"protocol: {result['protocol']}")
    for line in problem_lines(result["reports"]):
        print(line)
    print(format_result(result))
    if args.out:
        print(f"results: {args.out}/bench.json, {args.out}/bench.md")
    return 0


# -- vatt classify ---------------------------------------------------------------------------------
def _classify(args) -> int:
    from ..eval.zero_shot import classify_videos, parse_labels
    from ..model import load_model
    from ..tables import format_table

    classes = parse_labels(args.labels)
    model = load_model(args.model, device=args.device)
    results = classify_videos(model, args.videos, classes, templates=args.template or ("{}",), k=args.k,
                              num_windows=args.windows, batch_size=args.batch_size, device=args.device,
                              num_workers=args.workers, progress=None if args.json else Bars())
    if args.json:
        _dump(results)
        return 0
    rows = [[r["path"], i + 1, name, f"{score:.3f}"] for r in results for i, (name, score) in enumerate(r["top"])]
    print(format_table(rows, ["video", "rank", "class", "cosine"], rule=False))
    left = len(args.videos) - len(results)
    if left:
        print(f"{left} file(s) could not be read and were left out")
    return 0


def register(sub) -> None:
    p = sub.add_parser("bench", help="the paper's benchmark rows: `vatt bench list`, `vatt bench NAME --root --model`",
                       description="Run one benchmark's protocol on its download, in its own layout, and print our "
                                   "row beside the paper's. `vatt bench list` shows every benchmark.")
    p.add_argument("name", metavar="NAME", help="a benchmark (kinetics400, ucf101, msrvtt, ...) or `list`")
    p.add_argument("--root", help="the benchmark's download folder")
    p.add_argument("--model", help="model directory (save_pretrained, a run directory, or a converted official model)")
    p.add_argument("--split", help="UCF101/HMDB51 split or ESC-50 fold to run alone (default: all, averaged); "
                                   "audioset: balanced|train; msrvtt: 1k-A|all (captions)")
    p.add_argument("--out", help="output folder: bench.json, bench.md (and fine-tuning checkpoints)")
    p.add_argument("--resume", default=None, metavar="auto|CHECKPOINT",
                   help="fine-tuning rows: continue the run in --out (an existing run is refused without it)")
    p.add_argument("--zero-shot", action="store_true", help="classify the test set from its class names instead")
    p.add_argument("--template", action="append", metavar="TEXT",
                   help='zero-shot prompt template with {} for the class, e.g. "a video of {}" (repeatable)')
    p.add_argument("--train", action="store_true",
                   help="fine-tune even a model that already has a classifier for this benchmark")
    p.add_argument("--config", metavar="PRESET|FILE", help="fine-tuning recipe (default: the benchmark's task preset)")
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="fine-tuning config overrides")
    p.add_argument("--steps", type=positive_int, help="fine-tuning steps (shorthand for --set steps=N)")
    p.add_argument("--classifier", choices=("official", "logistic"), default="official",
                   help="linear-probe classifier (default: official)")
    p.add_argument("--windows", type=positive_int, default=None,
                   help="test windows per item (default: 4; fine-tuning rows: the config's test_windows)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.add_argument("--markdown", action="store_true", help="`vatt bench list --markdown`: the docs table")
    _common(p)
    p.set_defaults(func=_bench)

    p = sub.add_parser("classify", help="zero-shot classes of your own videos from class names",
                       description="Embed the class names (in prompt templates) with the text tower and give each "
                                   "video the classes closest in S_vt.")
    p.add_argument("videos", nargs="+", metavar="VIDEO")
    p.add_argument("--model", required=True)
    p.add_argument("--labels", required=True, metavar='FILE|"a,b,c"', help="a file of class names (one a line) or a "
                                                                           "comma-separated list")
    p.add_argument("--template", action="append", metavar="TEXT", help='prompt template, e.g. "a video of {}"')
    p.add_argument("-k", type=positive_int, default=3, help="classes shown per video (default: 3)")
    p.add_argument("--windows", type=positive_int, default=4, help="windows averaged per video (default: 4)")
    p.add_argument("--json", action="store_true")
    _common(p)
    p.set_defaults(func=_classify)


def _common(p) -> None:
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--batch-size", type=positive_int, default=8,
                   help="items per forward when evaluating (default: 8; fine-tuning: --set batch_size=N)")
    p.add_argument("--workers", type=nonnegative_int, default=0, help="decoding processes (default: 0)")
