"""The faust app and its agents. Run: `streamscore worker control-plane`."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import faust

from services.core import metrics
from services.core.errors import RegistryUnavailable, TransientError
from services.core.settings import Settings
from services.drift.signals import drift_signal
from services.labels.join import join
from services.retrain.policy import retrain_request
from services.retrain.trainer import answer
from services.scoring.operations import apply_change
from services.scoring.rollout import plan_promote
from streams.control.state import ControlState, build_state

logger = logging.getLogger(__name__)
GROUP = "streamscore-control"
TICK_SECONDS = 5.0
ALL_PARTITIONS = -1  # the error signal's partition: every partition of the labels topic


def create_app(settings: Settings) -> tuple[faust.App, ControlState]:
    state = build_state(settings)
    servers = ";".join(f"kafka://{s}" for s in settings.kafka_bootstrap.split(","))
    app = faust.App(
        GROUP,
        broker=servers,
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=False,
        store="memory://",
        broker_session_timeout=settings.kafka.session_timeout_ms / 1000,
        broker_heartbeat_interval=settings.kafka.heartbeat_interval_ms / 1000,
        topic_replication_factor=1,
        consumer_auto_offset_reset="latest",
    )
    t = settings.topics
    labels = app.topic(t.labels, value_type=bytes, key_type=bytes)
    drift = app.topic(t.drift_signals, value_type=bytes, key_type=bytes)
    retrain = app.topic(t.retrain_requests, value_type=bytes, key_type=bytes)
    events = app.topic(t.model_events, value_type=bytes, key_type=bytes)
    codecs = state.codecs

    @app.agent(labels)
    async def label_join(stream: Any) -> None:
        async for batch in stream.take_events(500, within=1.0):
            signals = await asyncio.get_running_loop().run_in_executor(
                None, _join_labels, state, batch
            )
            for record in signals:
                value = codecs["DriftSignal"].encode_one(record)
                await drift.send(key=record["signal"].encode(), value=value)

    @app.agent(drift)
    async def aggregate_drift(stream: Any) -> None:
        async for value in stream:
            signal = codecs["DriftSignal"].decode_one(value)
            if not isinstance(signal, dict) or signal["model_name"] != state.registry.name:
                continue
            now = int(time.time() * 1000)
            evidence = state.aggregator.add(signal, now)
            if evidence is None:
                continue
            request = retrain_request(
                state.registry.name,
                signal["model_version"],
                evidence,
                settings.retrain.window_seconds * 1000,
                now,
                "control-plane",
            )
            metrics.RETRAIN_REQUESTS.labels(trigger="drift").inc()
            logger.warning("retrain requested: %s (%d signals)", request["reason"], len(evidence))
            await retrain.send(
                key=state.registry.name.encode(),
                value=codecs["RetrainRequest"].encode_one(request),
            )

    @app.agent(retrain)
    async def train(stream: Any) -> None:
        async for value in stream:
            request = codecs["RetrainRequest"].decode_one(value)
            if not isinstance(request, dict) or request["model_name"] != state.registry.name:
                continue
            logger.info("training for request %s (%s)", request["request_id"], request["reason"])
            try:
                outcome = await asyncio.get_running_loop().run_in_executor(
                    None,
                    answer,
                    settings,
                    state.registry,
                    state.spec,
                    state.features,
                    state.trainer_codecs,
                    request,
                )
            except TransientError as exc:  # registry, Redis or Kafka down: not this request's fault
                logger.warning("retrain request %s not answered: %s", request["request_id"], exc)
                outcome = {"trained": False, "why": str(exc)}
            metrics.RETRAIN_OUTCOMES.labels(
                outcome="trained" if outcome.get("trained") else "skipped"
            ).inc()
            logger.info("retrain outcome: %s", {k: v for k, v in outcome.items() if k != "metrics"})

    @app.agent(events)
    async def model_events(stream: Any) -> None:
        async for value in stream:
            event = codecs["ModelEvent"].decode_one(value)
            if isinstance(event, dict):
                metrics.MODEL_EVENTS.labels(source="control_plane").inc()
                logger.info(
                    "model event: %s %s v%s -> v%s by %s: %s",
                    event["event_type"],
                    event.get("alias"),
                    event.get("from_version"),
                    event.get("to_version"),
                    event["actor"],
                    event["reason"],
                )

    @app.timer(interval=TICK_SECONDS)  # type: ignore[untyped-decorator]  # faust is untyped here
    async def tick() -> None:
        state.last_tick = time.monotonic()
        metrics.CONTROL_PLANE_TICK.set(time.time())
        try:
            await asyncio.get_running_loop().run_in_executor(None, _consider_promotion, state)
            metrics.REGISTRY_UP.set(1)
        except RegistryUnavailable as exc:  # the timer goes on; the decision waits for MLflow
            metrics.REGISTRY_UP.set(0)
            logger.warning("promotion check skipped: %s", exc)

    return app, state


def _join_labels(state: ControlState, batch: list[Any]) -> list[dict[str, Any]]:
    """Join a batch of labels (event objects from faust) to stored predictions; update the
    quality book and metrics; feed the champion's per-event error to the drift detectors."""
    codec = state.codecs["Label"]
    rows = []
    for event in batch:
        label = codec.decode_one(event.value)
        if isinstance(label, dict):
            rows.append((event.message.partition, event.message.offset, label))
    ids = [r[2]["event_id"] for r in rows]
    joined, unmatched = join(
        rows, state.predictions.get_many("served", ids), state.predictions.get_many("shadow", ids)
    )
    now = int(time.time() * 1000)
    metrics.LABELS_JOINED.labels(outcome="matched").inc(len(joined))
    metrics.LABELS_JOINED.labels(outcome="unmatched").inc(unmatched)
    for j in joined:
        metrics.LABEL_LAG.observe(max(0.0, j.label_lag_ms / 1000))
    state.book.add(joined, now)
    _publish_quality(state)
    # The champion is the newest version the labels show served as champion (no registry call
    # per batch); another model's errors are another baseline, so a new one resets the detectors.
    served = {int(j.served.model_version) for j in joined if j.served.variant == "champion"}
    if served and (state.error_champion is None or max(served) > int(state.error_champion)):
        state.error_monitor.reset("error")
        state.error_champion = str(max(served))
    champion = state.error_champion
    signals: list[dict[str, Any]] = []
    times = {r[2]["event_id"]: int(r[2]["event_time"]) for r in rows}
    # One detector over all label partitions: label partitions follow the event id's hash, so
    # splitting them only divides the evidence (six partitions see a change six times slower).
    # The window is identified by event time (replay with offsets_for_times), not by offsets.
    rows_c = [
        j for j in joined if j.served.variant == "champion" and j.served.model_version == champion
    ]
    if rows_c:
        state.error_seen += len(rows_c)
        positions = list(range(state.error_seen - len(rows_c), state.error_seen))
        evidence = state.error_monitor.observe(
            ALL_PARTITIONS,
            "error",
            [j.error for j in rows_c],
            positions,
            [times[j.event_id] for j in rows_c],
        )
        if evidence is not None:
            metrics.DRIFT_SIGNALS.labels(detector=evidence.detector, signal="error").inc()
            logger.warning(
                "concept drift: log loss %.4f -> %.4f (event times %d-%d)",
                evidence.stats_before["mean"],
                evidence.stats_after["mean"],
                evidence.time_start_ms,
                evidence.time_end_ms,
            )
            record = drift_signal(
                evidence, state.settings.topics.labels, state.registry.name, champion or "", now
            )
            signals.append(record | {"offset_start": -1, "offset_end": -1})
    return signals


