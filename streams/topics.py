"""The one topic table: every topic streamscore reads or writes, declared once."""

from __future__ import annotations

from services.core.settings import TopicSettings
from services.kafka.topics import TopicSpec, dlq_name

# Six partitions let up to six scoring workers share the input; control-plane topics are low
# volume and keep a single partition so their events stay totally ordered.
HOT_PARTITIONS = 6
# Replays write to sandbox topics, never in the table: sandbox.<name>.predictions (and .dlq).
SANDBOX_PREFIX = "sandbox."
DLQ_RETENTION_MS = str(14 * 24 * 3600 * 1000)  # two weeks to inspect and redrive
# The log must outlive the label delay plus the retraining window (chargebacks take weeks):
# an event whose logged row has expired falls back to a point-in-time lookup, counted.
FEATURE_LOG_RETENTION_MS = str(30 * 24 * 3600 * 1000)


def topic_table(topics: TopicSettings) -> tuple[TopicSpec, ...]:
    """All topics, with names from settings.

    >>> [t.name for t in topic_table(TopicSettings())][:2]
    ['feed.interactions.v1', 'feed.predictions.v1']
    """
    return (
        TopicSpec(
            topics.events,
            HOT_PARTITIONS,
            "string",
            topics.event_record,
            "input events, keyed by the domain's key field",
            "event producers",
            "scoring worker",
        ),
        TopicSpec(
            topics.predictions,
            HOT_PARTITIONS,
            "string",
            topics.prediction_record,
            "scores, keyed like the input",
            "scoring worker",
            "downstream consumers, label join",
        ),
        TopicSpec(
            topics.shadow_predictions,
            HOT_PARTITIONS,
            "string",
            topics.prediction_record,
            "the shadow challenger's scores (variant=shadow), never served",
            "scoring worker (shadow rollout)",
            "models compare, analysis",
        ),
        TopicSpec(
            topics.labels,
            HOT_PARTITIONS,
            "string",
            topics.label_record,
            "delayed ground truth, keyed by its join key",
            "label producers",
            "label join",
        ),
        TopicSpec(
            dlq_name(topics.events),
            1,
            "string",
            "DeadLetter",
            "rejected input with stage and reason",
            "scoring worker",
            "ops (dlq inspect/redrive)",
            {"retention.ms": DLQ_RETENTION_MS},
        ),
        TopicSpec(
            topics.drift_signals,
            1,
            "string",
            "DriftSignal",
            "drift detector firings with evidence",
            "scoring worker",
            "control plane",
        ),
        TopicSpec(
            topics.retrain_requests,
            1,
            "string",
            "RetrainRequest",
            "requests to train a new version",
            "control plane, ops",
            "trainer",
        ),
        TopicSpec(
            topics.feature_log,
            HOT_PARTITIONS,
            "string",
            "FeatureLog",
            "the entity features each batch was served with, one message per batch",
            "scoring worker (best effort; STREAMSCORE_FEATURES__LOG)",
            "trainer, retrainer",
            {"retention.ms": FEATURE_LOG_RETENTION_MS},
        ),
        TopicSpec(
            topics.model_events,
            1,
            "string",
            "ModelEvent",
            "registry changes: versions, aliases, rollouts",
            "registry CLI, trainer",
            "workers",
        ),
    )


def by_record(topics: TopicSettings, record: str) -> TopicSpec:
    """The main topic whose values are ``record`` (the first in the table; Prediction also has
    the shadow topic)."""
    return next(t for t in topic_table(topics) if t.value_record == record)


def sandbox_topic(name: str) -> str:
    """The predictions topic of sandbox ``name``.

    >>> sandbox_topic("incident-42")
    'sandbox.incident-42.predictions'
    """
    return f"{SANDBOX_PREFIX}{name}.predictions"
