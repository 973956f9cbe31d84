"""`streamscore load bench`: throughput, latency and soak of the scoring worker against peers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from load import bench as b
from load import bench_api, cli_measures
from load import capacity as cap
from load import capacity_report as cap_report
from services.synthetic.world import strip_private
from streams.adapters import redis_client
from streams.api_keys import ApiKeys
from streams.commands.common import app, emit, json_option
from streams.commands.ml import make_world


@click.group()
def load() -> None:
    """Load generation and benchmarks (never part of `make test`)."""


for _command in cli_measures.COMMANDS:  # memory, file, rebalance, scale: their own module
    load.add_command(_command)


@load.command("bench")
@click.option(
    "--events",
    default=100_000,
    type=click.IntRange(min=1),
    show_default=True,
    help="Pre-filled input events.",
)
@click.option(
    "--naive-events", default=10_000, show_default=True, help="Events the naive peer scores."
)
@click.option(
    "--rounds",
    default=3,
    type=click.IntRange(min=1),
    show_default=True,
    help="Interleaved rounds (median).",
)
@click.option(
    "--broker",
    type=click.Choice(["kafka", "tansu"]),
    default="kafka",
    show_default=True,
    help="Embedded broker of the private stack.",
)
@click.option("--latency", is_flag=True, help="Also open-loop latency at 500/s and 25/50/75%.")
@click.option("--latency-seconds", default=20.0, show_default=True, help="Per latency rate.")
@click.option(
    "--capacity",
    is_flag=True,
    help="Also the highest rate bare and each worker variant of --impls answer with p99 "
    "<= 50 ms (bisection).",
)
@click.option(
    "--tail-probes",
    is_flag=True,
    help="Also the worker at --tail-rate (else its capacity, else 500/s) with each suspect "
    "of its tail turned off, and bare at the same rate as a control, in two rounds.",
)
@click.option(
    "--tail-rate",
    type=click.FloatRange(min=1),
    default=None,
    help="The tail probes' arrival rate (events/s), instead of the worker's capacity.",
)
@click.option("--capacity-seconds", default=20.0, show_default=True, help="Per capacity probe.")
@click.option("--capacity-steps", default=6, show_default=True, help="Bisection steps per impl.")
@click.option("--soak", "soak_seconds", default=0.0, help="Also a soak at 50% for this long.")
@click.option(
    "--price-per-core-hour", default=0.05, show_default=True, help="For the cost line (US dollars)."
)
@click.option(
    "--impls",
    default="naive,bare,ceiling,streamscore,streamscore_x2",
    show_default=True,
    help="Which implementations run, comma-separated; also streamscore_nolog (the worker "
    "with the feature log off, against streamscore: its cost).",
)
@click.option(
    "--cluster",
    is_flag=True,
    help="Also the worker on the secured cluster of `local up --cluster` (3 nodes, RF 3, "
    "acks=all, SASL_SSL; Redis Cluster with TLS), in the same run: one more table row.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write bench.json, bench.md and bench.png here.",
)
@json_option
@click.pass_context
def bench(
    ctx: click.Context,
    events: int,
    naive_events: int,
    rounds: int,
    broker: str,
    latency: bool,
    latency_seconds: float,
    capacity: bool,
    tail_probes: bool,
    tail_rate: float | None,
    capacity_seconds: float,
    capacity_steps: int,
    soak_seconds: float,
    price_per_core_hour: float,
    impls: str,
    cluster: bool,
    out_dir: Path | None,
) -> None:
    """Naive, bare and ceiling peers against the real worker (one and two processes), on a
    private embedded stack; medians of interleaved rounds, ratios pair by pair."""

    a = app(ctx)
    chosen = tuple(i.strip() for i in impls.split(",") if i.strip())
    unknown = [i for i in chosen if i not in b.IMPLS]
    if unknown or events < 1000 or rounds < 1:
        raise click.UsageError(
            f"--impls: unknown {unknown}" if unknown else "--events >= 1000, --rounds >= 1"
        )
    started = time.time()
    result: dict[str, Any] = {"machine": b.machine(), "broker": broker, "events": events}
    # How busy the machine was (2 cores: above 2 is a queue); per probe in the capacity rows.
    result["load_average"] = {"start": cap.load_average()}
    try:
        with b.private_stack(broker, a.err.print) as (base, pids):
            env = b.prepare(base, pids, events, naive_events, a.err.print)
            result["notes"] = env.notes  # the same list: the run's notes as they come
            with Progress(console=a.err, transient=True) as progress:
                task = progress.add_task("bench", total=rounds * len(chosen))

                def tick(what: str) -> None:
                    progress.update(task, description=what)

                def step(what: str) -> None:
                    tick(what)
                    progress.advance(task)

                runs = b.throughput(env, rounds, chosen, step)
                result["runs"] = [b.asdict(r) for r in runs]
                result |= b.summarise(runs)
                result["cost"] = b.cost(result["rows"], price_per_core_hour)
                result["price_per_core_hour"] = price_per_core_hour
                top = result["rows"].get("streamscore", {}).get("events_per_second")
                if latency and top:
                    rates = [500.0] + [top * f for f in (0.25, 0.5, 0.75)]
                    result["latency"] = b.latency(env, rates, latency_seconds, 3.0, tick)
                if capacity:
                    live = ("bare", *(i for i in chosen if i in cap.LIVE_VARIANTS))
                    live = live if len(live) > 1 else cap.CAPACITY_IMPLS
                    result["capacity"] = {}  # filled after every probe: a failure keeps them
                    cap.bisect_capacity(
                        env,
                        live,
                        TAIL_RATE,
                        upper_bounds(result["rows"], live),
                        capacity_steps,
                        capacity_seconds,
                        tick,
                        out=result["capacity"],
                    )
                if tail_probes and top:
                    # At --tail-rate, else the worker's capacity when it has one (where its tail
                    # decides), else 500/s: a rate the worker was meant to answer within the bound
                    # (half its backlog rate saturated it, and a saturated worker shows no cause).
                    found = result.get("capacity", {}).get("rows", {}).get("streamscore", {})
                    at = tail_rate or found.get("capacity") or TAIL_RATE
                    result["tail"] = []
                    cap.tail_probes(env, at, capacity_seconds, tick, result["tail"])
                if soak_seconds > 0 and top:
                    result["soak"] = b.soak(env, top * 0.5, soak_seconds, tick)
        if cluster:
            # The same worker and events on the secured cluster, after the single broker's rows.
            with b.private_cluster(a.err.print) as (cluster_base, cluster_pids):
                cenv = b.prepare(cluster_base, cluster_pids, events, naive_events, a.err.print)
                result["rows"]["streamscore_cluster"] = b.cluster_row(cenv, rounds, a.err.print)
            result["cost"] = b.cost(result["rows"], price_per_core_hour)
    except Exception as exc:  # noqa: BLE001 (one line, and what was measured is kept)
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        result["seconds"] = round(time.time() - started)
        result["load_average"]["end"] = cap.load_average()
        if out_dir is not None:
            write_out(out_dir, result, a.err.print)
    if "error" in result:
        where = f"; what was measured is in {out_dir}" if out_dir is not None else ""
        a.err.print(f"load bench stopped: {result['error']}{where}", markup=False)
        ctx.exit(1)
    emit(a, result, lambda c: render(c, result))
    if not all(row["all_accounted"] for row in result["rows"].values()):
        ctx.exit(1)


def write_out(out_dir: Path, result: dict[str, Any], say: Callable[[str], None]) -> None:
    """bench.json first (whatever the run got to), then the tables and pictures it allows."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    drawings: list[tuple[str, Callable[[], object]]] = [
        ("bench.md", lambda: (out_dir / "bench.md").write_text(markdown(result), "utf-8")),
        ("bench.png", lambda: plot(result, out_dir / "bench.png")),
    ]
    if result.get("capacity", {}).get("rows"):
        drawings.append(
            ("capacity.png", lambda: cap_report.plot(result["capacity"], out_dir / "capacity.png"))
        )
    for name, draw in drawings:
        try:
            draw()
        except Exception as exc:  # noqa: BLE001 (a partial result may not draw; the JSON stays)
            say(f"{name} not written: {type(exc).__name__}: {exc}")


