"""Entry point of the ``vatt`` command.

Each command group lives in its own module exposing ``register(subparsers)``; a registered
command sets ``func(args) -> int | None`` with ``set_defaults``. Errors meant for people
(:class:`vatt.errors.VattError`, missing files) become one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .. import __version__
from ..errors import VattError

# Order here is the order in `vatt --help`.
COMMAND_MODULES = ("model_cmds", "data_cmds", "train_cmds", "eval_cmds", "search_cmds", "convert_cmds")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vatt",
        description="VATT: self-supervised Video-Audio-Text Transformers (PyTorch).",
    )
    parser.add_argument("--version", action="version", version=f"vatt {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"{__package__}.{name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the command line, for configs that record the command that made them
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (VattError, FileNotFoundError, NotADirectoryError, IsADirectoryError) as e:
        print(f"vatt {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vatt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
