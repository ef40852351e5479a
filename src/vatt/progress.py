"""How library code reports progress: through one optional callable, never by drawing a bar.

Every long-running library function takes ``progress: Progress | None`` and calls it as::

    progress(0, total=120, desc="embedding", unit="clip")   # a new phase of 120 units
    progress(8)                                             # 8 more units done
    progress(0, loss="0.93")                                # extra information for the display

The CLI passes :class:`vatt.cli.progress.Bars` (tqdm bars); tests pass a list's ``append`` or a
counter. The training loop's per-step ``callback(metrics)`` is a metrics hook, not progress.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, TypeVar

Progress = Callable[..., None]
T = TypeVar("T")


def start(progress: Progress | None, total: int | None, desc: str, unit: str = "item") -> None:
    """Begin a phase of ``total`` units (None: unknown)."""
    if progress is not None:
        progress(0, total=total, desc=desc, unit=unit)


def advance(progress: Progress | None, n: int = 1, **info: Any) -> None:
    """``n`` more units done (with optional display information)."""
    if progress is not None:
        progress(n, **info)


def track(progress: Progress | None, items: Iterable[T], *, total: int | None = None, desc: str = "",
          unit: str = "item", size: Callable[[T], int] | None = None) -> Iterator[T]:
    """Yield ``items``, reporting one unit per item (or ``size(item)`` units, e.g. a batch)."""
    if progress is None:
        yield from items
        return
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    start(progress, total, desc, unit)
    for item in items:
        yield item
        progress(size(item) if size else 1)
