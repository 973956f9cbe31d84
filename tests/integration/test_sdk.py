"""The client SDK on the real stack: the docs' examples run as written; an invalid event raises
before anything is sent; the consumer drops redeliveries and commits only what was handled."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from confluent_kafka import Producer

from services.kafka.config import producer_config
from services.kafka.topics import TopicSpec
from streams.runtime import scoring_worker
from streams.sdk import EventProducer, InvalidEvent, PredictionConsumer
from tests.integration.pipeline_env import Pipeline, domain_fixture

pytestmark = [pytest.mark.integration, pytest.mark.kafka_only]
DOC = Path(__file__).resolve().parents[2] / "docs" / "clients.md"


payments = domain_fixture("payments")


def _examples() -> list[tuple[str, str]]:
    """(language, code) of every runnable block, in order."""
    return re.findall(r"```(python|sh)\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


@pytest.mark.timeout(240)
def test_the_examples_in_docs_clients_run(
    payments: Pipeline, capsys: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    from streams.adapters import redis_client
    from streams.api import create_app
    from streams.api_keys import ApiKeys
    from tests.integration.test_api import Server

    p = payments
    before = p.count("Transaction")
    worker = scoring_worker(p.settings)
    thread = threading.Thread(target=worker.run, kwargs={"idle_timeout": 120}, daemon=True)
    thread.start()
    _, key = ApiKeys(redis_client(p.settings), p.settings.redis.key_prefix).create("docs")
    server = Server(create_app(p.settings))
    env = p.env() | {"API_URL": server.url, "API_KEY": key}
    shell_env = dict(os.environ) | env
    shell_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{shell_env.get('PATH', '')}"
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    shell_out = []
    try:
        with mock.patch.dict("os.environ", env):
            for lang, block in _examples():
                if lang == "python":
                    exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102 (our own docs)
                    continue
                if "curl " in block and shutil.which("curl") is None:
                    continue  # the HTTP example in Python ran; curl is not on this machine
                ran = subprocess.run(  # noqa: S603 (our own docs)
                    ["bash", "-euo", "pipefail", "-c", block],
                    env=shell_env,
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                assert ran.returncode == 0, (block, ran.stderr[-2000:])
                shell_out.append(ran.stdout)
    finally:
        worker.request_stop()
        thread.join(60)
        server.stop()
    out = capsys.readouterr().out
    assert "20 delivered" in out
    assert "refused: amount out_of_range" in out
    assert namespace["wanted"] == set()  # every event's prediction was read
    # Exactly the 20 valid events reached the topic, keyed by card and with the producer id,
    # and then the one sent by curl.
    sent = p.read("Transaction", before + 21)[before:]
    codec = p.codec("Transaction")
    ids = [codec.decode_one(m.value())["event_id"] for m in sent]
    assert len(sent) == 21 and '"accepted":1' in shell_out[0]
    assert sum(i.endswith("-curl") for i in ids) == 1
    for m in sent:
        event = codec.decode_one(m.value())
        assert m.key() == event["card_id"].encode()
        who = b"api:" if event["event_id"].endswith("-curl") else b"checkout-eu"
        assert any(k == "producer-id" and v.startswith(who) for k, v in m.headers() or [])
    assert not any(i.endswith("-bad") for i in ids)
    # HTTP answered for 3 events; the file gave 20 predictions (a header and 2 rows printed).
    assert out.count(" champion False") >= 3
    assert (tmp_path / "scores.csv").read_text().count("\n") == 21
    assert (
        "20 predictions" in shell_out[-1]
        and "event_id,prediction_id,card_id,merchant_id,score,model_name" in shell_out[-1]
    )


def test_an_invalid_event_raises_naming_field_and_rule_and_nothing_is_sent(
    payments: Pipeline,
) -> None:
    p = payments
    good = p.world.events(1)[0]
    good = {k: v for k, v in good.items() if not k.startswith("_")}
    before = p.count("Transaction")
    cases = [
        ({"amount": "12.50"}, "amount", "type"),
        ({"channel": "FAX"}, "channel", "type"),
        ({"merchant_category": "54"}, "merchant_category", "bad_format"),
        ({"card_id": ""}, "card_id", "missing_value"),
        ({"tip": 1.0}, "tip", "unknown_field"),
        ({"event_time": good["event_time"] + 3_600_000}, "event_time", "time_out_of_window"),
    ]
    with EventProducer(p.settings, producer_id="t") as producer:
        for change, field, rule in cases:
            with pytest.raises(InvalidEvent) as refused:
                producer.send_many([good, good | change])  # one bad event: none is sent
            assert (refused.value.field, refused.value.rule, refused.value.index) == (
                field,
                rule,
                1,
            )
            assert "12.50" not in str(refused.value)  # the value itself is not echoed
        missing = {k: v for k, v in good.items() if k != "amount"}
        with pytest.raises(InvalidEvent, match="amount: required"):
            producer.send(missing)
    assert producer.delivered == 0
    assert p.count("Transaction") == before


# A payments prediction record; tests set its event_id.
PREDICTION = {
    "prediction_id": "x",
    "card_id": "card-1",
    "merchant_id": "m-1",
    "score": 0.25,
    "model_name": "fraud",
    "model_version": "1",
    "variant": "champion",
    "degraded": False,
    "missing_features": [],
    "event_time": 1,
    "scored_at": 2,
    "decision": None,  # the payments domain declares a threshold: its records carry it
}


def test_the_consumer_drops_redeliveries_and_commits_what_was_handled(
    payments: Pipeline,
) -> None:
    p = payments
    codec = p.codec("Prediction")
    example = PREDICTION
    topic = p.settings.topics.predictions
    from confluent_kafka import Producer

    from services.kafka.config import producer_config

    ids = [f"ev-{uuid.uuid4().hex[:8]}-{i}" for i in range(6)]
    producer = Producer(producer_config(p.settings))
    # Partition 0 only, so that the order is known; ids[1] arrives twice (a redelivery).
    for event_id in [ids[0], ids[1], ids[1], *ids[2:]]:
        value = codec.encode_one(example | {"event_id": event_id})
        producer.produce(topic, key=b"card-1", value=value, partition=0)
    assert producer.flush(30) == 0
    group = f"sdk-test-{uuid.uuid4().hex[:8]}"
    seen: list[str] = []
    with PredictionConsumer(group, p.settings, topic=topic, auto_commit=True) as c:
        for pred in c:
            if pred.event_id not in ids:
                continue  # the topic's earlier predictions
            seen.append(pred.event_id)
            if pred.event_id == ids[3]:
                break  # ids[3] is in hand, not yet handled: it is not committed
        assert c.duplicates >= 1
    assert seen == ids[:4]
    # A new member of the group resumes at the first prediction not handled.
    with PredictionConsumer(group, p.settings, topic=topic) as c:
        first = c.poll(30)
        while first is not None and first.event_id not in ids:
            first = c.poll(30)
    assert first is not None and first.event_id == ids[3]


def test_without_auto_commit_only_what_the_caller_confirmed_is_committed(
    payments: Pipeline, topic_factory: Callable[..., TopicSpec]
) -> None:
    """A caller collects predictions, stores some, confirms them with commit(), then fails to
    store the rest and leaves the `with` block: the unconfirmed ones come again, and a
    redelivery skipped after them does not carry the commit past them."""
    p = payments
    codec = p.codec("Prediction")
    example = PREDICTION
    topic = topic_factory(partitions=1, record="Prediction").name  # this test's alone
    ids = [f"manual-{uuid.uuid4().hex[:8]}-{i}" for i in range(8)]
    producer = Producer(producer_config(p.settings))
    for event_id in [*ids, ids[6]]:  # ids[6] again at the end: a redelivery to skip
        producer.produce(topic, key=b"c", value=codec.encode_one(example | {"event_id": event_id}))
    assert producer.flush(30) == 0
    group = f"sdk-manual-{uuid.uuid4().hex[:8]}"

    def take(c: PredictionConsumer, n: int) -> list[str]:
        got: list[str] = []
        while len(got) < n:
            pred = c.poll(30)
            assert pred is not None, got
            if pred.event_id in ids:
                got.append(pred.event_id)
        return got

    with PredictionConsumer(group, p.settings, topic=topic, auto_commit=False) as c:
        assert take(c, 3) == ids[:3]
        c.commit()  # stored: confirmed
        assert take(c, 5) == ids[3:]
        assert c.poll(10) is None  # reads the redelivery of ids[6] and skips it
        assert c.duplicates == 1
    with PredictionConsumer(group, p.settings, topic=topic, auto_commit=False) as c:
        assert take(c, 5) == ids[3:]  # never confirmed: delivered again
