"""Entry point of the ``vatt`` command.

Each command group lives in its own module exposing ``register(subparsers)``; a registered
command sets ``func(args) -> int | None`` with ``set_defaults``. Errors meant for people
(:class:`vatt.errors.VattError`, bad flags, file-system errors: missing file, permission denied,
read-only file system, disk full) become one line on stderr and exit code 2. Any other exception
becomes one line plus a hint to rerun with ``--debug`` (which shows the traceback), exit code 1.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .. import __version__
from ..errors import VattError

# Order here is the order in `vatt --help`.
COMMAND_MODULES = ("model_cmds", "data_cmds", "train_cmds", "eval_cmds", "bench_cmds", "search_cmds", "convert_cmds")


class _Parser(argparse.ArgumentParser):
    """Bad flags are one line (``vatt eval retrieval: error: argument --batch-size: ...``), exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vatt",
        description="VATT: self-supervised Video-Audio-Text Transformers (PyTorch).",
    )
    parser.add_argument("--version", action="version", version=f"vatt {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an unexpected error instead of one line")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"{__package__}.{name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a bad flag (one line, see _Parser): the same code
        return int(e.code or 0) if not isinstance(e.code, str) else 2
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
    except VattError as e:
        if args.debug:
            raise
        print(f"vatt {args.command}: error: {_one_line(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:  # missing file, permission denied, read-only file system, disk full ...
        if args.debug:
            raise
        print(f"vatt {args.command}: error: {describe_os_error(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vatt {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug or an unforeseen failure: one line, the traceback on request
        if args.debug:
            raise
        print(f"vatt {args.command}: unexpected error: {type(e).__name__}: {_one_line(str(e))} "
              f"(rerun as `vatt --debug {args.command} ...` for the full traceback)", file=sys.stderr)
        return 1


def describe_os_error(e: OSError) -> str:
    """``Permission denied: 'runs/x/metrics.jsonl'`` rather than ``[Errno 13] ...``."""
    if e.strerror and e.filename is not None:
        where = f"{e.filename!r}" + (f" -> {e.filename2!r}" if e.filename2 is not None else "")
        return f"{e.strerror}: {where}"
    return _one_line(str(e)) or type(e).__name__


def _one_line(text: str) -> str:
    return " ".join(text.split())[:1000]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
