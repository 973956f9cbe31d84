"""The time a scoring worker is given to stop (Kubernetes' terminationGracePeriodSeconds, compose's
stop_grace_period) covers the longest shutdown its own code allows. Read from the worker, so a
longer wait added there fails here until the manifests follow."""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from pathlib import Path

import yaml

from streams.worker import membership, transactional
from streams.worker.loop import ScoringWorker

ROOT = Path(__file__).resolve().parents[2]
# Unbounded but short steps of the shutdown (the drift flush, the last Redis write) and the
# process's own exit: what the sum of the bounded waits does not count.
MARGIN_SECONDS = 10.0


def _close_waits() -> list[float]:
    """Every timeout ScoringWorker._close passes to a flush: `x.flush(30)`, `flush_seconds=5`."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(ScoringWorker._close)))
    waits = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "flush" and node.args:
            waits.append(float(ast.literal_eval(node.args[0])))
        for keyword in node.keywords:
            if keyword.arg == "flush_seconds":
                waits.append(float(ast.literal_eval(keyword.value)))
    return waits


def worst_shutdown_seconds() -> float:
    """The flushes in ``_close``, then the last commit (at most one transactional call under
    exactly-once, TXN_TIMEOUT_SECONDS) and leaving the group (membership.CLOSE_SECONDS)."""
    waits = _close_waits()
    # The producer flush and the side outputs' flush: a changed _close must not read as 0 s.
    assert len(waits) >= 2, waits
    return sum(waits) + transactional.TXN_TIMEOUT_SECONDS + membership.CLOSE_SECONDS


def _seconds(compose_duration: str) -> float:
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", compose_duration)
    assert match and compose_duration, compose_duration
    return int(match.group(1) or 0) * 60.0 + int(match.group(2) or 0)


def test_the_worst_shutdown_is_what_the_manifests_say() -> None:
    # 30 s producer flush + 5 s side outputs + 30 s commit + 30 s leaving (scoring.yaml's comment)
    assert worst_shutdown_seconds() == 95.0


def test_kubernetes_waits_for_the_worst_shutdown() -> None:
    docs = yaml.safe_load_all((ROOT / "deploy/k8s/base/scoring.yaml").read_text())
    (scoring,) = [d for d in docs if d and d["kind"] == "Deployment"]
    grace = scoring["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= worst_shutdown_seconds() + MARGIN_SECONDS


def test_compose_waits_for_the_worst_shutdown() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.kafka.yml").read_text())
    grace = _seconds(str(compose["services"]["scoring"]["stop_grace_period"]))
    assert grace >= worst_shutdown_seconds() + MARGIN_SECONDS