def _publish_quality(state: ControlState) -> None:
    for version, variant in state.book.keys():
        q = state.book.quality(version, variant)
        if "log_loss" in q:
            metrics.ONLINE_LOG_LOSS.labels(model_version=version, variant=variant).set(
                q["log_loss"]
            )
        if "auc" in q:
            metrics.ONLINE_AUC.labels(model_version=version, variant=variant).set(q["auc"])
        if "calibration" in q:
            metrics.ONLINE_CALIBRATION.labels(model_version=version, variant=variant).set(
                q["calibration"]
            )


def _consider_promotion(state: ControlState) -> None:
    """A challenger the control plane put in shadow: promote it when the policy says so."""
    s = state.settings
    rollout = state.registry.rollout_state()
    challenger = rollout.challenger
    if not s.retrain.auto_promote or rollout.mode != "shadow" or challenger is None:
        return
    if challenger in state.decided or rollout.champion is None:
        return
    shadowed = [
        h
        for h in state.registry.history()  # one registry read for both questions
        if h.event_type == "shadow_started" and h.to_version == challenger
    ]
    started = shadowed[-1].at_ms if shadowed else None
    if started is None or not any(h.actor == "control-plane" for h in shadowed):
        return  # a person started this shadow: a person decides
    now = int(time.time() * 1000)
    champion_q = state.book.quality(rollout.champion, "champion", since_ms=started)
    challenger_q = state.book.quality(challenger, "shadow", since_ms=started)
    decision, why = state.promotion.decide(started, now, champion_q, challenger_q)
    if decision == "wait":
        return
    state.decided.add(challenger)
    metrics.PROMOTION_DECISIONS.labels(decision=decision).inc()
    if decision == "promote":
        apply_change(
            s,
            state.registry,
            state.codecs["ModelEvent"],
            lambda st, _r: plan_promote(st, challenger, f"auto: {why}", "control-plane", now),
        )
        logger.warning("promoted v%s: %s", challenger, why)
    else:
        state.registry.client.set_model_version_tag(
            state.registry.name, challenger, "streamscore.decision", f"kept as challenger: {why}"
        )
        logger.warning("v%s stays challenger: %s", challenger, why)
