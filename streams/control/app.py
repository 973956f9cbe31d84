"""The faust app: topics and a timer wired to the control plane's jobs (``streams.control.loop``).
Run: `streamscore worker control-plane`.

Every agent and the timer catch, count (``streamscore_control_plane_errors_total{task}``) and
retry their failures: a transient one (Kafka, Redis, MLflow) until it passes, anything else a
few times. A label batch is given up only after repeated non-transient errors (counted in
``control_plane_dropped_total``, logged with its offsets); a retrain request is tried until it
is answered or expires, and a request that fails or expires releases the cooldown it armed.

Redis refusing the control plane's user (``RedisRefused``: WRONGPASS, NOPERM) is neither: it
goes to the process's refusal watch (``services.redisconn.refusal``, the worker's), so
readiness fails at once; it is logged as one line, at most once per refusal every 30 s; the
label batch is tried again each second (nothing given up); and `worker control-plane` exits 2
with the line once it has lasted ``redis.auth_failure_seconds``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import faust
from faust.auth import SASLCredentials, SSLCredentials

from services.codec.avro import AvroCodec
from services.core import metrics
from services.core.errors import RedisRefused, RegistryUnavailable, TransientError
from services.core.settings import Settings
from services.kafka.denied import from_error
from services.redisconn.refusal import WATCH as REDIS_WATCH
from services.retrain.policy import retrain_request
from services.retrain.trainer import answer
from streams.control.loop import decode_and_join, rebuild_book, tick
from streams.control.state import ControlState, build_state

logger = logging.getLogger(__name__)
GROUP = "streamscore-control"
TICK_SECONDS = 5.0
GIVE_UP_AFTER = 3  # non-transient failures of one label batch or request
MAX_BACKOFF = 30.0
# How often a waiting retrain request looks whether the control plane stops (faust's shutdown
# waits for the request's message: k8s gives the pod 30 s).
STOP_CHECK_SECONDS = 0.5
REFUSED_RETRY_SECONDS = 1.0  # as the worker tries a refused batch: a grant given back is seen
T = TypeVar("T")


def broker_credentials(settings: Settings) -> SASLCredentials | SSLCredentials | None:
    """faust's (aiokafka's) own form of the Kafka security settings the other clients use:
    the same principal, password and CA file.

    >>> broker_credentials(Settings()) is None
    True
    """
    k = settings.kafka
    if k.security_protocol == "PLAINTEXT":
        return None
    context = None
    if k.security_protocol.endswith("SSL"):
        ca = str(k.ssl_ca_location) if k.ssl_ca_location is not None else None
        context = ssl.create_default_context(cafile=ca)
    if k.security_protocol == "SSL":
        return SSLCredentials(context)
    credentials = SASLCredentials(
        username=k.sasl_username,
        password=k.sasl_password.get_secret_value() if k.sasl_password else None,
        ssl_context=context,
        mechanism=k.sasl_mechanism or "PLAIN",
    )
    return credentials


def create_app(settings: Settings) -> tuple[faust.App, ControlState]:
    state = build_state(settings)
    try:
        rows = rebuild_book(state, GROUP)
        logger.info("quality book rebuilt from %d labels already joined", rows)
    except RedisRefused as exc:
        refused("rebuild", exc)
        logger.warning("quality book starts empty (could not replay the labels)")
    except TransientError as exc:
        metrics.CONTROL_PLANE_ERRORS.labels(task="rebuild").inc()
        logger.warning("quality book starts empty (could not replay the labels): %s", exc)
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
        topic_replication_factor=settings.kafka.control_replication_factor,
        broker_credentials=broker_credentials(settings),
        consumer_auto_offset_reset="latest",
    )
    t = settings.topics
    labels = app.topic(t.labels, value_type=bytes, key_type=bytes)
    drift = app.topic(t.drift_signals, value_type=bytes, key_type=bytes)
    retrain = app.topic(t.retrain_requests, value_type=bytes, key_type=bytes)
    events = app.topic(t.model_events, value_type=bytes, key_type=bytes)
    codecs = state.codecs

    async def send_request(request: dict[str, Any], trigger: str) -> None:
        metrics.RETRAIN_REQUESTS.labels(trigger=trigger).inc()
        logger.warning(
            "retrain requested: %s (window from %d)", request["reason"], request["window_start"]
        )
        await retrain.send(
            key=state.registry.name.encode(), value=codecs["RetrainRequest"].encode_one(request)
        )

    @app.agent(labels)
    async def label_join(stream: Any) -> None:
        async for batch in stream.take_events(500, within=1.0):
            raw = [(e.message.partition, e.message.offset, e.value) for e in batch]
            where = _offsets(batch)
            signals = await retrying("label_join", where, decode_and_join, state, raw)
            for record in signals or []:
                try:
                    value = codecs["DriftSignal"].encode_one(record)
                    await drift.send(key=record["signal"].encode(), value=value)
                except Exception:  # noqa: BLE001  (not published: acted on here all the same)
                    metrics.CONTROL_PLANE_ERRORS.labels(task="label_join").inc()
                    logger.exception("drift signal not published; aggregated directly")
                    await on_signal(record)

    async def on_signal(signal: dict[str, Any]) -> None:
        try:
            if signal["model_name"] != state.registry.name:
                return
            now = int(time.time() * 1000)
            evidence = state.aggregator.add(signal, now)
            if evidence is None:
                return
            request = retrain_request(
                state.registry.name,
                signal["model_version"],
                evidence,
                settings.retrain.window_seconds * 1000,
                now,
                "control-plane",
                margin_ms=int(settings.retrain.change_point_margin_seconds * 1000),
            )
            await send_request(request, "drift")
        except Exception:  # noqa: BLE001  (counted and logged; the agent goes on)
            state.aggregator.disarm()  # a request that was not sent must not hold the cooldown
            metrics.CONTROL_PLANE_ERRORS.labels(task="aggregate_drift").inc()
            logger.exception("drift signal not handled")

    @app.agent(drift)
    async def aggregate_drift(stream: Any) -> None:
        async for value in stream:
            signal = await decoded("aggregate_drift", codecs["DriftSignal"], value)
            if isinstance(signal, dict):
                await on_signal(signal)

    @app.agent(retrain)
    async def train(stream: Any) -> None:
        async for value in stream:
            request = await decoded("retrain", codecs["RetrainRequest"], value)
            if not isinstance(request, dict) or request["model_name"] != state.registry.name:
                continue
            logger.info("training for request %s (%s)", request["request_id"], request["reason"])
            # The request's offset is committed once this returns. Stopped while it waits, it
            # gives up the wait (faust's shutdown waits for this message) and the request is
            # sent again, for the next start to answer.
            status = await serve_request(state, request, lambda: app.should_stop)
            if status == "interrupted":
                await retrain.send(key=state.registry.name.encode(), value=value)

    @app.agent(events)
    async def model_events(stream: Any) -> None:
        async for value in stream:
            event = await decoded("model_events", codecs["ModelEvent"], value)
            if isinstance(event, dict):
                metrics.MODEL_EVENTS.labels(source="control_plane").inc()
                logger.info(
                    "model event: %s %s v%s -> v%s by %s: %s",
                    event.get("event_type"),
                    event.get("alias"),
                    event.get("from_version"),
                    event.get("to_version"),
                    event.get("actor"),
                    event.get("reason"),
                )

    @app.timer(interval=TICK_SECONDS)  # type: ignore[untyped-decorator]  # faust is untyped here
    async def timer() -> None:
        await on_tick(state, send_request)

    return app, state


async def on_tick(
    state: ControlState, send_request: Callable[[dict[str, Any], str], Awaitable[None]]
) -> None:
    """The timer's body: never raises (a failure is counted and logged; the next tick tries
    again)."""
    state.last_tick = time.monotonic()
    metrics.CONTROL_PLANE_TICK.set(time.time())
    try:
        wanted = await asyncio.get_running_loop().run_in_executor(None, tick, state)
    except RedisRefused as exc:
        refused("tick", exc)
        return
    except RegistryUnavailable as exc:  # decisions wait for MLflow
        metrics.REGISTRY_UP.set(0)
        metrics.CONTROL_PLANE_ERRORS.labels(task="tick").inc()
        logger.warning("tick skipped: %s", exc)
        return
    except Exception:  # noqa: BLE001
        metrics.CONTROL_PLANE_ERRORS.labels(task="tick").inc()
        logger.exception("tick failed")
        return
    r = state.settings.retrain
    for want in wanted:
        now = int(time.time() * 1000)
        if not state.aggregator.allow(now):
            continue
        request = retrain_request(
            state.registry.name,
            want["base_version"],
            [],
            r.window_seconds * 1000,
            now,
            "control-plane",
            reason=want["reason"],
            window_start_ms=want["window_start"],
        )
        try:
            await send_request(request, "quality")
        except Exception:  # noqa: BLE001
            state.aggregator.disarm()
            metrics.CONTROL_PLANE_ERRORS.labels(task="tick").inc()
            logger.exception("retrain request not sent")


async def decoded(task: str, codec: AvroCodec, value: bytes) -> Any:
    """``codec.decode_one(value)``; a schema registry that does not answer is waited for."""
    return await retrying(task, "decoding", codec.decode_one, value)


async def retrying(task: str, where: str, call: Callable[..., T], *args: Any) -> T | None:
    """``call(*args)`` on an executor thread until it succeeds: transient errors are retried
    without end (backoff to 30 s), a Redis refusal each second (``refused``; the process stops
    on it in the end), others ``GIVE_UP_AFTER`` times; then None (counted)."""
    delay, failures = 1.0, 0
    while True:
        try:
            result = await asyncio.get_running_loop().run_in_executor(None, call, *args)
        except RedisRefused as exc:
            refused(task, exc)
            await asyncio.sleep(REFUSED_RETRY_SECONDS)
            continue
        except TransientError as exc:
            metrics.CONTROL_PLANE_ERRORS.labels(task=task).inc()
            logger.warning("%s failed (%s), trying again in %.0f s: %s", task, where, delay, exc)
        except Exception:  # noqa: BLE001  (a bug or bad data: a few tries, then given up)
            metrics.CONTROL_PLANE_ERRORS.labels(task=task).inc()
            failures += 1
            logger.exception("%s failed (%s), try %d of %d", task, where, failures, GIVE_UP_AFTER)
            if failures >= GIVE_UP_AFTER:
                metrics.CONTROL_PLANE_DROPPED.labels(task=task).inc()
                logger.error("%s gave up on %s", task, where)
                return None
        else:
            REDIS_WATCH.answered(task)
            return result
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_BACKOFF)


async def serve_request(
    state: ControlState, request: dict[str, Any], stopping: Callable[[], bool] = lambda: False
) -> str:
    """Answer ``request``: tried again every ``retrain.retry_seconds`` while it waits for
    labelled events or meets a transient error, until ``retrain.max_wait_seconds`` after it was
    made; returns the outcome (``shadowed``, ``gated``, ``held``, ``refused``, ``expired`` or
    ``failed``). An expired or failed request releases the cooldown. A refusal by the
    cluster's authorizer (a missing grant, which no retry can help) answers it ``refused`` at
    once, with the one line naming the principal, the operation and the resource. When
    ``stopping()`` turns true between tries it returns ``interrupted`` within a second (the
    caller sends the request again)."""
    r = state.settings.retrain
    expires = int(request.get("requested_at") or time.time() * 1000) + r.max_wait_seconds * 1000
    failures = 0
    while True:
        outcome: dict[str, Any] | None = None
        try:
            outcome = await asyncio.get_running_loop().run_in_executor(
                None,
                answer,
                state.settings,
                state.registry,
                state.spec,
                state.features,
                state.trainer_codecs,
                request,
            )
        except RedisRefused as exc:  # not this request's fault either; the process stops on it
            refused("retrain", exc)
        except TransientError as exc:  # Kafka, Redis or MLflow down: not this request's fault
            metrics.CONTROL_PLANE_ERRORS.labels(task="retrain").inc()
            denied = from_error(state.settings, str(exc), exc.stage, exc.topic)
            if denied is not None:
                # A missing grant: no retry can help; a person must grant it (security.md).
                logger.error("retrain request %s refused: %s", request["request_id"], denied)
                why = {"request_id": request["request_id"], "why": str(denied)}
                return _finish(state, request, "refused", why)
            logger.warning("retrain request %s: %s; trying again", request["request_id"], exc)
        except Exception:  # noqa: BLE001
            metrics.CONTROL_PLANE_ERRORS.labels(task="retrain").inc()
            failures += 1
            logger.exception("retrain request %s failed (try %d)", request["request_id"], failures)
            if failures >= GIVE_UP_AFTER:
                return _finish(state, request, "failed", {"why": "errors on every try"})
        if outcome is not None:
            REDIS_WATCH.answered("retrain")
        if outcome is not None and outcome["status"] != "waiting":
            return _finish(state, request, outcome["status"], outcome)
        if outcome is not None:
            metrics.RETRAIN_WAITING.set(1)
            logger.info("retrain request %s waits: %s", request["request_id"], outcome["why"])
        if time.time() * 1000 >= expires:
            why = (outcome or {}).get("why", "errors until the deadline")
            return _finish(state, request, "expired", {"why": why})
        resume_at = time.monotonic() + r.retry_seconds
        while not stopping() and time.monotonic() < resume_at:
            await asyncio.sleep(min(STOP_CHECK_SECONDS, r.retry_seconds))
        if stopping():
            metrics.RETRAIN_WAITING.set(0)
            logger.info(
                "retrain request %s interrupted: the control plane stops; sent again for its "
                "next start",
                request["request_id"],
            )
            return "interrupted"


def refused(task: str, exc: RedisRefused) -> None:
    """Redis refused the user in ``task``: counted, fed to the refusal watch (readiness fails;
    `worker control-plane` stops once it has lasted ``redis.auth_failure_seconds``) and logged
    as one line without a traceback, at most once per refusal every 30 s."""
    metrics.CONTROL_PLANE_ERRORS.labels(task=task).inc()
    if REDIS_WATCH.failed(task, exc):
        logger.error("%s: %s; tried again until it is granted", task, exc)


def _finish(
    state: ControlState, request: dict[str, Any], status: str, outcome: dict[str, Any]
) -> str:
    metrics.RETRAIN_WAITING.set(0)
    metrics.RETRAIN_OUTCOMES.labels(outcome=status).inc()
    if status in ("expired", "failed"):
        state.aggregator.disarm()
    shown = {k: v for k, v in outcome.items() if k != "metrics"}
    logger.info("retrain outcome %s: %s", status, shown)
    return status


def _offsets(batch: list[Any]) -> str:
    parts: dict[int, list[int]] = {}
    for event in batch:
        parts.setdefault(event.message.partition, []).append(event.message.offset)
    return "labels " + ", ".join(f"p{p}@{min(o)}-{max(o)}" for p, o in sorted(parts.items()))