TAIL_RATE = 500.0  # the lowest rate of the capacity search, and the tail probes' fallback


def upper_bounds(rows: dict[str, Any], impls: tuple[str, ...]) -> dict[str, float]:
    """Each implementation's own backlog rate in this run, the top of its capacity search (an
    open-loop rate above what a backlog drains at cannot keep latency bounded); one not run in
    backlog mode gets the fastest scoring implementation's (the ceiling does no scoring).

    >>> rows = {"bare": {"events_per_second": 9e3}, "ceiling": {"events_per_second": 2e5},
    ...         "streamscore": {"events_per_second": 1e4}}
    >>> upper_bounds(rows, ("bare", "streamscore", "streamscore_eos"))
    {'bare': 9000.0, 'streamscore': 10000.0, 'streamscore_eos': 10000.0}
    """
    rates = {impl: float(row["events_per_second"]) for impl, row in rows.items()}
    fallback = max((r for i, r in rates.items() if i != "ceiling"), default=2000.0)
    return {impl: rates.get(impl, fallback) for impl in impls}


LABELS = {
    "naive": "naive (one event at a time)",
    "bare": "bare (hand-written micro-batch loop)",
    "ceiling": "ceiling (consume → produce, no work)",
    "streamscore": "streamscore worker, 1 process",
    "streamscore_x2": "streamscore worker, 2 processes",
    "streamscore_nolog": "streamscore worker, 1 process, feature log off",
    "streamscore_cluster": "streamscore worker, 1 process, on the cluster (RF 3, acks=all, "
    "SASL_SSL)",
}


