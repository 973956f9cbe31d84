"""Comparing two sets of predictions for the same events (pure).

``base`` and ``other`` map an event id to the (score, model version) that answered it, and for
a multiclass task its top class: the original predictions and a sandbox re-score, or two
sandbox runs. Events in only one side are counted, never compared. A binary task counts
decision flips at the threshold; a regression task has no threshold (score deltas only); a
multiclass task counts class changes, with a confusion table of base class by other class.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

# Score differences below this are rounding, not change (scores are float64 end to end; a
# re-score of the same model on the same features is bit-for-bit equal).
EPSILON = 1e-12
BINS = 20


@dataclass(frozen=True, slots=True)
class Scored:
    score: float
    version: str
    label: str | None = None  # multiclass: the predicted class


@dataclass(frozen=True)
class Diff:
    base: str
    other: str
    threshold: float | None  # None: no decision (regression, multiclass)
    matched: int
    only_in_base: int
    only_in_other: int
    changed: int
    flips_up: int  # below the threshold in base, at or above it in other
    flips_down: int
    delta: dict[str, float]  # other - base over matched events: mean, abs quantiles, min, max
    histogram: dict[str, list[float]]  # edges (BINS + 1) and counts of other - base
    worst: list[dict[str, Any]]
    by_version: list[dict[str, Any]]
    class_changes: int = 0  # multiclass: events whose top class changed
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)  # base -> other -> n

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def diff(
    base: Mapping[str, Scored],
    other: Mapping[str, Scored],
    threshold: float | None = 0.5,
    names: tuple[str, str] = ("base", "other"),
    worst: int = 10,
) -> Diff:
    """Compare ``other`` with ``base`` on the events both hold.

    >>> d = diff({"a": Scored(0.4, "1"), "b": Scored(0.9, "1"), "c": Scored(0.1, "1")},
    ...          {"a": Scored(0.6, "2"), "b": Scored(0.9, "2"), "z": Scored(0.5, "2")})
    >>> d.matched, d.only_in_base, d.only_in_other, d.changed, d.flips_up, d.flips_down
    (2, 1, 1, 1, 1, 0)
    >>> d.worst[0]["event_id"], round(d.worst[0]["delta"], 3)
    ('a', 0.2)
    >>> d = diff({"a": Scored(0.5, "1", "x"), "b": Scored(0.7, "1", "y")},
    ...          {"a": Scored(0.6, "2", "y"), "b": Scored(0.8, "2", "y")}, None)
    >>> d.class_changes, d.confusion, d.flips_up
    (1, {'x': {'y': 1}, 'y': {'y': 1}}, 0)
    """
    ids = sorted(set(base) & set(other))
    b = np.asarray([base[e].score for e in ids], dtype=np.float64)
    o = np.asarray([other[e].score for e in ids], dtype=np.float64)
    delta = o - b
    changed = np.abs(delta) > EPSILON
    labelled = bool(ids) and all(
        base[e].label is not None and other[e].label is not None for e in ids
    )
    if threshold is None or labelled:
        up = down = np.zeros(len(ids), dtype=bool)
    else:
        up = (b < threshold) & (o >= threshold)
        down = (b >= threshold) & (o < threshold)
    confusion: dict[str, dict[str, int]] = {}
    moved = np.zeros(len(ids), dtype=bool)
    if labelled:
        for i, e in enumerate(ids):
            was, now = str(base[e].label), str(other[e].label)
            row = confusion.setdefault(was, {})
            row[now] = row.get(now, 0) + 1
            moved[i] = was != now
    stats: dict[str, float] = {}
    histogram: dict[str, list[float]] = {"edges": [], "counts": []}
    if ids:
        a = np.abs(delta)
        stats = {
            "mean": float(delta.mean()),
            "min": float(delta.min()),
            "max": float(delta.max()),
            "abs_p50": float(np.quantile(a, 0.5)),
            "abs_p90": float(np.quantile(a, 0.9)),
            "abs_p99": float(np.quantile(a, 0.99)),
            "abs_max": float(a.max()),
        }
        lo, hi = float(delta.min()), float(delta.max())
        if hi - lo < EPSILON:
            lo, hi = lo - 0.5 * 1e-3, hi + 0.5 * 1e-3
        counts, edges = np.histogram(delta, bins=BINS, range=(lo, hi))
        histogram = {"edges": [float(x) for x in edges], "counts": [int(c) for c in counts]}
    order = np.argsort(-np.abs(delta), kind="stable")[: worst if ids else 0]
    worst_rows = [
        {
            "event_id": ids[i],
            "base_score": float(b[i]),
            "other_score": float(o[i]),
            "delta": float(delta[i]),
            "base_version": base[ids[i]].version,
            "other_version": other[ids[i]].version,
        }
        for i in order
        if changed[i]
    ]
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, e in enumerate(ids):
        groups[(base[e].version, other[e].version)].append(i)
    by_version = [
        {
            "base_version": bv,
            "other_version": ov,
            "events": len(rows),
            "changed": int(changed[rows].sum()),
            "mean_abs_delta": float(np.abs(delta[rows]).mean()),
            "flips": int(up[rows].sum() + down[rows].sum() + moved[rows].sum()),
        }
        for (bv, ov), rows in sorted(groups.items())
    ]
    return Diff(
        base=names[0],
        other=names[1],
        threshold=threshold,
        matched=len(ids),
        only_in_base=len(set(base) - set(other)),
        only_in_other=len(set(other) - set(base)),
        changed=int(changed.sum()),
        flips_up=int(up.sum()),
        flips_down=int(down.sum()),
        delta=stats,
        histogram=histogram,
        worst=worst_rows,
        by_version=by_version,
        class_changes=int(moved.sum()),
        confusion=confusion,
    )


def markdown(d: Diff) -> str:
    """The report as markdown (a person's view; ``Diff.to_dict`` is the machine's)."""
    lines = [
        f"# Replay diff: {d.other} against {d.base}",
        "",
        f"- events compared: {d.matched} (only in {d.base}: {d.only_in_base}, "
        f"only in {d.other}: {d.only_in_other})",
        f"- changed: {d.changed} ({_share(d.changed, d.matched)})",
    ]
    if d.confusion:
        lines.append(f"- class changes: {d.class_changes} ({_share(d.class_changes, d.matched)})")
    elif d.threshold is not None:
        lines.append(
            f"- decision flips at {d.threshold:g}: {d.flips_up + d.flips_down} "
            f"({d.flips_up} up, {d.flips_down} down)"
        )
    if d.delta:
        lines.append(
            "- score delta (other - base): mean {mean:+.6f}, |delta| p50 {abs_p50:.6f}, "
            "p90 {abs_p90:.6f}, p99 {abs_p99:.6f}, max {abs_max:.6f}".format(**d.delta)
        )
    lines += ["", "## By version", ""]
    lines.append("| base | other | events | changed | mean abs delta | flips |")
    lines.append("|---|---|---:|---:|---:|---:|")
    for v in d.by_version:
        lines.append(
            f"| v{v['base_version']} | v{v['other_version']} | {v['events']} | {v['changed']} "
            f"| {v['mean_abs_delta']:.6f} | {v['flips']} |"
        )
    if d.confusion:
        classes = sorted(set(d.confusion) | {c for row in d.confusion.values() for c in row})
        lines += ["", f"## Classes: {d.base} (rows) by {d.other} (columns)", ""]
        lines.append("| | " + " | ".join(classes) + " |")
        lines.append("|---|" + "---:|" * len(classes))
        for was in classes:
            row = d.confusion.get(was, {})
            lines.append(f"| {was} | " + " | ".join(str(row.get(c, 0)) for c in classes) + " |")
    if d.worst:
        lines += ["", "## Largest changes", "", "| event_id | base | other | delta |"]
        lines.append("|---|---:|---:|---:|")
        for w in d.worst:
            lines.append(
                f"| {w['event_id']} | {w['base_score']:.6f} (v{w['base_version']}) "
                f"| {w['other_score']:.6f} (v{w['other_version']}) | {w['delta']:+.6f} |"
            )
    return "\n".join(lines) + "\n"


def _share(n: int, total: int) -> str:
    return f"{100 * n / total:.1f}%" if total else "n/a"


def histogram_png(d: Diff, path: str) -> None:
    """The delta histogram as a PNG (matplotlib, imported only here)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    edges, counts = d.histogram.get("edges", []), d.histogram.get("counts", [])
    if counts:
        widths = [b - a for a, b in zip(edges, edges[1:], strict=False)]
        ax.bar(edges[:-1], counts, width=widths, align="edge", edgecolor="black")
    ax.set_xlabel(f"score delta ({d.other} - {d.base})")
    ax.set_ylabel("events")
    if d.confusion:
        title = f"{d.changed} of {d.matched} changed; {d.class_changes} class changes"
    elif d.threshold is None:
        title = f"{d.changed} of {d.matched} changed"
    else:
        title = (
            f"{d.changed} of {d.matched} changed; {d.flips_up + d.flips_down} flips at "
            f"{d.threshold:g}"
        )
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
