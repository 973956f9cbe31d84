"""Where `train` and `models register --holdout` take historical events' entity rows from.

The feature log first (the rows as served), when the domain declares its topic; then snapshot
files (as of each event's time); Redis as it is now only when asked for (``--features-now``),
with a warning, because a feature that moved with the outcome after the event leaks it. Events
none of these give a row are left out, counted; if the log gives no row at all and nothing
else may, the command is refused (exit 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from services.codec.factory import codec_for
from services.core.errors import ConfigError, NotFound
from services.core.settings import Settings
from services.features.log import FeatureLogIndex
from services.features.spec import FeatureSpec
from services.features.store import FeatureStore
from services.training.log_reader import (
    feature_log_topic,
    not_logged_causes,
    read_training_rows,
)
from streams.adapters import feature_store
from streams.topics import by_record

NOW_WARNING = (
    "warning: {n:,} events take their entity features from Redis as it is now, not as they "
    "were served (--features-now): a feature that moved with the outcome after the event "
    "leaks it into training"
)


@dataclass
class Rows:
    """The events to use and where their entity rows come from."""

    events: list[dict[str, Any]]
    logged: FeatureLogIndex | None
    store: FeatureStore | None  # Redis as it is now: only with --features-now
    report: dict[str, Any] = field(default_factory=dict)


def choose_rows(
    settings: Settings,
    spec: FeatureSpec,
    events: list[dict[str, Any]],
    labels: dict[str, Any],
    err: Console,
    *,
    require_log: bool = False,
    snapshots: bool = False,
    features_now: bool = False,
    noun: str = "labelled events",
) -> Rows:
    """The feature log's rows for ``events`` (those with a label), then the rest from snapshot
    files (``snapshots``) or Redis now (``features_now``), else left out. ``noun`` names the
    events in the lines printed (`features matrix` passes every event as labelled).

    Raises:
        ConfigError: ``require_log`` and the domain declares no log, or no event has a row
            from anywhere allowed (exit 2, one line).
        BrokerUnavailable: the log's range could not be read (exit 1).
    """
    labelled = {str(e["event_id"]) for e in events if str(e["event_id"]) in labels}
    topic = feature_log_topic(settings)
    report: dict[str, Any] = {"topic": topic}
    logged = None
    if topic is None:
        if require_log:
            raise ConfigError(
                "this domain declares no feature-log topic (domain.json topics.feature_log)"
            )
        report["read"] = "no feature-log topic declared"
    else:
        codec = codec_for(settings, by_record(settings.topics, "FeatureLog"))
        try:
            with err.status(f"reading the feature log {topic}..."):
                read = read_training_rows(
                    settings,
                    spec,
                    codec,
                    topic,
                    events,
                    labelled,
                    settings.retrain.replay_timeout_seconds,
                )
        except NotFound:
            if require_log:
                raise
            report["read"] = f"topic {topic} does not exist"
        else:
            logged = read.index
            report |= {"records": read.records, "rows": len(logged), "skipped": dict(read.skipped)}
            err.print(read.describe(), highlight=False)
    missing = [i for i in labelled if logged is None or i not in logged]
    report["not_logged"] = len(missing)
    store = None
    causes = not_logged_causes(settings.features.log_slack_seconds * 1000)
    if missing and features_now:
        store = feature_store(settings, spec)
        err.print(NOW_WARNING.format(n=len(missing)), style="yellow", highlight=False)
    elif missing and not snapshots:
        if len(missing) == len(labelled):
            where = f"the feature log {topic}" if topic else "no feature log (none declared)"
            raise ConfigError(
                f"none of the {len(labelled):,} {noun} has a row in {where}"
                + (f" ({causes})" if topic else "")
                + ": give --features SNAPSHOTS (entity rows as of each event's time) or "
                "--features-now (Redis as it is now, not what was served)"
            )
        left = set(missing)
        events = [e for e in events if str(e["event_id"]) not in left]
        report["left_out"] = len(missing)
        err.print(
            f"{len(missing):,} {noun} have no row in the feature log ({causes}) and "
            "are left out (--features SNAPSHOTS or --features-now would give them rows)",
            highlight=False,
        )
    return Rows(events, logged, store, report)
