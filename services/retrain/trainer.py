"""Answer a retrain request: replay the recent labelled window, train, compare with the champion
on the same holdout, register a challenger with its evidence, and put it in shadow."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from services.codec.avro import AvroCodec
from services.core.settings import Settings
from services.features.spec import FeatureSpec
from services.features.store import FeatureStore
from services.kafka.replay import read_since
from services.scoring.operations import apply_change
from services.scoring.registry import MlflowRegistry
from services.scoring.rollout import plan_rollout
from services.training.pipeline import TrainingRefused, train_and_register

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Codecs:
    interaction: AvroCodec
    label: AvroCodec
    model_event: AvroCodec


def labelled_window(
    settings: Settings, codecs: Codecs, since_ms: int, max_events: int
) -> tuple[list[dict[str, Any]], dict[str, bool]]:
    """Interactions and labels since ``since_ms``, replayed from their topics."""
    # By event id, the last copy winning: producers' retries and redrives can repeat an event.
    by_id: dict[str, dict[str, Any]] = {}
    for m in read_since(settings, settings.topics.interactions, since_ms, max_events):
        decoded = codecs.interaction.decode_one(m.value())
        if isinstance(decoded, dict):
            by_id[str(decoded["event_id"])] = decoded
    events = list(by_id.values())
    labels = {}
    for m in read_since(settings, settings.topics.labels, since_ms, max_events * 2):
        decoded = codecs.label.decode_one(m.value())
        if isinstance(decoded, dict):
            labels[str(decoded["event_id"])] = bool(decoded["engaged"])
    return events, labels


def answer(
    settings: Settings,
    registry: MlflowRegistry,
    spec: FeatureSpec,
    store: FeatureStore,
    codecs: Codecs,
    request: dict[str, Any],
) -> dict[str, Any]:
    """Train a challenger for ``request`` and shadow it; returns what happened (also when
    nothing was trained, with the reason)."""
    started = time.monotonic()
    r = settings.retrain
    since = int(request.get("window_start") or (time.time() * 1000 - r.window_seconds * 1000))
    events, labels = labelled_window(settings, codecs, since, r.max_events)
    labelled = sum(1 for e in events if e["event_id"] in labels)
    outcome: dict[str, Any] = {
        "request_id": request["request_id"],
        "events": len(events),
        "labelled": labelled,
    }
    if labelled < r.min_labelled:
        return outcome | {
            "trained": False,
            "why": f"{labelled} labelled events in the window, need {r.min_labelled}",
        }
    champion_version = registry.alias_version("champion")
    champion = registry.load(version=champion_version) if champion_version else None
    try:
        result = train_and_register(
            registry,
            spec,
            store,
            events,
            labels,
            seed=int(time.time()) % 10_000,
            extra_params={
                "retrain_request": request["request_id"],
                "retrain_reason": request["reason"],
                "window_start": since,
                "drift_signals": len(request.get("drift_signal_ids") or []),
            },
            compare_to=champion,
            make_champion_if_none=False,
        )
    except TrainingRefused as exc:
        return outcome | {"trained": False, "why": "; ".join(exc.report.problems)}
    m = result.metrics
    champion_loss = m.get("champion_holdout_log_loss", float("nan"))
    why = (
        f"retrain {request['request_id'][:8]} ({request['reason']}): holdout log loss "
        f"{m['holdout_log_loss']:.4f} vs champion {champion_loss:.4f}"
    )
    now = int(time.time() * 1000)
    applied = apply_change(
        settings,
        registry,
        codecs.model_event,
        lambda s, _r: plan_rollout(s, result.version, "shadow", 0, why, "control-plane", now),
    )
    logger.info("challenger v%s in shadow: %s", result.version, why)
    return outcome | {
        "trained": True,
        "version": result.version,
        "metrics": m,
        "shadow_since_ms": now,
        "now_serving": applied.after.describe(),
        "seconds": round(time.monotonic() - started, 1),
    }
