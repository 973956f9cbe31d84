"""Builders that wire settings to adapters: Redis, the feature store, codecs, the scoring worker."""

from __future__ import annotations

import time
from typing import Any

import redis
from confluent_kafka.admin import AdminClient

from services.codec.factory import codec_for, schema_ids, schemas_dir
from services.codec.schemas import load_schemas
from services.core import metrics
from services.core.errors import ConfigError, ModelLoadError, RegistryUnavailable
from services.core.settings import Settings
from services.domain.config import domain_of
from services.drift.monitor import DetectorConfig, DriftMonitor
from services.features.redis_store import RedisFeatureStore
from services.features.spec import FeatureSpec
from services.kafka.config import admin_config
from services.labels.store import PredictionStore
from services.ratelimit.bucket import RedisTokenBuckets
from services.scoring.loader import ServingLoader, smoke_check
from services.scoring.model import LoadedModel
from services.scoring.registry import MlflowRegistry
from services.scoring.serving import Serving, compile_serving
from streams.model_watcher import ModelWatcher, record_built
from streams.probes import Probes
from streams.scoring_worker import ScoringWorker
from streams.topics import by_record, topic_table


def redis_client(settings: Settings) -> redis.Redis:
    password = settings.redis.password.get_secret_value() if settings.redis.password else None
    return redis.Redis.from_url(
        settings.redis_url,
        password=password,
        socket_timeout=settings.redis.socket_timeout_seconds,
        socket_connect_timeout=settings.redis.socket_timeout_seconds,
    )


def feature_spec(settings: Settings) -> FeatureSpec:
    """The domain's feature spec, checked against its schemas."""
    return domain_of(settings).spec


def feature_store(settings: Settings, spec: FeatureSpec | None = None) -> RedisFeatureStore:
    return RedisFeatureStore(
        redis_client(settings),
        spec or feature_spec(settings),
        settings.redis.key_prefix,
        settings.features.ttl_seconds,
    )


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
    spec = feature_spec(settings)
    serving, watcher = build_serving(settings, codecs[3], model)
    return ScoringWorker(
        settings,
        input_topic=topics[0],
        predictions_topic=topics[1],
        dlq_topic=topics[2],
        codecs=(codecs[0], codecs[1], codecs[2]),
        rules=domain_of(settings).rules,
        spec=spec,
        store=feature_store(settings, spec),
        model=serving,
        limiter=rate_limiter(settings),
        watcher=watcher,
        shadow_topic=shadow_topic,
        drift=(drift_monitor(settings), topics[4], codecs[4]) if settings.drift.enabled else None,
        predictions_store=prediction_store(settings) if settings.drift.enabled else None,
    )


def build_serving(
    settings: Settings, model_event_codec: Any, model: LoadedModel | None = None
) -> tuple[Serving | LoadedModel, ModelWatcher | None]:
    """``model``, or the registry's rollout state (a pinned alias: that version alone), and
    the watcher that follows the registry when ``settings.model.watch``; compiled when
    ``settings.model.compile``. The worker, the HTTP API and batch scoring serve through it."""
    watcher = None
    serving: Serving | LoadedModel
    if model is not None:
        serving = model
    else:
        registry = MlflowRegistry(settings)
        loader = ServingLoader(registry, registry.cache, registry.signing_key)
        if settings.model.alias != "champion":
            # Pinned to another alias (e.g. a replay with the challenger): no rollout, no watch.
            pinned = registry.alias_version(settings.model.alias)
            if pinned is None:
                raise ConfigError(
                    f"model {settings.model.name} has no alias {settings.model.alias!r}"
                )
            serving = loader.load(pinned)
        else:
            try:
                state = loader.source.rollout_state()
                built = loader.build(state, None)
                loader.remember(built.serving)
            except RegistryUnavailable as outage:
                state, built = loader.from_copies(outage)
                metrics.FALLBACKS.labels(reason="local_copy").inc()
                metrics.REGISTRY_UP.set(0)
            record_built(built)
            serving = built.serving
            if settings.model.watch:
                watcher = ModelWatcher(settings, loader, state, built.serving, model_event_codec)
    if settings.model.compile:
        # Compiled before the first batch (a child process; the cache makes it instant after the
        # first time); the watcher compiles what it loads later.
        base = serving if isinstance(serving, Serving) else Serving(serving)
        serving = compile_serving(base, settings.model.compile_cache_dir) or base
        if watcher is not None:
            watcher.adopt(serving)
    return serving, watcher


