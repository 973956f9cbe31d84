"""Comparing two sets of predictions for the same events (pure).

``base`` and ``other`` map an event id to the (score, model version) that answered it: the
original predictions and a sandbox re-score, or two sandbox runs. Events in only one side are
counted, never compared.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass
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


@dataclass(frozen=True)
class Diff:
    base: str
    other: str
    threshold: float
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def diff(
    base: Mapping[str, Scored],
    other: Mapping[str, Scored],
    threshold: float = 0.5,
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
    """
    ids = sorted(set(base) & set(other))
    b = np.asarray([base[e].score for e in ids], dtype=np.float64)
    o = np.asarray([other[e].score for e in ids], dtype=np.float64)
    delta = o - b
    changed = np.abs(delta) > EPSILON
    up = (b < threshold) & (o >= threshold)
    down = (b >= threshold) & (o < threshold)
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
            "flips": int(up[rows].sum() + down[rows].sum()),
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
    )


def markdown(d: Diff) -> str:
    """The report as markdown (a person's view; ``Diff.to_dict`` is the machine's)."""
    lines = [
        f"# Replay diff: {d.other} against {d.base}",
        "",
        f"- events compared: {d.matched} (only in {d.base}: {d.only_in_base}, "
        f"only in {d.other}: {d.only_in_other})",
        f"- changed: {d.changed} ({_share(d.changed, d.matched)})",
        f"- decision flips at {d.threshold:g}: {d.flips_up + d.flips_down} "
        f"({d.flips_up} up, {d.flips_down} down)",
    ]
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
    ax.set_title(
        f"{d.changed} of {d.matched} changed; {d.flips_up + d.flips_down} flips at {d.threshold:g}"
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
