"""The explorer's pure judgements, apart from the IO of the runner (unit-tested with fakes):
what became of each input against what it should have become, whether the group's commits
ever passed an input before its output was written, and whether a worker that exited by
itself said why in one of the CLI's declared lines, and which model version should have
scored an event under the registry's rollout state."""

from __future__ import annotations

import bisect
import hashlib
import re
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from services.scoring.rollout import RolloutState
from tests.faults.harness import Sent

Place = tuple[str, int, int]  # where an output was written: (topic, partition, offset)

# streams/cli.py's `_main`: the one-line forms a command ends with on stderr. A generic
# `error: <ExceptionClass>: ...` is the CLI's catch-all for an exception nobody decided on.
_DECIDED = (re.compile(r"^error: .+"), re.compile(r"^not found: .+"))
_GENERIC = re.compile(r"^error: ([A-Za-z_][A-Za-z0-9_]*(Error|Exception|Iteration|Failure)): ")


def misaccounted(
    sent: Sequence[Sent], outcomes: Mapping[int, str], reasons: Mapping[int, str]
) -> list[str]:
    """Findings of the strict accounting: every world event (it has an event id: it passes
    every rule; backpressure defers it, a hold pauses it, degrade flags it) must get a
    prediction and never a dead letter; every hostile input (no event id) a dead letter.
    Lost inputs are reported elsewhere (with their offsets).

    >>> sent = [Sent(0, 0, 5, "e0"), Sent(1, 0, 6, None), Sent(2, 1, 3, "e2")]
    >>> misaccounted(sent, {0: "predicted", 1: "dead", 2: "dead"}, {2: "validate:range"})
    ['1 valid inputs dead-lettered, by reason {validate:range: 1}: e.g. partition 1 offset 3']
    """
    valid_dead = [s for s in sent if s.event_id is not None and s.index in reasons]
    hostile_predicted = [
        s for s in sent if s.event_id is None and outcomes.get(s.index) == "predicted"
    ]
    found: list[str] = []
    if valid_dead:
        by_reason = Counter(reasons[s.index] for s in valid_dead)
        first = valid_dead[0]
        found.append(
            f"{len(valid_dead)} valid inputs dead-lettered, by reason "
            f"{{{', '.join(f'{r}: {n}' for r, n in by_reason.most_common())}}}: "
            f"e.g. partition {first.partition} offset {first.offset}"
        )
    if hostile_predicted:
        found.append(f"{len(hostile_predicted)} hostile inputs predicted")
    return found


def generic_error(stderr: str) -> str | None:
    """The last stderr line when it is the CLI's catch-all for an undecided exception.

    >>> generic_error("error: rollback refused: no earlier champion\\n")
    >>> generic_error("error: TypeError: bad\\n")
    'error: TypeError: bad'
    """
    lines = [line for line in stderr.splitlines() if line.strip()]
    return lines[-1][:300] if lines and _GENERIC.match(lines[-1]) else None


