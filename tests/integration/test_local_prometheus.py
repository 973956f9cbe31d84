"""`local up --with-prometheus`'s Prometheus: a real server that loads our alert rules and finds
a local worker's probe port through the target file the worker writes."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from services.core import metrics
from services.embedded import prometheus
from streams.probes import Probes, serve
from tests.integration.conftest import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not prometheus.ALERT_RULES.is_file() or shutil.which("prometheus") is None,
        reason="prometheus not installed (`make prometheus` installs Debian's package)",
    ),
]


def _api(port: int, path: str, **params: str) -> Any:
    url = f"http://127.0.0.1:{port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 (loopback)
        return json.loads(r.read())["data"]


def test_local_prometheus_scrapes_a_worker_and_loads_the_alerts(tmp_path: Path) -> None:
    home = tmp_path / "home"
    port = free_port()
    server = subprocess.Popen(
        prometheus.argv(home, port), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    probes = serve(Probes(lambda: None, {}), "127.0.0.1", 0)
    try:
        metrics.MODEL_SWAPS.inc(3)  # something known to find in the scrape
        swaps = metrics.MODEL_SWAPS._value.get()
        target = prometheus.register_target(home, "w-test", f"127.0.0.1:{probes.server_address[1]}")
        assert target is not None and target.is_file()
        deadline = time.monotonic() + 60
        found: list[Any] = []
        while time.monotonic() < deadline and not found:
            time.sleep(1)
            if server.poll() is not None:
                pytest.fail(
                    f"prometheus exited: {server.stderr.read().decode() if server.stderr else ''}"
                )
            if not prometheus.answers(port):
                continue
            found = _api(port, "query", query="streamscore_model_swaps_total")["result"]
        assert found, "the worker target was never scraped"
        assert float(found[0]["value"][1]) == swaps
        assert found[0]["metric"]["job"] == prometheus.JOB
        groups = _api(port, "rules")["groups"]
        names = {r["name"] for g in groups for r in g["rules"]}
        assert "StreamscoreWorkerDown" in names and "StreamscoreHighDeadLetterRatio" in names
    finally:
        probes.shutdown()
        probes.server_close()
        server.terminate()
        server.communicate(timeout=30)
