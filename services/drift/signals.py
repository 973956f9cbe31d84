"""DriftSignal records from detector evidence (pure)."""

from __future__ import annotations

import hashlib
from typing import Any

from services.drift.monitor import Evidence


def drift_signal(
    evidence: Evidence, topic: str, model_name: str, model_version: str, now_ms: int
) -> dict[str, Any]:
    """The DriftSignal Avro record; its id is deterministic for the same firing.

    >>> e = Evidence("score", "ADWIN", 2, 10, 99, 1000, 2000, {"mean": 0.2}, {"mean": 0.3}, 90)
    >>> r = drift_signal(e, "feed.interactions.v1", "engagement", "3", 5000)
    >>> r["signal"], r["partition"], r["offset_start"], r["stats_after"]["mean"]
    ('score', 2, 10, 0.3)
    """
    key = f"{topic}\x1f{evidence.partition}\x1f{evidence.signal}\x1f{evidence.offset_end}"
    return {
        "signal_id": hashlib.sha256(key.encode()).hexdigest()[:32],
        "detector": evidence.detector,
        "signal": evidence.signal,
        "model_name": model_name,
        "model_version": model_version,
        "topic": topic,
        "partition": evidence.partition,
        "offset_start": evidence.offset_start,
        "offset_end": evidence.offset_end,
        "time_start": evidence.time_start_ms,
        "time_end": evidence.time_end_ms,
        "stats_before": {k: float(v) for k, v in evidence.stats_before.items()},
        "stats_after": {k: float(v) for k, v in evidence.stats_after.items()},
        "detected_at": now_ms,
    }