def undecided_exit(code: int | None, stderr: str) -> str | None:
    """Why an exit a worker made by itself is a finding, or None when it is decided: exit 1
    or 2 with a last stderr line in one of the CLI's declared forms, not its catch-all
    ``error: <ExceptionClass>: ...`` for an exception no code decided on.

    >>> undecided_exit(1, "...\\nerror: the group's offsets could not be read [stage=commit]\\n")
    >>> undecided_exit(1, "x ERROR y\\nerror: KeyError: 'a'\\n")
    "an undecided exception (KeyError): error: KeyError: 'a'"
    >>> undecided_exit(-9, "")
    'exit -9 with last line: '
    """
    lines = [line for line in stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    generic = _GENERIC.match(last)
    if generic:
        return f"an undecided exception ({generic.group(1)}): {last[:300]}"
    if code in (1, 2) and any(form.match(last) for form in _DECIDED):
        return None
    return f"exit {code} with last line: {last[:300]}"


_REBALANCE = re.compile(r"partitions (assigned|revoked|lost): (.*)$")


def owned_from_log(text: str) -> set[str]:
    """The partitions a worker owns by its own log (its rebalance lines, in order).

    >>> log = "x partitions assigned: t[0],t[1],t[2]\\ny partitions revoked: t[1]\\n"
    >>> sorted(owned_from_log(log))
    ['t[0]', 't[2]']
    >>> owned_from_log(log + "z partitions lost: t[0],t[2]\\nw partitions assigned: none\\n")
    set()
    """
    owned: set[str] = set()
    for line in text.splitlines():
        found = _REBALANCE.search(line.rstrip())
        if found is None:
            continue
        names = {n.strip() for n in found.group(2).split(",") if n.strip() not in ("", "none")}
        owned = owned | names if found.group(1) == "assigned" else owned - names
    return owned


def hit_nothing(kind: str, done: str, assigned: int) -> bool:
    """An operation that changed nothing a worker could see: no worker to act on, nothing to
    do, or no worker owning partitions when it happened.

    >>> hit_nothing("kill", "  3.0s kill(0.5) -> no worker", 1)
    True
    >>> hit_nothing("redis_pause", "  5.0s redis_pause(0)", 1)
    False
    >>> hit_nothing("redis_pause", "  5.0s redis_pause(0)", 0)
    True
    """
    markers = ("no worker", "nothing to do", "0 thawed", "not assigned")
    return assigned == 0 or any(m in done for m in markers)


@dataclass(frozen=True, slots=True)
class CommitSample:
    """The group's committed offsets on the input, read first, and right after them the ends
    of every output partition: ``stable`` by a read_committed consumer (the last stable
    offset) and ``high`` by a read_uncommitted one (the high watermark; without transactions
    the two are the same read)."""

    at: float  # seconds into the run
    committed: Mapping[int, int]  # input partition -> committed offset (negative: none yet)
    stable: Mapping[tuple[str, int], int]  # (output topic, partition) -> last stable offset
    high: Mapping[tuple[str, int], int]  # (output topic, partition) -> high watermark


def output_places(
    sent: Sequence[Sent],
    predictions: Iterable[tuple[str, Place]],
    letters: Iterable[tuple[tuple[int, int], Place]],
) -> dict[int, list[Place]]:
    """Where each input's outputs were written, by its index: predictions found by event id,
    dead letters by the input's (partition, offset), as ``account()`` finds them.

    >>> sent = [Sent(0, 1, 7, "e0"), Sent(1, 1, 8, None)]
    >>> output_places(sent, [("e0", ("p", 1, 3))], [((1, 8), ("d", 0, 0))])
    {0: [('p', 1, 3)], 1: [('d', 0, 0)]}
    """
    by_event: dict[str, list[Place]] = defaultdict(list)
    for event_id, place in predictions:
        by_event[event_id].append(place)
    by_source: dict[tuple[int, int], list[Place]] = defaultdict(list)
    for source, place in letters:
        by_source[source].append(place)
    out: dict[int, list[Place]] = {}
    for s in sent:
        places = list(by_event.get(s.event_id, [])) if s.event_id is not None else []
        if s.offset is not None:
            places += by_source.get((s.partition, s.offset), [])
        out[s.index] = places
    return out


def committed_early(
    sent: Sequence[Sent], outputs: Mapping[int, Sequence[Place]], samples: Sequence[CommitSample]
) -> tuple[list[str], int, int]:
    """Findings of the commit invariant, sampled during the run: every input below a committed
    offset must have an output below its partition's end read right after that commit (the
    last stable offset: a read_committed reader could see it). Returns the findings, one per
    input partition, how many inputs were judged (a sampled commit passed them: a check that
    judged none tested nothing), and how many were *held*: their output was written before the
    commit (below the high watermark) but not yet below the last stable offset, which an open
    transaction of any producer holds back (a frozen or killed worker's, until it is fenced
    or times out), so that is no finding by itself.

    Each input is judged at the first sample whose commit passed it: ends only grow, so if
    its output was there then, it is there in every later sample. Inputs whose offset is not
    known (their delivery report did not say) are not judged.

    >>> s = CommitSample(2.0, {0: 6}, {("p", 0): 4}, {("p", 0): 4})
    >>> committed_early([Sent(0, 0, 5, "e")], {0: [("p", 0, 3)]}, [s])
    ([], 1, 0)
    >>> committed_early([Sent(0, 0, 5, "e")], {0: [("p", 0, 4)]}, [s])[0]  # doctest: +ELLIPSIS
    ['partition 0: 1 inputs committed past before their output was written (offsets 5-5); ...']
    """
    ordered = sorted(samples, key=lambda x: x.at)
    # Per input partition: the samples at which its commit first went past a new height.
    reach: dict[int, tuple[list[int], list[CommitSample]]] = defaultdict(lambda: ([], []))
    for sample in ordered:
        for partition, offset in sample.committed.items():
            heights, at = reach[partition]
            if offset >= 0 and (not heights or offset > heights[-1]):
                heights.append(offset)
                at.append(sample)
    early: dict[int, list[tuple[Sent, CommitSample]]] = defaultdict(list)
    held = judged = 0
    for s in sent:
        if s.offset is None or s.partition not in reach:
            continue
        heights, at = reach[s.partition]
        i = bisect.bisect_right(heights, s.offset)  # the first commit > the input's offset
        if i == len(heights):
            continue  # no sampled commit passed it
        judged += 1
        sample = at[i]
        places = outputs.get(s.index, ())
        if any(o < sample.stable.get((t, q), 0) for t, q, o in places):
            continue
        if any(o < sample.high.get((t, q), 0) for t, q, o in places):
            held += 1
            continue
        early[s.partition].append((s, sample))
    found: list[str] = []
    for partition, bad in sorted(early.items()):
        bad.sort(key=lambda x: x[0].offset or 0)
        s, sample = min(bad, key=lambda x: x[1].at)
        places = outputs.get(s.index, ())
        where = ", ".join(
            f"{t}[{q}]@{o} (its end then {sample.stable.get((t, q))})" for t, q, o in places
        )
        found.append(
            f"partition {partition}: {len(bad)} inputs committed past before their output was "
            f"written (offsets {bad[0][0].offset}-{bad[-1][0].offset}); "
            f"first at {sample.at:.1f} s: "
            f"offset {s.offset} below the commit {sample.committed[partition]}, "
            f"its outputs: {where or 'none'}"
        )
    return found, judged, held


def duplicated(predictions: Iterable[tuple[str, str]]) -> list[str]:
    """Findings under exactly-once: an event with more than one prediction to a read_committed
    reader, whatever the versions (one input, one output: copies by two versions are copies
    too). ``predictions`` are (event id, model version) pairs.

    >>> duplicated([("e1", "1"), ("e2", "1")])
    []
    >>> duplicated([("e1", "1"), ("e1", "1"), ("e2", "1"), ("e2", "2")])
    ['2 events predicted more than once (2 extra copies): e1 by versions 1,1; e2 by versions 1,2']
    """
    versions: dict[str, list[str]] = defaultdict(list)
    for event_id, version in predictions:
        versions[event_id].append(version)
    copies = {e: v for e, v in versions.items() if len(v) > 1}
    if not copies:
        return []
    extra = sum(len(v) - 1 for v in copies.values())
    shown = "; ".join(
        f"{e} by versions {','.join(sorted(v))}" for e, v in sorted(copies.items())[:3]
    )
    return [f"{len(copies)} events predicted more than once ({extra} extra copies): {shown}"]


SPLIT_BOUND = 0.15  # how far the canary's share of a probe's entities may be from its percent
SPLIT_MIN_ENTITIES = 40  # fewer entities than this say nothing about the split


def routed_to_canary(key: str, percent: float) -> bool:
    """Whether the canary serves entity ``key`` at ``percent``, by the documented rule written
    again here, not imported (a change of the production routing must show): the first 8
    bytes of the key's sha256, big-endian, modulo 10,000, below the percent in hundredths.

    >>> routed_to_canary("u-000001", 0.0), routed_to_canary("u-000001", 100.0)
    (False, True)
    """
    bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 10_000
    return bucket < round(percent * 100)


def misrouted(
    probe: Mapping[str, str],
    served: Mapping[str, Sequence[str]],
    state: RolloutState,
    versions: Collection[str] | None = None,
) -> list[str]:
    """Findings of the model check after settling: the registry's champion is one of
    ``versions`` (when given), and every prediction of a probe event came from the version
    the registry's ``state`` says serves its entity: the challenger for the entities a
    canary's routing picks, the champion for every other one (and for all of them when no
    canary is on). ``probe``: event id -> the entity key canary routing reads; ``served``:
    event id -> the versions of its predictions. A canary's share of the probe's entities
    must also be within ``SPLIT_BOUND`` of its percent.

    >>> state = RolloutState("2", "1", "canary", 30.0)
    >>> probe = {"e0": "u-000001"}
    >>> want = "1" if routed_to_canary("u-000001", 30.0) else "2"
    >>> misrouted(probe, {"e0": [want]}, state, {"1", "2"})
    []
    >>> misrouted(probe, {"e0": [want]}, RolloutState("3"), {"1", "2"})[0]
    "the registry's champion is v3, not one of the explorer's versions ['1', '2']"
    """
    found: list[str] = []
    if state.champion is None:
        return ["the registry names no champion"]
    if versions is not None and state.champion not in versions:
        found.append(
            f"the registry's champion is v{state.champion}, not one of the explorer's "
            f"versions {sorted(versions)}"
        )
    canary = state.challenger if state.mode == "canary" else None

    def expected(key: str) -> str:
        if canary is not None and routed_to_canary(key, state.canary_percent):
            return canary
        return str(state.champion)

    unscored = [e for e in probe if not served.get(e)]
    wrong = [(e, v) for e, k in probe.items() for v in served.get(e, ()) if v != expected(k)]
    if unscored:
        found.append(f"{len(unscored)} of {len(probe)} probe events not predicted: {unscored[:3]}")
    if wrong:
        e, got = wrong[0]
        found.append(
            f"{len(wrong)} predictions of {len(probe)} probe events by the wrong version under "
            f"{state.describe()}: e.g. {e} (entity {probe[e]}) by v{got}, "
            f"expected v{expected(probe[e])}"
        )
    if canary is not None:
        entities = {k for e, k in probe.items() if served.get(e)}
        picked = {k for e, k in probe.items() if canary in served.get(e, ())}
        share = len(picked) / len(entities) if entities else 0.0
        if len(entities) >= SPLIT_MIN_ENTITIES and abs(share - state.canary_percent / 100) > (
            SPLIT_BOUND
        ):
            found.append(
                f"the canary served {len(picked)} of {len(entities)} probe entities "
                f"({share:.0%}), not within {SPLIT_BOUND:.0%} of {state.canary_percent:g}%"
            )
    return found
