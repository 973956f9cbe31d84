"""The HTTP API (`streamscore api serve`): send events, or score them now, over HTTP.

- ``POST /v1/events``: one event or ``{"events": [...]}``. Each event is checked as the SDK's
  producer checks it, then published to the input topic. The answer is 202 with the event ids,
  once the broker has acknowledged every one of them.
- ``POST /v1/predict``: the same body. The events are scored now through the worker's stages
  (``streams/scorer.py``: the same ``process_batch``), with the same champion, canary routing,
  shadow publishing and fallbacks, and the same registry watcher for hot swaps.

Every request needs an API key (``streamscore api keys create``), and each key has a token bucket
on the stream's Redis buckets. Answers: 401 for a missing or wrong key, 413 for a body over the
limit, 422 for a bad body (field-level errors), 429 with ``Retry-After``, 503 with ``Retry-After``
when Kafka or Redis does not answer (an outage passes), 500 without it when Redis refuses the
API's user (WRONGPASS, NOPERM) or Kafka refuses the send (a missing Write grant, a deleted
topic): retrying cannot help until a person acts, and the body names the cause (the user and
command, or the topic and operation). A bad input never gets a 500. Payloads are never logged.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.concurrency import run_in_threadpool

from services.codec.factory import codec_for
from services.core import metrics
from services.core.errors import FeatureStoreUnavailable, RedisRefused
from services.core.records import PRODUCER_HEADER
from services.core.settings import Settings
from services.kafka.config import admin_config, producer_config
from services.ratelimit.bucket import API_NAMESPACE, API_PRODUCER_PREFIX, RedisTokenBuckets
from services.redisconn.refusal import WATCH as REDIS_REFUSALS
from services.scoring.results import BatchResult
from streams.adapters import redis_client
from streams.api_answers import unsent
from streams.api_keys import ApiKey, ApiKeys
from streams.runtime import api_scorer
from streams.scorer import Scorer
from streams.sdk import EventValidator, InvalidEvent
from streams.topics import by_record
from streams.worker.callbacks import BestEffort
from streams.worker.parts import FeatureLogOutput

logger = logging.getLogger(__name__)
# Beyond message.timeout.ms, how long a delivery report may take to reach the API.
DELIVERY_REPORT_GRACE = 5.0

JSON_TYPES = {
    "string": {"type": "string"},
    "int": {"type": "integer"},
    "long": {"type": "integer"},
    "float": {"type": "number"},
    "double": {"type": "number"},
    "boolean": {"type": "boolean"},
    "null": {"type": "null"},
}


def json_schema(avro_type: Any) -> dict[str, Any]:
    """The JSON Schema of an Avro type as the API takes it (timestamps as epoch ms).

    >>> json_schema(["null", "double"])
    {'anyOf': [{'type': 'null'}, {'type': 'number'}]}
    >>> json_schema({"type": "enum", "name": "E", "symbols": ["A", "B"]})
    {'type': 'string', 'enum': ['A', 'B']}
    """
    if isinstance(avro_type, list):
        return {"anyOf": [json_schema(t) for t in avro_type]}
    if isinstance(avro_type, dict):
        kind = avro_type["type"]
        if kind == "enum":
            return {"type": "string", "enum": list(avro_type["symbols"])}
        if kind == "record":
            return record_schema(avro_type)
        if kind == "array":
            return {"type": "array", "items": json_schema(avro_type["items"])}
        return json_schema(kind)
    return dict(JSON_TYPES.get(str(avro_type), {}))


def record_schema(record: dict[str, Any]) -> dict[str, Any]:
    fields = record["fields"]
    return {
        "type": "object",
        "title": str(record["name"]),
        "properties": {
            f["name"]: json_schema(f["type"]) | ({"description": f["doc"]} if "doc" in f else {})
            for f in fields
        },
        "required": [f["name"] for f in fields if "default" not in f],
        "additionalProperties": False,
    }


def _errors(status: int, errors: list[dict[str, Any]], **headers: str) -> JSONResponse:
    return JSONResponse({"detail": errors}, status_code=status, headers=headers or None)


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers or None)


def redis_refused(route: str, exc: RedisRefused) -> JSONResponse:
    """500, no ``Retry-After``: Redis refused the API's user (counted where it was raised, in
    ``streamscore_redis_refusals_total``); readiness fails until a request of ``route``
    succeeds again."""
    REDIS_REFUSALS.failed(route, exc)
    return _error(500, f"refused by Redis (not an outage; retrying will not help): {exc}")


class Api:
    """What the endpoints share: checks, scorer, publisher, keys and limits."""

    def __init__(self, settings: Settings, scorer: Scorer) -> None:

        self.settings = settings
        self.scorer = scorer
        self.check = EventValidator(settings)
        self.admin = AdminClient(admin_config(settings))  # for /readyz
        t = settings.topics
        self.input_topic = t.events
        self.shadow_topic = t.shadow_predictions
        self.prediction_codec = codec_for(settings, by_record(t, t.prediction_record))
        log = by_record(t, "FeatureLog")
        self.feature_log = (
            FeatureLogOutput(log, codec_for(settings, log), scorer.domain.spec)
            if settings.features.log
            else None
        )
        self._log_cb = BestEffort(log.name)
        self._shadow_cb = BestEffort(self.shadow_topic)
        # A send is reported delivered or failed within the API's delivery timeout (never
        # delivered later, after the client was told it failed and retried it).
        timeout_ms = int(settings.api.delivery_timeout_seconds * 1000)
        self.producer = Producer(producer_config(settings, **{"message.timeout.ms": timeout_ms}))
        client = redis_client(settings)
        self.keys = ApiKeys(client, settings.redis.key_prefix)
        self._client = client
        self._buckets: dict[tuple[float, int], RedisTokenBuckets] = {}
        self._lock = threading.Lock()
        self._poller = threading.Thread(target=self._poll, name="api-producer", daemon=True)
        self._stop = threading.Event()
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.05)

    def close(self) -> None:
        """Stop the registry watcher and the delivery thread; deliver what was sent."""
        if self.scorer.watcher is not None:
            self.scorer.watcher.stop()
        self._stop.set()
        self._poller.join(5)
        self.producer.flush(10)

    # -- keys and limits ------------------------------------------------------------------
    def limiter(self, key: ApiKey) -> RedisTokenBuckets | None:
        rl = self.settings.rate_limit
        if not (key.rate_per_second or rl.enabled):
            return None  # no rate of its own, and the stream's limits are off
        rate = key.rate_per_second or rl.rate_per_second
        burst = key.burst or rl.burst
        with self._lock:
            if (rate, burst) not in self._buckets:
                self._buckets[(rate, burst)] = RedisTokenBuckets(
                    self._client,
                    self.settings.redis.key_prefix,
                    rate,
                    burst,
                    namespace=API_NAMESPACE,
                )
            return self._buckets[(rate, burst)]

    def admit(self, key: ApiKey, n: int) -> float | None:
        """None when ``n`` events are within the key's limit, else the seconds to wait."""
        limiter = self.limiter(key)
        if limiter is None:
            return None
        name = key.id
        granted = limiter.take({name: n}).get(name, 0)
        if granted >= n:
            return None
        if granted:
            limiter.give_back({name: granted})
        rate = key.rate_per_second or self.settings.rate_limit.rate_per_second
        return max(1.0, math.ceil((n - granted) / rate))

    # -- events -----------------------------------------------------------------------------
    def validate(self, events: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        good, errors = [], []
        for i, e in enumerate(events):
            try:
                good.append(self.check(e, i))
            except InvalidEvent as bad:
                errors.append(
                    {"index": i, "field": bad.field, "rule": bad.rule, "message": bad.detail}
                )
        return good, errors

    def publish(self, events: list[dict[str, Any]], producer_id: str) -> tuple[list[str], str]:
        """Send ``events``; returns the ids the broker acknowledged and why others were not.

        The answer waits for a delivery report of every event that was queued, so the ids it
        gives are final: an event it does not list was not written (a refusal part-way stops
        the sending, and what was queued before it is still waited for)."""
        codec = self.scorer.codec
        key_field = self.scorer.domain.key_field
        done = threading.Event()
        acked: list[str] = []
        failed: list[str] = []
        pending = [len(events)]
        lock = threading.Lock()

        def report(err: KafkaError | None, msg: Message, *, event_id: str) -> None:
            with lock:
                (failed if err is not None else acked).append(event_id if err is None else str(err))
                pending[0] -= 1
                if pending[0] == 0:
                    done.set()

        header: list[tuple[str, str | bytes | None]] = [(PRODUCER_HEADER, producer_id.encode())]
        refused = ""
        queued = 0
        try:
            for e, value in zip(events, codec.encode_many(events), strict=True):
                eid = str(e["event_id"])
                self.producer.produce(
                    self.input_topic,
                    key=str(e.get(key_field, eid)).encode(),
                    value=value,
                    headers=header,
                    on_delivery=functools.partial(report, event_id=eid),
                )
                queued += 1
        except (BufferError, KafkaException) as exc:
            refused = f"the producer refused the send: {exc}"
            with lock:
                pending[0] -= len(events) - queued  # never queued: no report will come
                if pending[0] == 0:
                    done.set()
        # message.timeout.ms bounds every report; a little more for the report to arrive.
        waited = done.wait(self.settings.api.delivery_timeout_seconds + DELIVERY_REPORT_GRACE)
        with lock:
            ok = set(acked)
            why = refused or (failed[0] if failed else "")
        in_order = [str(e["event_id"]) for e in events if str(e["event_id"]) in ok]
        metrics.MESSAGES_PRODUCED.labels(topic=self.input_topic).inc(len(in_order))
        if not waited:
            return in_order, "the broker did not acknowledge in time"
        return in_order, why

    def publish_feature_log(self, result: BatchResult | None) -> None:
        """The entity rows an answer was scored with, best effort (as the worker's): a label
        that arrives for an event scored here trains on what it was served."""
        if self.feature_log is None or result is None:
            return
        topic = self.feature_log.topic.name
        try:
            for value in self.feature_log.encode(result, int(time.time() * 1000)):
                # A refused delivery (an ACL, a deleted topic) is counted, as the worker's.
                self.producer.produce(topic, value, on_delivery=self._log_cb)
        except (BufferError, KafkaException) as exc:
            metrics.PUBLISH_FAILURES.labels(topic=topic).inc()
            logger.warning("feature log not published: %s", exc)

    def publish_shadow(self, records: list[dict[str, Any]]) -> None:
        """Shadow scores go to the shadow topic, best effort (as the worker's do)."""
        if not records:
            return
        try:
            for rec, value in zip(records, self.prediction_codec.encode_many(records), strict=True):
                self.producer.produce(
                    self.shadow_topic,
                    key=str(rec["event_id"]).encode(),
                    value=value,
                    on_delivery=self._shadow_cb,
                )
        except (BufferError, KafkaException) as exc:
            metrics.PUBLISH_FAILURES.labels(topic=self.shadow_topic).inc()
            logger.warning("shadow predictions not published: %s", exc)


def answer(rec: dict[str, Any], carry: tuple[str, ...]) -> dict[str, Any]:
    out = {
        "event_id": rec["event_id"],
        "score": rec["score"],
        "model_name": rec["model_name"],
        "model_version": rec["model_version"],
        "variant": rec["variant"],
        "degraded": rec["degraded"],
        "missing_features": list(rec["missing_features"]),
    }
    if rec.get("decision") is not None:  # the domain declares a decision threshold
        out["decision"] = rec["decision"]
    if rec.get("predicted_class") is not None:  # a multiclass task
        out["predicted_class"] = rec["predicted_class"]
        out["probabilities"] = dict(rec["probabilities"])
    return out | {name: rec.get(name) for name in carry}


def create_app(settings: Settings, scorer: Scorer | None = None) -> FastAPI:
    """The FastAPI app; ``scorer`` defaults to the registry's rollout, watched for swaps."""

    api = Api(settings, scorer or api_scorer(settings))
    domain = api.scorer.domain
    event_schema = record_schema(domain.records[domain.event_record].source)
    max_batch = settings.api.max_batch
    body_schema = {
        "oneOf": [
            event_schema,
            {
                "type": "object",
                "properties": {
                    "events": {
                        "type": "array",
                        "items": event_schema,
                        "minItems": 1,
                        "maxItems": max_batch,
                    }
                },
                "required": ["events"],
                "additionalProperties": False,
            },
        ]
    }
    error_schema = {"type": "object", "properties": {"detail": {}}, "required": ["detail"]}

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(api.close)  # the server stops: so do our threads

    app = FastAPI(
        lifespan=lifespan,
        title=f"streamscore: {domain.name}",
        description=f"Events of the {domain.name} domain ({domain.event_record}): send them to "
        "the stream, or score them now. Authenticate with `Authorization: Bearer <key>`.",
        version="1",
    )
    app.state.api = api

    def documented(summary: str, ok: int, ok_schema: dict[str, Any]) -> dict[str, Any]:
        codes = {
            "401": "no or wrong API key",
            "413": "body too large",
            "422": "invalid body",
            "429": "over the key's rate limit",
            "500": "Redis refused the API's user, or Kafka the send: not an outage",
            "503": "Kafka or Redis unavailable",
        }
        return {
            "summary": summary,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": body_schema}},
            },
            "responses": {
                str(ok): {
                    "description": "done",
                    "content": {"application/json": {"schema": ok_schema}},
                }
            }
            | {
                c: {"description": d, "content": {"application/json": {"schema": error_schema}}}
                for c, d in codes.items()
            },
            "security": [{"bearer": []}],
        }

    async def read(request: Request) -> tuple[ApiKey, list[Any]] | JSONResponse:
        """Authenticate, bound and parse a request: (key, events) or the error answer."""
        token = request.headers.get("authorization", "")
        token = token[7:].strip() if token.lower().startswith("bearer ") else ""
        token = token or request.headers.get("x-api-key", "")
        route = request.url.path
        try:
            key = await run_in_threadpool(api.keys.verify, token) if token else None
        except RedisRefused as exc:
            return redis_refused(route, exc)
        except FeatureStoreUnavailable:
            return _error(
                503, "API keys cannot be checked: Redis unavailable", **{"Retry-After": "1"}
            )
        if key is None:
            return _error(
                401,
                "a valid API key is needed: Authorization: Bearer <key>",
                **{"WWW-Authenticate": "Bearer"},
            )
        limit = settings.api.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return _error(413, f"body over {limit} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return _error(413, f"body over {limit} bytes")
        try:
            parsed = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):  # nesting deeper than Python
            return _errors(
                422,
                [{"index": None, "field": "", "rule": "json", "message": "the body is not JSON"}],
            )
        if isinstance(parsed, dict) and set(parsed) == {"events"}:
            events = parsed["events"]
            if not isinstance(events, list) or not events:
                return _errors(
                    422,
                    [
                        {
                            "index": None,
                            "field": "events",
                            "rule": "type",
                            "message": "a non-empty list of events",
                        }
                    ],
                )
        elif isinstance(parsed, dict):
            events = [parsed]
        else:
            return _errors(
                422,
                [
                    {
                        "index": None,
                        "field": "",
                        "rule": "type",
                        "message": 'an event object or {"events": [...]}',
                    }
                ],
            )
        if len(events) > max_batch:
            return _errors(
                422,
                [
                    {
                        "index": None,
                        "field": "events",
                        "rule": "max_batch",
                        "message": f"at most {max_batch} events a request",
                    }
                ],
            )
        try:
            wait = await run_in_threadpool(api.admit, key, len(events))
        except RedisRefused as exc:
            return redis_refused(route, exc)
        except FeatureStoreUnavailable:
            wait = None  # as the worker does: no limit can be read, everyone is admitted
        if wait is not None:
            metrics.MESSAGES_REJECTED.labels(stage="rate_limit", reason="rate_limited").inc(
                len(events)
            )
            return _error(
                429, f"key {key.id} is over its rate limit", **{"Retry-After": str(int(wait))}
            )
        return key, events

    async def checked(request: Request) -> tuple[ApiKey, list[dict[str, Any]]] | JSONResponse:
        """``read``, then every event checked: (key, events) or the error answer (422 lists
        each invalid event's index, field and rule)."""
        got = await read(request)
        if isinstance(got, JSONResponse):
            return got
        key, events = got
        good, errors = await run_in_threadpool(api.validate, events)
        return _errors(422, errors) if errors else (key, good)

    @app.middleware("http")
    async def measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception:  # a fault of ours, never of the input: logged without the payload
            logger.exception("%s %s failed", request.method, request.url.path)
            response = _error(500, "internal error (logged)")
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.API_REQUESTS.labels(route=path, status=str(response.status_code)).observe(
            time.perf_counter() - started
        )
        return response

    @app.post(
        "/v1/events",
        openapi_extra=documented(
            "Check events and publish them to the input topic",
            202,
            {
                "type": "object",
                "properties": {
                    "accepted": {"type": "integer"},
                    "event_ids": {"type": "array", "items": {"type": "string"}},
                },
            },
        ),
    )
    async def post_events(request: Request) -> Response:
        got = await checked(request)
        if isinstance(got, JSONResponse):
            return got
        key, good = got
        acked, why = await run_in_threadpool(api.publish, good, f"{API_PRODUCER_PREFIX}{key.id}")
        if why:  # 503 for an outage, 500 for a refusal (a missing grant, a deleted topic)
            return unsent(settings, api.input_topic, acked, why)
        REDIS_REFUSALS.answered(request.url.path)
        return JSONResponse({"accepted": len(acked), "event_ids": acked}, status_code=202)

    @app.post(
        "/v1/predict",
        openapi_extra=documented(
            "Score events now, as the stream would",
            200,
            {
                "type": "object",
                "properties": {"predictions": {"type": "array", "items": {"type": "object"}}},
            },
        ),
    )
    async def post_predict(request: Request) -> Response:
        got = await checked(request)
        if isinstance(got, JSONResponse):
            return got
        key, good = got
        try:
            scored = await run_in_threadpool(
                partial(api.scorer.score, counted=False), good, f"{API_PRODUCER_PREFIX}{key.id}"
            )
        except RedisRefused as exc:
            return redis_refused(request.url.path, exc)
        except FeatureStoreUnavailable:
            return _error(
                503, "features unavailable: Redis does not answer", **{"Retry-After": "1"}
            )
        REDIS_REFUSALS.answered(request.url.path)
        if scored.refused:
            return _errors(
                422,
                [
                    {"index": i, "field": r.field, "rule": r.reason.value, "message": r.detail}
                    for i, r in sorted(scored.refused.items())
                ],
            )
        api.scorer.account(scored)  # answered with predictions: counted as the stream counts
        api.publish_shadow(scored.shadow)
        api.publish_feature_log(scored.result)
        carry = domain.spec.carry
        preds = [answer(scored.predictions[i], carry) for i in range(len(good))]
        return JSONResponse({"predictions": preds})

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> Response:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> Response:
        problems = readiness(settings, api)
        return JSONResponse(
            {"status": "ready" if not problems else "not ready", "problems": problems},
            status_code=200 if not problems else 503,
        )

    @app.get("/metrics", include_in_schema=False)
    def prometheus() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    app.openapi_schema = None
    _openapi = app.openapi

    def openapi() -> dict[str, Any]:
        schema = _openapi()
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"}
        }
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def readiness(settings: Settings, api: Api) -> list[str]:
    """What stops this API from answering: the input topic, Redis, a model."""
    problems = []
    try:
        topic = api.input_topic
        found = api.admin.list_topics(topic=topic, timeout=2).topics.get(topic)
        if found is None or found.error is not None:
            problems.append(f"topic {topic}: {found.error if found else 'not found'}")
    except KafkaException as exc:
        problems.append(f"kafka: {exc}")
    refused = REDIS_REFUSALS.problem()
    if refused is not None:
        problems.append(refused)
    try:
        api._client.ping()
    except Exception as exc:  # noqa: BLE001 (any failure means not ready)
        problems.append(f"redis: {type(exc).__name__}")
    if api.scorer.serving is None:
        problems.append("no model loaded")
    return problems


def app_from_env() -> FastAPI:
    """The app of ``STREAMSCORE_*`` settings: uvicorn's factory for each worker process."""
    return create_app(Settings())
