"""The explorer's judgements on fakes (no broker): the strict accounting, decided exits and the
commit invariant against hand-made samples, duplicates under exactly-once, and the model
versions that scored a probe against the registry's rollout state."""

from __future__ import annotations

from services.scoring.rollout import RolloutState, in_canary
from tests.faults.explore.judge import (
    CommitSample,
    committed_early,
    duplicated,
    misaccounted,
    misrouted,
    output_places,
    routed_to_canary,
    undecided_exit,
)
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


def _sample(at: float, committed: int, stable: int, high: int | None = None) -> CommitSample:
    """One sample: input partition 0 committed at ``committed``; predictions[0]'s ends."""
    return CommitSample(
        at, {0: committed}, {("p", 0): stable}, {("p", 0): stable if high is None else high}
    )


def test_commits_that_follow_their_outputs_are_no_finding() -> None:
    sent = [Sent(0, 0, 10, "e0"), Sent(1, 0, 11, "e1"), Sent(2, 0, 12, "e2")]
    outputs = output_places(sent, [("e0", ("p", 0, 100)), ("e1", ("p", 0, 101))], [])
    # At 1 s the commit passed 10 and 11, whose predictions were below the end read after it;
    # 12 was passed by no sample (its output came later: no commit claimed it).
    samples = [_sample(0.0, 10, 100), _sample(1.0, 12, 102)]
    assert committed_early(sent, outputs, samples) == ([], 2, 0)  # e0 and e1 judged


def test_an_output_written_after_the_commit_that_passed_its_input_is_a_finding() -> None:
    sent = [Sent(0, 0, 10, "e0"), Sent(1, 0, 11, "e1")]
    outputs = output_places(sent, [("e0", ("p", 0, 100)), ("e1", ("p", 0, 101))], [])
    # At 1 s the commit (12) passed both inputs, but the end right after it was 101: e1's
    # prediction at 101 was not written yet. A later sample seeing it does not excuse that.
    samples = [_sample(1.0, 12, 101), _sample(2.0, 12, 105)]
    found, judged, held = committed_early(sent, outputs, samples)
    assert (judged, held) == (2, 0)
    assert len(found) == 1
    assert "partition 0: 1 inputs committed past" in found[0]
    assert "first at 1.0 s: offset 11 below the commit 12" in found[0]
    assert "p[0]@101 (its end then 101)" in found[0]


def test_an_input_committed_past_with_no_output_at_all_is_a_finding() -> None:
    sent = [Sent(0, 2, 7, None)]  # a hostile input: only a dead letter could account for it
    sample = CommitSample(3.0, {2: 8}, {("d", 0): 5}, {("d", 0): 5})
    found, _, _ = committed_early(sent, output_places(sent, [], []), [sample])
    assert found and "offset 7 below the commit 8, its outputs: none" in found[0]


def test_a_dead_letter_found_by_its_source_accounts_for_a_hostile_input() -> None:
    sent = [Sent(0, 2, 7, None)]
    outputs = output_places(sent, [], [((2, 7), ("d", 1, 4))])
    sample = CommitSample(3.0, {2: 8}, {("d", 1): 5}, {("d", 1): 5})
    assert committed_early(sent, outputs, [sample]) == ([], 1, 0)


def test_an_output_written_but_behind_an_open_transaction_is_held_not_a_finding() -> None:
    # Exactly-once: the prediction at 101 was written (high watermark 110) and its transaction
    # committed with the offsets, but a frozen worker's open transaction keeps the last stable
    # offset at 95; read_committed readers wait, the commit invariant holds.
    sent = [Sent(0, 0, 10, "e0")]
    outputs = output_places(sent, [("e0", ("p", 0, 101))], [])
    assert committed_early(sent, outputs, [_sample(1.0, 11, 95, high=110)]) == ([], 1, 1)
    # Not even below the high watermark: written after the commit, a finding.
    found, _, held = committed_early(sent, outputs, [_sample(1.0, 11, 95, high=101)])
    assert held == 0 and len(found) == 1


