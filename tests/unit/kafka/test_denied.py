"""A refusal by the cluster's authorizer is one line naming the principal, the operation and the
resource, and exit 2; other broker errors keep their own line and exit 1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.core.errors import BrokerUnavailable, NotAuthorized, PublishError
from services.core.settings import Settings
from services.kafka.denied import from_error, not_authorized, refusal
from streams import cli as cli_module

WORKER = Settings(
    kafka={
        "sasl_username": "streamscore-worker",
        "sasl_password": "pw-never-shown-123",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
    }
)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        (
            'KafkaError{code=TOPIC_AUTHORIZATION_FAILED,val=29,str="x"}',
            "TOPIC_AUTHORIZATION_FAILED",
        ),
        (
            "FindCoordinator response error: Group authorization failed.",
            "GROUP_AUTHORIZATION_FAILED",
        ),
        ("Broker: Transactional Id authorization failed", "TRANSACTIONAL_ID_AUTHORIZATION_FAILED"),
        (
            "SASL authentication error: Authentication failed during authentication due to invalid "
            "credentials with SASL mechanism SCRAM-SHA-512",
            "SASL_AUTHENTICATION_FAILED",
        ),
        ("Local: Message timed out", None),
        ("Broker: Not enough in-sync replicas", None),
    ],
)
def test_refusal_codes_from_librdkafka_texts(text: str, code: str | None) -> None:
    assert refusal(text) == code


def test_the_line_names_principal_operation_resource_and_code() -> None:
    got = not_authorized(
        WORKER, "Broker: Topic authorization failed", "Write", "payments.labels.v1"
    )
    assert str(got) == (
        "streamscore-worker is not allowed to Write topic payments.labels.v1 "
        "(TOPIC_AUTHORIZATION_FAILED)"
    )
    group = from_error(WORKER, "Group authorization failed", None, "t.v1")
    assert str(group).startswith("streamscore-worker is not allowed to Read group ")
    txn = from_error(WORKER, "Transactional Id authorization failed", None, None)
    assert "Write transactional id" in str(txn)


def test_a_wrong_password_is_named_without_the_password() -> None:
    got = not_authorized(WORKER, "SASL authentication error: Authentication failed", "Read", None)
    assert isinstance(got, NotAuthorized)
    assert "streamscore-worker could not authenticate" in str(got)
    assert "pw-never-shown-123" not in str(got)


@pytest.fixture
def failing() -> Iterator[list[Exception]]:
    """A command `fail` that raises what the test puts in the list, run through main()."""
    raised: list[Exception] = []

    @cli_module.cli.command("fail-for-test")
    def fail() -> None:
        raise raised[0]

    try:
        yield raised
    finally:
        cli_module.cli.commands.pop("fail-for-test", None)


def _main(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    # Asked again on a new connection, the cluster stays silent (no broker in unit tests).
    monkeypatch.setattr(cli_module, "check_credentials", lambda *_: None)
    for k, v in {
        "STREAMSCORE_KAFKA__SASL_USERNAME": "streamscore-api",
        "STREAMSCORE_KAFKA__SASL_PASSWORD": "pw-never-shown-123",
        "STREAMSCORE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
    }.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit) as done:
        cli_module._main(["fail-for-test"])
    return int(done.value.code or 0), capsys.readouterr().err


def test_cli_turns_a_refused_publish_into_one_line_and_exit_2(
    failing: list[Exception], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    failing.append(
        PublishError(
            "3 outputs were not delivered, first: KafkaError{code=TOPIC_AUTHORIZATION_FAILED,"
            'val=29,str="Broker: Topic authorization failed"}',
            topic="feed.labels.v1",
            stage="publish",
        )
    )
    code, err = _main(capsys, monkeypatch)
    assert code == 2
    assert err.strip().splitlines() == [
        "error: streamscore-api is not allowed to Write topic feed.labels.v1 "
        "(TOPIC_AUTHORIZATION_FAILED)"
    ]
    assert "pw-never-shown-123" not in err


def test_cli_keeps_exit_1_for_a_broker_that_is_only_unavailable(
    failing: list[Exception], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    failing.append(BrokerUnavailable("cannot list topics: Local: Broker transport failure"))
    code, err = _main(capsys, monkeypatch)
    assert code == 1
    assert err.startswith("error: cannot list topics") and "not allowed" not in err
