"""``vatt pretrain``, ``vatt finetune`` and ``vatt demo``: argument parsing, progress bars and tables
only; both training commands run on the one engine (:mod:`vatt.train.engine`), alone or under torchrun."""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys

from .args import nonnegative_float, nonnegative_int, positive_float, positive_int
from .progress import Bars, TrainingBar

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser(
        "pretrain",
        help="pretrain a VATT model (one process, or many under torchrun)",
        description=(
            "Pretrain VATT on video/audio/text sources. Multi-GPU / multi-node: launch the same command with "
            "torchrun (`torchrun --nproc-per-node 8 -m vatt.cli.main pretrain ...`). Rerun with --resume auto "
            "to continue a run from its newest complete checkpoint."
        ),
    )
    p.add_argument("--config", required=True, metavar="FILE|PRESET",
                   help="a training preset (tiny, bbs, mbs, lbs, ma-medium) or a YAML file")
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="config overrides, e.g. optim.lr=3e-4 steps=1000 model.video.drop_rate=0.25")
    p.add_argument("--data", nargs="+", required=True, metavar="SRC",
                   help="training sources: folders, manifests (.csv/.json), shards (.tar)")
    p.add_argument("--eval-data", nargs="+", default=None, metavar="SRC",
                   help="held-out sources for zero-shot retrieval every eval_every steps")
    p.add_argument("--out", required=True, metavar="DIR", help="the run directory")
    p.add_argument("--resume", default=None, metavar="auto|CHECKPOINT",
                   help="'auto': continue from the newest complete checkpoint in --out (if any); or a path")
    p.set_defaults(func=run_pretrain)

    f = sub.add_parser(
        "finetune",
        help="fine-tune a backbone: video / audio (multi-label) / image classification (one process or torchrun)",
        description=(
            "Fine-tune with the paper's recipes on the training engine pretraining uses. Settings come from --config "
            "(a task preset or a YAML file), then --set KEY=VALUE; the flags below are shorthands for --set. "
            "Multi-GPU / multi-node: the same command under torchrun "
            "(`torchrun --nproc-per-node 8 -m vatt.cli.main finetune ...`); --resume auto continues a run."
        ),
    )
    f.add_argument("--model", required=True, help="the model to fine-tune: a model or run directory")
    f.add_argument("--config", default=None, metavar="PRESET|FILE",
                   help="video, audio, image (the task's official recipe) or a YAML file (default: --task)")
    f.add_argument("--task", choices=("video", "audio", "image"), default=None, help="the task (default: video)")
    f.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="config overrides, e.g. lr=0.01 precision=bf16 fsdp=true eval_every=1000")
    f.add_argument("--train", required=True, help="labelled training source (image: folder of class folders)")
    f.add_argument("--val", required=True, help="labelled test source (the multi-view test)")
    f.add_argument("--out", required=True, metavar="DIR", help="the run directory")
    f.add_argument("--resume", default=None, metavar="auto|CHECKPOINT",
                   help="'auto': continue from the newest complete checkpoint in --out (if any); or a path")
    f.add_argument("--steps", type=positive_int, help="optimisation steps (default: 1000)")
    f.add_argument("--batch-size", type=positive_int, help="clips per step, all ranks together (default: 8)")
    f.add_argument("--lr", type=positive_float, help="peak SGD learning rate (official 0.005)")
    f.add_argument("--warmup", type=nonnegative_int, help="warmup steps (default 2500, capped at steps/10)")
    f.add_argument("--windows", type=positive_int, help="test windows (default: 4)")
    f.add_argument("--crops", type=int, choices=(1, 3), help="test crops per window (default: 3)")
    f.add_argument("--crop-size", type=positive_int, default=None,
                   help="training/test crop side (default: the model's; larger crops resample positions)")
    f.add_argument("--mixup", type=nonnegative_float, help="audio mixup Beta(a, a); 0 = off (default: 5)")
    f.add_argument("--checkpoint-every", type=positive_int)
    f.add_argument("--seed", type=nonnegative_int)
    f.add_argument("--workers", type=nonnegative_int, help="decoding processes per rank (default: 0)")
    f.add_argument("--device", default=None, help="auto (default: CUDA when available), cpu or cuda")
    f.add_argument("--json", action="store_true", help="print the results as JSON")
    f.set_defaults(func=run_finetune)

    d = sub.add_parser(
        "demo",
        help="the built-in end-to-end demo: synthetic corpus -> pretrain -> evaluate -> report",
        description=(
            "Generates the synthetic corpus, pretrains the tiny preset for about --minutes on this machine, "
            "evaluates zero-shot text->video retrieval and a linear probe against the same model at random "
            "initialisation, and writes report.md, report.json and plots to --out."
        ),
    )
    d.add_argument("--out", default="vatt-demo", metavar="DIR", help="output directory (default: vatt-demo)")
    d.add_argument("--minutes", type=positive_float, default=10.0, help="pretraining time budget (default: 10)")
    d.add_argument("--preset", default="tiny", help="training preset (default: tiny)")
    d.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    d.add_argument("--clips", type=positive_int, default=None,
                   help="pretraining clips to generate (default: 100 per minute of budget, at least 200)")
    d.add_argument("--steps", type=positive_int, default=None,
                   help="a fixed number of pretraining steps, no time limit (--minutes still sizes the corpus)")
    d.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="training config overrides, as for pretrain")
    d.set_defaults(func=run_demo)


