"""process_batch: every input ends as exactly one prediction or one dead letter."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.codec.avro import AvroCodec
from services.codec.manifest import MANIFEST_FILE, Manifest, ManifestSchemaIds
from services.codec.schemas import DEFAULT_SCHEMAS_DIR, load_schemas
from services.core.records import Inbound
from services.dlq.letter import dead_letter_record
from services.features.assemble import assemble, lookup_requests
from services.features.spec import FeatureSpec
from services.features.store import InMemoryFeatureStore
from services.scoring.model import LoadedModel
from services.scoring.pipeline import process_batch
from services.scoring.results import prediction_id
from services.scoring.stages import Stages
from services.synthetic.hostile import hostile_values
from services.synthetic.world import World, strip_private
from services.validation.rules import RecordRules

SPEC = FeatureSpec.load()
RULES = RecordRules.load("Interaction")
SCHEMAS = load_schemas(DEFAULT_SCHEMAS_DIR)
IDS = ManifestSchemaIds(Manifest.load(DEFAULT_SCHEMAS_DIR / MANIFEST_FILE))
CODEC = AvroCodec(SCHEMAS["Interaction"], IDS, "feed.interactions.v1-value")
WORLD = World(SPEC, n_users=60, n_items=40, seed=9)
NOW = WORLD.start_time_ms + 60_000
STORE = InMemoryFeatureStore(SPEC)
for _group in ("user", "item"):
    STORE.put_many(_group, *WORLD.features(_group))
EVENTS = [strip_private(e) for e in WORLD.events(300)]
GOOD = CODEC.encode_many(EVENTS)
BAD = [v for v, _, _ in hostile_values(CODEC, EVENTS[0])]


def inbound(values: list[bytes]) -> list[Inbound]:
    return [
        Inbound("feed.interactions.v1", 0, i, b"k", v, (("h", b"v"),)) for i, v in enumerate(values)
    ]


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.one_of(st.sampled_from(GOOD), st.sampled_from(BAD), st.binary(max_size=80)), max_size=60
    )
)
def test_predictions_plus_dead_letters_equal_input(model: LoadedModel, values: list[bytes]) -> None:
    messages = inbound(values)
    result = process_batch(Stages.of(CODEC, RULES, SPEC, STORE.get_many, model), messages, NOW)
    assert len(result.predictions) + len(result.dead_letters) == len(messages)
    offsets = sorted(
        [p.source.offset for p in result.predictions]
        + [d.source.offset for d in result.dead_letters]
    )
    assert offsets == list(range(len(messages)))


def test_scores_are_the_models_scores_for_the_assembled_rows(model: LoadedModel) -> None:
    result = process_batch(Stages.of(CODEC, RULES, SPEC, STORE.get_many, model), inbound(GOOD), NOW)
    matrix = assemble(SPEC, EVENTS, STORE.get_many(lookup_requests(SPEC, EVENTS)))
    expected = model.predict(matrix.values)
    assert [p.record["score"] for p in result.predictions] == expected.tolist()
    first = result.predictions[0].record
    assert first["prediction_id"] == prediction_id(EVENTS[0]["event_id"], "7")
    assert (first["model_version"], first["scored_at"], first["variant"]) == ("7", NOW, "champion")
    assert first["event_time"] == EVENTS[0]["event_time"]
    assert result.predictions[0].source.key == b"k"  # keyed like the input


def test_every_hostile_value_is_dead_lettered_with_its_reason(model: LoadedModel) -> None:
    cases = hostile_values(CODEC, EVENTS[0] | {"event_time": NOW})
    result = process_batch(
        Stages.of(CODEC, RULES, SPEC, STORE.get_many, model), inbound([v for v, _, _ in cases]), NOW
    )
    assert result.predictions == []
    got = [(d.rejected.stage.value, d.rejected.reason.value) for d in result.dead_letters]
    assert got == [(stage, reason) for _, stage, reason in cases]


def test_a_failing_model_degrades_down_the_ladder(model: LoadedModel) -> None:
    class Broken:
        def predict(self, *_: Any, **__: Any) -> Any:
            raise RuntimeError("boom")

    broken = replace(model, model=Broken())
    result = process_batch(
        Stages.of(CODEC, RULES, SPEC, STORE.get_many, broken), inbound(GOOD[:10]), NOW
    )
    assert result.degraded is True and result.fallbacks == {"logistic": 10}
    assert all(p.record["degraded"] for p in result.predictions)
    assert len({p.record["score"] for p in result.predictions}) > 1  # the logistic rung answered
    # Without a stored logistic scorer the last rung answers: the base rate.
    bare = replace(broken, metadata=replace(model.metadata, fallback=None))
    result = process_batch(
        Stages.of(CODEC, RULES, SPEC, STORE.get_many, bare), inbound(GOOD[:10]), NOW
    )
    assert result.fallbacks == {"base_rate": 10}
    assert {p.record["score"] for p in result.predictions} == {model.metadata.base_rate}


def test_dead_letter_keeps_the_original(model: LoadedModel) -> None:
    result = process_batch(
        Stages.of(CODEC, RULES, SPEC, STORE.get_many, model), inbound([b"garbage"]), NOW
    )
    record = dead_letter_record(result.dead_letters[0], "w-1", NOW)
    assert record["original_value"] == b"garbage"
    assert record["original_headers"] == [{"key": "h", "value": b"v"}]
    assert (record["stage"], record["reason"], record["worker_id"]) == (
        "decode",
        "bad_magic_byte",
        "w-1",
    )
    assert record["redrive_count"] == 0
    # and it is a valid DeadLetter for the contract
    dlq = AvroCodec(SCHEMAS["DeadLetter"], IDS, "feed.interactions.v1.dlq-value")
    assert dlq.decode_one(dlq.encode_one(record)) == record


@pytest.mark.parametrize("n", [0, 1])
def test_tiny_batches(model: LoadedModel, n: int) -> None:
    result = process_batch(
        Stages.of(CODEC, RULES, SPEC, STORE.get_many, model), inbound(GOOD[:n]), NOW
    )
    assert len(result.predictions) == n


def test_oversized_keys_and_headers_are_refused_before_decoding(model: LoadedModel) -> None:
    messages = [
        Inbound("t", 0, 0, b"k" * 5000, GOOD[0]),
        Inbound("t", 0, 1, b"k", GOOD[0], tuple((f"h{i}", b"v") for i in range(100))),
        Inbound("t", 0, 2, b"k", GOOD[0], (("big", b"x" * 20_000),)),
        Inbound("t", 0, 3, b"k", GOOD[0], (("ok", b"x" * 100),)),
    ]
    result = process_batch(Stages.of(CODEC, RULES, SPEC, STORE.get_many, model), messages, NOW)
    assert [d.rejected.reason.value for d in result.dead_letters] == [
        "key_too_large",
        "header_too_large",
        "header_too_large",
    ]
    assert [p.source.offset for p in result.predictions] == [3]


def test_a_dead_letter_always_fits_the_broker_and_marks_what_was_cut(model: LoadedModel) -> None:
    from services.dlq.plan import plan_redrive

    huge = Inbound("t", 0, 0, b"k" * 5000, b"\x00" * 1_500_000, (("big", b"x" * 20_000),))
    letter = process_batch(
        Stages.of(CODEC, RULES, SPEC, STORE.get_many, model), [huge], NOW
    ).dead_letters[0]
    record = dead_letter_record(letter, "w", NOW)
    dlq = AvroCodec(SCHEMAS["DeadLetter"], IDS, "feed.interactions.v1.dlq-value")
    assert len(dlq.encode_one(record)) < 1_000_000
    assert "original truncated" in record["detail"]
    plan = plan_redrive([record], None, 3)
    assert (len(plan.to_send), plan.refused_loop) == (0, 1)  # never sent back cut


class FixedQuota:
    """A fake limiter: each producer may send ``quota`` messages per call."""

    def __init__(self, quota: int) -> None:
        self.quota = quota

        self.net: Counter[str] = Counter()  # tokens taken minus tokens given back

    def take(self, requested: Mapping[str, int]) -> dict[str, int]:
        granted = {p: min(n, self.quota) for p, n in requested.items()}
        self.net.update(granted)
        return granted

    def give_back(self, returned: Mapping[str, int]) -> None:
        self.net.subtract(returned)


def test_a_noisy_producer_is_limited_and_the_others_are_not(model: LoadedModel) -> None:
    noisy = [Inbound("t", 0, i, b"k", GOOD[i], (("producer-id", b"noisy"),)) for i in range(100)]
    quiet = [
        Inbound("t", 1, i, b"k", GOOD[i], (("producer-id", f"q{i}".encode()),)) for i in range(20)
    ]
    result = process_batch(
        Stages.of(CODEC, RULES, SPEC, STORE.get_many, model),
        noisy + quiet,
        NOW,
        limiter=FixedQuota(10),
    )
    limited = [d for d in result.dead_letters if d.rejected.reason.value == "rate_limited"]
    assert len(limited) == 90 and {d.source.partition for d in limited} == {0}
    assert {d.rejected.stage.value for d in limited} == {"rate_limit"}
    served = [p.source for p in result.predictions]
    assert sum(1 for s in served if s.partition == 1) == 20
    assert [s.offset for s in served if s.partition == 0] == list(range(10))  # first come
    assert len(result.predictions) + len(result.dead_letters) == 120


def test_an_envelope_reject_after_a_deferred_message_waits_with_it(model: LoadedModel) -> None:
    """Backpressure: offset 11 is denied, offset 13 has an oversized key. 13 must not become a
    dead letter now (its partition's commit would pass 11 and 12): it is deferred with them."""
    msgs = [Inbound("t", 0, o, b"u1", GOOD[o]) for o in (10, 11, 12)]
    msgs.append(Inbound("t", 0, 13, b"k" * 5000, GOOD[13]))
    result = process_batch(
        Stages.of(CODEC, RULES, SPEC, STORE.get_many, model),
        msgs,
        NOW,
        limiter=FixedQuota(1),
        backpressure=True,
    )
    assert [d.offset for d in result.deferred] == [11, 12, 13]
    assert [p.source.offset for p in result.predictions] == [10]
    assert result.dead_letters == []


def test_a_deferred_message_is_charged_once_however_often_it_is_read(model: LoadedModel) -> None:
    """Partition 0's second message is denied; the third (another producer, admitted) waits
    with it. Reading the deferred messages again must not charge the third producer twice."""
    msgs = [
        Inbound("t", 0, 0, b"a", GOOD[0], (("producer-id", b"a"),)),
        Inbound("t", 0, 1, b"a", GOOD[1], (("producer-id", b"a"),)),
        Inbound("t", 0, 2, b"b", GOOD[2], (("producer-id", b"b"),)),
    ]
    limiter = FixedQuota(1)
    first = process_batch(
        Stages.of(CODEC, RULES, SPEC, STORE.get_many, model),
        msgs,
        NOW,
        limiter=limiter,
        backpressure=True,
    )
    assert [d.offset for d in first.deferred] == [1, 2]
    assert limiter.net == Counter({"a": 1, "b": 0})  # b's token went back
    limiter.quota = 10
    again = process_batch(
        Stages.of(CODEC, RULES, SPEC, STORE.get_many, model),
        first.deferred,
        NOW,
        limiter=limiter,
        backpressure=True,
    )
    assert [p.source.offset for p in again.predictions] == [1, 2]
    assert limiter.net == Counter({"a": 2, "b": 1})  # one token per message handled


def test_a_retried_batch_is_charged_once(model: LoadedModel) -> None:
    """The worker retries a batch whose feature lookup failed; the retry reuses the grant."""
    from services.core.errors import FeatureStoreUnavailable
    from services.ratelimit.bucket import ChargeOnce

    failures = iter([True, False])

    def flaky(requests: Any) -> Any:
        if next(failures):
            raise FeatureStoreUnavailable("down")
        return STORE.get_many(requests)

    msgs = [Inbound("t", 0, i, b"k", GOOD[i], (("producer-id", b"p"),)) for i in range(5)]
    limiter = FixedQuota(100)
    once = ChargeOnce(limiter)
    with pytest.raises(FeatureStoreUnavailable):
        process_batch(Stages.of(CODEC, RULES, SPEC, flaky, model), msgs, NOW, limiter=once)
    result = process_batch(Stages.of(CODEC, RULES, SPEC, flaky, model), msgs, NOW, limiter=once)
    assert len(result.predictions) == 5 and limiter.net == Counter({"p": 5})


def test_only_the_rows_a_model_fails_on_go_down_the_ladder(model: LoadedModel) -> None:
    """One row makes the model raise and one makes it answer NaN: the other rows keep the
    model's own scores (the oracle: the real model scoring them on its own)."""
    events = GOOD[:40]
    healthy = process_batch(
        Stages.of(CODEC, RULES, SPEC, STORE.get_many, model), inbound(events), NOW
    )
    expected = [p.record["score"] for p in healthy.predictions]
    matrix_rows: list[Any] = []

    class Picky:
        def predict(self, X: Any, **kw: Any) -> Any:
            matrix_rows.append(len(X))
            if any((X == poison_raise).all(axis=1)):
                raise RuntimeError("cannot score this row")
            out = model.model.predict(X, **kw)
            out[(X == poison_nan).all(axis=1)] = float("nan")
            return out

    from services.features.assemble import assemble as assemble_rows

    decoded = [CODEC.decode_one(v) for v in events]
    found = STORE.get_many(lookup_requests(SPEC, decoded))
    X = assemble_rows(SPEC, decoded, found).values
    poison_raise, poison_nan = X[7], X[30]
    picky = replace(model, model=Picky(), compiled=None)
    result = process_batch(
        Stages.of(CODEC, RULES, SPEC, STORE.get_many, picky), inbound(events), NOW
    )
    degraded = [i for i, p in enumerate(result.predictions) if p.record["degraded"]]
    assert degraded == [7, 30]
    assert sum(result.fallbacks.values()) == 2
    for i, p in enumerate(result.predictions):
        if i not in (7, 30):
            assert p.record["score"] == pytest.approx(expected[i], abs=1e-12)
    assert len(matrix_rows) <= 2 * 6 + 1  # bisection, not one call per row


@pytest.mark.parametrize("backpressure", [False, True])
def test_events_the_api_admitted_are_not_charged_again(
    model: LoadedModel, backpressure: bool
) -> None:
    """The API charged `api:<key id>` when it accepted these events (202): the stream's limiter
    must not charge them again, or accepted events become `rate_limited` dead letters."""
    via_api = [Inbound("t", 0, i, b"k", GOOD[i], (("producer-id", b"api:k1"),)) for i in range(30)]
    direct = [Inbound("t", 1, i, b"k", GOOD[i], (("producer-id", b"p"),)) for i in range(30)]
    limiter = FixedQuota(5)
    result = process_batch(
        Stages.of(CODEC, RULES, SPEC, STORE.get_many, model),
        via_api + direct,
        NOW,
        limiter=limiter,
        backpressure=backpressure,
    )
    assert sum(1 for p in result.predictions if p.source.partition == 0) == 30
    assert "api:k1" not in limiter.net and limiter.net["p"] == 5
    assert sum(1 for p in result.predictions if p.source.partition == 1) == 5
