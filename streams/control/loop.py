"""The control plane's work, one function per job, over ``ControlState`` (faust only wires these
to topics and a timer in ``streams.control.app``).

Threads: ``join_labels`` runs on an executor thread for the label agent, ``tick`` on one for
the timer. They share the quality book (guarded by its lock) and the cached rollout state (one
attribute, written by ``tick`` only). The drift aggregator is touched on the event loop only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from services.core import metrics
from services.domain.config import domain_of
from services.drift.signals import drift_signal
from services.kafka.replay import read_since
from services.labels.join import join, row_losses
from services.retrain.policy import LOSS_NAMES, change_index, quality_trigger
from services.retrain.trainer import ACTOR
from services.scoring.operations import apply_change
from services.scoring.rollout import RolloutState, plan_promote
from streams.control.state import ControlState

logger = logging.getLogger(__name__)
ALL_PARTITIONS = -1  # the error signal's partition: every partition of the labels topic
QUALITY_GAUGES = (metrics.ONLINE_LOG_LOSS, metrics.ONLINE_AUC, metrics.ONLINE_CALIBRATION)


# -- labels ------------------------------------------------------------------------------------
def decode_labels(
    state: ControlState, raw: Sequence[tuple[int, int, bytes | None]]
) -> list[tuple[int, int, dict[str, Any]]]:
    """(partition, offset, value bytes) → (partition, offset, label) for those that decode."""
    codec = state.codecs[state.settings.topics.label_record]
    rows = []
    for partition, offset, value in raw:
        label = codec.decode_one(value)
        if isinstance(label, dict):
            rows.append((partition, offset, label))
    return rows


def decode_and_join(
    state: ControlState, raw: Sequence[tuple[int, int, bytes | None]]
) -> list[dict[str, Any]]:
    """Labels as the topic holds them: decoded, then joined (``join_labels``)."""
    return join_labels(state, decode_labels(state, raw))


def join_labels(
    state: ControlState, rows: Sequence[tuple[int, int, Mapping[str, Any]]], detect: bool = True
) -> list[dict[str, Any]]:
    """Join decoded labels (partition, offset, record) to the stored predictions, add them to
    the quality book, and feed the champion's per-event error to the drift detector; returns
    the DriftSignal records to publish.

    The champion is the registry's champion alias (cached per tick), so after a rollback the
    detector watches the version that serves; a different champion is a new baseline, so the
    detector starts over.

    Raises:
        FeatureStoreUnavailable: the prediction store did not answer (the caller retries).
    """
    domain = domain_of(state.settings)
    label = domain.label
    ids = [r[2][label.join_key] for r in rows]
    joined, unmatched = join(
        rows,
        state.predictions.get_many("served", ids),
        state.predictions.get_many("shadow", ids),
        label.target,
        label.join_key,
        domain.task,
    )
    metrics.LABELS_JOINED.labels(outcome="matched").inc(len(joined))
    metrics.LABELS_JOINED.labels(outcome="unmatched").inc(unmatched)
    for j in joined:
        metrics.LABEL_LAG.observe(max(0.0, j.label_lag_ms / 1000))
    state.book.add(joined)
    champion = state.champion()
    if not detect or champion is None:
        return []
    if champion != state.error_champion:
        state.error_monitor.reset("error")
        state.error_champion, state.error_seen = champion, 0
    mine = [
        j for j in joined if j.served.variant == "champion" and j.served.model_version == champion
    ]
    if not mine:
        return []
    # One detector over all label partitions: label partitions follow the event id's hash, so
    # splitting them only divides the evidence (six partitions see a change six times slower).
    # The window is identified by event time (replay with offsets_for_times), not by offsets.
    mine.sort(key=lambda j: j.event_time)
    state.error_seen += len(mine)
    positions = list(range(state.error_seen - len(mine), state.error_seen))
    evidence = state.error_monitor.observe(
        ALL_PARTITIONS, "error", [j.error for j in mine], positions, [j.event_time for j in mine]
    )
    if evidence is None:
        return []
    metrics.DRIFT_SIGNALS.labels(detector=evidence.detector, signal="error").inc()
    logger.warning(
        "concept drift: %s %.4f -> %.4f (event times %d-%d)",
        LOSS_NAMES[domain.task.loss],
        evidence.stats_before["mean"],
        evidence.stats_after["mean"],
        evidence.time_start_ms,
        evidence.time_end_ms,
    )
    now = int(time.time() * 1000)
    record = drift_signal(
        evidence, state.settings.topics.labels, state.registry.name, champion, now
    )
    return [record | {"offset_start": -1, "offset_end": -1}]


def publish_quality(state: ControlState) -> None:
    """The book's quality gauges (once a tick: AUC over the window is not per-batch work)."""
    for version, variant in state.book.keys():
        q = state.book.quality(version, variant)
        for gauge, key in zip(QUALITY_GAUGES, ("log_loss", "auc", "calibration"), strict=True):
            if key in q:
                gauge.labels(model_version=version, variant=variant).set(q[key])