# -- pretrain ------------------------------------------------------------------------------------
def _command(args) -> str:
    parts = ["vatt", "pretrain", "--config", args.config]
    if args.overrides:
        parts += ["--set", *args.overrides]
    parts += ["--data", *args.data]
    if args.eval_data:
        parts += ["--eval-data", *args.eval_data]
    parts += ["--out", args.out]
    if args.resume:
        parts += ["--resume", args.resume]
    cmd = shlex.join(parts)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return f"{cmd}  (torchrun, {world} ranks)" if world > 1 else cmd


def print_table(rows: list[tuple[str, ...]], header: tuple[str, ...] | None = None) -> None:
    """A plain aligned text table on stdout."""
    from ..tables import format_table

    print(format_table(rows, header))


def run_pretrain(args) -> int:
    from ..train import load_train_config, pretrain

    cfg = load_train_config(args.config, args.overrides)
    if args.eval_data:
        cfg = cfg.override({"data.eval_sources": list(args.eval_data)})
    cfg.command = _command(args)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    bar = TrainingBar(cfg.steps) if main_rank else None
    try:
        result = pretrain(cfg, args.data, args.out, resume=args.resume, callback=bar)
    finally:
        if bar is not None:
            bar.close()
    if not main_rank:
        return 0
    data = result.data
    print_table([
        ("run", str(result.run_dir)),
        ("step", f"{result.step} / {cfg.steps}"),
        ("final loss", f"{result.final_loss:.4f}" if result.final_loss is not None else "-"),
        ("clips/s", f"{result.clips_per_second:.1f}"),
        ("skipped steps (non-finite)", str(result.skipped_steps)),
        ("samples good / bad", f"{data.get('good', 0)} / {data.get('bad', 0)}"
         + (f"  ({', '.join(f'{k}: {v}' for k, v in data.get('reasons', {}).items())})" if data.get("bad") else "")),
        ("checkpoint", str(result.checkpoint) if result.checkpoint else "-"),
    ])
    if result.stopped == "signal":
        name = signal.Signals(result.signal).name if result.signal else "signal"
        print(f"stopped by {name} at step {result.step}; rerun with --resume auto to continue", file=sys.stderr)
        return 130 if result.signal == signal.SIGINT else 143
    if result.stopped == "time":
        print(f"stopped at the time limit (max_minutes={cfg.max_minutes}); --resume auto continues", file=sys.stderr)
    elif result.stopped == "done":
        print(f"final model: {result.run_dir / 'model'}  (vatt.load_model({str(result.run_dir)!r}))")
    return 0


