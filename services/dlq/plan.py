"""What `dlq inspect` reports and what `dlq redrive` would do, as pure functions over records."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

REDRIVE_HEADER = "streamscore.redrive-count"


@dataclass(frozen=True, slots=True)
class Redrive:
    """One message to re-publish to its source topic."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, str | bytes | None]]


@dataclass(frozen=True, slots=True)
class RedrivePlan:
    to_send: list[Redrive] = field(default_factory=list)
    skipped_reason: int = 0  # filtered out by --reason
    refused_loop: int = 0  # already redriven max times: would loop forever

    def summary(self) -> dict[str, int]:
        return {
            "to_send": len(self.to_send),
            "skipped_other_reasons": self.skipped_reason,
            "refused_redrive_limit": self.refused_loop,
        }


def summarise(letters: Sequence[dict[str, Any]], reason: str | None = None) -> dict[str, Any]:
    """Counts by reason and by stage (optionally for one reason).

    >>> summarise([{"reason": "a", "stage": "decode"}, {"reason": "b", "stage": "validate"}])
    {'total': 2, 'by_reason': {'a': 1, 'b': 1}, 'by_stage': {'decode': 1, 'validate': 1}}
    """
    chosen = [d for d in letters if reason is None or d["reason"] == reason]
    return {
        "total": len(chosen),
        "by_reason": dict(sorted(Counter(d["reason"] for d in chosen).items())),
        "by_stage": dict(sorted(Counter(d["stage"] for d in chosen).items())),
    }


def plan_redrive(
    letters: Sequence[dict[str, Any]], reason: str | None, max_redrives: int
) -> RedrivePlan:
    """Re-publish originals to their source topic with the redrive count raised by one; refuse
    those already redriven ``max_redrives`` times (they would go round forever).

    >>> letter = {"reason": "r", "source_topic": "t", "original_key": b"k",
    ...           "original_value": b"v", "original_headers": [], "redrive_count": 0}
    >>> plan = plan_redrive([letter, letter | {"redrive_count": 3}], None, 3)
    >>> plan.summary()
    {'to_send': 1, 'skipped_other_reasons': 0, 'refused_redrive_limit': 1}
    >>> plan.to_send[0].headers
    [('streamscore.redrive-count', b'1')]
    """
    to_send: list[Redrive] = []
    skipped = refused = 0
    for d in letters:
        if reason is not None and d["reason"] != reason:
            skipped += 1
            continue
        count = int(d.get("redrive_count", 0))
        # A letter whose original was cut to fit the dead-letter topic cannot be sent back whole.
        if count >= max_redrives or "[original truncated" in str(d.get("detail", "")):
            refused += 1
            continue
        headers: list[tuple[str, str | bytes | None]] = [
            (h["key"], h["value"]) for h in d["original_headers"] if h["key"] != REDRIVE_HEADER
        ]
        headers.append((REDRIVE_HEADER, str(count + 1).encode()))
        to_send.append(Redrive(d["source_topic"], d["original_key"], d["original_value"], headers))
    return RedrivePlan(to_send, skipped, refused)