def test_an_input_whose_offset_is_unknown_or_never_committed_past_is_not_judged() -> None:
    sent = [Sent(0, 0, None, "e0"), Sent(1, 0, 11, "e1")]
    samples = [_sample(1.0, 11, 0), CommitSample(2.0, {0: -1001}, {("p", 0): 0}, {("p", 0): 0})]
    assert committed_early(sent, output_places(sent, [], []), samples) == ([], 0, 0)  # none judged


def test_under_exactly_once_any_second_prediction_of_an_event_is_a_finding() -> None:
    assert duplicated([("e0", "1"), ("e1", "2")]) == []
    # the same version twice (a batch scored again and both copies committed) ...
    found = duplicated([("e0", "1"), ("e0", "1"), ("e1", "1")])
    assert found == ["1 events predicted more than once (1 extra copies): e0 by versions 1,1"]
    # ... and two versions (scored again after a promotion) alike
    assert duplicated([("e0", "1"), ("e0", "2")]) != []


def _served_as_routed(probe: dict[str, str], state: RolloutState) -> dict[str, list[str]]:
    """Each probe event scored as the documented routing says (the checker's own function)."""

    def version(key: str) -> str:
        canary = state.challenger if state.mode == "canary" else None
        if canary is not None and routed_to_canary(key, state.canary_percent):
            return canary
        return str(state.champion)

    return {e: [version(k)] for e, k in probe.items()}


PROBE = {f"e{i}": f"u-{i:06d}" for i in range(200)}


def test_the_checkers_routing_is_the_one_the_workers_use() -> None:
    keys = list(PROBE.values())
    for percent in (0.0, 5.0, 30.0, 99.99, 100.0):
        assert [routed_to_canary(k, percent) for k in keys] == in_canary(keys, percent)


def test_every_probe_event_scored_as_the_registry_routes_it_is_no_finding() -> None:
    for state in (RolloutState("2", "1", "canary", 30.0), RolloutState("1")):
        assert misrouted(PROBE, _served_as_routed(PROBE, state), state, {"1", "2"}) == []


def test_a_worker_that_missed_the_canary_is_a_finding() -> None:
    state = RolloutState("1", "2", "canary", 30.0)
    stale = {e: ["1"] for e in PROBE}  # the champion scored the canary's entities too
    found = misrouted(PROBE, stale, state, {"1", "2"})
    assert any("by the wrong version under champion v1, canary v2 at 30%" in f for f in found)
    assert any("the canary served 0 of 200 probe entities" in f for f in found)


def test_the_challenger_scoring_without_a_canary_is_a_finding() -> None:
    state = RolloutState("2")  # promoted: v2 serves everyone
    served = _served_as_routed(PROBE, state) | {"e7": ["2", "1"]}
    found = misrouted(PROBE, served, state, {"1", "2"})
    assert found == [
        "1 predictions of 200 probe events by the wrong version under champion v2: "
        "e.g. e7 (entity u-000007) by v1, expected v2"
    ]


def test_a_champion_outside_the_explorers_versions_or_an_unscored_probe_is_a_finding() -> None:
    state = RolloutState("3")
    served = _served_as_routed(PROBE, state)
    assert misrouted(PROBE, served, state, {"1", "2"}) == [
        "the registry's champion is v3, not one of the explorer's versions ['1', '2']"
    ]
    assert misrouted(PROBE, served, state) == []  # no versions given: any champion
    del served["e0"]
    assert misrouted(PROBE, served, state) == ["1 of 200 probe events not predicted: ['e0']"]
    assert misrouted(PROBE, served, RolloutState(None)) == ["the registry names no champion"]


def test_a_canary_share_far_from_its_percent_is_a_finding() -> None:
    # Every probe entity is one the routing picks: each prediction is as routed, but 100% of
    # the entities went to a 30% canary.
    state = RolloutState("1", "2", "canary", 30.0)
    picked = [f"u-{i:06d}" for i in range(2000) if routed_to_canary(f"u-{i:06d}", 30.0)][:50]
    probe = {f"e{i}": k for i, k in enumerate(picked)}
    found = misrouted(probe, _served_as_routed(probe, state), state, {"1", "2"})
    assert found == ["the canary served 50 of 50 probe entities (100%), not within 15% of 30%"]
