"""Every Prometheus metric streamscore exposes, defined once (namespace ``streamscore_``).

Labels are bounded: topic, worker, stage, outcome, reason, model_version, detector. Never ids.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

NAMESPACE = "streamscore"

MESSAGES_CONSUMED = Counter(
    "messages_consumed_total", "Messages read from Kafka.", ["topic"], namespace=NAMESPACE
)
MESSAGES_PRODUCED = Counter(
    "messages_produced_total",
    "Messages acknowledged by Kafka.",
    ["topic"],
    namespace=NAMESPACE,
)
MESSAGES_REJECTED = Counter(
    "messages_rejected_total",
    "Messages sent to a dead-letter topic.",
    ["stage", "reason"],
    namespace=NAMESPACE,
)
STAGE_DURATION = Histogram(
    "stage_duration_seconds",
    "Time spent per micro-batch in each pipeline stage.",
    ["stage"],
    namespace=NAMESPACE,
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
FEATURE_LOOKUPS = Counter(
    "feature_lookups_total",
    "Feature store lookups by outcome (batch_ok, missing_<group> per row, error).",
    ["outcome"],
    namespace=NAMESPACE,
)
PREDICTIONS = Counter(
    "predictions_total", "Predictions produced.", ["model_version"], namespace=NAMESPACE
)
FALLBACKS = Counter(
    "fallbacks_total",
    "Predictions answered by the fallback scorer instead of the model.",
    ["reason"],
    namespace=NAMESPACE,
)
MODEL_INFO = Gauge(
    "model_info",
    "The model version a worker serves (value 1).",
    ["model_name", "model_version"],
    namespace=NAMESPACE,
)
MESSAGES_DEFERRED = Counter(
    "messages_deferred_total",
    "Messages held back by rate-limit backpressure (their partition paused and re-read).",
    namespace=NAMESPACE,
)
