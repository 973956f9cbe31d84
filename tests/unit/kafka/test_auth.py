"""A CA or password the cluster refuses: readiness fails at the first refusal, a run of them
that lasts ``kafka.auth_failure_seconds`` stops the worker with one line naming the principal,
the brokers and the cause (never the password), and librdkafka's repeated lines are counted,
not written again. With a clock of the test's own; no broker."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from confluent_kafka import KafkaError, TopicPartition

from services.core import metrics
from services.core.errors import BrokerUnavailable, CredentialsRefused, NotAuthorized
from services.core.settings import Settings
from services.kafka import auth
from services.kafka.auth import AuthWatch, Failure, LibrdkafkaLog
from services.scoring.model import LoadedModel
from streams import cli as cli_module
from tests.unit.scoring.conftest import model, model_dir  # noqa: F401 (fixtures)
from tests.unit.worker.test_loop import TOPIC, _messages, _worker

WORKER = Settings(
    kafka={
        "sasl_username": "streamscore-worker",
        "sasl_password": "pw-never-shown-123",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "ssl_ca_location": "/etc/streamscore/ca.pem",
    }
)
# librdkafka's words for a CA that did not sign the brokers' certificates (one worker's log on
# the three-node cluster) and for a refused SCRAM login.
WRONG_CA = (
    "sasl_ssl://127.0.0.1:{port}/bootstrap: SSL handshake failed: error:0A000086:SSL routines::"
    "certificate verify failed: broker certificate could not be verified, verify that "
    "ssl.ca.location is correct (install ca-certificates package) (after {ms}ms in state "
    "SSL_HANDSHAKE)"
)
WRONG_PASSWORD = (
    "sasl_ssl://127.0.0.1:{port}/{node}: SASL authentication error: Authentication failed during "
    "authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512 (after {ms}ms "
    "in state AUTH_REQ, 1 identical error(s) suppressed)"
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _fail(watch: AuthWatch, text: str, cause: str) -> None:
    watch.failed(Failure.parse(text, cause))


def test_a_run_of_refusals_stops_after_the_set_time_with_one_line_naming_who_where_why() -> None:
    clock = Clock()
    watch = AuthWatch(clock)
    assert watch.problem() is None and watch.verdict(WORKER) is None
    _fail(watch, WRONG_CA.format(port=19093, ms=4), auth.TLS)
    assert watch.problem() is not None  # readiness: not ready at the first refusal
    for step in range(29):
        clock.now += 1.0
        _fail(watch, WRONG_CA.format(port=19094 + step % 2, ms=5), auth.TLS)
        assert watch.verdict(WORKER) is None  # under 30 s: it goes on
    clock.now += 1.0
    _fail(watch, WRONG_CA.format(port=19093, ms=3), auth.TLS)
    refused = watch.verdict(WORKER)
    assert isinstance(refused, NotAuthorized)
    assert str(refused) == (
        "streamscore-worker could not connect to 127.0.0.1:19093, 127.0.0.1:19094, "
        "127.0.0.1:19095 for 30 s: TLS handshake refused (SSL handshake failed: certificate "
        "verify failed: broker certificate could not be verified, verify that ssl.ca.location "
        "is correct (install ca-certificates package)): check that "
        "STREAMSCORE_KAFKA__SSL_CA_LOCATION (/etc/streamscore/ca.pem) holds the CA that signed "
        "the brokers' certificates"
    )


def test_a_refused_password_is_named_with_the_principal_and_never_shown() -> None:
    clock = Clock()
    watch = AuthWatch(clock)
    for step in range(31):
        _fail(watch, WRONG_PASSWORD.format(port=19093, node=1, ms=300 + step), auth.AUTHENTICATION)
        clock.now += 1.0
    line = str(watch.verdict(WORKER))
    assert line.startswith(
        "streamscore-worker could not authenticate to 127.0.0.1:19093 with SCRAM-SHA-512 for 30 s "
        "(SASL_AUTHENTICATION_FAILED: SASL authentication error: Authentication failed"
    )
    assert line.endswith(
        "with SASL mechanism SCRAM-SHA-512): check its user name and password "
        "(STREAMSCORE_KAFKA__SASL_USERNAME, STREAMSCORE_KAFKA__SASL_PASSWORD)"
    )  # librdkafka's timing and suppressed count left out
    assert "pw-never-shown-123" not in line and "\n" not in line


def test_anything_answered_ends_the_run_and_a_lone_refusal_never_stops() -> None:
    clock = Clock()
    watch = AuthWatch(clock)
    _fail(watch, WRONG_CA.format(port=1, ms=1), auth.TLS)
    clock.now += 20
    watch.answered()  # a message read, an assignment: the cluster takes these credentials
    assert watch.problem() is None
    _fail(watch, WRONG_CA.format(port=1, ms=1), auth.TLS)
    clock.now += 45  # one blip (a broker starting), then silence: no run to stop for
    assert watch.verdict(WORKER) is None
    clock.now += 20  # silence past the gap: the run is over, readiness back
    assert watch.problem() is None and watch.verdict(WORKER, seconds=0) is None


def test_librdkafkas_repeated_lines_are_counted_not_written_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """770 refused handshakes in 30 s (what one worker logged) become one WARNING line per
    broker, whichever client and thread logged them, as a log line or an error event; each is
    counted in streamscore_kafka_auth_failures_total{cause="tls"}; a minute later the next line
    says how many were left out."""
    clock = Clock()
    watch = AuthWatch(clock)
    log = LibrdkafkaLog(logging.getLogger("librdkafka-test"), watch, clock)
    counted = metrics.KAFKA_AUTH_FAILURES.labels(cause="tls")
    before = counted._value.get()
    caplog.set_level(logging.DEBUG, logger="librdkafka-test")
    for i in range(770):
        clock.now += 30 / 770
        text = WRONG_CA.format(port=19093 + i % 3, ms=i % 9)
        if i % 2:  # a log line: the thread first
            thread = f"[thrd:sasl_ssl://127.0.0.1:{19093 + i % 3}/bootstrap]: "
            log.log(logging.ERROR, "%s [%s] %s", "FAIL", f"rdkafka#consumer-{i % 4}", thread + text)
        else:  # an error event
            log.log(logging.ERROR, "%s [%s] %s", "ERROR", "", text)
    lines = [r for r in caplog.records if r.name == "librdkafka-test"]
    assert len(lines) == 3 and {r.levelno for r in lines} == {logging.WARNING}
    assert counted._value.get() == before + 770
    refused = str(watch.verdict(WORKER, seconds=29))  # 30 s of them: the stop is due
    assert refused.startswith(
        "streamscore-worker could not connect to 127.0.0.1:19093, 127.0.0.1:19094, "
        "127.0.0.1:19095 for 30 s: TLS handshake refused (SSL handshake failed: certificate"
    ), refused
    clock.now += 61
    log.log(
        logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#consumer-1", WRONG_CA.format(port=19093, ms=2)
    )
    assert caplog.records[-1].getMessage().endswith("(256 more like it in 60 s not shown)")


def test_error_events_are_watched_and_others_still_logged(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    watch = AuthWatch(Clock())
    monkeypatch.setattr(auth, "LIBRDKAFKA_LOG", LibrdkafkaLog(logging.getLogger("rk-test")))
    caplog.set_level(logging.DEBUG, logger="rk-test")
    watch.error_cb(KafkaError(KafkaError._SSL, WRONG_CA.format(port=9, ms=1)))
    assert watch.problem() is not None
    watch.error_cb(KafkaError(KafkaError._ALL_BROKERS_DOWN, "3/3 brokers are down"))
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.WARNING]
    assert caplog.records[1].getMessage().endswith("3/3 brokers are down")


# -- the worker and the one-shot commands ------------------------------------------------------


def test_the_worker_stops_once_the_run_has_lasted_and_an_assignment_ends_it(
    model: LoadedModel,  # noqa: F811
) -> None:
    """The worker's take (each turn of its loop) raises the refusal once it has lasted; an
    assignment or a message read ends a run."""
    worker, fake = _worker(model)
    clock = Clock()
    watch = worker.membership.auth = AuthWatch(clock)
    worker.membership.settings = WORKER
    refused = WRONG_PASSWORD.format(port=1, node=1, ms=1)
    _fail(watch, refused, auth.AUTHENTICATION)
    clock.now += 20
    worker.membership._on_assign(fake, [TopicPartition(TOPIC, 0)])  # type: ignore[arg-type]
    _fail(watch, refused, auth.AUTHENTICATION)
    clock.now += 20
    _fail(watch, refused, auth.AUTHENTICATION)
    assert worker.membership.take(10, 0.01) == []  # the assignment ended the first run
    fake.batches = [_messages(0, 0, 2)]
    assert len(worker.membership.take(10, 0.01)) == 2  # a message read ends the second
    _fail(watch, refused, auth.AUTHENTICATION)
    clock.now += 31
    _fail(watch, refused, auth.AUTHENTICATION)
    with pytest.raises(CredentialsRefused, match="SASL_AUTHENTICATION_FAILED"):
        worker.membership.take(10, 0.01)


@pytest.fixture
def failing() -> Iterator[list[Exception]]:
    raised: list[Exception] = []

    @cli_module.cli.command("fail-auth-for-test")
    def fail() -> None:
        raise raised[0]

    try:
        yield raised
    finally:
        cli_module.cli.commands.pop("fail-auth-for-test", None)


@pytest.mark.parametrize("asked", ["refused", "silent"])
def test_a_command_that_could_not_reach_a_secured_cluster_tells_a_refusal_from_an_outage(
    failing: list[Exception],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    asked: str,
) -> None:
    """Its own clients saw nothing (a blocking metadata call serves no callback): a new
    connection is asked; refused, the command exits 2 with the line; silent, 1 as before."""
    for k, v in {
        "STREAMSCORE_KAFKA__SASL_USERNAME": "streamscore-cli",
        "STREAMSCORE_KAFKA__SASL_PASSWORD": "pw-never-shown-123",
        "STREAMSCORE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "STREAMSCORE_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
    }.items():
        monkeypatch.setenv(k, v)

    def check(settings: Settings, seconds: float) -> NotAuthorized | None:
        assert seconds <= 5
        if asked == "silent":
            return None
        failure = Failure.parse(WRONG_PASSWORD.format(port=9, node=1, ms=1), auth.AUTHENTICATION)
        return auth.refusal(settings, failure, ["127.0.0.1:9"], 0)

    monkeypatch.setattr(cli_module, "check_credentials", check)
    failing.append(BrokerUnavailable("cannot list topics: Local: Broker transport failure"))
    with pytest.raises(SystemExit) as done:
        cli_module._main(["fail-auth-for-test"])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "pw-never-shown-123" not in err
    if asked == "refused":
        assert done.value.code == 2
        assert lines[0].startswith(
            "error: streamscore-cli could not authenticate to 127.0.0.1:9 with SCRAM-SHA-512 "
            "(SASL_AUTHENTICATION_FAILED: "
        )
    else:
        assert done.value.code == 1 and lines[0].startswith("error: cannot list topics")
