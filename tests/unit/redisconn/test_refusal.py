"""Redis refusing the user (WRONGPASS, NOPERM) is told from an outage, named in one line without
the password, counted, and watched per caller until it has lasted long enough to stop on."""

from __future__ import annotations

import threading

import redis

from services.core import metrics
from services.core.errors import FeatureStoreUnavailable, NotAuthorized, RedisRefused
from services.redisconn.client import cause_of
from services.redisconn.refusal import RefusalWatch, refusal, watch_refusals

PASSWORD = "pw-never-shown-7"  # noqa: S105 (a test's own)


def _client() -> redis.Redis:
    # redis-py connects on the first command, never here.
    return redis.Redis(host="10.0.0.5", port=6380, username="streamscore-worker", password=PASSWORD)


def _count(cause: str, command: str) -> float:
    return float(metrics.REDIS_REFUSALS.labels(cause=cause, command=command)._value.get())


def test_a_refusal_is_not_an_outage() -> None:
    refused = RedisRefused("x", command="MGET", cause="noperm")
    assert isinstance(refused, NotAuthorized)  # exit 2, and no gate retries it
    assert not isinstance(refused, FeatureStoreUnavailable)


def test_outages_are_not_refusals() -> None:
    assert refusal(redis.ConnectionError("Connection refused"), _client(), "MGET", "k*") is None
    assert refusal(redis.TimeoutError("Timeout reading"), _client(), "MGET", "k*") is None
    assert cause_of(redis.ResponseError("CLUSTERDOWN The cluster is down")) is None


def test_a_changed_password_names_the_user_the_command_and_keys_never_the_password() -> None:
    before = _count("wrongpass", "MGET")
    exc = redis.AuthenticationError("invalid username-password pair or user is disabled.")
    refused = refusal(exc, _client(), "MGET", "ss:feat:3:*")
    assert refused is not None
    assert str(refused) == (
        "redis at 10.0.0.5:6380 refused user 'streamscore-worker' (WRONGPASS: wrong password, "
        "or the user is disabled) for MGET on ss:feat:3:*: check STREAMSCORE_REDIS__USERNAME "
        "and STREAMSCORE_REDIS__PASSWORD against the server's ACL user"
    )
    assert (refused.cause, refused.command) == ("wrongpass", "MGET")
    assert PASSWORD not in str(refused) and "\n" not in str(refused)
    assert _count("wrongpass", "MGET") == before + 1


def test_a_command_taken_away_names_it() -> None:
    before = _count("noperm", "EVALSHA")
    # As a pipeline reports it: the command's arguments (keys, values) must not be repeated.
    exc = redis.exceptions.NoPermissionError(
        "Command # 1 (EVALSHA abc 1 ss:rl:stream:u-1 7) of pipeline caused error: this user "
        "has no permissions to run the 'evalsha' command"
    )
    refused = refusal(exc, _client(), "EVALSHA", "ss:rl:stream:*")
    assert refused is not None
    assert str(refused) == (
        "redis at 10.0.0.5:6380 refused user 'streamscore-worker' EVALSHA on ss:rl:stream:* "
        "(NOPERM: this user has no permissions to run the 'evalsha' command): its ACL must "
        "grant EVALSHA on ss:rl:stream:* (ACL SETUSER streamscore-worker +evalsha ...)"
    )
    assert "u-1" not in str(refused)
    assert _count("noperm", "EVALSHA") == before + 1


def test_the_watch_stops_only_after_the_time_and_per_caller() -> None:
    now = [100.0]
    watch = RefusalWatch(clock=lambda: now[0])
    pred = RedisRefused("refused EVALSHA on pred", command="EVALSHA", cause="noperm")
    watch.failed("remember", pred)
    assert watch.problem() == "refused EVALSHA on pred"  # readiness: at once
    assert watch.verdict(30) is None
    now[0] += 20
    watch.answered("score")  # feature reads answering say nothing about the prediction store
    watch.failed("remember", pred)
    assert watch.verdict(30) is None
    now[0] += 11
    watch.failed("remember", pred)
    stop = watch.verdict(30)
    assert stop is not None
    assert str(stop) == "refused EVALSHA on pred (refused for 31 s)"
    watch.answered("remember")
    assert watch.problem() is None and watch.verdict(0) is None


def test_a_refusal_not_seen_again_for_a_minute_is_over() -> None:
    now = [0.0]
    watch = RefusalWatch(clock=lambda: now[0])
    watch.failed("score", RedisRefused("r", command="MGET", cause="noperm"))
    now[0] += RefusalWatch.GAP_SECONDS + 1
    assert watch.problem() is None
    watch.failed("score", RedisRefused("r", command="MGET", cause="noperm"))
    assert watch.current() == (watch.current()[0], 0.0)  # type: ignore[index]  # a new run


def test_a_refusal_met_every_second_is_logged_once_per_period_per_line() -> None:
    now = [0.0]
    watch = RefusalWatch(clock=lambda: now[0])
    mget = RedisRefused("refused MGET on pred", command="MGET", cause="noperm")
    wrongpass = RedisRefused("refused the user", command="MGET", cause="wrongpass")
    logged = []
    for _ in range(int(RefusalWatch.LOG_EVERY_SECONDS) * 2 + 1):
        logged.append(watch.failed("label_join", mget))
        now[0] += 1
    assert logged.count(True) == 3  # at 0, 30 and 60 s
    assert watch.failed("label_join", wrongpass) is True  # another refusal: its own line


def test_watch_refusals_calls_stop_with_the_verdict_once_it_has_lasted() -> None:
    now = [0.0]
    watch = RefusalWatch(clock=lambda: now[0])
    watch.failed("label_join", RedisRefused("refused MGET", command="MGET", cause="noperm"))
    now[0] = 3.0
    watch.failed("label_join", RedisRefused("refused MGET", command="MGET", cause="noperm"))
    stopped = threading.Event()
    stops: list[RedisRefused] = []

    def stop(refused: RedisRefused) -> None:
        stops.append(refused)
        stopped.set()

    done = watch_refusals(2.0, stop, watch=watch, every=0.01)
    assert stopped.wait(10)
    done.set()
    assert [str(s) for s in stops] == ["refused MGET (refused for 3 s)"]
