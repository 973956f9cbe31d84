"""The Grafana dashboard: parseable, every query valid PromQL (promtool) over metrics we expose,
and it covers what on call looks at first."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from tests.unit.test_alerts import PROMTOOL, exposed_names, needs_promtool

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "streamscore.json"


def _exprs() -> list[str]:
    data = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in data["panels"] for t in p["targets"]]


def test_dashboard_covers_the_on_call_views() -> None:
    titles = " ".join(p["title"] for p in json.loads(DASHBOARD.read_text())["panels"]).lower()
    for topic in (
        "throughput",
        "latency",
        "dead letters by reason",
        "lag",
        "model version",
        "variant",
        "drift",
        "retrain",
        "fallback",
    ):
        assert topic in titles, topic


@needs_promtool
def test_every_panel_query_is_valid_promql(tmp_path: Path) -> None:
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:panel_{i}", "expr": e} for i, e in enumerate(_exprs())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    out = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_panels_use_only_metrics_we_expose() -> None:
    exposed = exposed_names()
    for expr in _exprs():
        for name in re.findall(r"\b(streamscore_[a-z_]+)", expr):
            assert name in exposed, f"dashboard uses {name}, which no worker exposes"
