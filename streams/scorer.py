"""The worker's stages for callers that cannot wait for a topic: the HTTP API and batch scoring
of files. The same ``process_batch`` (envelope, decode, validate, one feature lookup, score, the
rollout's canary and shadow), over events encoded as a producer would send them, so an answer
here is the one the stream would give.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.codec.factory import codec_for
from services.core import metrics
from services.core.errors import FeatureStoreUnavailable
from services.core.outcomes import Rejected
from services.core.settings import Settings
from services.domain.config import domain_of
from services.features.store import Lookup
from services.ratelimit.bucket import PRODUCER_HEADER
from services.scoring.model import LoadedModel
from services.scoring.pipeline import Inbound, defaults_only, flag_degraded, process_batch
from services.scoring.serving import Serving
from streams.topics import by_record

logger = logging.getLogger(__name__)


@dataclass
class Scored:
    """Per input, in input order: its prediction record, or why it was refused."""

    predictions: dict[int, dict[str, Any]] = field(default_factory=dict)
    refused: dict[int, Rejected] = field(default_factory=dict)
    shadow: list[dict[str, Any]] = field(default_factory=list)
    degraded: bool = False


class Scorer:
    """Score events (dicts of the domain's event record) with a serving set that a model
    watcher may replace between calls."""

    def __init__(
        self, settings: Settings, serving: Serving | LoadedModel, watcher: Any = None
    ) -> None:
        from streams.runtime import feature_store

        self.settings = settings
        self.domain = domain_of(settings)
        t = settings.topics
        self.codec = codec_for(settings, by_record(t, t.event_record))
        self.spec, self.rules = self.domain.spec, self.domain.rules
        self.store = feature_store(settings, self.spec)
        self.serving = serving if isinstance(serving, Serving) else Serving(serving)
        self.watcher = watcher
        self.threshold = settings.model.decision_threshold

    def current(self) -> Serving:
        """The serving set, after taking what the watcher has ready (a hot swap)."""
        if self.watcher is not None:
            swapped = self.watcher.take()
            if swapped is not None:
                logger.info("now serving %s", swapped.describe())
                metrics.MODEL_SWAPS.inc()
                self.serving = swapped
        return self.serving

    def score(
        self, events: Sequence[dict[str, Any]], producer: str, source: str = "http"
    ) -> Scored:
        """Score ``events``; every one ends in ``predictions`` or ``refused``.

        Raises:
            FeatureStoreUnavailable: Redis did not answer and the policy is ``pause`` (the
                caller answers 503 and the client retries).
        """
        values = self.codec.encode_many(list(events))
        key_field = self.domain.key_field
        header = ((PRODUCER_HEADER, producer.encode()),)
        inbound = [
            Inbound(source, 0, i, str(e.get(key_field, e["event_id"])).encode(), v, header)
            for i, (e, v) in enumerate(zip(events, values, strict=True))
        ]
        serving = self.current()
        now = int(time.time() * 1000)
        lookup: Callable[[dict[str, Sequence[str]]], Mapping[str, Lookup]] = self.store.get_many
        degraded = False
        while True:
            try:
                result = process_batch(
                    inbound,
                    self.codec,
                    self.rules,
                    self.spec,
                    lookup,
                    serving,
                    now,
                    threshold=self.threshold,
                )
                break
            except FeatureStoreUnavailable:
                if degraded or self.settings.redis.unavailable_policy != "degrade":
                    raise
                metrics.FEATURE_LOOKUPS.labels(outcome="error").inc()
                lookup, degraded = defaults_only(self.spec), True  # as the worker degrades
        if degraded:
            result = flag_degraded(result, "feature_store")
        out = Scored(degraded=degraded)
        if result.served is not None:
            for src, rec in zip(result.served.sources, result.served.records(), strict=True):
                out.predictions[src.offset] = rec
        for d in result.dead_letters:
            out.refused[d.source.offset] = d.rejected
        if result.shadowed is not None:
            out.shadow = result.shadowed.records()
        return out