def api_scorer(settings: Settings) -> Any:
    """The HTTP API's scorer: the registry's rollout, followed by a started watcher."""
    from streams.scorer import Scorer

    codec = codec_for(settings, by_record(settings.topics, "ModelEvent"))
    serving, watcher = build_serving(settings, codec)
    if watcher is not None:
        watcher.start()
    return Scorer(settings, serving, watcher)


def prediction_store(settings: Settings) -> PredictionStore:
    return PredictionStore(
        redis_client(settings), settings.redis.key_prefix, settings.drift.label_horizon_seconds
    )


def drift_monitor(settings: Settings) -> DriftMonitor:
    d = settings.drift

    def config(kind: str) -> DetectorConfig:
        return DetectorConfig(
            "page_hinkley" if kind == "page_hinkley" else "adwin",
            d.adwin_delta,
            d.ph_threshold,
            d.ph_delta,
            d.min_events,
        )

    return DriftMonitor(
        {"default": config(d.detector)} | {sig: config(k) for sig, k in d.detectors.items()}
    )


def rate_limiter(settings: Settings) -> RedisTokenBuckets | None:
    """Shared per-producer token buckets, when rate limits are enabled."""
    rl = settings.rate_limit
    if not rl.enabled:
        return None
    return RedisTokenBuckets(
        redis_client(settings), settings.redis.key_prefix, rl.rate_per_second, rl.burst
    )


LIVENESS_SECONDS = 30.0  # the control plane's timer that has not ticked for this long is stuck


def model_problem(serving: Serving, watcher: ModelWatcher | None) -> str | None:
    """The readiness "model" check: the served champion scores a row to a probability (it was
    verified when loaded), and the watcher that follows rollout changes is alive."""
    try:
        smoke_check(serving.champion)
    except ModelLoadError as exc:
        return str(exc)
    if watcher is not None and watcher.started and not watcher.alive:
        return "model watcher stopped: promotions and rollbacks are not followed"
    return None


def worker_probes(settings: Settings, worker: ScoringWorker) -> Probes:
    """/healthz: the loop turns. /readyz: input topic reachable, Redis answers, model loaded."""
    admin = AdminClient(admin_config(settings))
    client = redis_client(settings)
    topic = worker.input_topic.name

    def alive() -> str | None:
        age = time.monotonic() - worker.last_loop
        limit = settings.worker.liveness_seconds
        return None if age < limit else f"worker loop last turned {age:.0f} s ago"

    def broker() -> str | None:
        found = admin.list_topics(topic=topic, timeout=2).topics.get(topic)
        if found is None or found.error is not None:
            return f"topic {topic}: {found.error if found else 'not found'}"
        return None

    def redis_ok() -> str | None:
        return None if client.ping() else "no PONG"

    def model() -> str | None:
        return model_problem(worker.serving, worker.watcher)

    def threads() -> str | None:
        dead = worker.dead_threads()
        return f"background thread stopped: {', '.join(dead)}" if dead else None

    return Probes(alive, {"broker": broker, "redis": redis_ok, "model": model, "threads": threads})


def control_plane_probes(settings: Settings, state: Any) -> Probes:
    """/healthz: the control plane's timer ticked recently. /readyz: Redis and the registry."""
    client = redis_client(settings)

    def alive() -> str | None:
        age = time.monotonic() - state.last_tick
        return None if age < LIVENESS_SECONDS else f"timer last ticked {age:.0f} s ago"

    def redis_ok() -> str | None:
        return None if client.ping() else "no PONG"

    def registry() -> str | None:
        return None if state.registry.rollout_state().champion else "no champion in the registry"

    return Probes(alive, {"redis": redis_ok, "registry": registry})
