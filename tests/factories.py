"""Record factories shared by tests: one valid interaction, changed where a test needs it."""

from __future__ import annotations

from typing import Any

EVENT_TIME = 1_763_798_400_000


def interaction(**changes: Any) -> dict[str, Any]:
    """A valid Interaction record (as decoded: timestamps are epoch-ms ints)."""
    return {
        "event_id": "e1",
        "event_time": EVENT_TIME,
        "user_id": "u1",
        "item_id": "i1",
        "surface": "HOME_FEED",
        "device": "IOS",
        "country": "DE",
        "position": 3,
        "session_depth": 1,
        "item_age_hours": 2.5,
        "user_tenure_days": 10,
        "network_rtt_ms": None,
        "is_following_author": True,
        "is_video": False,
        "is_sponsored": False,
    } | changes
