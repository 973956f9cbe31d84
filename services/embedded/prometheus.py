"""A real Prometheus on loopback (Debian's ``prometheus`` binary) for `local up --with-prometheus`.

It loads the same alert rules as production (``deploy/prometheus/alerts.yml``) and discovers
local workers from files: each worker with an open probe port writes
``<home>/prometheus/targets/<worker id>.json`` and removes it when it stops.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from services.core.errors import EmbeddedStackError

ALERT_RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
JOB = "streamscore-scoring"  # the job name the alert rules use
# The alerts' runbook links (alerts.yml: <runbook_base>/docs/operations.md#<alert>) open the
# checked-out docs themselves on the local stack.
RUNBOOK_BASE = ALERT_RULES.parents[2].as_uri()
SCRAPE_SECONDS = 2  # local: fast enough for a demo to query right after it streams


def binary() -> str:
    found = shutil.which("prometheus")
    if not found:
        raise EmbeddedStackError(
            "prometheus is not on PATH: install Debian's package (`make prometheus`, or "
            "`apt-get install prometheus`), or run without --with-prometheus"
        )
    return found


def targets_dir(home: Path) -> Path:
    return home / "prometheus" / "targets"


def write_config(home: Path) -> Path:
    """prometheus.yml for the local stack; returns its path."""
    root = home / "prometheus"
    targets_dir(home).mkdir(parents=True, exist_ok=True)
    config = {
        "global": {
            "scrape_interval": f"{SCRAPE_SECONDS}s",
            "evaluation_interval": f"{SCRAPE_SECONDS}s",
            "external_labels": {"runbook_base": RUNBOOK_BASE},
        },
        "rule_files": [str(ALERT_RULES)] if ALERT_RULES.is_file() else [],
        "scrape_configs": [
            {
                "job_name": JOB,
                "file_sd_configs": [
                    {"files": [str(targets_dir(home) / "*.json")], "refresh_interval": "2s"}
                ],
            }
        ],
    }
    path = root / "prometheus.yml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


def argv(home: Path, port: int) -> list[str]:
    config = write_config(home)
    data = home / "prometheus" / "data"
    # A fresh database each start: the local Prometheus is for this session, and series from a
    # previous one (a worker that is gone, old latencies) would fire its alerts again.
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True, exist_ok=True)
    return [
        binary(),
        f"--config.file={config}",
        f"--storage.tsdb.path={data}",
        "--storage.tsdb.retention.time=2d",
        f"--web.listen-address=127.0.0.1:{port}",
    ]


def answers(port: int, timeout: float = 1.0) -> bool:
    try:
        url = f"http://127.0.0.1:{port}/-/ready"
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (loopback)
            return int(r.status) == 200
    except (OSError, urllib.error.URLError):
        return False


def register_target(home: Path, worker_id: str, address: str) -> Path | None:
    """Announce a worker's probe address to a local Prometheus (if one was ever set up here)."""
    directory = targets_dir(home)
    if not directory.is_dir():
        return None
    path = directory / f"{worker_id}.json"
    path.write_text(json.dumps([{"targets": [address], "labels": {"worker_id": worker_id}}]))
    return path
