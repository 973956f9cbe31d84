"""Seeded random schedules of faults (`make explore SEEDS=50`; a short pinned one in `make
test`): workers join, leave, crash and freeze past their session, Redis pauses and restarts,
the broker restarts, a producer bursts over its rate limit, hostile messages arrive, all while
events flow. After each schedule the invariants of `runner.py` must hold. A failing seed
prints its schedule and reproduces with `--explore-seed=N`; `--explore-guarantee=exactly_once`
(`make explore GUARANTEE=exactly_once`) runs the workers under exactly-once."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.embedded.stack import EmbeddedStack
from streams.topics import topic_table
from tests.faults.explore.runner import Explorer, Run, summary_row
from tests.faults.explore.schedule import Op, make_schedule
from tests.faults.harness import OwnRedis
from tests.integration.conftest import Stack, isolated_settings
from tests.integration.pipeline_env import make_pipeline, with_guarantee, with_two_versions

pytestmark = [pytest.mark.integration, pytest.mark.kafka_only]
ROWS: list[dict[str, object]] = []
# Schedules that found holes, kept as regressions; `make test` runs them.
SCENARIOS = {
    # Redis blips under the pause policy while a second worker joins; it leaves after Redis
    # is back: the partitions it hands back were paused by the first worker's hold before the
    # rebalance, and librdkafka kept that pause across the revoke and the new assignment.
    "redis-blip-join-leave": [
        Op(0.0, "join"),
        Op(5.0, "redis_pause"),
        Op(7.0, "join"),
        Op(15.0, "redis_continue"),
        Op(21.0, "leave", 0.99),
    ],
}
PINNED: list[int | str] = ["redis-blip-join-leave"]
# What each scenario must have made happen, by the workers' logs (worker, pattern): a fault
# that missed its target would pass without testing anything.
EXPECTED = {
    "redis-blip-join-leave": [
        ("w0", r"redis unavailable: input held"),  # the hold, before and during the join
        ("w1", r"partitions assigned: (?!none)"),  # the joiner got partitions
        ("w0", r"partitions revoked: (?!none)"),  # handed over while held
    ],
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "seed" not in metafunc.fixturenames:
        return
    config = metafunc.config
    one = config.getoption("--explore-seed")
    many = int(config.getoption("--explore-seeds"))
    seeds: list[int | str]
    if one is not None:  # one seed, or several separated by commas
        seeds = [x if x in SCENARIOS else int(x) for x in str(one).split(",")]
    else:
        seeds = list(range(1, many + 1)) if many else PINNED
    metafunc.parametrize("seed", seeds)


@pytest.fixture(scope="module")
def own_stack(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A broker of the explorer's own (the schedules restart it)."""
    if stack.kind != "kafka":
        pytest.skip("the explorer restarts the broker: Apache Kafka keeps its data, tansu not")
    settings = isolated_settings(tmp_path_factory.mktemp("explore"))
    embedded = EmbeddedStack(settings)
    status = embedded.up(topic_table(settings.topics), stack.kind)  # type: ignore[arg-type]
    try:
        yield Stack(stack.kind, settings, status)
    finally:
        embedded.down()


def test_a_random_schedule_of_faults_keeps_every_invariant(
    own_stack: Stack, tmp_path: Path, seed: int | str, request: pytest.FixtureRequest
) -> None:
    seconds = float(request.config.getoption("--explore-seconds"))
    if isinstance(seed, str):
        ops = SCENARIOS[seed]
        seconds = max(seconds, ops[-1].at + 5.0)
    else:
        ops = make_schedule(seed, seconds)
    redis = OwnRedis(tmp_path / "redis")
    try:
        s = own_stack.settings
        with_redis = Stack(
            own_stack.kind,
            s.model_copy(update={"redis": s.redis.model_copy(update={"url": redis.url})}),
            own_stack.status,
        )
        # Half the seeds degrade when Redis is down, half hold; every seed has rate limits
        # with backpressure (the bursts cross them).
        p = next(
            make_pipeline(
                with_redis,
                tmp_path,
                batch={"max_messages": 200, "timeout_seconds": 0.05},
                rate_limit={
                    "enabled": True,
                    "policy": "backpressure",
                    "rate_per_second": 100.0,
                    "burst": 200,
                    "pause_seconds": 1.0,
                },
                redis={
                    "url": redis.url,
                    "key_prefix": f"explore:{_number(seed)}:",
                    "unavailable_policy": "degrade" if _number(seed) % 2 else "pause",
                },
            )
        )
        if any(op.kind in ("promote", "canary", "rollback") for op in ops):
            p = with_two_versions(p, f"explore-{_number(seed)}")
            # Two versions new to the compile cache: a worker compiling them took 60 to 105 s
            # on a loaded machine, past the schedule's join wait, and every fault of the seed
            # then hit a group with nobody in it. LightGBM's own predictor starts at once.
            model = p.settings.model.model_copy(update={"compile": False})
            p = dataclasses.replace(p, settings=p.settings.model_copy(update={"model": model}))
        guarantee = request.config.getoption("--explore-guarantee")
        p = with_guarantee(p, guarantee)
        run = Run(_number(seed), ops, guarantee=guarantee)
        started = time.monotonic()
        Explorer(p, own_stack, redis, tmp_path, seconds).run(run)
        row = summary_row(run) | {"seconds": round(time.monotonic() - started)}
        ROWS.append(row)
        # One line per seed, kept across runs, for the table in docs/reliability.md.
        rows = request.config.rootpath / "build" / "explore-rows.jsonl"
        rows.parent.mkdir(exist_ok=True)
        with rows.open("a") as out:
            out.write(json.dumps(row) + "\n")
        print(run.report())  # noqa: T201 (the schedule, for whoever reads a failure)
        assert run.problems == [], run.report()
        if isinstance(seed, str):  # a pinned scenario: every fault must have hit something
            assert run.idle == [], run.report()
            for name, pattern in EXPECTED.get(seed, []):
                log = (tmp_path / f"{name}.log").read_text(errors="replace")
                assert re.search(pattern, log), f"{name} never logged {pattern!r}"
    finally:
        redis.close()


def _number(seed: int | str) -> int:
    """A seed's number; a named scenario's is 0 (even: it runs under the pause policy)."""
    return seed if isinstance(seed, int) else 0
