"""Answer a retrain request: replay the window from its change point, wait for enough labelled
events of the new concept, train, compare with the champion on the newest slice of the window,
register the challenger with its evidence, and shadow it only when it passes the offline gate and
no person's challenger is in place."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from services.codec.avro import AvroCodec
from services.core.errors import NotFound, TransientError
from services.core.settings import Settings
from services.core.task import BINARY, Task
from services.domain.config import domain_of
from services.features.log import FeatureLogIndex
from services.features.spec import FeatureSpec
from services.features.store import FeatureStore
from services.kafka.acls import CONTROL_APP
from services.kafka.replay import read_since
from services.labels.join import row_losses
from services.retrain.policy import change_index, offline_gate
from services.scoring.model import LoadedModel
from services.scoring.operations import apply_change
from services.scoring.registry import MlflowRegistry
from services.scoring.rollout import plan_rollout
from services.training.dataset import build_training_set
from services.training.log_reader import (
    feature_log_topic,
    not_logged_causes,
    read_training_rows,
)
from services.training.pipeline import TrainingRefused, train_and_register

logger = logging.getLogger(__name__)
ACTOR = "control-plane"
APPLY_TRIES = 3  # a transient registry error while shadowing: tried again before giving up
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Codecs:
    interaction: AvroCodec
    label: AvroCodec
    model_event: AvroCodec
    feature_log: AvroCodec | None = None  # None: the feature log is not read


def labelled_window(
    settings: Settings, codecs: Codecs, since_ms: int, max_events: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Events with an event time from ``since_ms``, and their labels (the target as the task
    has it: a boolean, a number, a class), replayed from the topics to their current ends
    (all of it, or ``BrokerUnavailable``)."""
    timeout = settings.retrain.replay_timeout_seconds
    domain = domain_of(settings)
    label = domain.label
    binary = domain.task.kind == "binary"
    # A group of the control plane's own (granted on a secured cluster, services.kafka.acls):
    # the reads assign and never commit.
    group = f"{CONTROL_APP}-retrain-{uuid.uuid4().hex[:8]}"
    # By event id, the last copy winning: producers' retries and redrives can repeat an event.
    by_id: dict[str, dict[str, Any]] = {}
    events_read = read_since(
        settings, settings.topics.events, since_ms, max_events, timeout, group=group
    )
    for m in events_read:
        decoded = codecs.interaction.decode_one(m.value())
        if isinstance(decoded, dict) and int(decoded["event_time"]) >= since_ms:
            by_id[str(decoded["event_id"])] = decoded
    events = list(by_id.values())
    labels: dict[str, Any] = {}
    labels_read = read_since(
        settings, settings.topics.labels, since_ms, max_events * 2, timeout, group=group
    )
    for m in labels_read:
        decoded = codecs.label.decode_one(m.value())
        if isinstance(decoded, dict):
            value = decoded[label.target]
            labels[str(decoded[label.join_key])] = bool(value) if binary else value
    return events, labels


def logged_rows(
    settings: Settings,
    codecs: Codecs,
    spec: FeatureSpec,
    events: list[dict[str, Any]],
    labels: dict[str, Any],
) -> FeatureLogIndex | None:
    """The feature log's rows of the labelled ``events``, read from the records logged in
    their time range (``services.training.log_reader``); None when the log is off, has no
    codec, or the domain declares no feature-log topic.

    Raises:
        BrokerUnavailable: the log's topic cannot be read to its end (try again later).
    """
    topic = feature_log_topic(settings)
    if codecs.feature_log is None or not settings.features.log or topic is None:
        return None
    labelled = {str(e["event_id"]) for e in events if str(e["event_id"]) in labels}
    timeout = settings.retrain.replay_timeout_seconds
    try:
        read = read_training_rows(
            settings, spec, codecs.feature_log, topic, events, labelled, timeout
        )
    except NotFound:
        return None
    return read.index


def refined_start(
    spec: FeatureSpec,
    store: FeatureStore | None,
    champion: LoadedModel,
    events: list[dict[str, Any]],
    labels: dict[str, Any],
    since: int,
    logged: FeatureLogIndex | None = None,
    task: Task = BINARY,
) -> int:
    """The event time where the champion's per-event loss (the task's) over the window changed (the
    CUSUM estimate); ``since`` when no change is significant. Never before ``since`` (the
    request's window, which the margin widened so the change is inside it)."""
    ts = build_training_set(spec, store, events, labels, logged=logged, task=task)
    if len(ts.y) < 2:
        return since
    time_of = {str(e["event_id"]): int(e["event_time"]) for e in events}
    times = np.array([time_of[i] for i in ts.event_ids], dtype=np.int64)
    order = np.argsort(times, kind="stable")
    errors = losses_of(task, champion.predict(ts.X[order]), ts.y[order])
    at = change_index(errors)
    if at == 0:
        return since
    found = int(times[order][at])
    logger.info("change point refined from %d to %d (%d rows before it)", since, found, at)
    return max(since, found)


def person_challenger(registry: MlflowRegistry) -> str | None:
    """The active challenger if a person (not the control plane) put it in place."""
    rollout = registry.rollout_state()
    challenger = rollout.active_challenger()
    if challenger is None:
        return None
    started = [
        h
        for h in registry.history()
        if h.to_version == challenger and h.event_type in ("shadow_started", "canary_started")
    ]
    return challenger if not started or started[-1].actor != ACTOR else None


