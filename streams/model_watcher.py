"""Follow the registry for a scoring worker: model events for news within a second, polling
as the fallback. Loading happens on this thread; the worker swaps between batches.

A version that fails to load is refused (metric, log) and the worker keeps what it serves. A
refused state is retried when a new model event arrives or the state changes, not on every
poll, so a tampered artifact does not flood the logs. A registry outage is not a change: the
serving set stays as it is (``streamscore_registry_up`` 0) until the registry answers. No error
ends the watcher; the readiness probe fails if its thread is gone all the same.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid

from confluent_kafka import OFFSET_END, Consumer, KafkaException, TopicPartition

from services.codec.avro import AvroCodec
from services.core import metrics
from services.core.errors import BrokerUnavailable, NotFound, RegistryUnavailable
from services.core.settings import Settings
from services.kafka.config import consumer_config
from services.kafka.denied import not_authorized
from services.kafka.ranges import partitions_of
from services.scoring.loader import Built, ServingLoader
from services.scoring.rollout import RolloutState
from services.scoring.serving import Serving, compile_serving

logger = logging.getLogger(__name__)
OUTAGE_RETRY_SECONDS = 5.0  # how soon a failed refresh is tried again (at most the poll period)


def record_built(built: Built) -> None:
    """Metrics and logs for a freshly built serving set."""
    for refusal in built.refusals:
        metrics.MODEL_LOAD_FAILURES.labels(reason=refusal.reason).inc()
    metrics.MODEL_LOAD_REFUSED.set(1 if built.refusals else 0)
    if built.fell_back:
        metrics.FALLBACKS.labels(reason="model_load").inc()


def publish_serving_info(serving: Serving, previous: Serving | None) -> None:
    if previous is not None:
        metrics.MODEL_INFO.clear()
    metrics.MODEL_INFO.labels(
        model_name=serving.champion.name, model_version=serving.champion.version, role="champion"
    ).set(1)
    if serving.challenger is not None and serving.mode != "none":
        metrics.MODEL_INFO.labels(
            model_name=serving.challenger.name,
            model_version=serving.challenger.version,
            role=serving.mode,
        ).set(1)
    metrics.CANARY_PERCENT.set(serving.canary_percent if serving.mode == "canary" else 0)


class ModelWatcher:
    """A daemon thread that keeps the next ``Serving`` ready for the worker to take."""

    def __init__(
        self,
        settings: Settings,
        loader: ServingLoader,
        state: RolloutState,
        serving: Serving,
        event_codec: AvroCodec,
    ) -> None:
        self.settings = settings
        self.loader = loader
        self._state = state  # what the registry said when ``_serving`` was built
        self._serving = serving
        self._codec = event_codec
        self._pending: Serving | None = None
        self._refused: RolloutState | None = None
        self.registry_down = False
        self.reads = 0  # registry reads so far (tests wait on it)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)
        self._compile_queue: queue.Queue[Serving | None] = queue.Queue()
        self._compiler = threading.Thread(
            target=self._compile_loop, name="model-compiler", daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        if self.settings.model.compile:
            self._compiler.start()

    def _compile_loop(self) -> None:
        """Compile serving sets the watcher built, newest only; offer the compiled form while
        the worker still serves those versions. A failure keeps LightGBM's predictor."""
        while True:
            target = self._compile_queue.get()
            while not self._compile_queue.empty():  # a newer set supersedes an older one
                target = self._compile_queue.get()
            if target is None:
                return
            try:
                faster = compile_serving(target, self.settings.model.compile_cache_dir)
            except Exception:  # noqa: BLE001 (compiling is an optimisation; serving goes on)
                logger.exception("compiling %s failed; LightGBM predicts", target.describe())
                continue
            with self._lock:
                if faster is not None and self._serving is target:
                    self._pending = self._serving = faster

    @property
    def started(self) -> bool:
        return self._thread.ident is not None

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        self._compile_queue.put(None)
        self._thread.join(timeout=10)

    def adopt(self, serving: Serving) -> None:
        """The serving set the worker starts with, when it differs from the one built (its
        compiled form): later builds start from it."""
        self._serving = serving

    def take(self) -> Serving | None:
        """The new serving set, once, if one is ready (called by the worker between batches)."""
        with self._lock:
            pending, self._pending = self._pending, None
        return pending

    def _run(self) -> None:
        """Never ends on an error: a refresh that fails is counted, logged and tried again at
        the next poll (sooner during a registry outage); the worker keeps what it serves."""
        consumer = self._subscribe()
        poll = self.settings.model.poll_seconds
        next_poll = time.monotonic() + poll
        owed = False  # a model event was heard but its refresh failed: retry it like one
        try:
            while not self._stop.is_set():
                heard = 0
                try:
                    heard = self._read_events(consumer) if consumer else 0
                    if not consumer:
                        self._stop.wait(0.2)
                    if heard:
                        metrics.MODEL_EVENTS.labels(source="topic").inc(heard)
                    if heard or owed:
                        owed = True
                        self._refresh(retry_refused=True, source="event")
                        owed = False
                    elif time.monotonic() >= next_poll:
                        self._refresh(retry_refused=False, source="poll")
                    if heard or time.monotonic() >= next_poll:
                        next_poll = time.monotonic() + poll
                    self._registry_answered()
                except RegistryUnavailable as exc:
                    self._registry_down(exc)
                    next_poll = time.monotonic() + min(poll, OUTAGE_RETRY_SECONDS)
                    self._stop.wait(min(poll, OUTAGE_RETRY_SECONDS))
                except Exception:  # noqa: BLE001 (the watcher must outlive any one refresh)
                    metrics.WATCHER_ERRORS.inc()
                    logger.exception(
                        "model watcher: refresh failed; this worker keeps %s and tries again",
                        self._serving.describe(),
                    )
                    next_poll = time.monotonic() + poll
                    self._stop.wait(min(poll, OUTAGE_RETRY_SECONDS))
        finally:
            if consumer is not None:
                consumer.close()

    def _registry_down(self, exc: RegistryUnavailable) -> None:
        metrics.REGISTRY_UP.set(0)
        if not self.registry_down:
            logger.warning("%s: serving %s until it answers", exc, self._serving.describe())
        self.registry_down = True

    def _registry_answered(self) -> None:
        if self.registry_down:
            logger.info("model registry answers again")
        self.registry_down = False
        metrics.REGISTRY_UP.set(1)

    def _subscribe(self) -> Consumer | None:
        topic = self.settings.topics.model_events
        group = f"streamscore-model-watch-{uuid.uuid4().hex[:8]}"  # never commits
        consumer: Consumer | None = None
        try:
            consumer = Consumer(consumer_config(self.settings, group))
            parts = partitions_of(consumer, topic)
            if not parts:
                raise NotFound(f"topic {topic} not found")
            consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in parts])
            return consumer
        except (KafkaException, BrokerUnavailable, NotFound) as exc:
            # A refusal (this principal may not read the topic) is named as one, not "not found".
            why = not_authorized(self.settings, str(exc), "Read", topic) or exc
            logger.warning(
                "no model events (%s): polling the registry every %ss only",
                why,
                self.settings.model.poll_seconds,
            )
            if consumer is not None:
                consumer.close()
            return None

    def _read_events(self, consumer: Consumer) -> int:
        """Model events about our model; any readable one triggers a refresh."""
        heard = 0
        for message in consumer.consume(num_messages=50, timeout=0.2):
            if message.error() is not None:
                continue
            decoded = self._codec.decode_one(message.value())
            if isinstance(decoded, dict):
                if decoded.get("model_name") == self.loader.source.name:
                    logger.info(
                        "model event: %s %s v%s -> v%s by %s (%s)",
                        decoded["event_type"],
                        decoded.get("alias"),
                        decoded.get("from_version"),
                        decoded.get("to_version"),
                        decoded["actor"],
                        decoded["reason"],
                    )
                    heard += 1
            else:
                logger.warning("unreadable model event at offset %s: %s", message.offset(), decoded)
        return heard

    def _refresh(self, *, retry_refused: bool, source: str) -> None:
        self.reads += 1
        state = self.loader.source.rollout_state()
        if state == self._state and not (retry_refused and self._refused == state):
            return
        if source == "poll":
            metrics.MODEL_EVENTS.labels(source="poll").inc()
        built = self.loader.build(state, self._serving)
        record_built(built)
        self.loader.remember(built.serving)
        self._refused = state if built.refusals else None
        if built.serving.versions() != self._serving.versions() or (
            built.serving.mode,
            built.serving.canary_percent,
        ) != (self._serving.mode, self._serving.canary_percent):
            logger.info(
                "serving %s (was %s), ready to swap",
                built.serving.describe(),
                self._serving.describe(),
            )
            with self._lock:
                self._pending = self._serving = built.serving
            # Served by LightGBM's predictor from the next batch; compiled meanwhile on the
            # compiler thread (in a child process), then offered again: same versions, same
            # scores, cheaper. This thread goes on hearing rollout changes meanwhile.
            if self.settings.model.compile:
                self._compile_queue.put(built.serving)
        self._state = state
