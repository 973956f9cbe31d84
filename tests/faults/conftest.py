"""The fault kit runs on the integration stack (same fixtures); long cases only with --faults.
With --faults-report, the table of what each case observed is written into that file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import REPORT, RUNNING
from tests.integration.conftest import (  # noqa: F401 (fixtures and hooks, shared)
    broker_kind,
    pytest_generate_tests,
    stack,
)

BEGIN, END = "<!-- faults:begin -->", "<!-- faults:end -->"


@pytest.fixture(autouse=True)
def no_worker_left_behind() -> Iterator[None]:
    """A failed case must not leave a worker process consuming (or holding a group) behind."""
    yield
    while RUNNING:
        proc = RUNNING.pop()
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--faults"):
        return
    skip = pytest.mark.skip(reason="long fault-kit case: `make faults` runs it")
    for item in items:
        if item.get_closest_marker("faults"):
            item.add_marker(skip)


def table(rows: list[dict[str, object]]) -> str:
    head = (
        "| fault | expected | observed | sent | predicted | dead-lettered | duplicated | lost "
        "| degraded | seconds |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    return head + "".join(
        f"| {r['fault']} | {r['expected']} | {r['observed']} | {r['sent']} | {r['predicted']} "
        f"| {r['dead_lettered']} | {r['duplicated']} | {r['lost']} | {r['degraded']} "
        f"| {r['seconds']} |\n"
        for r in rows
    )


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not REPORT:
        return
    text = table(sorted(REPORT, key=lambda r: str(r["fault"])))
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("\n[streamscore] fault kit:\n" + text)
    target = session.config.getoption("--faults-report")
    if target:
        path = Path(target)
        doc = path.read_text()
        start, end = doc.index(BEGIN) + len(BEGIN), doc.index(END)
        path.write_text(doc[:start] + "\n" + text + doc[end:])
