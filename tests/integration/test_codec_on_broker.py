"""Avro in the Confluent wire format through a real broker: values, keys and headers survive,
and hostile values are refused with a reason while every message is accounted for."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, Producer

from services.codec.avro import AvroCodec
from services.codec.examples import load_example
from services.codec.factory import schema_ids, schemas_dir
from services.codec.schemas import load_schemas
from services.core.outcomes import Reason, Rejected
from services.kafka.config import consumer_config, producer_config
from services.kafka.topics import TopicSpec
from streams.topics import by_record
from tests.integration.conftest import Stack

pytestmark = [pytest.mark.integration, pytest.mark.smoke]


def test_examples_and_hostile_values_round_trip_through_the_broker(
    stack: Stack, topic_factory: Callable[..., TopicSpec], group_id: str
) -> None:
    s = stack.settings
    records = load_schemas(schemas_dir(s))
    codec = AvroCodec(
        records["Interaction"], schema_ids(s), by_record(s.topics, "Interaction").subject
    )
    files = sorted((schemas_dir(s) / "examples" / "Interaction").glob("*.json"))
    examples = [load_example(f, records["Interaction"].source) for f in files] * 50
    hostile = {
        b"": Reason.EMPTY_PAYLOAD,
        b"\x7b\x7d": Reason.BAD_MAGIC_BYTE,
        b"\x00\x00": Reason.TRUNCATED_HEADER,
        b"\x00\x00\x00\x7f\xff\x02": Reason.UNKNOWN_SCHEMA_ID,
        codec.encode_one(examples[0])[:-3]: Reason.AVRO_DECODE_ERROR,
        codec.encode_one(examples[0]) + b"\x00": Reason.TRAILING_BYTES,
    }
    topic = topic_factory(partitions=3)
    producer = Producer(producer_config(s))
    sent = [
        (e["user_id"], v, e) for e, v in zip(examples, codec.encode_many(examples), strict=True)
    ]
    for i, (key, value, _) in enumerate(sent):
        producer.produce(
            topic.name, key=key.encode(), value=value, headers=[("seq", str(i).encode())]
        )
    for j, value in enumerate(hostile):
        producer.produce(
            topic.name, key=b"hostile", value=value, headers=[("hostile", str(j).encode())]
        )
    assert producer.flush(30) == 0

    consumer = Consumer(consumer_config(s, group_id))
    consumer.subscribe([topic.name])
    got = []
    deadline = time.monotonic() + 60
    try:
        while len(got) < len(sent) + len(hostile) and time.monotonic() < deadline:
            got += [m for m in consumer.consume(500, 0.5) if m.error() is None]
    finally:
        consumer.close()
    assert len(got) == len(sent) + len(hostile)

    decoded = codec.decode_many([m.value() for m in got])
    by_seq = {}
    reasons = []
    for message, result in zip(got, decoded, strict=True):
        headers = dict(message.headers() or [])
        if "hostile" in headers:
            assert isinstance(result, Rejected)
            reasons.append(result.reason)
        else:
            assert not isinstance(result, Rejected), result
            by_seq[int(headers["seq"])] = (message.key().decode(), result)
    assert sorted(reasons) == sorted(hostile.values())
    assert len(by_seq) == len(sent)
    for i, (key, _, event) in enumerate(sent):
        assert by_seq[i] == (key, event)
