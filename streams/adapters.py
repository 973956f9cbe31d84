"""Adapters built from settings: the Redis client, feature and prediction stores, the rate
limiter, the drift monitors, the serving set (with its registry watcher) and the scoring
``Stages`` that every shell hands to ``process_batch``. The one place settings meet adapters.
"""

from __future__ import annotations

from typing import Any

from services.codec.factory import codec_for
from services.core import metrics
from services.core.errors import ConfigError, ModelLoadError, RegistryUnavailable
from services.core.settings import Settings
from services.domain.config import domain_of
from services.drift.monitor import DetectorConfig, DriftMonitor
from services.features.redis_store import RedisFeatureStore
from services.features.spec import FeatureSpec
from services.features.store import FeatureStore
from services.labels.store import PredictionStore
from services.ratelimit.bucket import RedisTokenBuckets
from services.redisconn.client import Client, connect
from services.scoring.loader import ServingLoader, smoke_check
from services.scoring.model import LoadedModel
from services.scoring.registry import MlflowRegistry
from services.scoring.serving import Serving, compile_serving
from services.scoring.stages import Stages
from streams.model_watcher import ModelWatcher, record_built
from streams.topics import by_record


def redis_client(settings: Settings) -> Client:
    """The client of the deployment the settings select (server, Sentinel, Cluster)."""
    return connect(settings.redis, settings.redis_url)


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
        loader = ServingLoader(
            registry, registry.cache, registry.signing_key, domain_of(settings).task
        )
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


def build_stages(
    settings: Settings,
    model: Serving | LoadedModel,
    *,
    store: FeatureStore | None = None,
) -> Stages:
    """The domain's scoring stages over ``model``: the input topic's codec, the domain's rules
    and feature spec, the feature store's lookup (Redis unless ``store``), the decision
    threshold. The worker, the HTTP/file scorer and replay all score with what this builds."""
    domain = domain_of(settings)
    served = model if isinstance(model, Serving) else Serving(model)
    for m in (served.champion, served.challenger):
        if m is not None and m.metadata.task != domain.task:
            raise ConfigError(
                f"{m.name} v{m.version} is a {m.metadata.task.describe()} model; the domain "
                f"{domain.name!r} declares the task {domain.task.describe()}"
            )
    codec = codec_for(settings, by_record(settings.topics, settings.topics.event_record))
    lookup = (store or feature_store(settings, domain.spec)).get_many
    return Stages.of(
        codec,
        domain.rules,
        domain.spec,
        lookup,
        model,
        settings.model.decision_threshold,
        domain.decision_threshold is not None,
    )