def _fmt(x: Any, spec: str = ",.0f") -> str:
    return "–" if x is None else format(x, spec)


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    out = []
    for impl, row in result["rows"].items():
        c = result["cost"][impl]
        out.append(
            [
                LABELS.get(impl, impl),
                _fmt(row["events_per_second"]),
                _fmt(row["vs_naive"], ".1f") + "x",
                _fmt(row["vs_bare"], ".2f") + "x",
                _fmt(row["worker_cpu_us"], ".1f"),
                _fmt(row["infra_cpu_us"], ".1f"),
                f"{_fmt(row['rss_mb'], '.0f')} / {_fmt(row['max_rss_mb'], '.0f')}",
                _fmt(c["core_seconds_per_million"], ".0f"),
                "yes" if row["all_accounted"] else "NO",
            ]
        )
    return out


HEAD = [
    "implementation",
    "events/s",
    "vs naive",
    "vs bare",
    "worker CPU µs/event",
    "broker+Redis CPU µs/event",
    "RSS MB (end / peak)",
    "core-s per 1M events",
    "all accounted",
]


def load_line(result: dict[str, Any]) -> str:
    """The load average at the start and the end of the run (1, 5, 15 min).

    >>> load_line({"load_average": {"start": [0.5, 0.4, 0.3], "end": [4.1, 3.2, 1.5]}})
    'load average (1, 5, 15 min): 0.5, 0.4, 0.3 at the start, 4.1, 3.2, 1.5 at the end'
    """
    la = result.get("load_average", {})
    parts = [f"{', '.join(str(x) for x in la[k])} at the {k}" for k in ("start", "end") if k in la]
    return "load average (1, 5, 15 min): " + ", ".join(parts)


def render(console: Console, result: dict[str, Any]) -> None:
    t = Table(title=f"throughput: medians of {result['runs'][-1]['round'] + 1} rounds")
    for h in HEAD:
        t.add_column(h)
    for r in table_rows(result):
        t.add_row(*r)
    console.print(t)
    console.print(f"ratios (pair by pair within a round, median): {result['ratios']}")
    console.print(load_line(result))
    for row in result.get("latency", []):
        console.print(
            f"latency at {row['rate']:,}/s: p50 {row['p50_ms']} ms, p95 {row['p95_ms']} ms, "
            f"p99 {row['p99_ms']} ms ({row['samples']:,} samples)"
        )
    if "capacity" in result:
        console.print(cap_report.markdown(result["capacity"]))
    if "tail" in result:
        console.print(cap_report.tail_markdown(result["tail"]))
    if "soak" in result:
        console.print(
            f"soak: {json.dumps({k: v for k, v in result['soak'].items() if k != 'rss_samples'})}"
        )


