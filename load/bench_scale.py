"""`streamscore load scale`: the worker's CPU cost per event with 1, 2 and 4 processes in one
consumer group, backlog mode (the pre-filled input of `load bench`), rounds interleaved.

A process count scales linearly on real cores only if the cost per event stays flat as
processes are added: then N processes on N free cores do N times the work. On this 2-core
machine the processes share the cores with the broker and Redis, so events/s cannot scale here;
what can be read is whether each event costs more CPU when the work is split (more fetches,
more commits, smaller batches, rebalances, contention for the cores).

Per run: events/s over the busy window, the processes' CPU µs per event (all of them, over
each one's busy window), each process's events and µs/event, broker + Redis µs/event, and the
count of outputs (predictions + dead letters must equal the input).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from load.bench import Env, InfraSampler, _count, _finish, add_topics, launch_worker
from load.bench import _worker_settings as worker_settings

PROCESSES = (1, 2, 4)


def run_one(env: Env, processes: int, rnd: int) -> dict[str, Any]:
    env.counter += 1
    out = f"bench.scale-out-{env.counter}-x{processes}.v1"
    add_topics(env.settings, {out: "Prediction"})
    dlq = f"{env.settings.topics.events}.dlq"
    dlq_before = _count(env, dlq)
    s = worker_settings(env, env.settings.topics.events, out, f"bench-scale-{env.counter}")
    sampler = InfraSampler(env.infra_pids)
    sampler.start()
    if processes == 1:
        procs = [launch_worker(s, "--max-events", str(env.events))]
    else:  # the processes share the partitions; each stops when idle
        procs = [launch_worker(s, "--timeout", "3") for _ in range(processes)]
    try:
        reports = _finish(procs, timeout=900)
    finally:
        sampler.stop()
    start = min(r["first_message_at"] for r in reports if r.get("first_message_at"))
    end = max(r["last_acked_at"] for r in reports if r.get("last_acked_at"))
    infra = sum(sampler.between(name, start, end) for name in env.infra_pids)
    outputs = _count(env, out) + _count(env, dlq) - dlq_before
    cpu = sum(r["busy_cpu_seconds"] for r in reports)
    return {
        "processes": processes,
        "round": rnd,
        "events_per_second": round(env.events / max(end - start, 1e-9), 1),
        "worker_cpu_us": round(cpu / env.events * 1e6, 2),
        "infra_cpu_us": round(infra / env.events * 1e6, 2),
        "per_process": [
            {
                "events": r["consumed"],
                "cpu_us_per_event": round(r["busy_cpu_seconds"] / r["consumed"] * 1e6, 2)
                if r["consumed"]
                else None,
                "batches": r["batches"],
                "rebalances": r["rebalances"],
                "rss_mb": round(r["rss_bytes"] / 2**20, 1),
            }
            for r in reports
        ],
        "all_accounted": outputs == env.events,
    }


def run(env: Env, rounds: int, tick: Callable[[str], None]) -> dict[str, Any]:
    runs = []
    for rnd in range(rounds):
        for n in PROCESSES:
            tick(f"round {rnd + 1}/{rounds}: {n} process{'es' if n > 1 else ''}")
            runs.append(run_one(env, n, rnd))
    rows = {}
    for n in PROCESSES:
        mine = [r for r in runs if r["processes"] == n]
        base = {r["round"]: r for r in runs if r["processes"] == 1}
        rows[n] = {
            "events_per_second": statistics.median(r["events_per_second"] for r in mine),
            "worker_cpu_us": statistics.median(r["worker_cpu_us"] for r in mine),
            "infra_cpu_us": statistics.median(r["infra_cpu_us"] for r in mine),
            "cpu_vs_one": round(
                statistics.median(
                    r["worker_cpu_us"] / base[r["round"]]["worker_cpu_us"] for r in mine
                ),
                2,
            ),
            "rate_vs_one": round(
                statistics.median(
                    r["events_per_second"] / base[r["round"]]["events_per_second"] for r in mine
                ),
                2,
            ),
            "batch_size": round(
                statistics.median(
                    sum(p["events"] for p in r["per_process"])
                    / max(1, sum(p["batches"] for p in r["per_process"]))
                    for r in mine
                ),
                1,
            ),
            "all_accounted": all(r["all_accounted"] for r in mine),
        }
    return {"events": env.events, "rounds": rounds, "rows": rows, "runs": runs}


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| processes | events/s | vs 1 | worker CPU µs/event (all processes) | vs 1 | "
        "broker+Redis µs/event | events per batch | all accounted |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, row in result["rows"].items():
        lines.append(
            f"| {n} | {row['events_per_second']:,.0f} | {row['rate_vs_one']:.2f}x | "
            f"{row['worker_cpu_us']:.1f} | {row['cpu_vs_one']:.2f}x | {row['infra_cpu_us']:.1f} | "
            f"{row['batch_size']:.0f} | {'yes' if row['all_accounted'] else 'NO'} |"
        )
    lines += ["", "| round | processes | per process: events; CPU µs/event |", "|---|---|---|"]
    for r in result["runs"]:
        each = ", ".join(
            f"{p['events']:,}; {p['cpu_us_per_event'] or 0:.1f}" for p in r["per_process"]
        )
        lines.append(f"| {r['round'] + 1} | {r['processes']} | {each} |")
    return "\n".join(lines) + "\n"
