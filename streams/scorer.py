"""The scoring core for callers that cannot wait for a topic: the HTTP API and batch scoring of
files. A thin shell: events are encoded as a producer would send them, and go through the same
``Stages``, dependency gate, ``process_batch`` and accounting step as the worker's, so an answer
here is the one the stream would give, counted in the same metrics.

Redis not answering: under ``degrade`` the events are scored with the declared defaults and
flagged (as the worker does); under ``pause`` the caller gets ``FeatureStoreUnavailable`` at
once (the API answers 503 and the client retries), since a request cannot be held for minutes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from services.core import metrics
from services.core.outcomes import Rejected
from services.core.records import PRODUCER_HEADER, Inbound
from services.core.settings import Settings
from services.domain.config import domain_of
from services.scoring.accounting import account
from services.scoring.gate import DependencyGate
from services.scoring.model import LoadedModel
from services.scoring.results import BatchResult
from services.scoring.serving import Serving
from services.scoring.stages import Stages
from streams.adapters import build_stages
from streams.model_watcher import ModelWatcher

logger = logging.getLogger(__name__)
# Requests are not Kafka messages: they carry no partition and no offset.
NO_PARTITION = -1
NO_OFFSET = -1


@dataclass(frozen=True, slots=True)
class ScoreRequest:
    """One event handed to the scorer: its place in the call, and the message it becomes."""

    index: int
    message: Inbound


@dataclass
class Scored:
    """Per input, in input order: its prediction record, or why it was refused."""

    predictions: dict[int, dict[str, Any]] = field(default_factory=dict)
    refused: dict[int, Rejected] = field(default_factory=dict)
    shadow: list[dict[str, Any]] = field(default_factory=list)
    degraded: bool = False
    result: BatchResult | None = None  # what the core gave (for ``Scorer.account``)


class _GiveUp:
    """The scorer's side of the dependency gate: no waiting, no holding (a caller waits)."""

    def wait(self, seconds: float) -> None:
        """Never called: the scorer's gate makes one try before it decides."""

    def hold(self, dependency: str, error: Exception) -> None:
        raise error

    def release(self) -> None:
        """Nothing was held."""

    def abandoned(self) -> bool:
        return False


class Scorer:
    """Score events (dicts of the domain's event record) with a serving set that a model
    watcher may replace between calls."""

    def __init__(
        self,
        settings: Settings,
        serving: Serving | LoadedModel,
        watcher: ModelWatcher | None = None,
        *,
        stages: Stages | None = None,
        publishes_shadow: bool = True,
    ) -> None:
        """``stages``: built from ``settings`` unless given. ``publishes_shadow``: whether the
        caller sends the shadow scores somewhere (the API does; a file does not)."""
        self.settings = settings
        self.domain = domain_of(settings)
        self.stages = stages or build_stages(settings, serving)
        self.codec = self.stages.codec
        self.watcher = watcher
        self.publishes_shadow = publishes_shadow
        self.topic = settings.topics.events
        # One try, then the policy: a caller is waiting.
        self.gate = DependencyGate(settings.redis.unavailable_policy, retries=1)

    @property
    def serving(self) -> Serving:
        return self.stages.serving

    def current(self) -> Serving:
        """The serving set, after taking what the watcher has ready (a hot swap)."""
        if self.watcher is not None:
            swapped = self.watcher.take()
            if swapped is not None:
                logger.info("now serving %s", swapped.describe())
                metrics.MODEL_SWAPS.inc()
                self.stages = self.stages.with_serving(swapped)
        return self.serving

    def account(self, scored: Scored) -> None:
        """Count a scored call in the shared metrics, as the worker counts a batch."""
        if scored.result is not None:
            account(scored.result, shadow_published=self.publishes_shadow)

    def requests(self, events: Sequence[dict[str, Any]], producer: str) -> list[ScoreRequest]:
        """``events`` as the messages a producer would send: Avro in the wire format, keyed by
        the domain's key field, with the producer header the rate limits read."""
        values = self.codec.encode_many(list(events))
        key_field = self.domain.key_field
        header = ((PRODUCER_HEADER, producer.encode()),)
        return [
            ScoreRequest(
                i,
                Inbound(
                    self.topic,
                    NO_PARTITION,
                    NO_OFFSET,
                    str(e.get(key_field, e["event_id"])).encode(),
                    v,
                    header,
                ),
            )
            for i, (e, v) in enumerate(zip(events, values, strict=True))
        ]

    def score(
        self, events: Sequence[dict[str, Any]], producer: str, *, counted: bool = True
    ) -> Scored:
        """Score ``events``; every one ends in ``predictions`` or ``refused``.

        Args:
            counted: count the batch in the shared metrics now; a caller that may still
                refuse the whole request (the API answers 422 when one event is refused)
                passes False and calls ``account`` once it answers with the predictions.

        Raises:
            FeatureStoreUnavailable: Redis did not answer and the policy is ``pause`` (the
                caller answers 503 and the client retries).
        """
        requests = self.requests(events, producer)
        self.current()
        now = int(time.time() * 1000)
        result = self.gate.run(self.stages, [r.message for r in requests], lambda: now, _GiveUp())
        if result is None:  # _GiveUp never abandons a batch
            raise RuntimeError("the scorer's batch was abandoned")
        index = {id(r.message): r.index for r in requests}
        out = Scored(degraded=result.degraded, result=result)
        if counted:
            self.account(out)
        if result.served is not None:
            for src, rec in zip(result.served.sources, result.served.records(), strict=True):
                out.predictions[index[id(src)]] = rec
        for d in result.dead_letters:
            out.refused[index[id(d.source)]] = d.rejected
        if result.shadowed is not None and self.publishes_shadow:
            out.shadow = result.shadowed.records()
        return out