# -- finetune ------------------------------------------------------------------------------------
# Flags that are shorthands for `--set KEY=VALUE` (the defaults live in FinetuneConfig only).
FINETUNE_FLAGS = {"steps": "steps", "batch_size": "batch_size", "lr": "lr", "warmup": "warmup_steps",
                  "windows": "test_windows", "crops": "test_crops", "crop_size": "crop_size", "mixup": "mixup_alpha",
                  "checkpoint_every": "checkpoint_every", "workers": "num_workers", "seed": "seed", "device": "device"}


def run_finetune(args) -> int:
    import json

    from ..config_engine import parse_overrides
    from ..model import load_model
    from ..train.finetune import finetune_run, load_finetune_config

    overrides = parse_overrides(args.overrides)
    overrides.update({key: getattr(args, flag) for flag, key in FINETUNE_FLAGS.items() if getattr(args, flag) is not None})
    if args.config is not None and args.task is not None:
        overrides["task"] = args.task
    cfg = load_finetune_config(args.config or args.task or "video", overrides)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cfg.command = shlex.join(["vatt", *map(str, args.argv)]) + (f"  (torchrun, {world} ranks)" if world > 1 else "")
    model = load_model(args.model)  # every rank loads it; the engine moves it to its device
    main_rank = int(os.environ.get("RANK", "0")) == 0
    show = main_rank and not args.json
    bar = TrainingBar(cfg.steps, desc="finetune") if show else None
    bars = Bars() if show else None
    try:
        result = finetune_run(model, args.train, args.val, args.out, cfg, resume=args.resume, callback=bar,
                              progress=(lambda *a, **k: (bar.close(), bars(*a, **k))) if show else None)
    finally:
        for b in (bar, bars):
            if b is not None:
                b.close()
    if not main_rank:
        return 0
    metrics = result.metrics
    if args.json:
        json.dump(metrics | {"stopped": result.stopped, "step": result.step}, sys.stdout, indent=2)
        print()
    else:
        keys = [k for k in ("top1", "top5", "mAP", "AUC", "d_prime", "chance", "num_test", "train_loss") if k in metrics]
        print_table([("run", str(result.run_dir)), ("step", f"{result.step} / {cfg.steps}"),
                     ("clips/s", f"{result.clips_per_second:.1f}"),
                     *[(k, f"{metrics[k]:.4f}" if isinstance(metrics[k], float) else str(metrics[k])) for k in keys]])
    if result.stopped == "signal":
        name = signal.Signals(result.signal).name if result.signal else "signal"
        print(f"stopped by {name} at step {result.step}; rerun with --resume auto to continue", file=sys.stderr)
        return 130 if result.signal == signal.SIGINT else 143
    if result.stopped == "time":
        print(f"stopped at the time limit (max_minutes={cfg.max_minutes}); tested the weights of step {result.step}; "
              "--resume auto continues", file=sys.stderr)
    if not args.json:
        print(f"fine-tuned model: {result.run_dir / 'model'} (vatt.load_model; model.classify(x)); "
              f"test results: {result.run_dir / 'results.json'}")
    return 0


# -- demo ------------------------------------------------------------------------------------------
def _training_bar(bar: TrainingBar, m: dict) -> None:
    if "validation" in m:  # the demo's checkpoint choice, on held-out clips that are not the test clips
        v = m["validation"]
        bar.bar.write(f"step {v['step']}: validation mean rank {v['mean_rank']:.1f} "
                      f"(text->video R@5 {v['R@5']:.3f}, median rank {v['MedR']:g})")
        return
    bar.total = m.get("total_steps", bar.total)  # the demo plans its steps after the bar exists
    bar(m)


def run_demo(args) -> int:
    from ..demo import format_report_table, run_demo as demo

    bars, training = Bars(), TrainingBar(0)
    try:
        report = demo(args.out, minutes=args.minutes, preset=args.preset, device=args.device, clips=args.clips,
                      steps=args.steps, overrides=args.overrides, progress=bars,
                      callback=lambda m: (bars.close(), _training_bar(training, m)))  # phase bar ends
    finally:
        bars.close()
        training.close()
    print()
    print(format_report_table(report))
    print(f"\nreport: {os.path.join(args.out, 'report.md')} (plots in {os.path.join(args.out, 'plots')}, "
          f"evaluated model in {os.path.join(args.out, 'model')})")
    return 0
