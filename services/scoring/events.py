"""ModelEvent records (``ml.model-events.v1``): the announcement of an alias or rollout change.

Events are notifications, not state: the registry stays the source of truth, and a worker that
hears one re-reads the rollout state from it (so a lost or duplicated event is harmless).
"""

from __future__ import annotations

import hashlib
from typing import Any

from services.scoring.rollout import AliasChange


def model_event(model_name: str, change: AliasChange, sha256: str | None) -> dict[str, Any]:
    """The ModelEvent record for ``change``; its id is deterministic, so a retried announce
    is recognisably the same event.

    >>> c = AliasChange("promoted", "champion", "1", "2", "canary ok", "alice", 1700000000000)
    >>> e = model_event("engagement", c, None)
    >>> e["event_type"], e["from_version"], e["to_version"], len(e["event_id"])
    ('promoted', '1', '2', 32)
    """
    reason = change.reason
    if change.event_type == "canary_started":
        reason = f"{reason} (canary {change.canary_percent:g}%)".strip()
    return {
        "event_id": hashlib.sha256(f"{model_name}\x1f{change.to_json()}".encode()).hexdigest()[:32],
        "model_name": model_name,
        "event_type": change.event_type,
        "alias": change.alias,
        "from_version": change.from_version,
        "to_version": change.to_version,
        "artifact_sha256": sha256,
        "reason": reason,
        "actor": change.actor,
        "at": change.at_ms,
    }
