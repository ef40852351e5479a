"""``vatt convert official``: turn an official TensorFlow VATT checkpoint into a vatt model directory."""

from __future__ import annotations

import argparse

from ..config import parse_override


def register(sub) -> None:
    conv = sub.add_parser("convert", help="import checkpoints from elsewhere (the official TensorFlow VATT)")
    csub = conv.add_subparsers(dest="convert_command", metavar="SOURCE", required=True)
    p = csub.add_parser(
        "official",
        help="an official TensorFlow VATT checkpoint (pretrained or fine-tuned) -> a vatt model directory",
        description=(
            "Read an official VATT checkpoint (ckpt-N.index + ckpt-N.data-*) without TensorFlow, map every "
            "model variable onto a vatt model (optimizer slots are skipped), and write config.json, "
            "model.safetensors, vocab.json (with --vocab) and conversion.json. Sizes are read off the "
            "checkpoint; see docs/CONVERT.md for the released checkpoints and how to verify a conversion."
        ),
    )
    p.add_argument("checkpoint", metavar="CKPT", help="checkpoint prefix (…/ckpt-500000), its .index file, or its folder")
    p.add_argument("--preset", choices=["bbs", "mbs", "lbs", "ma-medium"], default=None,
                   help="the released model it comes from (default: guessed from the shapes)")
    p.add_argument("--vocab", metavar="FILE", default=None,
                   help="the official vocabulary text file (lines 'word' or 'idx word'), to encode strings as "
                        "the official code does")
    p.add_argument("--out", required=True, metavar="DIR", help="model directory to write")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config value the shapes cannot show, e.g. --set video_encoder.num_heads=4 (repeatable)")
    p.set_defaults(func=convert_official_cmd)


def convert_official_cmd(args: argparse.Namespace) -> int:
    from ..convert.official import from_official

    overrides = dict(parse_override(o) for o in args.overrides)
    model = from_official(args.checkpoint, preset=args.preset, vocab=args.vocab, out=args.out, overrides=overrides)
    cfg = model.config
    what = (f"{cfg.classifier.modality} classifier, {cfg.classifier.num_classes} classes"
            if cfg.classifier is not None else "pretrained model")
    print(f"wrote {args.out}: {cfg.name} ({what}, {model.num_parameters() / 1e6:.1f}M parameters)")
    print(f"load it with vatt.load_model({args.out!r}); check it with the steps in docs/CONVERT.md")
    return 0