def rebuild_book(state: ControlState, group: str) -> int:
    """After a restart: the labels the control plane's group already handled (from
    ``retrain.book_seconds`` ago up to its committed offsets), joined again, into the book.
    The detector is not fed: it learns its baseline from live labels. Returns rows joined.

    Raises:
        BrokerUnavailable, FeatureStoreUnavailable: the caller logs and starts empty.
    """

    seconds = state.settings.retrain.book_seconds
    if seconds <= 0:
        return 0
    since = int(time.time() * 1000 - seconds * 1000)
    messages = read_since(
        state.settings, state.settings.topics.labels, since, state.book.window, until_group=group
    )
    rows = decode_labels(
        state, [(m.partition() or 0, m.offset() or 0, m.value()) for m in messages]
    )
    for start in range(0, len(rows), 5000):
        join_labels(state, rows[start : start + 5000], detect=False)
    publish_quality(state)
    return len(rows)


# -- the timer -----------------------------------------------------------------------------------
def tick(state: ControlState) -> list[dict[str, Any]]:
    """Once per tick: read the rollout state (one registry read, cached for the label join),
    prune what no longer serves, decide a shadowed challenger, and check the champion's online
    quality against its own holdout; returns retrain requests the quality check wants (the
    caller applies the cooldown).

    Raises:
        RegistryUnavailable: the registry did not answer; the cached state is kept.
    """
    rollout = state.registry.rollout_state()
    state.rollout = rollout
    metrics.REGISTRY_UP.set(1)
    prune(state, rollout)
    publish_quality(state)
    consider_promotion(state, rollout)
    return check_quality(state, rollout)


def prune(state: ControlState, rollout: RolloutState) -> None:
    serving = {v for v in (rollout.champion, rollout.active_challenger()) if v is not None}
    for version, variant in state.book.prune(serving):
        for gauge in QUALITY_GAUGES:
            try:
                gauge.remove(version, variant)
            except KeyError:
                pass
    for version in [v for v in state.holdout if v not in serving]:
        del state.holdout[version]
    state.decided &= serving
    metrics.CONTROL_PLANE_BOOK_ROWS.set(state.book.rows())


def consider_promotion(state: ControlState, rollout: RolloutState) -> None:
    """A challenger the control plane put in shadow: promote it when the policy says so, on
    the events both models scored."""
    s = state.settings
    challenger = rollout.challenger
    if not s.retrain.auto_promote or rollout.mode != "shadow" or challenger is None:
        return
    if challenger in state.decided or rollout.champion is None:
        return
    shadowed = [
        h
        for h in state.registry.history()
        if h.event_type == "shadow_started" and h.to_version == challenger
    ]
    if not shadowed or shadowed[-1].actor != ACTOR:
        return  # a person started this shadow: a person decides
    started = shadowed[-1].at_ms
    now = int(time.time() * 1000)
    paired = state.book.paired_quality(rollout.champion, challenger, since_ms=started)
    decision, why = state.promotion.decide(started, now, paired)
    if decision == "wait":
        return
    if decision == "promote":
        apply_change(
            s,
            state.registry,
            state.codecs["ModelEvent"],
            lambda st, _r: plan_promote(st, challenger, f"auto: {why}", ACTOR, now),
        )
        logger.warning("promoted v%s: %s", challenger, why)
    else:
        state.registry.tag_version(challenger, "streamscore.decision", f"kept as challenger: {why}")
        logger.warning("v%s stays challenger: %s", challenger, why)
    state.decided.add(challenger)  # only once it is written: a failed write is tried again
    metrics.PROMOTION_DECISIONS.labels(decision=decision).inc()


def check_quality(state: ControlState, rollout: RolloutState) -> list[dict[str, Any]]:
    """The absolute trigger: the champion's newest labelled events against its own holdout."""
    r = state.settings.retrain
    champion = rollout.champion
    if champion is None:
        return []
    scores, ys, times = state.book.series(champion, "champion", last=r.quality_min_events)
    if len(ys) < r.quality_min_events:
        return []
    task = state.book.task
    holdout = holdout_log_loss(state, champion, task.loss)
    errors = row_losses(task, scores, ys)
    online = {"count": float(len(ys)), task.loss: float(np.nanmean(errors))}
    why = quality_trigger(online, holdout, r.quality_min_events, r.quality_margin, task.loss)
    if why is None:
        return []
    start = int(times[change_index(errors)])
    return [{"reason": why, "window_start": start, "base_version": champion}]


def holdout_log_loss(state: ControlState, version: str, loss: str = "log_loss") -> float | None:
    """The version's holdout ``loss`` (log loss; MAE for regression). Cached once known;
    unknown (no such metric, or MLflow did not answer) is asked again at the next tick."""
    if state.holdout.get(version) is None:
        info = next((v for v in state.registry.versions() if v.version == version), None)
        found = state.registry.run_metrics(info.run_id if info else None)
        state.holdout[version] = found.get(f"holdout_{loss}")
    return state.holdout[version]
