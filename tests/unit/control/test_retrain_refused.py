"""A retrain request the cluster's authorizer refuses (a missing Read on a topic the retrainer
reads) is answered refused at once, with one line naming the principal, the operation and the
topic: not "not found ... trying again" for ever."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

import pytest

from services.core.errors import BrokerUnavailable
from services.core.settings import Settings
from services.scoring.rollout import RolloutState
from streams.control import app as control_app
from tests.unit.control.test_loop import Registry, _count, make_state

REFUSED = (
    "cannot replay feed.interactions.v1: KafkaError{code=TOPIC_AUTHORIZATION_FAILED,val=29,"
    'str="Broker: Topic authorization failed"}'
)


def test_a_refused_read_answers_the_request_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    state = make_state(Registry(RolloutState("1")), max_wait_seconds=3600)
    as_control = Settings(
        **(state.settings.model_dump() | {"kafka": {"sasl_username": "streamscore-control"}})
    )
    state = dataclasses.replace(state, settings=as_control)
    calls: list[Any] = []

    def answer(*_a: Any) -> Any:
        calls.append(1)
        raise BrokerUnavailable(REFUSED, topic="feed.interactions.v1")

    monkeypatch.setattr(control_app, "answer", answer)
    before = _count("streamscore_retrain_outcomes_total", outcome="refused")
    request = {"request_id": "r1", "reason": "drift: error", "requested_at": None}
    with caplog.at_level(logging.INFO, logger=control_app.__name__):
        assert asyncio.run(control_app.serve_request(state, request)) == "refused"
    assert len(calls) == 1  # not tried again
    line = (
        "streamscore-control is not allowed to Read topic feed.interactions.v1 "
        "(TOPIC_AUTHORIZATION_FAILED)"
    )
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert errors == [f"retrain request r1 refused: {line}"]
    assert not any("trying again" in r.getMessage() for r in caplog.records)
    assert _count("streamscore_retrain_outcomes_total", outcome="refused") == before + 1
