"""The explorer's judgements on fakes (no broker): the strict accounting and decided exits."""

from __future__ import annotations

from tests.faults.explore.judge import misaccounted, undecided_exit
from tests.faults.harness import Sent


def test_a_valid_input_dead_lettered_is_a_finding_with_its_reason() -> None:
    sent = [Sent(0, 0, 5, "e0"), Sent(1, 0, 6, "e1"), Sent(2, 1, 3, None)]
    outcomes = {0: "predicted", 1: "dead", 2: "dead"}
    found = misaccounted(sent, outcomes, {1: "rate_limited", 2: "decode:bad magic"})
    assert found == [
        "1 valid inputs dead-lettered, by reason {rate_limited: 1}: e.g. partition 0 offset 6"
    ]


def test_a_valid_input_predicted_and_also_dead_lettered_is_a_finding() -> None:
    sent = [Sent(0, 0, 5, "e0")]
    assert misaccounted(sent, {0: "predicted"}, {0: "enrich:missing"}) != []


def test_every_input_where_it_belongs_is_no_finding() -> None:
    sent = [Sent(0, 0, 5, "e0"), Sent(1, 0, 6, None)]
    assert misaccounted(sent, {0: "predicted", 1: "dead"}, {1: "decode:bad magic"}) == []


def test_a_hostile_input_predicted_is_a_finding() -> None:
    assert misaccounted([Sent(0, 0, 5, None)], {0: "predicted"}, {}) == [
        "1 hostile inputs predicted"
    ]


def test_an_exit_is_decided_only_by_the_clis_declared_last_line() -> None:
    log = "2026 ERROR streams.worker: commit failed\n"
    assert undecided_exit(1, log + "error: publish failed [stage=produce topic=p]\n") is None
    assert undecided_exit(3, "not found: version 9\n") is not None  # not a worker's exit code
    assert undecided_exit(1, "not found: version 9\n") is None
    # an ERROR line somewhere is not a decision; the catch-all form is not one either
    assert undecided_exit(1, log) is not None
    generic = undecided_exit(1, log + "error: KafkaException: KafkaError{code=NOT_COORDINATOR}\n")
    assert generic is not None and "KafkaException" in generic
    assert undecided_exit(1, "error: AttributeError: 'NoneType' has no 'x'\n") is not None
    assert undecided_exit(0, "") is not None  # exited by itself with nothing said
