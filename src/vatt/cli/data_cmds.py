"""``vatt data synth|prepare|check`` and ``vatt vocab build``: argument parsing only; the work is
in :mod:`vatt.data`."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
from collections import Counter

from .progress import Bars


@contextlib.contextmanager
def _bars(enabled: bool = True):
    """Progress bars for a command (closed on any exit, so an error line is not cut by a bar)."""
    bars = Bars() if enabled else None
    try:
        yield bars
    finally:
        if bars is not None:
            bars.close()


def _synth(args) -> int:
    from ..data.synth import make_corpus

    with _bars() as bars:
        meta = make_corpus(args.out, clips=args.clips, seed=args.seed, workers=args.workers, progress=bars)
    print(f"wrote the demo corpus to {args.out}")
    for name, n in meta["counts"].items():
        print(f"  {name:<15} {n:>6}")
    print(f"  classes: {', '.join(meta['classes'])} (label = {meta['label']})")
    return 0


def _prepare(args) -> int:
    from ..data.prepare import ClipFormat, parse_part, prepare_shards

    part = parse_part(args.part) if args.part else None
    fmt = ClipFormat()
    if args.train_format:
        from ..config import get_config
        from ..data import DataConfig

        fmt = ClipFormat.training(DataConfig.from_model_config(get_config(args.train_format)))
    over = {k: v for k, v in (("fps", args.fps), ("sample_rate", args.sample_rate),
                              ("keyframe_seconds", args.keyframe_seconds), ("crf", args.crf)) if v}
    if over or args.fast_decode:
        fmt = dataclasses.replace(fmt, **over, fast_decode=fmt.fast_decode or args.fast_decode, reencode=True)
    with _bars() as bars:
        report = prepare_shards(args.src, args.out, clip_seconds=args.clip_seconds, max_count=args.max_count,
                                workers=args.workers, max_side=args.max_side, fmt=fmt, part=part, progress=bars)
    _print_prepare_report(report, args.out)
    if part is not None:
        print(f"part {part[0]} of {part[1]}; when every part is done: vatt data merge-reports {args.out}")
    return 0


def _print_prepare_report(report: dict, out) -> None:
    print(f"{report['clips']} clips from {report['files_ok']} files in {len(report['shards'])} shard{'s'[: len(report['shards']) != 1]} -> {out}")
    print(f"skipped {len(report['skipped'])} files; report: {report['report_path']}")
    for item in report["skipped"][:10]:
        print(f"  {item['reason']:<16} {item['path']}")
    if report.get("ignored"):
        print(f"ignored {report['ignored']} files that are neither video nor audio")


def _merge_reports(args) -> int:
    from ..data.prepare import merge_reports

    report = merge_reports(args.out)
    print(f"merged {report['parts']} part reports")
    _print_prepare_report(report, args.out)
    return 0


def _check(args) -> int:
    from ..data.check import check_source
    from ..data.config import DataConfig

    with _bars(enabled=not args.json) as bars:
        report = check_source(args.src, DataConfig(max_member_mb=args.max_member_mb), progress=bars,
                              num_workers=args.workers)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
        return 0
    print(f"{args.src}: {report['total']} samples, {report['good']} good, {report['bad']} bad")
    if report["reasons"]:
        print(f"  {'reason':<20} {'count':>6}")
        for reason, n in sorted(report["reasons"].items(), key=lambda kv: -kv[1]):
            print(f"  {reason:<20} {n:>6}")
    if report.get("masked"):
        print("  masked modalities (sample kept):")
        for reason, n in sorted(report["masked"].items(), key=lambda kv: -kv[1]):
            print(f"  {reason:<20} {n:>6}")
    return 0


def _vocab_build(args) -> int:
    from ..data.vocab import caption_texts
    from ..text import WordTokenizer

    skipped = Counter()
    texts = caption_texts(args.src, skipped)
    tok = WordTokenizer.build(texts, max_size=args.max_size, min_count=args.min_count)
    tok.save(args.out)
    print(f"{len(tok)} words (incl. <pad>, <unk>) from {len(texts)} captions -> {args.out}")
    if skipped:
        print("skipped: " + ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items())))
    return 0


def register(sub) -> None:
    from ..config import list_presets

    data = sub.add_parser("data", help="build, convert and check media datasets")
    dsub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    p = dsub.add_parser("synth", help="write the built-in demo corpus (video + audio + narration)")
    p.add_argument("out", help="output folder")
    p.add_argument("--clips", type=int, default=200, help="pretraining clips (other subsets scale with it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="parallel encoder processes")
    p.set_defaults(func=_synth)

    p = dsub.add_parser("prepare", help="cut videos + captions into fixed-length clips in WebDataset tar shards")
    p.add_argument("src", help="folder of videos with sidecar captions, or a CSV/JSON manifest")
    p.add_argument("out", help="output folder for shard-NNNNN.tar and prepare_report.json")
    p.add_argument("--clip-seconds", type=float, default=10.0, help="length of each clip (s)")
    p.add_argument("--max-count", type=int, default=256, help="samples per shard")
    p.add_argument("--max-side", type=int, default=360, help="shorter side of re-encoded clips (px)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--part", metavar="I/N", help="prepare only the I-th of N slices of the files (0 <= I < N), "
                   "e.g. --part $SLURM_ARRAY_TASK_ID/$N; then `vatt data merge-reports OUT`")
    p.add_argument("--train-format", metavar="PRESET", choices=list_presets(),
                   help="store clips ready for training this model preset (its frame rate, audio rate and "
                        "resize, a keyframe every second, fast-decoding H.264): ~9x cheaper to read; see docs/DATA.md")
    p.add_argument("--fps", type=float, help="stored frame rate (default: the source's, or the preset's)")
    p.add_argument("--sample-rate", type=int, help="stored audio rate, Hz, mono (default: the source's, or the preset's)")
    p.add_argument("--keyframe-seconds", type=float, help="seconds between keyframes (default 1)")
    p.add_argument("--fast-decode", action="store_true", help="H.264 tuned for decoding speed (x264 tune=fastdecode)")
    p.add_argument("--crf", type=int, help="H.264 quality of re-encoded clips, x264 CRF (default 20; 23 with --train-format)")
    p.set_defaults(func=_prepare)

    p = dsub.add_parser("merge-reports", help="join the per-part reports of `prepare --part I/N` runs")
    p.add_argument("out", help="the shard folder all parts wrote to")
    p.set_defaults(func=_merge_reports)

    p = dsub.add_parser("check", help="decode every sample as training would; count good and bad by reason")
    p.add_argument("src", help="a data source (folder, manifest, shards)")
    p.add_argument("--json", action="store_true", help="print the JSON report")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--max-member-mb", type=float, default=1024.0,
                   help="a shard member larger than this is not read (counted too_large)")
    p.set_defaults(func=_check)

    vocab = sub.add_parser("vocab", help="word vocabulary for the text tower")
    vsub = vocab.add_subparsers(dest="vocab_command", metavar="SUBCOMMAND", required=True)
    p = vsub.add_parser("build", help="build vocab.json from training captions")
    p.add_argument("src", nargs="+", help="data sources or caption files (.srt/.vtt/.json/.txt)")
    p.add_argument("--out", required=True, help="output vocab.json")
    p.add_argument("--max-size", type=int, default=65536, help="entries incl. <pad> and <unk> (at most 65536)")
    p.add_argument("--min-count", type=int, default=1, help="drop words seen fewer times")
    p.set_defaults(func=_vocab_build)
