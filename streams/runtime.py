"""The composition root of the processes: a scoring worker, the HTTP/file scorer, and their
probes, wired from settings through ``streams.adapters``."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka.admin import AdminClient

from services.codec.factory import codec_for, schema_ids, schemas_dir
from services.codec.schemas import load_schemas
from services.core.errors import ConfigError
from services.core.settings import Settings
from services.domain.config import domain_of
from services.kafka.auth import WATCH
from services.kafka.config import admin_config
from services.redisconn.refusal import WATCH as REDIS_REFUSALS
from services.replay.plan import ReplayPlan
from services.scoring.loader import ServingLoader
from services.scoring.model import LoadedModel
from services.scoring.registry import MlflowRegistry
from streams.adapters import (
    build_serving,
    build_stages,
    drift_monitor,
    feature_spec,
    model_problem,
    prediction_store,
    rate_limiter,
    redis_client,
)
from streams.probes import Probes
from streams.replay import Rescorer
from streams.scorer import Scorer
from streams.topics import by_record, topic_table
from streams.worker import DriftOutput, ScoringWorker, WorkerTopics
from streams.worker.parts import FeatureLogOutput
from streams.worker.progress import stalled, unassigned


def scoring_worker(settings: Settings, model: LoadedModel | None = None) -> ScoringWorker:
    """A worker serving ``model``, or what the registry's rollout state says (and following it
    when ``settings.model.watch``)."""
    records = load_schemas(schemas_dir(settings))
    ids = schema_ids(settings)
    t = settings.topics
    names = (t.event_record, t.prediction_record, "DeadLetter", "ModelEvent", "DriftSignal")
    topics = [by_record(settings.topics, r) for r in names]
    codecs = [codec_for(settings, t, records, ids) for t in topics]
    shadow_topic = next(
        t for t in topic_table(settings.topics) if t.name == settings.topics.shadow_predictions
    )
    serving, watcher = build_serving(settings, codecs[3], model)
    drift = (
        DriftOutput(drift_monitor(settings), topics[4], codecs[4])
        if settings.drift.enabled
        else None
    )
    log_topic = by_record(settings.topics, "FeatureLog")
    feature_log = (
        FeatureLogOutput(
            log_topic, codec_for(settings, log_topic, records, ids), feature_spec(settings)
        )
        if settings.features.log
        else None
    )
    return ScoringWorker(
        settings,
        topics=WorkerTopics(topics[0], topics[1], topics[2], shadow_topic, feature_log),
        stages=build_stages(settings, serving),
        prediction_codec=codecs[1],
        dead_letter_codec=codecs[2],
        limiter=rate_limiter(settings),
        watcher=watcher,
        drift=drift,
        predictions_store=prediction_store(settings) if settings.drift.enabled else None,
    )


def api_scorer(settings: Settings) -> Scorer:
    """The HTTP API's scorer: the registry's rollout, followed by a started watcher."""
    codec = codec_for(settings, by_record(settings.topics, "ModelEvent"))
    serving, watcher = build_serving(settings, codec)
    if watcher is not None:
        watcher.start()
    return Scorer(settings, serving, watcher)


LIVENESS_SECONDS = 30.0  # the control plane's timer that has not ticked for this long is stuck


def replay_rescorer(settings: Settings, plan: ReplayPlan) -> Rescorer:
    """The re-score of a replay: the plan's model version, compiled as the worker compiles it,
    through the same stages."""
    if plan.model is None:
        raise ConfigError("a re-score needs a model version")
    registry = MlflowRegistry(settings)
    model = ServingLoader(
        registry, registry.cache, registry.signing_key, domain_of(settings).task
    ).load(plan.model)
    serving, _ = build_serving(settings, None, model)
    return Rescorer(settings, plan, build_stages(settings, serving))


def worker_probes(settings: Settings, worker: ScoringWorker) -> Probes:
    """/healthz: the loop turns. /readyz: input topic reachable, Redis answers, model loaded."""
    admin = AdminClient(admin_config(settings))
    client = redis_client(settings)
    topic = worker.topics.input.name

    def alive() -> str | None:
        age = time.monotonic() - worker.last_loop
        limit = settings.worker.liveness_seconds
        return None if age < limit else f"worker loop last turned {age:.0f} s ago"

    def broker() -> str | None:
        # Failed TLS handshakes or logins: not ready at once, even while connections made
        # before (a password changed since) still answer.
        refused = worker.membership.auth.problem()
        if refused is not None:
            return refused
        found = admin.list_topics(topic=topic, timeout=2).topics.get(topic)
        admin.poll(0)  # its error events and log lines, to the watch
        if found is None or found.error is not None:
            return f"topic {topic}: {found.error if found else 'not found'}"
        return worker.membership.auth.problem()

    def redis_ok() -> str | None:
        # A refused user or command: not ready at once, even while PING still answers (an
        # ACL that took a command away, connections made before a password changed).
        refused = worker.refusals.watch.problem()
        if refused is not None:
            return refused
        return None if client.ping() else "no PONG"

    def model() -> str | None:
        return model_problem(worker.serving, worker.watcher)

    def threads() -> str | None:
        watcher = worker.watcher
        if watcher is not None and watcher.started and not watcher.alive and not worker.closed:
            return "background thread stopped: model-watcher"
        return None

    def partitions() -> str | None:
        # Owned partitions nobody reads: held, or paused by backpressure, well past any decided
        # pause; a position that stands still below the high watermark with no decided pause
        # to explain it; or nothing owned since a revoke or loss (streams.worker.progress).
        grace = max(30.0, 2 * settings.rate_limit.pause_seconds)
        membership, now = worker.membership, time.monotonic()
        owned = membership.owned()
        late = [f"{t}[{p}]" for t, p in worker.flow.overdue(now, grace, owned)]
        if late:
            return f"partitions paused past their time: {', '.join(late)}"
        patience = settings.worker.partition_grace_seconds
        still = [f"{t}[{p}]" for t, p in stalled(membership.progress, patience, owned)]
        if still:
            return f"partitions not read for {patience:.0f} s with records waiting: " + ", ".join(
                still
            )
        if membership.emptied_at is not None and not owned:
            found = admin.list_topics(topic=topic, timeout=2).topics.get(topic)
            count = len(found.partitions) if found is not None and found.error is None else 0
            waited = unassigned(membership.emptied_at, now, patience, owned, count)
            if waited is not None:
                return f"no partition assigned {waited:.0f} s after a revoke or loss"
        return None

    return Probes(
        alive,
        {
            "broker": broker,
            "redis": redis_ok,
            "model": model,
            "threads": threads,
            "partitions": partitions,
        },
    )


def control_plane_probes(settings: Settings, state: Any) -> Probes:
    """/healthz: the control plane's timer ticked recently. /readyz: Redis and the registry."""
    client = redis_client(settings)

    def alive() -> str | None:
        age = time.monotonic() - state.last_tick
        return None if age < LIVENESS_SECONDS else f"timer last ticked {age:.0f} s ago"

    def redis_ok() -> str | None:
        # A refused user or command (the label join's, training's): not ready at once.
        refused = REDIS_REFUSALS.problem()
        if refused is not None:
            return refused
        return None if client.ping() else "no PONG"

    def registry() -> str | None:
        return None if state.registry.rollout_state().champion else "no champion in the registry"

    # The cluster refusing its CA or credentials (watched by `worker control-plane`).
    return Probes(alive, {"redis": redis_ok, "registry": registry, "broker": WATCH.problem})
