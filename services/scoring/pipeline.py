"""The scoring stages over one micro-batch, pure: values in, values out (no clock, no IO).

``process_batch`` turns consumed messages into predictions and dead letters; every input ends in
exactly one of the two, so ``len(predictions) + len(dead_letters) == len(messages)``.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from services.codec.avro import AvroCodec
from services.codec.columns import Const, column
from services.core.outcomes import Reason, Rejected, Stage
from services.features.assemble import assemble, lookup_requests
from services.features.spec import FeatureSpec
from services.features.store import Lookup, defaults_matrix
from services.ratelimit.bucket import Limiter, producer_of, split_by_quota
from services.scoring.model import LoadedModel
from services.scoring.rollout import Agreement
from services.scoring.serving import Serving, score_rows
from services.validation.rules import RecordRules, validate_many

Headers = tuple[tuple[str, bytes | None], ...]

# Envelope limits (before any decoding). Keys and headers are small in every sane producer; a
# huge one is abuse or a bug, and would also make its dead letter too big for the broker.
MAX_KEY_BYTES = 1024
MAX_HEADERS = 64
MAX_HEADER_BYTES = 8192
# A dead letter that keeps a cut original says so (services.dlq.letter builds it).
TRUNCATED_MARK = "[original truncated"


@dataclass(frozen=True, slots=True)
class Inbound:
    """One consumed message, independent of the Kafka client."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers = ()


@dataclass(frozen=True, slots=True)
class DeadLetterOut:
    """A refused message: the original, and why."""

    source: Inbound
    rejected: Rejected


@dataclass(frozen=True, slots=True)
class PredictionOut:
    """A scored event, ready to encode; keyed like its input."""

    source: Inbound
    record: dict[str, Any]
    event: dict[str, Any] | None = None  # the decoded input (drift monitors read its fields)


@dataclass(frozen=True, slots=True)
class PredictionBlock:
    """One batch's predictions as columns: the hot path encodes, counts and stores them without
    a dict per event; ``outs()`` gives per-event ``PredictionOut`` records for everything else.
    """

    sources: list[Inbound]
    events: list[dict[str, Any]]
    model_name: str
    versions: list[str]
    variants: list[str]
    scores: npt.NDArray[np.float64]
    degraded: list[bool]
    missing: tuple[tuple[str, ...], ...]
    scored_at: int
    carry: tuple[str, ...] = ()  # event fields copied into each prediction (the spec's carry)

    def __len__(self) -> int:
        return len(self.sources)

    def field(self, name: str) -> list[Any]:
        """One input field for every prediction."""
        return column(self.events, name)

    def columns(self) -> dict[str, Any]:
        """The Prediction record's fields, a column each (``Const`` when uniform)."""
        event_ids = self.field("event_id")
        versions: Any = _uniform(self.versions)
        if isinstance(versions, Const):
            tail = f"\x1f{versions.value}"
            ids = [prediction_id_raw(e + tail) for e in event_ids]
        else:
            ids = [prediction_id(e, v) for e, v in zip(event_ids, self.versions, strict=True)]
        carried = {name: self.field(name) for name in self.carry}
        return {
            "prediction_id": ids,
            "event_id": event_ids,
            **carried,
            "score": self.scores,
            "model_name": Const(self.model_name),
            "model_version": versions,
            "variant": _uniform(self.variants),
            "degraded": _uniform(self.degraded),
            "missing_features": _uniform([list(m) for m in self.missing]),
            "event_time": self.field("event_time"),
            "scored_at": Const(self.scored_at),
        }

    def records(self) -> list[dict[str, Any]]:
        cols = self.columns()
        n = len(self)
        expanded = {k: [v.value] * n if isinstance(v, Const) else list(v) for k, v in cols.items()}
        expanded["score"] = [float(x) for x in self.scores]
        rows = zip(*expanded.values(), strict=True)
        return [dict(zip(expanded, row, strict=True)) for row in rows]

    def outs(self, with_events: bool = True) -> list[PredictionOut]:
        return [
            PredictionOut(src, rec, ev if with_events else None)
            for src, rec, ev in zip(self.sources, self.records(), self.events, strict=True)
        ]


def _uniform(values: list[Any]) -> Any:
    """``Const`` when every value is the same (the common case: one version, one variant)."""
    if values and all(v == values[0] for v in values):
        return Const(values[0])
    return values


@dataclass(frozen=True, slots=True)
class BatchResult:
    served: PredictionBlock | None = None
    dead_letters: list[DeadLetterOut] = field(default_factory=list)
    degraded: bool = False  # a fallback scorer answered for some of this batch
    missing: dict[str, int] = field(default_factory=dict)  # feature lookups that fell back
    # Backpressure: messages to consume again later (per partition, a suffix of the batch).
    deferred: list[Inbound] = field(default_factory=list)
    shadowed: PredictionBlock | None = None  # variant=shadow, not served
    agreement: Agreement | None = None  # champion vs shadow on this batch
    fallbacks: dict[str, int] = field(default_factory=dict)  # fallback rung/reason -> rows

    @property
    def predictions(self) -> list[PredictionOut]:
        """Served predictions, one record each (tests and slow paths; the worker uses
        ``served``)."""
        return self.served.outs() if self.served is not None else []

    @property
    def shadow(self) -> list[PredictionOut]:
        return self.shadowed.outs(with_events=False) if self.shadowed is not None else []

    @property
    def n_predictions(self) -> int:
        return len(self.served) if self.served is not None else 0


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


