"""Argument types shared by the command modules: a bad value is an argparse error (one line, exit 2)
before any work starts, e.g. ``argument --batch-size: expected an integer >= 1, got '0'``."""

from __future__ import annotations

import argparse
import math


def _number(kind, low: float, *, low_open: bool = False):
    what = "an integer" if kind is int else "a number"
    bound = f"{'>' if low_open else '>='} {low:g}"

    def parse(text: str):
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {what} {bound}, got {text!r}") from None
        if not math.isfinite(value) or value < low or (low_open and value == low):
            raise argparse.ArgumentTypeError(f"expected {what} {bound}, got {text!r}")
        return value

    parse.__name__ = f"{kind.__name__} {bound}"  # argparse names the type in some messages
    return parse


positive_int = _number(int, 1)
nonnegative_int = _number(int, 0)
positive_float = _number(float, 0, low_open=True)
nonnegative_float = _number(float, 0)


def port(text: str) -> int:
    """A TCP port, 0-65535 (0: the system picks a free one)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, got {text!r}")
    return value
