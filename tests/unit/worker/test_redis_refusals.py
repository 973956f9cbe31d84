"""A batch whose Redis user is refused holds the input and is tried again, never degraded or
committed, and the worker stops with the refusal's line once it has lasted the set time."""

from __future__ import annotations

from typing import Any

import pytest

from services.core import metrics
from services.core.errors import RedisRefused
from services.redisconn.refusal import RefusalWatch
from streams.worker.refused import Refusals


class FakeShell:
    """The worker's ``HeldInput`` as the gate sees it; waiting moves a clock."""

    def __init__(self, clock: list[float]) -> None:
        self.clock = clock
        self.calls: list[str] = []
        self.gone = False

    def hold(self, dependency: str, error: Exception) -> None:
        self.calls.append(f"hold {dependency}")

    def release(self) -> None:
        self.calls.append("release")

    def wait(self, seconds: float) -> None:
        self.calls.append("wait")
        self.clock[0] += seconds

    def abandoned(self) -> bool:
        return self.gone


def _refused() -> RedisRefused:
    return RedisRefused(
        "redis at h:1 refused user 'streamscore-worker' MGET on ss:feat:* (NOPERM: ...)",
        command="MGET",
        cause="noperm",
    )


def _runs(failures: int) -> Any:
    left = [failures]

    def run() -> str:
        if left[0]:
            left[0] -= 1
            raise _refused()
        return "result"

    return run


def test_a_refusal_that_ends_in_time_holds_then_goes_on() -> None:
    clock = [0.0]
    watch = RefusalWatch(clock=lambda: clock[0])
    shell = FakeShell(clock)
    got = Refusals(30.0, watch).score(_runs(3), shell)  # type: ignore[arg-type]
    assert got == "result"
    assert shell.calls == ["hold redis", "wait", "wait", "wait", "release"]
    assert watch.problem() is None  # answered: ready again
    assert metrics.INPUT_HELD._value.get() == 0


def test_a_refusal_that_lasts_stops_the_worker_with_its_line() -> None:
    clock = [0.0]
    watch = RefusalWatch(clock=lambda: clock[0])
    shell = FakeShell(clock)
    seen: list[str | None] = []

    def run() -> str:
        seen.append(watch.problem())  # readiness fails from the first refusal on
        raise _refused()

    with pytest.raises(RedisRefused) as caught:
        Refusals(5.0, watch).score(run, shell)  # type: ignore[arg-type]
    assert str(caught.value) == f"{_refused()} (refused for 5 s)"
    assert seen[0] is None and all(s == str(_refused()) for s in seen[1:])
    assert shell.calls[0] == "hold redis" and shell.calls[-1] == "release"
    assert shell.calls.count("wait") == 5  # tried again each second, never degraded


def test_a_revoke_while_refused_drops_the_batch() -> None:
    clock = [0.0]
    shell = FakeShell(clock)
    shell.gone = True
    got = Refusals(30.0, RefusalWatch(clock=lambda: clock[0])).score(_runs(99), shell)  # type: ignore[arg-type]
    assert got is None
    assert shell.calls == ["hold redis", "wait", "release"]


def test_a_refused_prediction_store_stops_the_next_batch() -> None:
    clock = [0.0]
    watch = RefusalWatch(clock=lambda: clock[0])
    watch.failed("remember", _refused())
    clock[0] = 31.0
    watch.failed("remember", _refused())
    with pytest.raises(RedisRefused, match="refused for 31 s"):
        Refusals(30.0, watch).score(_runs(0), FakeShell(clock))  # type: ignore[arg-type]


def test_a_refused_prediction_store_write_is_watched_not_raised() -> None:
    from streams.worker.feeds import remember

    class Refusing:
        def put_columns(self, *args: Any) -> int:
            raise _refused()

    class Block:
        def field(self, name: str) -> list[str]:
            return ["e1"]

        versions = variants = ["1"]
        scores = [0.5]
        degraded = [False]
        missing = [()]
        probabilities = None

    class Result:
        served = Block()
        shadowed = None

    watch = RefusalWatch(clock=lambda: 0.0)
    remember(Refusing(), Result(), watch)  # type: ignore[arg-type]
    assert watch.problem() == str(_refused())
