"""The control plane's jobs, with a registry double and an in-memory prediction store (unit
tests of the loop's logic; the faust wiring runs in tests/integration/test_control_plane.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY

from services.core import metrics
from services.core.errors import FeatureStoreUnavailable, RegistryUnavailable
from services.core.settings import Settings
from services.labels.join import QualityBook
from services.labels.store import Stored
from services.retrain.policy import DriftAggregator, PromotionPolicy, retrain_request
from services.scoring.rollout import AliasChange, RolloutState
from streams.adapters import drift_monitor
from streams.control import app as control_app
from streams.control import loop
from streams.control.state import ControlState

T0 = 1_700_000_000_000  # event times of the tests' labels (in the past)


class Registry:
    """The registry double: a rollout state and history the test sets, failures injected."""

    name = "engagement"

    def __init__(self, state: RolloutState, history: list[AliasChange] | None = None) -> None:
        self.state = state
        self._history = history or []
        self.fail: dict[str, BaseException] = {}
        self.tags: list[tuple[str, str, str]] = []
        self.holdout: dict[str, float] = {}

    def _maybe(self, what: str) -> None:
        if what in self.fail:
            raise self.fail[what]

    def rollout_state(self) -> RolloutState:
        self._maybe("rollout_state")
        return self.state

    def history(self) -> list[AliasChange]:
        return self._history

    def tag_version(self, version: str, key: str, value: str) -> None:
        self._maybe("tag_version")
        self.tags.append((version, key, value))

    def versions(self) -> list[Any]:
        from services.scoring.registry import VersionInfo

        return [VersionInfo(v, (), f"run-{v}", None, {}, 0) for v in self.holdout]

    def run_metrics(self, run_id: str | None) -> dict[str, float]:
        v = (run_id or "").removeprefix("run-")
        return {"holdout_log_loss": self.holdout[v]} if v in self.holdout else {}


class Predictions:
    """Stored predictions by kind and event id (the Redis prediction store's seam)."""

    def __init__(self) -> None:
        self.kept: dict[tuple[str, str], Stored] = {}
        self.down = False

    def get_many(self, kind: str, ids: list[str]) -> list[Stored | None]:
        if self.down:
            raise FeatureStoreUnavailable("prediction store: down")
        return [self.kept.get((kind, i)) for i in ids]


def in_shadow(actor: str) -> Registry:
    """Champion v1, v2 in shadow since T0, started by ``actor``."""
    started = AliasChange("shadow_started", "challenger", None, "2", "retrain", actor, T0)
    return Registry(RolloutState("1", "2", "shadow"), [started])


def make_state(registry: Registry, **retrain: Any) -> ControlState:
    settings = Settings(
        drift={"min_events": 200, "cooldown_seconds": 60},
        retrain={"min_labels": 100, "min_shadow_seconds": 0, "retry_seconds": 0.01} | retrain,
    )
    return ControlState(
        settings=settings,
        registry=registry,  # type: ignore[arg-type]  # the double has what the loop calls
        spec=None,  # type: ignore[arg-type]
        features=None,  # type: ignore[arg-type]
        predictions=Predictions(),  # type: ignore[arg-type]
        codecs=dict.fromkeys(("Interaction", "Label", "ModelEvent")),  # type: ignore[arg-type]
        book=QualityBook(),
        error_monitor=drift_monitor(settings),
        aggregator=DriftAggregator(60_000, 2),
        promotion=PromotionPolicy(0, 100, 0.0),
    )


def feed(
    state: ControlState,
    start: int,
    scores: np.ndarray,
    outcomes: np.ndarray,
    version: str = "1",
    shadow: np.ndarray | None = None,
    shadow_version: str = "2",
) -> list[dict[str, Any]]:
    """Labels for events ``start ..`` whose served (and shadow) scores are stored; joined in
    batches of 500 as the label agent does; returns the drift signals."""
    preds = state.predictions
    rows = []
    for k, (score, y) in enumerate(zip(scores, outcomes, strict=True)):
        i = start + k
        event_id = f"e{i}"
        preds.kept[("served", event_id)] = Stored(version, "champion", float(score))  # type: ignore[attr-defined]
        if shadow is not None:
            preds.kept[("shadow", event_id)] = Stored(shadow_version, "shadow", float(shadow[k]))  # type: ignore[attr-defined]
        label = {
            "event_id": event_id,
            "engaged": bool(y),
            "event_time": T0 + i,
            "label_time": T0 + i + 5,
        }
        rows.append((0, i, label))
    signals = []
    for b in range(0, len(rows), 500):
        signals += loop.join_labels(state, rows[b : b + 500])
    return signals


def calibrated(
    rng: np.random.Generator, n: int, flip: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Scores of a good model and outcomes drawn from them (``flip``: the world reversed)."""
    p = rng.uniform(0.05, 0.95, n)
    y = rng.random(n) < (1 - p if flip else p)
    return p, y


# -- the window -----------------------------------------------------------------------------
def test_the_window_starts_at_the_change_point_not_an_hour_ago() -> None:
    now = T0 + 3_600_000
    evidence = [
        {"signal": "error", "signal_id": "a", "time_start": T0 + 1_000_000},
        {"signal": "error", "signal_id": "b", "time_start": T0 + 900_000},
    ]
    request = retrain_request("m", "1", evidence, 3_600_000, now, "control-plane", margin_ms=30_000)
    assert request["window_start"] == T0 + 900_000 - 30_000  # the earliest change, less the margin
    assert request["window_end"] == now


def test_the_detector_places_the_change_where_the_world_turned() -> None:
    """Errors jump at event 3,000 (event time T0 + 3000); the request's window starts at or
    before it (ADWIN's buckets place it coarsely; the trainer refines it), not at the stream's
    start."""
    state = make_state(Registry(RolloutState("1")))
    rng = np.random.default_rng(1)
    p, y = calibrated(rng, 3000)
    assert feed(state, 0, p, y) == []
    q, z = calibrated(rng, 3000, flip=True)
    signals = feed(state, 3000, q, z)
    assert len(signals) == 1
    start = signals[0]["time_start"]
    assert T0 < start <= T0 + 3000, start - T0
    request = retrain_request("m", "1", signals, 3_600_000, T0 + 10_000, "cp", margin_ms=100)
    assert request["window_start"] == start - 100


# -- promotion -------------------------------------------------------------------------------
def test_promotion_compares_the_two_models_on_the_same_events() -> None:
    """On the events both scored, the champion is better; the champion's other events since
    the shadow started (scored alone: the challenger failed on them) are bad ones. Comparing
    each model on its own events would promote; the paired comparison keeps the champion."""
    registry = in_shadow("control-plane")
    state = make_state(registry)
    rng = np.random.default_rng(2)
    p, y = calibrated(rng, 1000)
    feed(state, 0, p, y, shadow=np.full(1000, 0.5))  # paired: champion good, challenger flat
    bad = np.where(rng.random(1000) < 0.5, 0.99, 0.01)
    feed(state, 1000, bad, bad < 0.5)  # champion alone, and confidently wrong
    loop.consider_promotion(state, registry.state)
    assert registry.tags and "kept as challenger" in registry.tags[-1][2], registry.tags
    assert "on the same 1000 labelled events" in registry.tags[-1][2]


def test_a_failed_promotion_write_is_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = in_shadow("control-plane")
    state = make_state(registry)
    rng = np.random.default_rng(3)
    p, y = calibrated(rng, 500)
    feed(state, 0, np.full(500, 0.5), y, shadow=p)  # the challenger wins
    calls: list[str] = []

    def apply(*_a: Any) -> None:
        calls.append("apply")
        if len(calls) == 1:
            raise RegistryUnavailable("mlflow down")

    monkeypatch.setattr(loop, "apply_change", apply)
    with pytest.raises(RegistryUnavailable):
        loop.consider_promotion(state, registry.state)
    assert "2" not in state.decided  # not decided: the next tick tries again
    loop.consider_promotion(state, registry.state)
    assert calls == ["apply", "apply"] and "2" in state.decided


def test_a_challenger_a_person_started_is_left_to_the_person() -> None:
    registry = in_shadow("alice")
    state = make_state(registry)
    rng = np.random.default_rng(4)
    p, y = calibrated(rng, 500)
    feed(state, 0, np.full(500, 0.5), y, shadow=p)
    loop.consider_promotion(state, registry.state)
    assert registry.tags == [] and state.decided == set()


# -- rollback --------------------------------------------------------------------------------
def test_drift_is_detected_after_a_rollback_to_a_lower_version() -> None:
    """v2 served, then a person rolled back to v1: the detector must watch v1 (the registry's
    champion), not "the highest version seen" (v2, which no longer receives labels)."""
    registry = Registry(RolloutState("2"))
    state = make_state(registry)
    rng = np.random.default_rng(5)
    p, y = calibrated(rng, 1000)
    feed(state, 0, p, y, version="2")
    registry.state = RolloutState("1")
    loop.tick(state)  # the timer reads the registry: v1 is champion again
    p, y = calibrated(rng, 3000)
    assert feed(state, 1000, p, y, version="1") == []
    q, z = calibrated(rng, 3000, flip=True)
    signals = feed(state, 4000, q, z, version="1")
    assert [s["model_version"] for s in signals] == ["1"]


# -- the absolute trigger --------------------------------------------------------------------
def test_a_champion_worse_online_than_on_its_holdout_asks_for_a_retrain() -> None:
    registry = Registry(RolloutState("1"))
    registry.holdout["1"] = 0.45
    state = make_state(registry, quality_min_events=1000, quality_margin=0.1)
    rng = np.random.default_rng(6)
    p, y = calibrated(rng, 1000)
    feed(state, 0, p, y)
    assert loop.tick(state) == []  # as good as on its holdout (~0.45 for these scores)
    q, z = calibrated(rng, 1000, flip=True)
    feed(state, 1000, q, z)
    wanted = loop.tick(state)
    assert len(wanted) == 1 and wanted[0]["reason"].startswith("quality: online log loss")
    # The window starts where the errors changed (event 1000), found in the newest 1000 rows.
    assert abs(wanted[0]["window_start"] - (T0 + 1000)) <= 100, wanted[0]["window_start"] - T0


# -- staying up ------------------------------------------------------------------------------
def _count(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_the_timer_survives_any_exception_and_a_registry_outage() -> None:
    registry = Registry(RolloutState("1"))
    state = make_state(registry)
    sent: list[Any] = []

    async def send(request: dict[str, Any], trigger: str) -> None:
        sent.append((trigger, request))

    before = _count("streamscore_control_plane_errors_total", task="tick")
    registry.fail["rollout_state"] = RuntimeError("a bug")
    asyncio.run(control_app.on_tick(state, send))  # does not raise
    registry.fail["rollout_state"] = RegistryUnavailable("mlflow down")
    asyncio.run(control_app.on_tick(state, send))
    assert _count("streamscore_control_plane_errors_total", task="tick") == before + 2
    assert _count("streamscore_registry_up") == 0
    del registry.fail["rollout_state"]
    asyncio.run(control_app.on_tick(state, send))
    assert _count("streamscore_registry_up") == 1 and sent == []


def test_a_label_batch_is_retried_through_an_outage_and_a_bug_is_given_up_counted() -> None:
    state = make_state(Registry(RolloutState("1")))
    calls = {"n": 0}

    def flaky(*_a: Any) -> list[Any]:
        calls["n"] += 1
        if calls["n"] < 3:
            raise FeatureStoreUnavailable("redis down")
        return ["ok"]

    async def fast(_seconds: float) -> None:
        return None

    async def run(call: Any) -> Any:
        real = asyncio.sleep
        asyncio.sleep = fast  # type: ignore[assignment]  # backoff without waiting
        try:
            return await control_app.retrying("label_join", "labels p0@0-9", call, state)
        finally:
            asyncio.sleep = real  # type: ignore[assignment]

    assert asyncio.run(run(flaky)) == ["ok"] and calls["n"] == 3
    dropped = _count("streamscore_control_plane_dropped_total", task="label_join")

    def bug(*_a: Any) -> list[Any]:
        raise ValueError("bad data")

    assert asyncio.run(run(bug)) is None
    assert _count("streamscore_control_plane_dropped_total", task="label_join") == dropped + 1


def test_a_retrain_request_waits_for_labels_survives_errors_and_releases_the_cooldown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = make_state(Registry(RolloutState("1")), max_wait_seconds=30)
    answers: list[Any] = [
        RegistryUnavailable("mlflow down"),
        {"status": "waiting", "why": "10 labelled events since the window start, need 2000"},
        {"status": "shadowed", "version": "2"},
    ]

    def answer(*_a: Any) -> Any:
        got = answers.pop(0)
        if isinstance(got, BaseException):
            raise got
        return got

    monkeypatch.setattr(control_app, "answer", answer)
    request = {"request_id": "r1", "reason": "drift: error", "requested_at": None}
    assert asyncio.run(control_app.serve_request(state, request)) == "shadowed"
    assert answers == []

    # Errors on every try: given up, and the cooldown it armed is released.
    state.aggregator.last_request_ms = 123
    monkeypatch.setattr(control_app, "answer", lambda *_a: 1 / 0)
    assert asyncio.run(control_app.serve_request(state, request)) == "failed"
    assert state.aggregator.last_request_ms is None

    # Never enough labels: expires (a deadline in the past), also releasing the cooldown.
    state.aggregator.last_request_ms = 123
    monkeypatch.setattr(control_app, "answer", lambda *_a: {"status": "waiting", "why": "w"})
    old = {"request_id": "r2", "reason": "x", "requested_at": 1}
    assert asyncio.run(control_app.serve_request(state, old)) == "expired"
    assert state.aggregator.last_request_ms is None


def test_state_is_bounded_versions_that_stop_serving_are_pruned_with_their_gauges() -> None:
    registry = Registry(RolloutState("1", "2", "shadow"))
    state = make_state(registry)
    rng = np.random.default_rng(7)
    p, y = calibrated(rng, 600)
    feed(state, 0, p, y, shadow=p)
    loop.tick(state)
    gauge = "streamscore_online_log_loss"
    assert _count(gauge, model_version="1", variant="champion") > 0
    registry.state = RolloutState("2")  # promoted: v1 no longer serves
    loop.tick(state)
    assert state.book.keys() == [("2", "shadow")]
    assert REGISTRY.get_sample_value(gauge, {"model_version": "1", "variant": "champion"}) is None
    assert _count("streamscore_control_plane_book_rows") == 600
    metrics.ONLINE_LOG_LOSS.clear()


def test_a_holdout_figure_mlflow_did_not_give_is_asked_for_again() -> None:
    """run_metrics answers {} while MLflow is down: the trigger waits, and works once the
    figure can be read (it is not cached as missing)."""
    registry = Registry(RolloutState("1"))
    state = make_state(registry, quality_min_events=1000, quality_margin=0.1)
    rng = np.random.default_rng(8)
    q, z = calibrated(rng, 1000, flip=True)
    feed(state, 0, q, z)
    assert loop.tick(state) == []  # no holdout figure yet
    registry.holdout["1"] = 0.45
    assert len(loop.tick(state)) == 1
