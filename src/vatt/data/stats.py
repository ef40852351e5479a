"""Counting good, bad and masked samples across loader workers.

Workers cannot share counters, so every sample carries its own report (``"_events"``: the
problems met while producing it) and the main process adds those up in :class:`SampleStats` as
batches arrive (see :func:`vatt.data.loader.make_loader`). Each bad file is logged once.
"""

from __future__ import annotations

import logging
from collections import Counter

log = logging.getLogger("vatt.data")

BAD, MASKED = "bad", "masked"


class SampleStats:
    """Totals: ``good`` samples produced, ``bad`` samples skipped, counts by reason."""

    def __init__(self):
        self.good = 0
        self.bad = 0
        self.reasons: Counter = Counter()
        self.masked: Counter = Counter()
        self._logged: set[tuple[str, str]] = set()

    def record(self, events, good: int = 0) -> None:
        """Add ``events`` (``(path, reason, kind, detail)`` tuples; kind ``bad`` or ``masked``)."""
        self.good += good
        for path, reason, kind, detail in events:
            if kind == BAD:
                self.bad += 1
                self.reasons[reason] += 1
            else:
                self.masked[reason] += 1
            if (path, reason) not in self._logged:
                self._logged.add((path, reason))
                what = "skipped" if kind == BAD else "modality masked"
                log.warning("%s: %s (%s)%s", path, reason, what, f": {detail}" if detail else "")

    def as_dict(self) -> dict:
        """``{"good", "bad", "reasons": {reason: n}, "masked": {reason: n}}``."""
        return {"good": self.good, "bad": self.bad, "reasons": dict(self.reasons), "masked": dict(self.masked)}
