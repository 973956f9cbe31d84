"""Every Prometheus metric streamscore exposes, defined once (namespace ``streamscore_``).

Labels are bounded: topic, worker, stage, outcome, reason, model_version, variant, role,
detector. Never ids.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from prometheus_client import Counter, Gauge, Histogram

NAMESPACE = "streamscore"

API_REQUESTS = Histogram(
    "api_request_seconds",
    "HTTP API requests: latency by route (the template, e.g. /v1/predict) and status code.",
    ["route", "status"],
    namespace=NAMESPACE,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)
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
FEATURE_LOG_SKIPPED = Counter(
    "feature_log_skipped_total",
    "Feature-log records and rows a training read left out, by reason (undecodable, "
    "other_spec, out_of_range, no_label, not_in_training_set).",
    ["reason"],
    namespace=NAMESPACE,
)
FEATURE_LOOKUPS = Counter(
    "feature_lookups_total",
    "Feature store lookups by outcome (batch_ok, missing_<group> per row, error).",
    ["outcome"],
    namespace=NAMESPACE,
)
PREDICTIONS = Counter(
    "predictions_total",
    "Predictions produced, by the version that scored them and its variant (champion, "
    "challenger for canary traffic, shadow for the challenger's unserved scores).",
    ["model_version", "variant"],
    namespace=NAMESPACE,
)
FALLBACKS = Counter(
    "fallbacks_total",
    "Fallbacks by reason: predictions answered by a fallback rung (logistic, base_rate, "
    "challenger_error, shadow_error), or serving sets built on an earlier version (model_load).",
    ["reason"],
    namespace=NAMESPACE,
)
MODEL_INFO = Gauge(
    "model_info",
    "The model versions a worker serves (value 1), by role: champion, or the challenger's "
    "rollout mode (shadow, canary).",
    ["model_name", "model_version", "role"],
    namespace=NAMESPACE,
)
CANARY_PERCENT = Gauge(
    "canary_percent",
    "Share of users the challenger serves (0 outside a canary).",
    namespace=NAMESPACE,
)
MODEL_SWAPS = Counter(
    "model_swaps_total",
    "Serving-set changes applied between batches (promotion, rollout start/stop, rollback).",
    namespace=NAMESPACE,
)
MODEL_LOAD_FAILURES = Counter(
    "model_load_failures_total",
    "Versions refused on load: integrity (sha256 mismatch) or load (unreadable, untrusted).",
    ["reason"],
    namespace=NAMESPACE,
)
MODEL_LOAD_REFUSED = Gauge(
    "model_load_refused",
    "1 while the registry asks for a version this worker refused to load (it keeps serving "
    "the last good one); 0 once a load succeeds.",
    namespace=NAMESPACE,
)
MODEL_EVENTS = Counter(
    "model_events_total",
    "Model events seen on the model-events topic, and registry polls that found a change.",
    ["source"],
    namespace=NAMESPACE,
)
SHADOW_COMPARED = Counter(
    "shadow_compared_total", "Events scored by both champion and shadow.", namespace=NAMESPACE
)
SHADOW_ABS_DIFF = Counter(
    "shadow_abs_diff",
    "Sum of |champion - shadow| scores; divide by streamscore_shadow_compared_total for the mean.",
    namespace=NAMESPACE,
)
SHADOW_DECISION_FLIPS = Counter(
    "shadow_decision_flips_total",
    "Events where champion and shadow fall on different sides of the decision threshold.",
    namespace=NAMESPACE,
)
SHADOW_RANK_CORRELATION = Gauge(
    "shadow_rank_correlation",
    "Spearman rank correlation of champion and shadow scores in the last batch.",
    namespace=NAMESPACE,
)
MESSAGES_DEFERRED = Counter(
    "messages_deferred_total",
    "Messages held back by rate-limit backpressure (their partition paused and re-read).",
    namespace=NAMESPACE,
)
EVENT_TO_PREDICTION = Histogram(
    "event_to_prediction_seconds",
    "End-to-end latency: from the event's event_time to its prediction acknowledged by Kafka.",
    namespace=NAMESPACE,
    buckets=(0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
BATCH_MESSAGES = Histogram(
    "batch_messages",
    "Messages per consumed micro-batch.",
    namespace=NAMESPACE,
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
)
CONSUMER_LAG = Gauge(
    "consumer_lag_messages",
    "Messages between this worker's position and the partition's end, per assigned partition.",
    ["topic", "partition"],
    namespace=NAMESPACE,
)
WORKER_UP = Gauge(
    "worker_last_loop_timestamp_seconds",
    "Unix time of the worker loop's last iteration (liveness; /healthz fails when it is old).",
    namespace=NAMESPACE,
)
# Emitted by the drift detectors and the control plane (drift and retraining loop).
DRIFT_SIGNALS = Counter(
    "drift_signals_total",
    "Drift detector firings, by detector and watched signal.",
    ["detector", "signal"],
    namespace=NAMESPACE,
)
RETRAIN_REQUESTS = Counter(
    "retrain_requests_total",
    "Retraining requests emitted, by trigger (drift, schedule, manual).",
    ["trigger"],
    namespace=NAMESPACE,
)
# Control plane (label join, drift aggregation, retraining, promotion).
LABELS_JOINED = Counter(
    "labels_joined_total",
    "Labels read by the label join: matched to a stored prediction, or unmatched (expired or "
    "never scored).",
    ["outcome"],
    namespace=NAMESPACE,
)
LABEL_LAG = Histogram(
    "label_lag_seconds",
    "Time from an event to its label (label_time - event_time).",
    namespace=NAMESPACE,
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200),
)
ONLINE_LOG_LOSS = Gauge(
    "online_log_loss",
    "Log loss over the recent labelled window, per model version and variant.",
    ["model_version", "variant"],
    namespace=NAMESPACE,
)
ONLINE_AUC = Gauge(
    "online_auc",
    "AUC over the recent labelled window, per model version and variant.",
    ["model_version", "variant"],
    namespace=NAMESPACE,
)
ONLINE_CALIBRATION = Gauge(
    "online_calibration_gap",
    "Mean score minus observed rate over the recent labelled window (0 = calibrated).",
    ["model_version", "variant"],
    namespace=NAMESPACE,
)
RETRAIN_OUTCOMES = Counter(
    "retrain_outcomes_total",
    "Retrain requests answered, by outcome: shadowed, gated (lost offline to the champion), "
    "held (a person's challenger is in place), refused (validation), expired (never enough "
    "labelled events), failed (errors on every try); why in the log.",
    ["outcome"],
    namespace=NAMESPACE,
)
RETRAIN_WAITING = Gauge(
    "retrain_waiting",
    "1 while a retrain request waits for enough labelled events after its change point.",
    namespace=NAMESPACE,
)
CONTROL_PLANE_ERRORS = Counter(
    "control_plane_errors_total",
    "Failures in the control plane's agents and timer, by task; each is logged and tried again.",
    ["task"],
    namespace=NAMESPACE,
)
CONTROL_PLANE_DROPPED = Counter(
    "control_plane_dropped_total",
    "Label batches given up after repeated non-transient errors (logged with their offsets).",
    ["task"],
    namespace=NAMESPACE,
)
CONTROL_PLANE_BOOK_ROWS = Gauge(
    "control_plane_book_rows",
    "Rows the quality book holds (bounded: a window per serving version and variant).",
    namespace=NAMESPACE,
)
PROMOTION_DECISIONS = Counter(
    "promotion_decisions_total",
    "Automatic promotion decisions after a shadow period: promote or keep.",
    ["decision"],
    namespace=NAMESPACE,
)
CONTROL_PLANE_TICK = Gauge(
    "control_plane_last_tick_timestamp_seconds",
    "Unix time of the control plane's last timer tick (liveness).",
    namespace=NAMESPACE,
)
MODEL_COMPILES = Counter(
    "model_compiles_total",
    "LightGBM versions prepared for serving: compiled (lleaves), cached (loaded from the "
    "compiled cache), failed or unavailable (LightGBM's own predictor serves them).",
    ["outcome"],
    namespace=NAMESPACE,
)
COMMITS = Counter(
    "commits_total",
    "Offset commits by outcome: ok, or the broker's error (a fenced or rebalancing member's "
    "commit fails routinely; what it covered is read again, never lost).",
    ["outcome"],
    namespace=NAMESPACE,
)
PUBLISH_FAILURES = Counter(
    "publish_failures_total",
    "Outputs Kafka did not acknowledge, by topic. For predictions and dead letters the worker "
    "stops without committing past them; shadow and drift outputs are best effort.",
    ["topic"],
    namespace=NAMESPACE,
)
KAFKA_AUTH_FAILURES = Counter(
    "kafka_auth_failures_total",
    "Failed TLS handshakes (cause tls: an untrusted or refused certificate) and refused SASL "
    "logins (cause authentication: a wrong, changed or expired password) that librdkafka "
    "reported, as error events and log lines; its repeated lines are counted here, not logged.",
    ["cause"],
    namespace=NAMESPACE,
)
REDIS_REFUSALS = Counter(
    "redis_refusals_total",
    "Redis commands refused to this process's user, by cause (wrongpass: a changed password or "
    "a disabled user; noperm: an ACL that does not grant the command or its keys) and command. "
    "Not an outage: a worker stops (exit 2) once refusals have lasted "
    "STREAMSCORE_REDIS__AUTH_FAILURE_SECONDS.",
    ["cause", "command"],
    namespace=NAMESPACE,
)
KAFKA_REFUSALS = Counter(
    "kafka_refusals_total",
    "Kafka operations the HTTP API was refused, by operation and code (a missing grant: "
    "TOPIC_AUTHORIZATION_FAILED; a deleted topic: UNKNOWN_TOPIC_OR_PART, _UNKNOWN_TOPIC): "
    "answered 500, not 503, as no retry helps.",
    ["operation", "code"],
    namespace=NAMESPACE,
)
CONSUMER_REBUILDS = Counter(
    "consumer_rebuilds_total",
    "Consumers replaced because they had not rejoined their group a minute after losing their "
    "partitions (seen after a broker restart longer than the session timeout).",
    namespace=NAMESPACE,
)
INPUT_HELD = Gauge(
    "input_held",
    "1 while a worker holds its input (every partition paused) because Redis or the schema "
    "registry does not answer; lag grows, nothing is lost.",
    namespace=NAMESPACE,
)
DEPENDENCY_FAILURES = Counter(
    "dependency_failures_total",
    "Calls to a dependency of the hot path that failed and were retried, by dependency.",
    ["dependency"],
    namespace=NAMESPACE,
)
REGISTRY_UP = Gauge(
    "registry_up",
    "1 while the model registry answers the worker's watcher, 0 during an outage (the worker "
    "keeps serving what it serves).",
    namespace=NAMESPACE,
)
WATCHER_ERRORS = Counter(
    "model_watcher_errors_total",
    "Refreshes of the model watcher that failed for a reason other than a registry outage; "
    "each is logged with its traceback and retried.",
    namespace=NAMESPACE,
)
DEAD_LETTERS_CUT = Counter(
    "dead_letters_stripped_total",
    "Dead letters the dead-letter topic refused for their size and that were sent again "
    "without the original (raise the topic's max.message.bytes to keep originals).",
    namespace=NAMESPACE,
)
OUTPUTS_IN_FLIGHT = Gauge(
    "outputs_in_flight",
    "Predictions and dead letters produced but not yet acknowledged by Kafka.",
    namespace=NAMESPACE,
)


def observe_many(histogram: Histogram, values: Any) -> None:
    """Observe a whole array at once: one bucket count per bucket, not one call per value.

    prometheus_client has no bulk observe; this fills the same per-bucket counters and sum
    that ``observe`` does (its buckets are stored non-cumulatively, upper bounds inclusive).

    >>> h = Histogram("doc_example_seconds", "doc", buckets=(0.1, 1.0), registry=None)
    >>> observe_many(h, np.array([0.05, 0.1, 0.5, 7.0]))
    >>> [b.get() for b in h._buckets], h._sum.get()
    ([2.0, 1.0, 1.0], 7.65)
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return
    bounds = np.asarray(histogram._upper_bounds, dtype=np.float64)
    counts = np.bincount(np.searchsorted(bounds, arr, side="left"), minlength=len(bounds))
    for bucket, n in zip(histogram._buckets, counts.tolist(), strict=False):
        if n:
            bucket.inc(n)
    histogram._sum.inc(float(arr.sum()))
