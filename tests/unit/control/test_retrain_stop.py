"""A retrain request that waits for labelled events gives up its wait when the control plane
stops (faust's shutdown waits for the request's message, and a request may wait for hours):
answered ``interrupted`` within a second, tried no more."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from services.scoring.rollout import RolloutState
from streams.control import app as control_app
from tests.unit.control.test_loop import Registry, make_state


def test_a_waiting_request_is_interrupted_when_the_control_plane_stops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = make_state(Registry(RolloutState("1")), max_wait_seconds=3600, retry_seconds=60)
    tries: list[float] = []

    def answer(*_a: Any) -> Any:
        tries.append(time.monotonic())
        return {"status": "waiting", "why": "0 labelled events since the window start"}

    monkeypatch.setattr(control_app, "answer", answer)
    asked: list[bool] = []

    def stopping() -> bool:
        # The SIGTERM arrives while the request waits: from the second look on.
        asked.append(len(asked) >= 1)
        return asked[-1]

    request = {"request_id": "r1", "reason": "x", "requested_at": None}
    started = time.monotonic()
    assert asyncio.run(control_app.serve_request(state, request, stopping)) == "interrupted"
    assert time.monotonic() - started < 2 * control_app.STOP_CHECK_SECONDS + 1
    assert len(tries) == 1