def answer(
    settings: Settings,
    registry: MlflowRegistry,
    spec: FeatureSpec,
    store: FeatureStore,
    codecs: Codecs,
    request: dict[str, Any],
) -> dict[str, Any]:
    """Try to answer ``request``; returns what happened, with ``status``:

    - ``waiting``: fewer than ``min_labelled`` labelled events since the window start yet (the
      caller tries again later);
    - ``refused``: the window failed training-set validation;
    - ``gated``: trained and recorded, but it lost to the champion on the holdout: not shadowed;
    - ``held``: trained and recorded, but a person's challenger is in place: not shadowed;
    - ``shadowed``: the challenger is in shadow.

    Raises:
        TransientError: Kafka, Redis or the registry did not answer (try again later).
    """
    started = time.monotonic()
    r = settings.retrain
    task = domain_of(settings).task
    since = int(request.get("window_start") or (time.time() * 1000 - r.window_seconds * 1000))
    events, labels = labelled_window(settings, codecs, since, r.max_events)
    logged = logged_rows(settings, codecs, spec, events, labels)
    now_store = store if r.features_now else None
    if not r.features_now:
        # Rows as served only: Redis as it is now may hold what happened after each event.
        unlogged = sum(1 for e in events if logged is None or str(e["event_id"]) not in logged)
        events = [e for e in events if logged is not None and str(e["event_id"]) in logged]
        if unlogged:
            logger.info(
                "%d events of the window have no row in the feature log (%s): left out",
                unlogged,
                not_logged_causes(settings.features.log_slack_seconds * 1000),
            )
    champion_version = registry.alias_version("champion")
    champion = registry.load(version=champion_version) if champion_version else None
    if champion is not None and request.get("requested_by") == ACTOR:
        # The detector's start is coarse (and a quality trigger's is a guess): with the
        # labelled window in hand, the champion's own errors say where the change is.
        since = refined_start(spec, now_store, champion, events, labels, since, logged, task)
        events = [e for e in events if int(e["event_time"]) >= since]
    labelled = sum(1 for e in events if e["event_id"] in labels)
    outcome: dict[str, Any] = {
        "request_id": request["request_id"],
        "window_start": since,
        "events": len(events),
        "labelled": labelled,
    }
    if labelled < r.min_labelled:
        rows = "" if r.features_now else " with a row in the feature log"
        return outcome | {
            "status": "waiting",
            "why": f"{labelled} labelled events{rows} since the window start, need "
            f"{r.min_labelled}",
        }
    try:
        result = train_and_register(
            registry,
            spec,
            now_store,
            events,
            labels,
            seed=int(time.time()) % 10_000,
            holdout_share=r.holdout_share,
            holdout_newest=True,
            refit_on_all=True,
            extra_params={
                "retrain_request": request["request_id"],
                "retrain_reason": request["reason"],
                "window_start": since,
                "drift_signals": len(request.get("drift_signal_ids") or []),
            },
            compare_to=champion,
            make_champion_if_none=False,
            logged=logged,
            task=task,
        )
    except TrainingRefused as exc:
        return outcome | {"status": "refused", "why": "; ".join(exc.report.problems)}
    m = result.metrics
    passed, gate = offline_gate(m, r.offline_margin, r.ece_margin, task.loss)
    why = f"retrain {request['request_id'][:8]} ({request['reason']}): {gate}"
    done = outcome | {"version": result.version, "metrics": m, "feature_rows": result.sources}
    if set(result.sources) - {"feature_log"}:
        logger.warning(
            "challenger v%s: feature rows not from the log: %s", result.version, result.sources
        )
    if not passed:
        _record(registry, result.version, f"not shadowed, lost offline: {gate}")
        logger.warning("challenger v%s not shadowed (offline gate): %s", result.version, why)
        return done | {"status": "gated", "why": gate}
    held = _retry(lambda: person_challenger(registry))
    if held is not None:
        note = f"not shadowed: v{held} is a challenger a person put in place"
        _record(registry, result.version, note)
        logger.warning("challenger v%s %s", result.version, note)
        return done | {"status": "held", "why": note}
    now = int(time.time() * 1000)
    applied = _retry(
        lambda: apply_change(
            settings,
            registry,
            codecs.model_event,
            lambda s, _r: plan_rollout(s, result.version, "shadow", 0, why, ACTOR, now),
        )
    )
    logger.info("challenger v%s in shadow: %s", result.version, why)
    return done | {
        "status": "shadowed",
        "why": gate,
        "shadow_since_ms": now,
        "now_serving": applied.after.describe(),
        "seconds": round(time.monotonic() - started, 1),
    }


def _record(registry: MlflowRegistry, version: str, decision: str) -> None:
    _retry(lambda: registry.tag_version(version, "streamscore.decision", decision))


def _retry(call: Callable[[], T], tries: int = APPLY_TRIES) -> T:
    """``call``, tried again after a transient error (1 s, 2 s, ...); the last error raised."""
    for attempt in range(tries):
        try:
            return call()
        except TransientError as exc:
            if attempt == tries - 1:
                raise
            logger.warning("registry call failed (%s); trying again", exc)
            time.sleep(2**attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def losses_of(task: Task, outputs: Any, y: Any) -> Any:
    """Per row, the loss of a model's outputs against the targets (``row_losses`` of the
    label join: a multiclass row's is minus the log of the true class's probability).

    >>> losses_of(Task("multiclass", ("a", "b", "c")), np.array([[0.5, 0.25, 0.25]]),
    ...           np.array([0])).round(4).tolist()
    [0.6931]
    """
    if task.kind == "multiclass":
        picked = outputs[np.arange(len(y)), y.astype(np.int64)]
        return row_losses(task, picked, np.ones(len(y)))
    return row_losses(task, outputs, y)