def defaults_only(spec: FeatureSpec) -> Callable[[dict[str, Sequence[str]]], dict[str, Lookup]]:
    """A lookup that answers every key with its group's declared defaults, found nowhere: what
    the worker scores with when Redis is down and the policy is ``degrade``."""

    def lookup(requests: dict[str, Sequence[str]]) -> dict[str, Lookup]:
        return {
            g.name: Lookup(
                defaults_matrix(g, len(requests.get(g.name, ()))),
                np.zeros(len(requests.get(g.name, ())), dtype=bool),
            )
            for g in spec.groups
            if g.name in requests
        }

    return lookup


def flag_degraded(result: BatchResult, reason: str) -> BatchResult:
    """Every prediction of ``result`` marked degraded, and counted under ``reason``."""
    served = result.served
    if served is None:
        return result
    fallbacks = dict(result.fallbacks)
    fallbacks[reason] = fallbacks.get(reason, 0) + len(served)
    return replace(
        result,
        served=replace(served, degraded=[True] * len(served)),
        degraded=True,
        fallbacks=fallbacks,
    )


def prediction_id(event_id: str, model_version: str) -> str:
    """Deterministic id: a replay or a redelivery of the same event by the same version gets it.

    >>> prediction_id("e1", "3") == prediction_id("e1", "3") != prediction_id("e1", "4")
    True
    """
    return prediction_id_raw(f"{event_id}\x1f{model_version}")


def prediction_id_raw(joined: str) -> str:
    """``prediction_id`` of ``"<event_id>\\x1f<model_version>"``, already joined."""
    return hashlib.sha256(joined.encode()).hexdigest()[:32]


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
    messages: Sequence[Inbound],
    codec: AvroCodec,
    rules: RecordRules,
    spec: FeatureSpec,
    lookup: Callable[[dict[str, Sequence[str]]], Mapping[str, Lookup]],
    model: Serving | LoadedModel,
    now_ms: int,
    limiter: Limiter | None = None,
    backpressure: bool = False,
    threshold: float = 0.5,
    start: Start = run_now,
    validate_at: Callable[[Sequence[Inbound]], npt.NDArray[np.int64]] | None = None,
) -> BatchResult:
    """envelope → rate limit → decode → validate → enrich (one lookup) → score (one predict
    per serving model).

    ``model`` is the serving set (champion, and a challenger in shadow or canary) or a single
    model. ``lookup`` is the feature store's ``get_many``; it may raise
    ``FeatureStoreUnavailable`` (transient: the worker retries the batch, nothing committed).

    ``start`` runs the two IO calls (rate-limit tokens, feature lookup) and returns a way to
    wait for their answer. The default calls them at once; the worker starts them on IO
    threads, so that they run at the same time as each other, the decoding and the
    validation. Either way the result is the same.

    ``validate_at``: per message, the time its event is validated against instead of
    ``now_ms`` (a replay passes the time the broker stored each message, so its verdicts do
    not depend on when it runs).
    """
    serving = model if isinstance(model, Serving) else Serving(model)
    dead: list[DeadLetterOut] = []
    envelope = [check_envelope(m) for m in messages]
    deferred: list[Inbound] = []
    if limiter is not None and backpressure:
        # Tokens are asked for the envelope-valid messages only, but deferral keeps each
        # partition's order over all of them: an envelope reject after the first denied message
        # waits too, so no commit can pass a deferred message.
        ok = [m for m, r in zip(messages, envelope, strict=True) if r is None]
        producers = [producer_of(m.key, m.headers) for m in ok]
        granted = split_by_quota(producers, limiter.take(Counter(producers))) if ok else []
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
        if paid:
            limiter.give_back(paid)
        envelope = [r for r, w in zip(envelope, wait, strict=True) if not w]
        messages = [m for m, w in zip(messages, wait, strict=True) if not w]
    dead += [DeadLetterOut(m, r) for m, r in zip(messages, envelope, strict=True) if r is not None]
    messages = [m for m, r in zip(messages, envelope, strict=True) if r is None]
    quota = None
    if limiter is not None and messages and not backpressure:
        producers = [producer_of(m.key, m.headers) for m in messages]
        counts = Counter(producers)
        quota = start(lambda: limiter.take(counts))  # answered while the batch decodes
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
    served = PredictionBlock(
        good,
        events,
        name,
        scored.versions,
        scored.variants,
        scored.scores,
        scored.degraded,
        matrix.missing,
        now_ms,
        spec.carry,
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
            scored.shadow_scores,
            [False] * n,
            matrix.missing,
            now_ms,
            spec.carry,
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
    )
