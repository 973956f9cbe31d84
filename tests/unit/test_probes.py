"""Probe answers: liveness is local, readiness names the failing dependency and is cached."""

from __future__ import annotations

import json
import urllib.request

import pytest

from services.core import metrics
from streams.probes import Probes, serve


def test_ready_only_when_every_check_passes() -> None:
    state: dict[str, str | None] = {"redis": None}

    def redis() -> str | None:
        return state["redis"]

    probes = Probes(lambda: None, {"broker": lambda: None, "redis": redis}, cache_seconds=0)
    assert probes.readyz()[0] == 200
    state["redis"] = "connection refused"
    code, body = probes.readyz()
    assert code == 503
    assert json.loads(body)["checks"] == {"broker": "ok", "redis": "connection refused"}


def test_a_raising_check_is_not_ready_and_readiness_is_cached() -> None:
    calls = []

    def broken() -> str | None:
        calls.append(1)
        raise ConnectionError("redis down")

    probes = Probes(lambda: None, {"redis": broken}, cache_seconds=60)
    code, body = probes.readyz()
    assert code == 503 and "ConnectionError: redis down" in body.decode()
    probes.readyz()
    assert len(calls) == 1  # the second probe within the cache window did not ask again


def test_liveness_does_not_depend_on_readiness() -> None:
    probes = Probes(lambda: None, {"redis": lambda: "down"})
    assert probes.healthz()[0] == 200 and probes.readyz()[0] == 503
    stuck = Probes(lambda: "worker loop last turned 45 s ago", {})
    assert stuck.healthz() == (
        503,
        b'{"status": "fail", "detail": "worker loop last turned 45 s ago"}',
    )


def test_endpoints_over_http() -> None:
    server = serve(Probes(lambda: None, {"redis": lambda: "down"}), "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as r:  # noqa: S310
            assert r.status == 200
        with pytest.raises(urllib.error.HTTPError) as not_ready:
            urllib.request.urlopen(f"{base}/readyz", timeout=5)  # noqa: S310
        assert not_ready.value.code == 503
        not_ready.value.close()
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as r:  # noqa: S310
            assert r.headers["Content-Type"].startswith("text/plain")
            body = r.read()
        assert f"# TYPE {metrics.MODEL_SWAPS._name}".encode() in body
    finally:
        server.shutdown()
        server.server_close()


def test_a_hung_check_is_not_ready_and_does_not_block_the_next_probe() -> None:
    """A check that never answers (a client call stuck on a dead socket) costs a probe
    `check_seconds`, is reported, and is not started again while it hangs."""
    import threading
    import time

    release = threading.Event()
    started = []

    def hung() -> str | None:
        started.append(1)
        release.wait(30)
        return None

    probes = Probes(lambda: None, {"broker": hung, "redis": lambda: None}, 0, 0.2)
    try:
        t0 = time.monotonic()
        code, body = probes.readyz()
        assert code == 503 and "no answer" in json.loads(body)["checks"]["broker"]
        assert json.loads(body)["checks"]["redis"] == "ok"
        code, _ = probes.readyz()
        assert code == 503 and time.monotonic() - t0 < 5
        assert len(started) == 1  # not started again while it hangs
    finally:
        release.set()
