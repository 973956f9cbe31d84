"""Alert rules: valid (promtool check), firing exactly for their scenarios (promtool test), each
linked to an existing runbook entry, and each over metrics streamscore really exposes."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

from services.core import metrics
from services.embedded import prometheus

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
RUNBOOK = ROOT / "docs" / "operations.md"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
# Every runbook link: the external label runbook_base, then the entry in operations.md.
RUNBOOK_URL = re.compile(
    r"^\{\{ \$externalLabels\.runbook_base \}\}/docs/operations\.md#([a-z0-9-]+)$"
)
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (`make prometheus` installs Debian's package)"
)


def _rules() -> list[dict[str, object]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return out


@needs_promtool
def test_promtool_checks_the_rules() -> None:
    out = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr


@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    out = subprocess.run(
        [str(PROMTOOL), "test", "rules", str(RULE_TESTS)],
        capture_output=True,
        text=True,
        check=False,
        cwd=RULE_TESTS.parent,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_has_a_test_and_a_runbook_entry() -> None:
    anchors = _anchors(RUNBOOK.read_text())
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    for rule in _rules():
        name = str(rule["alert"])
        assert name in tested, f"{name} has no promtool test"
        url = str(rule["annotations"]["runbook_url"])  # type: ignore[index]
        link = RUNBOOK_URL.match(url)
        assert link and link.group(1) in anchors, f"{name}: {url}"
        assert rule["labels"]["severity"] in {"page", "ticket"}  # type: ignore[index]


def test_runbook_links_are_absolute_wherever_prometheus_runs() -> None:
    """A relative path cannot be opened from Alertmanager or a pager: the links start with the
    external label runbook_base, which the shipped Prometheus config sets to an absolute
    address and every promtool test group sets to the same one."""
    base = yaml.safe_load(PROMETHEUS.read_text())["global"]["external_labels"]["runbook_base"]
    assert re.match(r"^https://[^/]+/", base) and not base.endswith("/"), base
    groups = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    assert [g.get("external_labels", {}).get("runbook_base") for g in groups] == [base] * len(
        groups
    )
    expected = re.findall(r"runbook_url: (\S+)", RULE_TESTS.read_text())
    assert expected and all(u.startswith(f"{base}/docs/operations.md#") for u in expected)
    # The local Prometheus (`local up --with-prometheus`) links to the checked-out docs.
    assert prometheus.RUNBOOK_BASE == ROOT.as_uri()
    assert (Path(prometheus.RUNBOOK_BASE.removeprefix("file://")) / "docs/operations.md").is_file()


def exposed_names() -> set[str]:
    """Every series name a streamscore worker can expose (plus Prometheus's own ``up``)."""
    exposed = {"up"}
    for metric in REGISTRY.collect():
        if not metric.name.startswith(metrics.NAMESPACE):
            continue
        # Only names that exist as series: a counter family "x" is exposed as "x_total".
        if metric.type == "counter":
            exposed.add(metric.name + "_total")
        elif metric.type == "histogram":
            exposed |= {metric.name + x for x in ("_bucket", "_count", "_sum")}
        else:
            exposed.add(metric.name)
    return exposed


def test_alerts_use_only_metrics_we_expose() -> None:
    exposed = exposed_names()
    for rule in _rules():
        for name in re.findall(r"\b(streamscore_[a-z_]+)", str(rule["expr"])):
            assert name in exposed, f"{rule['alert']} uses {name}, which no worker exposes"
