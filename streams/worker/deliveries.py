"""Between batches: whether every output was delivered, a bound on those in flight, and a
serving set the registry watcher has ready."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from confluent_kafka import Producer

from services.core.errors import PublishError
from services.kafka.tracker import DeliveryTracker
from services.scoring.serving import Serving
from streams.model_watcher import ModelWatcher

logger = logging.getLogger("streams.worker")
IN_FLIGHT_WAIT_SECONDS = 60.0


def check_deliveries(tracker: DeliveryTracker) -> None:
    """A prediction or dead letter Kafka refused (after librdkafka's own retries): stop.
    Offsets stay before it, so a restart scores it again.

    Raises:
        PublishError: an output was not delivered.
    """
    if tracker.errors:
        (source, partition), err = tracker.errors[0]
        output = tracker.failed_topics[0] if tracker.failed_topics else None
        raise PublishError(
            f"{len(tracker.errors)} outputs were not delivered, first: {err}; "
            f"offsets of {source}[{partition}] are not committed past them",
            topic=output or source,  # where writing failed, when the report said
            partition=partition,
            stage="publish",
        )


def bound_in_flight(
    tracker: DeliveryTracker,
    producer: Producer,
    limit: int,
    topic: str,
    beat: Callable[[], None],
) -> None:
    """Stop taking input while more than ``limit`` outputs wait for the broker (bounded
    memory); liveness beats meanwhile.

    Raises:
        PublishError: an output failed, or they stayed unacknowledged for a minute.
    """
    deadline = time.monotonic() + IN_FLIGHT_WAIT_SECONDS
    while tracker.in_flight() > limit:
        producer.poll(0.05)
        check_deliveries(tracker)
        beat()
        if time.monotonic() > deadline:
            raise PublishError(
                f"{tracker.in_flight()} outputs unacknowledged for 60 s",
                topic=topic,
                stage="publish",
            )


def take_swap(watcher: ModelWatcher, current: Serving) -> tuple[Serving, bool] | None:
    """The serving set the watcher has ready, and whether it changes what is served (False:
    the same models, compiled); None when it has nothing."""
    new = watcher.take()
    if new is None:
        return None
    same = (new.versions(), new.mode, new.canary_percent) == (
        current.versions(),
        current.mode,
        current.canary_percent,
    )
    if same:
        logger.info("serving the compiled form of %s", new.describe())
    else:
        logger.info(
            "swapped to %s (was %s)",
            new.describe(),
            current.describe(),
            extra={"model_version": new.champion.version, "component": "model"},
        )
    return new, not same
