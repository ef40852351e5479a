"""``vatt model-info``: parameter counts and forward GFLOPs of a preset (see vatt.model.flops)."""

from __future__ import annotations

import argparse
import json

from ..config import DEFAULT_PRESET, get_config, list_presets, parse_override


def register(sub) -> None:
    p = sub.add_parser(
        "model-info",
        help="parameter counts and forward GFLOPs at DropToken rates 0/0.25/0.5/0.75",
        description=(
            "Count parameters and measure multimodal forward GFLOPs (one clip: video, audio and a "
            "16-word caption; paper presets use the paper input 32x224x224 / 153,600 samples) with "
            "torch's FlopCounterMode on the meta device. A multiply-add counts as 2 FLOPs."
        ),
    )
    p.add_argument("preset", nargs="?", default=DEFAULT_PRESET, help=f"one of {', '.join(list_presets())}")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. --set video.crop_size=320 (repeatable)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print one JSON object")
    fmt.add_argument("--markdown", action="store_true", help="print the paper's DropToken table (Markdown)")
    p.set_defaults(func=model_info_cmd)


def model_info_cmd(args: argparse.Namespace) -> int:
    from ..model.flops import DROP_RATES, model_info
    from .progress import Bars

    cfg = get_config(args.preset, dict(parse_override(o) for o in args.overrides))
    quiet = args.json or args.markdown
    bars = None if quiet else Bars()
    try:
        info = model_info(cfg, DROP_RATES, progress=bars)
    finally:
        if bars is not None:
            bars.close()
    if args.json:
        print(json.dumps(info))
    elif args.markdown:
        print(_markdown(info))
    else:
        print(_table(info, cfg))
    return 0


def _markdown(info: dict) -> str:
    total = info["params"]["total"] / 1e6
    lines = [
        f"DropToken on `{info['preset']}` (multimodal forward of one clip; 2 FLOPs per multiply-add)",
        "",
        "| DropToken rate | GFLOPs | Params (M) |",
        "|---:|---:|---:|",
    ]
    for rate in sorted(info["gflops"], key=float, reverse=True):
        lines.append(f"| {float(rate):.0%} | {info['gflops'][rate]:.1f} | {total:.1f} |")
    return "\n".join(lines)


def _table(info: dict, cfg) -> str:
    v, a, t = cfg.video, cfg.audio, cfg.text
    lines = [
        f"preset {info['preset']}: video {v.num_frames}x{v.crop_size}x{v.crop_size} ({v.num_tokens} tokens), "
        f"audio {a.num_samples} samples ({a.num_tokens} tokens), text {t.max_words} words",
        "",
        f"{'part':<18}{'parameters':>16}{'millions':>10}",
    ]
    for name, n in info["params"].items():
        lines.append(f"{name:<18}{n:>16,}{n / 1e6:>10.2f}")
    lines += ["", f"{'drop rate':<18}{'GFLOPs':>16}"]
    for rate, g in info["gflops"].items():
        lines.append(f"{rate:<18}{g:>16.2f}")
    return "\n".join(lines)
