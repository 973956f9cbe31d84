"""The capacity search of `load bench --capacity`, pure: per implementation, a geometric
bisection over arrival rates that keeps its bracket (the highest rate that passed, the lowest
that failed) and looks lower once when its lowest rate fails."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

LOOK_LOWER = 0.5  # when the lowest rate fails: one probe at half of it before giving up
CONVERGED = 1.02  # a bracket this tight (first fail / last pass) needs no more probes


@dataclass
class Bracket:
    """One implementation's search between ``low`` and ``high`` (its own backlog rate: an
    open-loop rate above what a backlog drains at cannot keep latency bounded).

    >>> b = Bracket(500, 8000)
    >>> b.next_rate()
    500
    >>> b.record(500, passed=True); b.next_rate()
    2000.0
    >>> b.record(2000.0, passed=False); b.label(), b.next_rate()
    ('500', 1000.0)
    """

    low: float
    high: float
    passed: float | None = None  # the highest rate that passed
    failed: float | None = None  # the lowest rate that failed
    looked_lower: bool = False

    def next_rate(self) -> float | None:
        """The next rate to probe, or None when the search is over."""
        if self.passed is None and self.failed is None:
            return self.low
        if self.passed is None:  # even the lowest rate failed
            return None if self.looked_lower else self.low * LOOK_LOWER
        top = self.failed if self.failed is not None else self.high
        if top / self.passed < CONVERGED:
            return None
        return math.sqrt(self.passed * top)

    def record(self, rate: float, passed: bool) -> None:
        if rate < self.low:
            self.looked_lower = True
        if passed:
            self.passed = rate if self.passed is None else max(self.passed, rate)
        else:
            self.failed = rate if self.failed is None else min(self.failed, rate)

    def label(self) -> str:
        """The capacity as a table shows it: the last rate that passed, else "below" the
        lowest that failed (never 0, which would read as a measured capacity of nothing)."""
        if self.passed is not None:
            return f"{self.passed:,.0f}"
        if self.failed is not None:
            return f"below {self.failed:,.0f}"
        return "not probed"


def rows(brackets: dict[str, Bracket]) -> dict[str, dict[str, Any]]:
    """Per implementation: capacity (last pass, None if none), first fail, the label, and the
    ratio to bare's: the point estimate (last pass over last pass) and the range the brackets
    allow (own last pass over bare's first fail, own first fail over bare's last pass).

    >>> r = rows({"bare": Bracket(500, 9e3, 2000, 2500), "w": Bracket(500, 9e3, 1000, 1250)})
    >>> r["w"]["ratio_to_bare"], r["w"]["ratio_range"]
    (0.5, [0.4, 0.625])
    """
    bare = brackets.get("bare")
    out: dict[str, dict[str, Any]] = {}
    for impl, b in brackets.items():
        ratio: float | None = None
        lo: float | None = None
        hi: float | None = None
        if bare is not None and bare.passed:
            ratio = b.passed / bare.passed if b.passed else None
            hi = b.failed / bare.passed if b.failed else None
        if bare is not None and bare.failed:
            lo = (b.passed or 0.0) / bare.failed
        out[impl] = {
            "capacity": round(b.passed) if b.passed is not None else None,
            "first_fail": round(b.failed) if b.failed is not None else None,
            "label": b.label(),
            "upper_bound": round(b.high),
            "ratio_to_bare": round(ratio, 3) if ratio is not None else None,
            "ratio_range": [
                round(lo, 3) if lo is not None else None,
                round(hi, 3) if hi is not None else None,
            ],
        }
    return out
