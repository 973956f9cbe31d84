"""The HTTP API under a fixed request rate on loopback: one event a request, and batches of 100,
for one server process against two, interleaved, medians of the rounds.

Open loop: request i is due at ``start + i / rate`` and its latency counts from then, so a slow
answer delays the requests behind it in the figures too (no coordinated omission). The clients
keep their connections open, as a service calling the API would: each connection opens and
serves one request before the timed schedule starts. The client runs on the same machine as the
server and shares its cores.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

import numpy as np

from services.core.settings import Settings, to_env

CLIENT_THREADS = 16


def start_server(settings: Settings, port: int, workers: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCORE_")}
    env |= to_env(settings) | {"STREAMSCORE_LOG__LEVEL": "WARNING"}
    proc = subprocess.Popen(  # noqa: S603 (our own CLI)
        [
            sys.executable,
            "-m",
            "streams.cli",
            "api",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:  # noqa: S310
                if r.status == 200:
                    return proc
        except OSError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited with {proc.returncode}")
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the API did not become ready in 120 s")


def open_loop(port: int, key: str, bodies: list[bytes], rate: float) -> dict[str, float]:
    """Send ``bodies`` at ``rate`` per second; latency percentiles (ms) from the due times."""
    due = queue.Queue[tuple[float, bytes] | None]()
    latencies: list[float] = []
    errors = [0]
    statuses: list[int] = []  # the first non-200 status, to say why
    lock = threading.Lock()

    ready = threading.Barrier(CLIENT_THREADS + 1)

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        # A keep-alive client: its connection is open, and has served a request, before the
        # timed schedule starts.
        conn.request("POST", "/v1/predict", bodies[0], headers)
        conn.getresponse().read()
        ready.wait()
        while (item := due.get()) is not None:
            at, body = item
            wait = at - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            try:
                conn.request("POST", "/v1/predict", body, headers)
                r = conn.getresponse()
                r.read()
                ok = r.status == 200
                if not ok and not statuses:
                    statuses.append(r.status)
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            done = time.perf_counter()
            with lock:
                latencies.append((done - at) * 1000)
                errors[0] += not ok

    threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENT_THREADS)]
    for t in threads:
        t.start()
    ready.wait()
    start = time.perf_counter() + 0.2
    for i, body in enumerate(bodies):
        due.put((start + i / rate, body))
    for _ in threads:
        due.put(None)
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    a = np.asarray(latencies)
    return {
        "requests": len(a),
        "errors": errors[0],
        "achieved_rate": len(a) / elapsed,
        "p50_ms": float(np.percentile(a, 50)),
        "p99_ms": float(np.percentile(a, 99)),
        "first_error_status": float(statuses[0]) if statuses else 0.0,
    }


def run(
    settings: Settings,
    key: str,
    events: list[dict[str, Any]],
    rounds: int = 3,
    seconds: float = 10.0,
    single_rate: float = 200.0,
    batch_rate: float = 20.0,
    batch: int = 100,
    port: int = 18123,
) -> dict[str, Any]:
    """Rounds of (one process, two processes), interleaved; per configuration and load, the
    median over rounds of each figure."""
    singles = [json.dumps(e).encode() for e in events]
    batches = [
        json.dumps({"events": events[i : i + batch]}).encode()
        for i in range(0, len(events) - batch + 1, batch)
    ]
    n_single = int(single_rate * seconds)
    n_batch = int(batch_rate * seconds)
    raw: dict[str, dict[str, list[dict[str, float]]]] = {}
    for _ in range(rounds):
        for workers in (1, 2):
            proc = start_server(settings, port, workers)
            try:
                # Warm up: every process compiles and caches, and the connections open.
                open_loop(port, key, singles[:200], 100.0)
                one = open_loop(
                    port, key, (singles * (n_single // len(singles) + 1))[:n_single], single_rate
                )
                many = open_loop(
                    port, key, (batches * (n_batch // len(batches) + 1))[:n_batch], batch_rate
                )
            finally:
                proc.terminate()
                proc.wait(30)
            row = raw.setdefault(f"{workers} process{'es' if workers > 1 else ''}", {})
            row.setdefault(f"1 event at {single_rate:g}/s", []).append(one)
            row.setdefault(f"{batch} events at {batch_rate:g}/s", []).append(many)
    result: dict[str, Any] = {}
    for config, loads in raw.items():
        result[config] = {
            name: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            for name, runs in loads.items()
        }
    return {"rounds": rounds, "seconds_per_load": seconds, "results": result}


def _repeat(bodies: list[bytes], n: int) -> list[bytes]:
    return (bodies * (n // len(bodies) + 1))[:n]


def capacity(
    settings: Settings,
    key: str,
    events: list[dict[str, Any]],
    bounds: dict[str, tuple[float, float]],
    seconds: float = 10.0,
    steps: int = 6,
    bound_ms: float = 30.0,
    batch: int = 100,
    port: int = 18123,
    tick: Any = None,
) -> dict[str, Any]:
    """Requests/s one server process answers with p99 within ``bound_ms``, per load ("single":
    one event a request, "batch": ``batch`` events), by geometric bisection between the
    ``bounds`` of each load (the low one is probed first, to show it holds). The two loads'
    probes alternate on one warm server process, so a machine that drifts drifts for both.

    A probe passes when every request was answered 200, the client kept the rate (95%) and
    the p99 is within the bound.
    """
    singles = [json.dumps(e).encode() for e in events]
    batches = [
        json.dumps({"events": events[i : i + batch]}).encode()
        for i in range(0, len(events) - batch + 1, batch)
    ]
    bodies = {"single": singles, "batch": batches}
    state: dict[str, dict[str, Any]] = {
        name: {"low": lo, "high": hi, "best": None, "failed": None}
        for name, (lo, hi) in bounds.items()
    }
    probes: list[dict[str, Any]] = []
    proc = start_server(settings, port, 1)
    try:
        open_loop(port, key, singles[:200], 100.0)  # warm-up: compiled model, connections
        for step in range(steps):
            for name, st in state.items():
                lo, hi = st["low"], st["high"]
                rate = lo if step == 0 else math.sqrt(lo * hi)
                if tick is not None:
                    tick(f"API capacity, step {step + 1}/{steps}: {name} at {rate:,.0f}/s")
                r = open_loop(port, key, _repeat(bodies[name], int(rate * seconds)), rate)
                passed = (
                    r["errors"] == 0
                    and r["achieved_rate"] >= 0.95 * rate
                    and r["p99_ms"] <= bound_ms
                )
                probes.append(
                    {"load": name, "step": step, "rate": round(rate, 1)} | r | {"passed": passed}
                )
                if not passed:
                    st["failed"] = rate if st["failed"] is None else min(st["failed"], rate)
                if passed:
                    st["low"], st["best"] = rate, rate
                elif step == 0:
                    st["high"], st["low"] = rate, rate / 4  # below the low bound: look lower
                else:
                    st["high"] = rate
    finally:
        proc.terminate()
        proc.wait(30)
    return {
        "bound_ms": bound_ms,
        "seconds_per_probe": seconds,
        "batch": batch,
        "capacity": {
            name: {
                "requests_per_second": None if st["best"] is None else round(st["best"], 1),
                "events_per_second": None
                if st["best"] is None
                else round(st["best"] * (1 if name == "single" else batch), 1),
                "lowest_failing_rate": None if st["failed"] is None else round(st["failed"], 1),
            }
            for name, st in state.items()
        },
        "probes": probes,
    }


def capacity_markdown(result: dict[str, Any]) -> str:
    """The capacity table and every probe, in the order run."""
    names = {"single": "1 event a request", "batch": f"{result['batch']} events a request"}
    lines = [
        f"| load | requests/s at p99 ≤ {result['bound_ms']:g} ms | events/s | lowest failing "
        "rate |",
        "|---|---|---|---|",
    ]
    for name, row in result["capacity"].items():
        lines.append(
            f"| {names[name]} | {_num(row['requests_per_second'])} | "
            f"{_num(row['events_per_second'])} | {_num(row['lowest_failing_rate'])} |"
        )
    lines += ["", "| step | load | rate/s | achieved/s | p50 ms | p99 ms | errors | passed |"]
    lines.append("|---|---|---|---|---|---|---|---|")
    for p in result["probes"]:
        lines.append(
            f"| {p['step'] + 1} | {names[p['load']]} | {p['rate']:,.0f} | "
            f"{p['achieved_rate']:,.0f} | {p['p50_ms']:.1f} | {p['p99_ms']:.1f} | "
            f"{p['errors']:.0f} | {'yes' if p['passed'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:,.0f}"
