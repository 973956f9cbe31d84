"""The scoring core: the stages over one micro-batch, pure (no clock, no IO of its own).

``process_batch`` turns messages into predictions and dead letters; every input ends in exactly
one of the two, or (backpressure only) is deferred to be read again:
``n_predictions + len(dead_letters) + len(deferred) == len(messages)``. The worker, the HTTP/file
scorer and replay all call it, with the same ``Stages``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from services.codec.columns import column
from services.core.outcomes import Reason, Rejected, Stage
from services.core.records import (
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    MAX_KEY_BYTES,
    DeadLetterOut,
    Inbound,
)
from services.features.assemble import assemble, lookup_requests
from services.features.store import Lookup
from services.ratelimit.bucket import (
    Limiter,
    charged_only,
    producer_of,
    split_by_quota,
    take_for,
)
from services.scoring.results import BatchResult, PredictionBlock
from services.scoring.serving import score_rows
from services.scoring.stages import Stages
from services.validation.rules import validate_many

T = TypeVar("T")


class Start(Protocol):
    """Starts an IO call; returns a way to wait for its answer (re-raising its error)."""

    def __call__(self, call: Callable[[], T]) -> Callable[[], T]: ...


def run_now(call: Callable[[], T]) -> Callable[[], T]:
    """``start`` that calls at once (tests, replay): the answer is ready when asked for.

    >>> run_now(lambda: 42)()
    42
    """
    answer = call()
    return lambda: answer


def defer_from_first_denial(messages: Sequence[Inbound], admitted: Sequence[bool]) -> list[bool]:
    """Backpressure keeps order: in each partition, everything from the first denied message on
    waits (is consumed again later), even messages whose producer still had tokens.

    >>> ms = [Inbound("t", p, o, None, b"") for p, o in ((0, 1), (1, 1), (0, 2), (0, 3))]
    >>> defer_from_first_denial(ms, [True, True, False, True])
    [False, False, True, True]
    """
    blocked: set[tuple[str, int]] = set()
    out = []
    for m, ok in zip(messages, admitted, strict=True):
        tp = (m.topic, m.partition)
        if not ok:
            blocked.add(tp)
        out.append(tp in blocked)
    return out


def check_envelope(message: Inbound) -> Rejected | None:
    """Key and header limits, checked before the value is decoded.

    >>> check_envelope(Inbound("t", 0, 0, b"k" * 2000, b"")).reason
    <Reason.KEY_TOO_LARGE: 'key_too_large'>
    >>> check_envelope(Inbound("t", 0, 0, b"k", b"", (("h", b"v"),))) is None
    True
    """
    if message.key is not None and len(message.key) > MAX_KEY_BYTES:
        return Rejected(
            Stage.WIRE,
            Reason.KEY_TOO_LARGE,
            f"key is {len(message.key)} bytes, max {MAX_KEY_BYTES}",
        )
    if len(message.headers) > MAX_HEADERS:
        return Rejected(
            Stage.WIRE,
            Reason.HEADER_TOO_LARGE,
            f"{len(message.headers)} headers, max {MAX_HEADERS}",
        )
    for name, value in message.headers:
        size = len(name.encode()) + (len(value) if value is not None else 0)
        if size > MAX_HEADER_BYTES:
            return Rejected(
                Stage.WIRE,
                Reason.HEADER_TOO_LARGE,
                f"header {name[:40]!r} is {size} bytes, max {MAX_HEADER_BYTES}",
            )
    return None


def process_batch(
    stages: Stages,
    messages: Sequence[Inbound],
    now_ms: int,
    *,
    limiter: Limiter | None = None,
    backpressure: bool = False,
    start: Start = run_now,
    validate_at: Callable[[Sequence[Inbound]], npt.NDArray[np.int64]] | None = None,
) -> BatchResult:
    """envelope → rate limit → decode → validate → enrich (one lookup) → score (one predict
    per serving model).

    ``stages.serving`` is the serving set (champion, and a challenger in shadow or canary).
    ``stages.lookup`` is the feature store's ``get_many``; it may raise
    ``FeatureStoreUnavailable`` (transient: the dependency gate retries the batch).

    Args:
        limiter: per-producer token buckets; None: no rate limit.
        backpressure: over-limit messages wait (``deferred``) instead of becoming dead letters.
        start: runs the two IO calls (rate-limit tokens, feature lookup) and returns a way to
            wait for their answer. The default calls them at once; the worker starts them on IO
            threads, so that they overlap each other, the decoding and the validation. Either
            way the result is the same.
        validate_at: per message, the time its event is validated against instead of
            ``now_ms`` (a replay passes the time the broker stored each message, so its
            verdicts do not depend on when it runs).
    """
    codec, rules, spec, lookup = stages.codec, stages.rules, stages.spec, stages.lookup
    serving, threshold = stages.serving, stages.threshold
    dead: list[DeadLetterOut] = []
    envelope = [check_envelope(m) for m in messages]
    deferred: list[Inbound] = []
    if limiter is not None and backpressure:
        # Tokens are asked for the envelope-valid messages only, but deferral keeps each
        # partition's order over all of them: an envelope reject after the first denied message
        # waits too, so no commit can pass a deferred message.
        ok = [m for m, r in zip(messages, envelope, strict=True) if r is None]
        producers = [producer_of(m.key, m.headers) for m in ok]
        granted = split_by_quota(producers, take_for(limiter, producers)) if ok else []
        it = iter(granted)
        admitted = [next(it) if r is None else True for r in envelope]
        wait = defer_from_first_denial(messages, admitted)
        deferred = [m for m, w in zip(messages, wait, strict=True) if w]
        # A deferred message that got a token is charged again when it is read again: hand
        # its token back now.
        paid = Counter(
            producer_of(m.key, m.headers)
            for m, r, a, w in zip(messages, envelope, admitted, wait, strict=True)
            if w and a and r is None
        )
        paid = Counter(charged_only(paid))
        if paid:
            limiter.give_back(paid)
        envelope = [r for r, w in zip(envelope, wait, strict=True) if not w]
        messages = [m for m, w in zip(messages, wait, strict=True) if not w]
    dead += [DeadLetterOut(m, r) for m, r in zip(messages, envelope, strict=True) if r is not None]
    messages = [m for m, r in zip(messages, envelope, strict=True) if r is None]
    quota = None
    if limiter is not None and messages and not backpressure:
        producers = [producer_of(m.key, m.headers) for m in messages]
        quota = start(lambda: take_for(limiter, producers))  # answered while it decodes
    decoded = codec.decode_many([m.value for m in messages])
    # Features are asked for every decoded event now (rows of events refused below are
    # dropped), so that their round trip overlaps the rate limit's and the validation.
    readable = [d for d in decoded if not isinstance(d, Rejected)]
    requests = lookup_requests(spec, readable)
    features = start(lambda: lookup(requests)) if readable else None
    admitted = [True] * len(messages)
    if quota is not None:
        admitted = split_by_quota(producers, quota())
        dead += [
            DeadLetterOut(
                m,
                Rejected(
                    Stage.RATE_LIMIT,
                    Reason.RATE_LIMITED,
                    f"producer {p[:64]!r} over its rate limit",
                ),
            )
            for m, p, ok in zip(messages, producers, admitted, strict=True)
            if not ok
        ]
    good: list[Inbound] = []
    events: list[dict[str, Any]] = []
    rows: list[int] = []  # per good event, its row in the feature lookup
    looked_up = 0
    for message, record, admit in zip(messages, decoded, admitted, strict=True):
        if isinstance(record, Rejected):
            if admit:
                dead.append(DeadLetterOut(message, record))
            continue
        if admit:
            good.append(message)
            events.append(record)
            rows.append(looked_up)
        looked_up += 1
    if not events:
        if features is not None:
            features()  # the lookup's errors are the batch's, whatever became of its rows
        return BatchResult(None, dead, deferred=deferred)
    refusals = validate_many(events, rules, now_ms if validate_at is None else validate_at(good))
    found = features() if features is not None else {}
    if len(rows) != looked_up:  # rate-limited events had rows too
        take = np.asarray(rows)
        found = {g: Lookup(v.values[take], v.found[take]) for g, v in found.items()}
    if any(r is not None for r in refusals):
        dead += [DeadLetterOut(m, r) for m, r in zip(good, refusals, strict=True) if r is not None]
        keep = np.asarray([r is None for r in refusals], dtype=bool)
        found = {g: Lookup(v.values[keep], v.found[keep]) for g, v in found.items()}
        good = [m for m, r in zip(good, refusals, strict=True) if r is None]
        events = [e for e, r in zip(events, refusals, strict=True) if r is None]
    matrix = assemble(spec, events, found)
    scored = score_rows(serving, matrix.values, column(events, spec.key_field), threshold)
    missing: dict[str, int] = {}
    for groups in matrix.missing:
        for group in groups:
            missing[group] = missing.get(group, 0) + 1
    name = serving.champion.name
    task = serving.champion.metadata.task
    multi = scored.scores.ndim == 2  # multiclass: rows of class probabilities
    served = PredictionBlock(
        good,
        events,
        name,
        scored.versions,
        scored.variants,
        task.score(scored.scores),
        scored.degraded,
        matrix.missing,
        now_ms,
        spec.carry,
        threshold if stages.decide else None,
        scored.scores if multi else None,
        task.classes,
    )
    shadow = None
    if scored.shadow_scores is not None and scored.shadow_version is not None:
        n = len(events)
        shadow = PredictionBlock(
            good,
            events,
            name,
            [scored.shadow_version] * n,
            ["shadow"] * n,
            task.score(scored.shadow_scores),
            [False] * n,
            matrix.missing,
            now_ms,
            spec.carry,
            threshold if stages.decide else None,
            scored.shadow_scores if multi else None,
            task.classes,
        )
    return BatchResult(
        served,
        dead,
        any(scored.degraded),
        missing,
        deferred,
        shadow,
        scored.agreement,
        dict(scored.fallbacks),
        dict(found),
    )
