"""Builders that wire settings to adapters: Redis, the feature store, codecs, the scoring worker."""

from __future__ import annotations

import redis

from services.codec.factory import codec_for, schema_ids, schemas_dir
from services.codec.schemas import load_schemas
from services.core.settings import Settings
from services.features.redis_store import RedisFeatureStore
from services.features.spec import FeatureSpec
from services.ratelimit.bucket import RedisTokenBuckets
from services.scoring.model import LoadedModel
from services.scoring.registry import MlflowRegistry
from services.validation.rules import RecordRules
from streams.scoring_worker import ScoringWorker
from streams.topics import by_record


def redis_client(settings: Settings) -> redis.Redis:
    password = settings.redis.password.get_secret_value() if settings.redis.password else None
    return redis.Redis.from_url(
        settings.redis_url,
        password=password,
        socket_timeout=settings.redis.socket_timeout_seconds,
        socket_connect_timeout=settings.redis.socket_timeout_seconds,
    )


def feature_spec(settings: Settings) -> FeatureSpec:
    return FeatureSpec.load(settings.features.spec_path)


def feature_store(settings: Settings, spec: FeatureSpec | None = None) -> RedisFeatureStore:
    return RedisFeatureStore(
        redis_client(settings),
        spec or feature_spec(settings),
        settings.redis.key_prefix,
        settings.features.ttl_seconds,
    )


def scoring_worker(settings: Settings, model: LoadedModel | None = None) -> ScoringWorker:
    """A worker serving ``model``, or the registry's ``settings.model.alias`` version."""
    records = load_schemas(schemas_dir(settings))
    ids = schema_ids(settings)
    topics = [by_record(settings.topics, r) for r in ("Interaction", "Prediction", "DeadLetter")]
    codecs = tuple(codec_for(settings, t, records, ids) for t in topics)
    spec = feature_spec(settings)
    if model is None:
        model = MlflowRegistry(settings).load(alias=settings.model.alias)
    return ScoringWorker(
        settings,
        input_topic=topics[0],
        predictions_topic=topics[1],
        dlq_topic=topics[2],
        codecs=(codecs[0], codecs[1], codecs[2]),
        rules=RecordRules.load("Interaction", schemas_dir(settings) / "rules"),
        spec=spec,
        store=feature_store(settings, spec),
        model=model,
        limiter=rate_limiter(settings),
    )


def rate_limiter(settings: Settings) -> RedisTokenBuckets | None:
    """Shared per-producer token buckets, when rate limits are enabled."""
    rl = settings.rate_limit
    if not rl.enabled:
        return None
    return RedisTokenBuckets(
        redis_client(settings), settings.redis.key_prefix, rl.rate_per_second, rl.burst
    )
