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
