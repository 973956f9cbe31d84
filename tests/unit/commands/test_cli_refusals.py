"""A one-shot command the cluster refuses to let write prints the one line docs/security.md
promises, naming the principal, the Write and the topic (not a Read on a topic "not named by
the broker"). The send is replaced by the refusal librdkafka reports; no broker is needed."""

from __future__ import annotations

import pytest

from streams.commands import produce, retrain
from tests.unit.commands.test_cli_rules import main_in_process

# librdkafka's text of a delivery report the authorizer refused.
REFUSED = "KafkaError{code=TOPIC_AUTHORIZATION_FAILED,val=29,str=Broker: Topic authorization}"
AS_WORKER = {"STREAMSCORE_KAFKA__SASL_USERNAME": "streamscore-worker"}


def test_produce_refused_names_the_write_and_the_topic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(produce, "send_all", lambda *_a, **_k: REFUSED)
    code, err = main_in_process(["produce", "feed.labels.v1", "--example"], AS_WORKER)
    assert code == 2, err
    assert err.strip() == (
        "error: streamscore-worker is not allowed to Write topic feed.labels.v1 "
        "(TOPIC_AUTHORIZATION_FAILED)"
    )


def test_retrain_refused_names_the_write_and_the_topic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retrain, "send_one", lambda *_a, **_k: REFUSED)
    code, err = main_in_process(["retrain", "--reason", "test"], AS_WORKER)
    assert code == 2, err
    assert err.strip() == (
        "error: streamscore-worker is not allowed to Write topic ml.retrain-requests.v1 "
        "(TOPIC_AUTHORIZATION_FAILED)"
    )
