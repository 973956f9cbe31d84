"""Semantic validation: each rule has its reason code; nothing a decoder can produce crashes it."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core.outcomes import Reason, Stage
from services.validation.rules import RecordRules, validate_many, validate_one
from tests.factories import EVENT_TIME, interaction

RULES = RecordRules.load("Interaction")
NOW = EVENT_TIME


def event(**changes: Any) -> dict[str, Any]:
    return interaction(**changes)


def test_a_valid_event_passes() -> None:
    assert validate_one(event(), RULES, NOW) is None
    assert validate_one(event(network_rtt_ms=12.5), RULES, NOW) is None


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"event_id": ""}, Reason.MISSING_VALUE),
        ({"user_id": "x" * 129}, Reason.TOO_LONG),
        ({"country": "de"}, Reason.BAD_FORMAT),
        ({"country": "🇩🇪"}, Reason.BAD_FORMAT),
        ({"position": -1}, Reason.OUT_OF_RANGE),
        ({"session_depth": 10**9}, Reason.OUT_OF_RANGE),
        ({"item_age_hours": math.nan}, Reason.NOT_FINITE),
        ({"network_rtt_ms": -math.inf}, Reason.NOT_FINITE),
        ({"event_time": NOW + 301_000}, Reason.TIME_OUT_OF_WINDOW),
        ({"event_time": 0}, Reason.TIME_OUT_OF_WINDOW),
    ],
)
def test_each_rule_has_its_reason(changes: dict[str, Any], reason: Reason) -> None:
    refused = validate_one(event(**changes), RULES, NOW)
    assert refused is not None
    assert (refused.stage, refused.reason) == (Stage.VALIDATE, reason)
    assert next(iter(changes)) in refused.detail


def test_details_never_echo_long_payloads() -> None:
    refused = validate_one(event(user_id="secret" * 100), RULES, NOW)
    assert refused is not None and "secret" not in refused.detail


@given(
    st.fixed_dictionaries(
        {
            "event_id": st.text(max_size=300),
            "user_id": st.text(max_size=300),
            "country": st.text(max_size=5),
            "position": st.integers(-(2**31), 2**31 - 1),
            "item_age_hours": st.floats(),
            "network_rtt_ms": st.none() | st.floats(),
            "event_time": st.integers(-(2**63), 2**63 - 1),
        }
    )
)
def test_never_raises(record: dict[str, Any]) -> None:
    [result] = validate_many([event(**record)], RULES, NOW)
    assert result is None or result.stage is Stage.VALIDATE


_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**7), 10**7),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.binary(max_size=4),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["event_id", "country", "position", "network_rtt_ms", "event_time"]),
            _VALUE,
        ),
        max_size=25,
    ),
    st.integers(0, 10**13),
)
def test_validate_many_is_validate_one_over_the_batch(
    records: list[dict[str, object]], now_ms: int
) -> None:
    """The column-wise check gives exactly what the per-record reference gives, for any mix of
    types, missing fields, NaN/inf, bounds and patterns."""
    rules = RecordRules.load("Interaction")
    assert validate_many(records, rules, now_ms) == [
        validate_one(r, rules, now_ms) for r in records
    ]
