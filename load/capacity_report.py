"""The tables and the plot of `load bench --capacity` and `--tail-probes`, from their rows."""

from __future__ import annotations

from typing import Any

from load.capacity import CONTROL, SUSPECTS


def tail_markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| variant | rate | p50 ms | p95 ms | p99 ms | load average 1 min | verdict |",
        "|---|---|---|---|---|---|---|",
    ]

    def both(mine: list[dict[str, Any]], field: str) -> str:
        return " / ".join(str(r[field]) for r in mine)

    for name in (CONTROL, *SUSPECTS):
        mine = [r for r in rows if r["suspect"] == name]
        if mine:
            lines.append(
                f"| {name} | {mine[0]['rate']:,} | {both(mine, 'p50_ms')} | "
                f"{both(mine, 'p95_ms')} | {both(mine, 'p99_ms')} | "
                f"{' / '.join(str(r['load_average'][0]) for r in mine)} | {both(mine, 'verdict')} |"
            )
    lines.append("")
    lines.append("Each cell: round 1 / round 2.")
    return "\n".join(lines) + "\n"


def per_event_us(probe: dict[str, Any]) -> str:
    """The implementation's CPU per event sent in a probe, in µs ("-" when not measured).

    >>> per_event_us({"impl_cpu_s": 0.75, "sent": 7500})
    '100.0'
    >>> per_event_us({"sent": 7500})
    '-'
    """
    cpu, sent = probe.get("impl_cpu_s"), probe.get("sent") or 0
    return "-" if not cpu or not sent else f"{cpu / sent * 1e6:.1f}"


def markdown(capacity: dict[str, Any]) -> str:
    lines = [
        f"Capacity at p99 ≤ {capacity['bound_ms']:g} ms ({capacity['seconds']:g} s per rate):",
        "",
        "| implementation | capacity (events/s) | last pass / first fail | upper bound | "
        "ratio to bare | ratio range |",
        "|---|---|---|---|---|---|",
    ]

    def dash(x: Any) -> str:
        return "-" if x is None else f"{x:,}" if isinstance(x, int) else str(x)

    for impl, row in capacity["rows"].items():
        lo, hi = row["ratio_range"]
        lines.append(
            f"| {impl} | {row['label']} | {dash(row['capacity'])} / {dash(row['first_fail'])} | "
            f"{row['upper_bound']:,} | {dash(row['ratio_to_bare'])} | {dash(lo)} to {dash(hi)} |"
        )
    for note in capacity.get("notes", []):
        lines.append(f"\nNote: {note}.")
    lines += [
        "",
        "| implementation | rate | achieved | answered/sent | p50 ms | p95 ms | p99 ms | "
        "implementation CPU µs/event | generator CPU s | generator lag p99 / max ms | "
        "harness CPU s | broker + Redis CPU s | load average 1 min | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in sorted(capacity["probes"], key=lambda p: (p["impl"], p["rate"])):
        lines.append(
            f"| {p['impl']} | {p['rate']:,} | {p['achieved_rate']:,} | "
            f"{p['answered']:,}/{p['sent']:,} | {p['p50_ms']} | {p['p95_ms']} | {p['p99_ms']} | "
            f"{per_event_us(p)} | {p['generator_cpu_s']} | "
            f"{p['generator_lag_p99_ms']} / {p['generator_lag_max_ms']} | "
            f"{p['harness_cpu_s']} | {round(sum(p['infra_cpu_s'].values()), 2)} | "
            f"{p['load_average'][0]} | {p['verdict']} |"
        )
    return "\n".join(lines) + "\n"


def plot(capacity: dict[str, Any], path: Any) -> None:
    """p50 and p99 against the offered rate, per implementation, with the bound."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for impl in capacity["rows"]:
        pts = sorted(
            (p for p in capacity["probes"] if p["impl"] == impl and p["p99_ms"] is not None),
            key=lambda p: p["rate"],
        )
        rates = [p["rate"] for p in pts]
        (line,) = ax.plot(rates, [p["p99_ms"] for p in pts], marker="o", label=f"{impl} p99")
        ax.plot(
            rates,
            [p["p50_ms"] for p in pts],
            marker=".",
            linestyle="--",
            color=line.get_color(),
            label=f"{impl} p50",
        )
    ax.axhline(capacity["bound_ms"], color="grey", linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("offered rate (events/s)")
    ax.set_ylabel("latency (ms, log scale)")
    ax.set_title(f"open-loop latency against rate; capacity at p99 ≤ {capacity['bound_ms']:g} ms")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
