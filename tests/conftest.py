"""Shared test setup: a clean environment for every test, and the integration-stack options."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("streamscore")
    group.addoption(
        "--broker",
        choices=("auto", "kafka", "tansu"),
        default="auto",
        help="Broker for integration tests: Apache Kafka (fails if it cannot run), tansu, or "
        "auto (Kafka when Java and the jars are present, else tansu). Smoke tests also run on "
        "tansu whenever the main broker is Kafka.",
    )
    group.addoption(
        "--kafka-bootstrap",
        default=None,
        help="Run integration tests against this Kafka cluster instead of the embedded one.",
    )
    group.addoption(
        "--faults",
        action="store_true",
        help="Also run the long fault-kit cases (tests/faults, marker `faults`): `make faults`.",
    )
    group.addoption(
        "--cluster",
        action="store_true",
        help="Also run the tests on the secured three-node cluster (marker `cluster`): "
        "`make cluster-test`.",
    )
    group.addoption(
        "--soak-seconds",
        type=float,
        default=0.0,
        help="Run the fault kit's soak for this long (600 for the 10-minute soak: `make soak`).",
    )
    group.addoption(
        "--faults-report",
        default=None,
        help="Write the fault kit's table into this markdown file (between its faults markers).",
    )
    group.addoption(
        "--explore-seeds",
        default="0",
        help="Run the fault explorer over seeds 1..N (`make explore SEEDS=N`); 0: the pinned ones.",
    )
    group.addoption(
        "--explore-seed",
        default=None,
        help="Run the fault explorer on this seed, or these (comma-separated), to reproduce.",
    )
    group.addoption(
        "--explore-seconds",
        default="20",
        help="How long each explorer schedule runs (its faults, before the system settles).",
    )
    group.addoption(
        "--explore-guarantee",
        choices=("at_least_once", "exactly_once"),
        default="at_least_once",
        help="The explorer's workers' processing guarantee (`make explore GUARANTEE=...`); "
        "under exactly_once any second output of an input is a finding.",
    )
    group.addoption(
        "--redis-url",
        default=None,
        help="Run integration tests against this existing Redis instead of the embedded one.",
    )


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No STREAMSCORE_* variable from the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.upper().startswith("STREAMSCORE_"):
            monkeypatch.delenv(name)
    yield


def pytest_report_header() -> list[str]:
    promtool = shutil.which("promtool")
    return [
        "promtool: "
        + (promtool or "not found (alert-rule tests skip; `make prometheus` installs it)")
    ]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests on the secured three-node cluster run only with --cluster (`make cluster-test`),
    but for the smoke (marker ``cluster_smoke``): its start alone takes about a minute, so
    `make test` runs one start and the smoke on it."""
    if config.getoption("--cluster"):
        return
    skip = pytest.mark.skip(reason="secured-cluster test: `make cluster-test` runs it")
    for item in items:
        if item.get_closest_marker("cluster") and not item.get_closest_marker("cluster_smoke"):
            item.add_marker(skip)


NOT_TESTED = "NOT TESTED: "


def not_tested(skipped: Iterable[object]) -> Counter[str]:
    """Skip reasons that begin with ``NOT TESTED:`` (a missing optional dependency, such as
    the extra ``report``), counted; other skips are choices, not gaps.

    >>> class R:
    ...     def __init__(self, reason: str) -> None:
    ...         self.longrepr = ("t.py", 1, reason)
    >>> not_tested([R("Skipped: NOT TESTED: needs X"), R("Skipped: NOT TESTED: needs X"), R("b")])
    Counter({'needs X': 2})
    """
    out: Counter[str] = Counter()
    for report in skipped:
        longrepr = getattr(report, "longrepr", None)
        reason = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else ""
        if NOT_TESTED in reason:
            out[reason.split(NOT_TESTED, 1)[1]] += 1
    return out


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """A green run that skipped tests for want of an optional dependency says so, in red."""
    gaps = not_tested(terminalreporter.stats.get("skipped", []))
    if gaps:
        terminalreporter.section("NOT TESTED: an optional dependency is missing", red=True)
        for reason, count in sorted(gaps.items()):
            terminalreporter.write_line(f"{count} test(s): {reason}", red=True)
