"""The explorer's pure judgements, apart from the IO of the runner (unit-tested with fakes):
what became of each input against what it should have become, and whether a worker that
exited by itself said why in one of the CLI's declared lines."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence

from tests.faults.harness import Sent

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
