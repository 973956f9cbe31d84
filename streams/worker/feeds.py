"""The worker's side outputs: the drift monitors' feed (gathered over small batches) and the
prediction store the label join reads."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from services.core import metrics
from services.core.errors import FeatureStoreUnavailable, RedisRefused
from services.drift.monitor import DriftMonitor
from services.drift.signals import drift_signal
from services.labels.store import PredictionStore
from services.redisconn.refusal import WATCH, RefusalWatch
from services.scoring.results import BatchResult
from services.scoring.serving import Serving

# The worker's own logger: drift lines are the worker's log lines.
logger = logging.getLogger("streams.worker")


@dataclass(slots=True)
class _DriftRows:
    partitions: npt.NDArray[np.int64]
    offsets: npt.NDArray[np.int64]
    times: npt.NDArray[np.int64]
    watched: dict[str, npt.NDArray[np.float64]]


class DriftFeed:
    """The drift monitors' input, gathered over small batches.

    The detectors see the same values in the same order as batch by batch, but in pieces of at
    least ``min_rows`` (or whatever waited ``max_wait_seconds``): at light load a batch is one
    or two events, and numpy's fixed cost per call would otherwise be paid per event. The
    worker flushes before a model swap (the prediction detectors restart with a new champion).

    The prediction signals are the champion's ``score`` and, for a multiclass model, each
    class's probability (``probability:<class>``): the top class's probability alone hardly
    moves when the mix of classes does (orders moving from one band to the next are predicted
    as confidently as before). Only rows the champion scored itself, not degraded, feed them:
    a Redis outage or the fallback ladder would otherwise move every prediction signal at once.
    """

    def __init__(
        self,
        monitor: DriftMonitor,
        features: Sequence[str],
        topic: str,
        min_rows: int = 256,
        max_wait_seconds: float = 1.0,
    ) -> None:
        self.monitor, self.features, self.topic = monitor, tuple(features), topic
        self.min_rows, self.max_wait = min_rows, max_wait_seconds
        self._pending: list[_DriftRows] = []
        self._rows = 0
        self._since = 0.0
        self._predictions = {"score"}  # the prediction signals fed so far

    def add(self, result: BatchResult, now: float) -> None:
        block = result.served
        if block is None:
            return
        n = len(block)
        # Only the champion's own scores: a canary's are another model's by design, and a
        # degraded row (scored on the spec's defaults in a Redis outage, or answered by the
        # fallback ladder: a base rate, a class prior) moves with the outage, not the stream.
        champion = np.asarray(
            [
                v == "champion" and not d
                for v, d in zip(block.variants, block.degraded, strict=True)
            ],
            dtype=bool,
        )
        watched = {"score": np.where(champion, block.scores, np.nan)}
        if block.probabilities is not None:
            for i, name in enumerate(block.classes):
                watched[f"probability:{name}"] = np.where(
                    champion, block.probabilities[:, i], np.nan
                )
            self._predictions.update(watched)
        for name in self.features:
            watched[f"feature:{name}"] = _numbers(block.field(name))
        self._pending.append(
            _DriftRows(
                np.fromiter((m.partition for m in block.sources), np.int64, n),
                np.fromiter((m.offset for m in block.sources), np.int64, n),
                np.asarray(block.field("event_time"), dtype=np.int64),
                watched,
            )
        )
        if not self._rows:
            self._since = now
        self._rows += n

    def due(self, now: float) -> bool:
        return self._rows >= self.min_rows or (
            self._rows > 0 and now - self._since >= self.max_wait
        )

    def flush(self, serving: Serving, now_ms: int) -> list[dict[str, Any]]:
        """Feed what is pending, per partition; the DriftSignal records of detectors that
        fired."""
        if not self._pending:
            return []
        parts, self._pending, self._rows = self._pending, [], 0
        partitions = np.concatenate([p.partitions for p in parts])
        offsets = np.concatenate([p.offsets for p in parts])
        times = np.concatenate([p.times for p in parts])
        names = dict.fromkeys(k for p in parts for k in p.watched)  # first seen, first fed
        watched = {
            k: np.concatenate([p.watched.get(k, np.full(len(p.offsets), np.nan)) for p in parts])
            for k in names
        }
        signals = []
        version = serving.champion.version
        for partition in np.unique(partitions).tolist():
            rows = partitions == partition
            offs, ts = offsets[rows].tolist(), times[rows].tolist()
            for signal, values in watched.items():
                evidence = self.monitor.observe(partition, signal, values[rows], offs, ts)
                if evidence is None:
                    continue
                record = drift_signal(evidence, self.topic, serving.champion.name, version, now_ms)
                signals.append(record)
                metrics.DRIFT_SIGNALS.labels(detector=evidence.detector, signal=signal).inc()
                logger.warning(
                    "drift on %s: %s mean %.4g -> %.4g (offsets %d-%d)",
                    signal,
                    evidence.detector,
                    evidence.stats_before.get("mean", float("nan")),
                    evidence.stats_after.get("mean", float("nan")),
                    evidence.offset_start,
                    evidence.offset_end,
                    extra={"topic": self.topic, "partition": partition, "stage": "drift"},
                )
        return signals

    def reset_predictions(self) -> None:
        """Forget the prediction signals everywhere: a new champion's outputs differ by
        design, and that is not drift. Flush first: what the old champion scored is its own."""
        for signal in self._predictions:
            self.monitor.reset(signal)


def remember(store: PredictionStore, result: BatchResult, watch: RefusalWatch = WATCH) -> None:
    """Keep served and shadow scores for the label join. Best effort: losing them costs online
    quality figures, never predictions, so a Redis error is counted, not raised. A refusal
    (WRONGPASS, NOPERM) goes to ``watch`` as well: readiness fails, and the worker stops once
    it has lasted ``redis.auth_failure_seconds`` (``streams.worker.refused``)."""
    try:
        for kind, block in (("served", result.served), ("shadow", result.shadowed)):
            if block is not None:
                store.put_columns(
                    kind,
                    block.field("event_id"),
                    block.versions,
                    block.variants,
                    block.scores,
                    block.degraded,
                    block.missing,
                    block.probabilities,
                )
    except RedisRefused as exc:
        if watch.problem() is None:
            logger.warning("predictions not stored for the label join: %s", exc)
        watch.failed("remember", exc)
        metrics.FEATURE_LOOKUPS.labels(outcome="prediction_store_error").inc()
        return
    except FeatureStoreUnavailable as exc:
        metrics.FEATURE_LOOKUPS.labels(outcome="prediction_store_error").inc()
        logger.warning("predictions not stored for the label join: %s", exc)
        return
    watch.answered("remember")


def _numbers(values: list[Any]) -> npt.NDArray[np.float64]:
    """A watched field as floats, per batch; missing or non-numeric is NaN (skipped)."""
    if {type(v) for v in values} <= {int, float}:
        return np.asarray(values, dtype=np.float64)
    return np.fromiter((_number(v) for v in values), np.float64, len(values))


def _number(value: Any) -> float:
    """A watched field as a float; missing or non-numeric is NaN (skipped by the monitor)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return float("nan")
    return float(value)
