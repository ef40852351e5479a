"""Exceptions that carry a message meant for a person.

Everything the library raises on bad user input derives from :class:`VattError`; the ``vatt``
command prints such an error as one line on stderr and exits with code 2 (no traceback).
"""

from __future__ import annotations

import difflib
from typing import Iterable


class VattError(Exception):
    """Base class: a problem the user can fix (bad input, missing file, unknown name)."""


class InputError(VattError, ValueError):
    """A tensor, file or argument is not what was expected (shape, layout, range, type)."""


class ConfigError(VattError, KeyError):
    """An unknown preset or configuration key, or a value of the wrong type."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(VattError):
    """A directory or file is not a vatt checkpoint, or it is incomplete or corrupt."""


class DataError(VattError):
    """A media, caption or manifest file could not be used (raised in strict mode)."""


def nearest(name: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest valid name, or a list of choices."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.0)
    if close:
        return f" (did you mean '{close[0]}'?)"
    return f" (valid: {', '.join(choices)})" if choices else ""


def describe_tensor(x) -> str:
    """Short human description of a tensor-like value: shape, dtype and range."""
    shape = getattr(x, "shape", None)
    if shape is None:
        return type(x).__name__
    desc = f"{list(shape)} {str(getattr(x, 'dtype', '')).replace('torch.', '')}"
    try:
        if x.numel() > 0 and x.is_floating_point():
            desc += f" in [{float(x.min()):.3g}, {float(x.max()):.3g}]"
    except Exception:  # pragma: no cover - non-torch inputs
        pass
    return desc