def markdown(result: dict[str, Any]) -> str:
    lines = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(result)]
    lines += ["", load_line(result)]
    if result.get("latency"):
        lines += [
            "",
            "| arrival rate (events/s) | achieved | p50 ms | p95 ms | p99 ms | samples |",
            "|---|---|---|---|---|---|",
        ]
        for row in result["latency"]:
            lines.append(
                f"| {row['rate']:,} | {row['achieved_rate']:,} | {row['p50_ms']} | "
                f"{row['p95_ms']} | {row['p99_ms']} | {row['samples']:,} |"
            )
    if result.get("capacity"):
        lines += ["", cap_report.markdown(result["capacity"])]
    if result.get("tail"):
        lines += ["", cap_report.tail_markdown(result["tail"])]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    """Throughput bars on a log axis, each labelled with its value (the ceiling would squash
    the rest on a linear one); latency percentiles on a log axis, with the 50 ms bound."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    lat = result.get("latency") or []
    fig, axes = plt.subplots(1, 2 if lat else 1, figsize=(12 if lat else 7, 4.5), squeeze=False)
    ax = axes[0][0]
    names = list(result["rows"])
    values = [result["rows"][n]["events_per_second"] for n in names]
    bars = ax.barh([LABELS.get(n, n) for n in names], values)
    ax.set_xscale("log")
    ax.bar_label(bars, labels=[f"{v / 1000:,.1f}k" for v in values], padding=3)
    ax.set_xlim(min(values) / 2, max(values) * 3)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x / 1000:g}k"))
    ax.set_xlabel("events/s, median of rounds (log scale)")
    ax.set_title("throughput, one run of `streamscore load bench`")
    ax.invert_yaxis()
    if lat:
        ax2 = axes[0][1]
        rates = [r["rate"] for r in lat]
        for q in ("p50_ms", "p95_ms", "p99_ms"):
            ax2.plot(rates, [r[q] for r in lat], marker="o", label=q.replace("_ms", ""))
        ax2.axhline(50, color="grey", linestyle="--", linewidth=1, label="50 ms bound")
        ax2.set_yscale("log")
        ax2.set_xlabel("arrival rate (events/s)")
        ax2.set_ylabel("latency (ms, log scale)")
        ax2.set_title("open-loop latency, one worker")
        ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@load.command("plot")
@click.argument("result", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def plot_command(result: Path, out: Path) -> None:
    """Draw bench.png again from a bench.json that `load bench --out` wrote."""
    plot(json.loads(result.read_text(encoding="utf-8")), out)


@load.command("api")
@click.option("--rounds", default=3, type=click.IntRange(min=1), show_default=True)
@click.option("--seconds", default=10.0, show_default=True, help="Per load and round.")
@click.option("--rate", default=200.0, show_default=True, help="Requests/s of one event.")
@click.option("--batch-rate", default=20.0, show_default=True, help="Requests/s of 100 events.")
@click.option("--port", default=18123, show_default=True, help="Loopback port of the server.")
@click.option(
    "--capacity",
    is_flag=True,
    help="Instead: requests/s one process answers with p99 <= --bound-ms, one event and 100 "
    "events a request (bisection over rates, the two loads' probes alternating).",
)
@click.option("--capacity-steps", default=6, show_default=True, help="Bisection steps per load.")
@click.option("--bound-ms", default=30.0, show_default=True, help="The p99 bound of --capacity.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="With --capacity: write api-capacity.json and api-capacity.md here.",
)
@json_option
@click.pass_context
def api_bench(
    ctx: click.Context,
    rounds: int,
    seconds: float,
    rate: float,
    batch_rate: float,
    port: int,
    capacity: bool,
    capacity_steps: int,
    bound_ms: float,
    out_dir: Path | None,
) -> None:
    """POST /v1/predict latency at fixed request rates, one server process against two.

    Runs on the stack in use (`local up`), with its features and champion: load and train
    first (`features load`, `train`). With --capacity: on a private stack of its own (the
    bench's: its features, a model trained and registered, stopped at the end)."""

    a = app(ctx)
    if capacity:
        cli_measures.api_capacity(a, seconds, capacity_steps, bound_ms, port, out_dir)
        return
    s = a.settings
    _, key = ApiKeys(redis_client(s), s.redis.key_prefix).create(
        "load-api", rate_per_second=1e9, burst=10**9
    )
    first = 90_000_000  # indexes no other command streams; event times end about now
    now = int(time.time() * 1000)
    world = make_world(s, 42, start_time_ms=now - first - 4_000, rate_per_second=1000)
    events = [strip_private(e) for e in world.events(2000, start_index=first)]
    with a.err.status(f"{rounds} rounds of 1 and 2 processes, {seconds:g} s per load..."):
        result = bench_api.run(s, key, events, rounds, seconds, rate, batch_rate, port=port)

    def render(c: Console) -> None:
        t = Table(title=f"POST /v1/predict, medians of {rounds} interleaved rounds")
        for col in ("server", "load", "p50 ms", "p99 ms", "achieved/s", "errors"):
            t.add_column(col, justify="right")
        for config, loads in result["results"].items():
            for name, r in loads.items():
                t.add_row(
                    config,
                    name,
                    f"{r['p50_ms']:.1f}",
                    f"{r['p99_ms']:.1f}",
                    f"{r['achieved_rate']:.0f}",
                    f"{r['errors']:.0f}",
                )
        c.print(t)

    emit(a, result, render)
    failed = sum(r["errors"] for loads in result["results"].values() for r in loads.values())
    if failed:
        a.err.print(f"[red]{failed:.0f} requests were not answered 200[/red]")
        ctx.exit(1)
