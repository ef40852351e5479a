"""The one plain-text table formatter (CLI output and the demo report)."""

from __future__ import annotations

from typing import Any, Sequence


def format_cell(value: Any) -> str:
    """Floats with 4 decimals, everything else as ``str``."""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def format_table(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None, *,
                 align: str = "left", rule: bool = True) -> str:
    """Aligned columns separated by two spaces.

    Args:
        rows: cells (floats get 4 decimals; pre-format them for other precisions).
        header: column names, underlined with dashes when ``rule``.
        align: ``"left"`` (every column) or ``"numbers"`` (first column left, the others right).
    """
    cells = [[format_cell(c) for c in row] for row in rows]
    if header is not None:
        cells.insert(0, [str(h) for h in header])
    if not cells:
        return ""
    widths = [max(len(r[i]) for r in cells if i < len(r)) for i in range(max(len(r) for r in cells))]

    def line(row):
        parts = [c.ljust(w) if align == "left" or i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        return "  ".join(parts).rstrip()

    lines = [line(r) for r in cells]
    if header is not None and rule:
        lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
