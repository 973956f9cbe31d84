"""Least privilege on the real brokers of `local up --cluster` (three KRaft nodes, SASL_SSL with
SCRAM-SHA-512, ACLs, allow.everyone.if.no.acl.found=false): each principal can do its job and is
refused what it must not do, and each refusal is the one line that names it."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType
from confluent_kafka.cimpl import NewTopic
from pydantic import SecretStr

from services.core.errors import BrokerUnavailable, NotAuthorized
from services.core.settings import Settings
from services.embedded import tls
from services.embedded.redis_cluster import passwords as redis_passwords
from services.kafka.config import admin_config, consumer_config, producer_config
from services.kafka.denied import not_authorized
from services.kafka.ranges import partitions_of
from services.kafka.replay import read_since
from services.kafka.topics import TopicSpec, dlq_name
from services.replay.plan import run_id
from streams.adapters import redis_client
from streams.api import create_app
from streams.api_keys import ApiKeys
from streams.probes import serve
from streams.replay import ensure_targets, execute, fence, group_of, resolve
from streams.runtime import replay_rescorer, scoring_worker, worker_probes
from streams.sdk import EventProducer
from streams.topics import topic_table
from tests.integration.cluster_env import Cluster, as_role, start_cluster
from tests.integration.pipeline_env import (
    Pipeline,
    cli_in_process,
    make_pipeline,
    run_cli,
    world_events,
)
from tests.integration.test_api import Server, call

pytestmark = [pytest.mark.integration, pytest.mark.kafka_only, pytest.mark.cluster]


@pytest.fixture(scope="module")
def cluster(broker_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from start_cluster(tmp_path_factory.mktemp("secure-cluster"))


def produce(settings: Settings, topic: str) -> KafkaError | None:
    """One record to ``topic``: None when acknowledged (acks=all, idempotent), else the error."""
    got: list[KafkaError | None] = []
    p = Producer(producer_config(settings, **{"message.timeout.ms": 20_000}))
    p.produce(topic, b"v", b"k", on_delivery=lambda err, _m: got.append(err))
    p.flush(30)
    assert got, f"no delivery report for {topic}"
    return got[0]


def consume_error(settings: Settings, topic: str, group: str, seconds: float = 20) -> KafkaError:
    """The error a consumer of ``topic`` in ``group`` gets (it must get one)."""
    c = Consumer(consumer_config(settings, group))
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            err = m.error() if m is not None else None
            if err is not None:
                return err
        raise AssertionError(f"no error consuming {topic} in {group}")
    finally:
        c.close()


def consume_one(settings: Settings, topic: str, group: str, seconds: float = 30) -> bytes:
    c = Consumer(consumer_config(settings, group))
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None:
                assert m.error() is None, m.error()
                return m.value() or b""
        raise AssertionError(f"nothing read from {topic}")
    finally:
        c.close()


def _body(url: str) -> str:
    """The body ``url`` answers, whatever its status (a /readyz that is not ready is a 503)."""
    try:
        with urllib.request.urlopen(url, timeout=30) as r:  # noqa: S310 (loopback)
            return r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.read().decode(errors="replace")


def refused(err: KafkaError | None, code: int) -> bool:
    return err is not None and err.code() == code


@pytest.mark.cluster_smoke
def test_topics_are_replicated_three_times_with_two_in_sync(cluster: Cluster) -> None:
    admin = AdminClient(admin_config(cluster.role("admin")))
    meta = admin.list_topics(timeout=30)
    assert len(meta.brokers) == 3
    ours = [t.name for t in topic_table(cluster.base.topics)]
    assert len(meta.topics[cluster.base.topics.events].partitions) == 6
    for name in ours:
        parts = meta.topics[name].partitions
        assert parts and all(len(p.replicas) == 3 for p in parts.values()), name
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in ours]
    for resource, future in admin.describe_configs(resources).items():
        assert future.result(30)["min.insync.replicas"].value == "2", resource


def test_worker(cluster: Cluster) -> None:
    w, t = cluster.role("worker"), cluster.base.topics
    assert produce(w, t.predictions) is None
    assert produce(w, dlq_name(t.events)) is None
    assert refused(produce(w, t.labels), KafkaError.TOPIC_AUTHORIZATION_FAILED)
    assert refused(produce(w, t.events), KafkaError.TOPIC_AUTHORIZATION_FAILED)
    # Reads its input in its own group; not the labels, not in another group.
    assert produce(cluster.role("api"), t.events) is None
    assert consume_one(w, t.events, w.worker.scoring_group) == b"v"
    err = consume_error(w, t.labels, w.worker.scoring_group)
    assert err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    err = consume_error(w, t.events, "someone-elses-group")
    assert err.code() == KafkaError.GROUP_AUTHORIZATION_FAILED
    line = not_authorized(w, str(err), "Read", "someone-elses-group")
    assert str(line) == (
        "streamscore-worker is not allowed to Read group someone-elses-group "
        "(GROUP_AUTHORIZATION_FAILED)"
    )


def test_api_publishes_and_cannot_consume(cluster: Cluster) -> None:
    a, t = cluster.role("api"), cluster.base.topics
    assert produce(a, t.events) is None
    assert refused(produce(a, t.predictions), KafkaError.TOPIC_AUTHORIZATION_FAILED)
    # A consumer needs a group, and the API has none: the group is what is refused first
    # (librdkafka asks for the group's coordinator even for an assign()).
    err = consume_error(a, t.events, f"streamscore-tail-{uuid.uuid4().hex[:6]}")
    assert err.code() == KafkaError.GROUP_AUTHORIZATION_FAILED, err


def test_replay_writes_only_sandboxes_in_its_own_transactions(cluster: Cluster) -> None:
    r, t = cluster.role("replay"), cluster.base.topics
    sandbox = f"sandbox.{uuid.uuid4().hex[:8]}.predictions"
    admin = AdminClient(admin_config(r))
    admin.create_topics([NewTopic(sandbox, 1, -1)])[sandbox].result(30)
    # Production topics: neither written nor created.
    assert refused(produce(r, t.predictions), KafkaError.TOPIC_AUTHORIZATION_FAILED)
    with pytest.raises(KafkaException, match="TOPIC_AUTHORIZATION_FAILED"):
        admin.create_topics([NewTopic("prod.stolen.v1", 1, -1)])["prod.stolen.v1"].result(30)
    # A transaction under its own prefix commits; one under another id is refused.
    ok = Producer(producer_config(r, **{"transactional.id": f"streamscore-replay-{uuid.uuid4()}"}))
    ok.init_transactions(30)
    ok.begin_transaction()
    ok.produce(sandbox, b"v", b"k")
    ok.commit_transaction(30)
    bad = Producer(producer_config(r, **{"transactional.id": f"streamscore-worker-{uuid.uuid4()}"}))
    with pytest.raises(KafkaException) as caught:
        bad.init_transactions(30)
    line = not_authorized(r, str(caught.value), "Write", "streamscore-worker-...")
    assert isinstance(line, NotAuthorized)
    assert "TRANSACTIONAL_ID_AUTHORIZATION_FAILED" in str(line)


def test_control_plane_reads_what_its_retrainer_reads_and_writes_requests_only(
    cluster: Cluster,
) -> None:
    c, t = cluster.role("control"), cluster.base.topics
    assert produce(c, t.retrain_requests) is None
    for topic in (t.events, t.predictions, t.labels):
        assert refused(produce(c, topic), KafkaError.TOPIC_AUTHORIZATION_FAILED), topic
    # The retrainer reads the window's events and labels (in a group of its own, assigned,
    # never committed) and the feature log (in the log reader's throwaway groups).
    admin = cluster.role("admin")
    for topic in (t.events, t.labels, t.feature_log):
        assert produce(admin, topic) is None
    for topic in (t.events, t.labels):
        own = f"streamscore-control-retrain-{uuid.uuid4().hex[:6]}"
        assert len(read_since(c, topic, 0, 10, 30, group=own)) >= 1, topic
    log = Consumer(consumer_config(c, f"streamscore-log-{uuid.uuid4().hex[:6]}"))
    try:
        log.assign([TopicPartition(t.feature_log, p, 0) for p in partitions_of(log, t.feature_log)])
        deadline, got = time.monotonic() + 20, None
        while got is None and time.monotonic() < deadline:
            got = log.poll(0.5)
    finally:
        log.close()
    assert got is not None and got.error() is None, got and got.error()
    # Refused: the predictions, a group not its own (the workers'), a replay's group.
    err = consume_error(c, t.predictions, f"streamscore-control-{uuid.uuid4().hex[:6]}")
    assert err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
    err = consume_error(c, t.events, cluster.base.worker.scoring_group)
    assert err.code() == KafkaError.GROUP_AUTHORIZATION_FAILED, err
    with pytest.raises(BrokerUnavailable, match="GROUP_AUTHORIZATION_FAILED"):
        read_since(c, t.events, 0, 10, 30)  # a replay group, by default


def test_cli_reads_but_cannot_create_or_write_outputs(cluster: Cluster) -> None:
    cli, t = cluster.role("cli"), cluster.base.topics
    assert produce(cli, t.labels) is None
    assert refused(produce(cli, t.predictions), KafkaError.TOPIC_AUTHORIZATION_FAILED)
    admin = AdminClient(admin_config(cli))
    with pytest.raises(KafkaException, match="TOPIC_AUTHORIZATION_FAILED"):
        admin.create_topics([NewTopic("ops.new.v1", 1, -1)])["ops.new.v1"].result(30)


# -- the smoke: every part once, each as its own principal -------------------------------------


@pytest.fixture(scope="module")
def secured(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """A feed pipeline on the cluster: its topics and key prefix are the ones the ACLs name;
    features loaded and a champion trained by the admin."""
    stack = cluster.stack()
    s = stack.settings
    yield from make_pipeline(
        stack,
        tmp_path_factory.mktemp("secured-feed"),
        domain="feed",
        topics=s.topics.model_dump(),
        redis=s.redis.model_dump(),
        worker={"scoring_group": s.worker.scoring_group},
    )


def _event_id(record: object) -> str:
    assert isinstance(record, dict), record
    return str(record["event_id"])


def _as(p: Pipeline, cluster: Cluster, role: str) -> Pipeline:
    """The pipeline run as ``role`` (its Kafka and Redis users, from its env file)."""
    return Pipeline(as_role(p.settings, role), p.world, p.trained, p.missing_users)


@pytest.mark.cluster_smoke
def test_every_part_runs_as_its_principal_and_no_secret_leaks(
    cluster: Cluster, secured: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    p, t = secured, secured.settings.topics
    outputs: list[str] = []
    events = world_events(p, 40, start=500)  # event times near now: the API checks them

    # The HTTP API, as streamscore-api, publishes the events (202 once acknowledged).
    api = _as(p, cluster, "api")
    keys = ApiKeys(redis_client(p.settings), p.settings.redis.key_prefix)
    _, token = keys.create("cluster-smoke", rate_per_second=100_000, burst=100_000)
    server = Server(create_app(api.settings))
    try:
        code, _, body = call(f"{server.url}/v1/events", {"events": events}, token)
        outputs.append(str(body))
        assert code == 202, body
        # What the API serves to anyone who can reach it: its metrics and its readiness.
        outputs += [_body(f"{server.url}/metrics"), _body(f"{server.url}/readyz")]
    finally:
        server.stop()
    # The SDK, as streamscore-api too.
    sdk_events = world_events(p, 10, start=600)
    with EventProducer(api.settings, producer_id="cluster-smoke") as sdk:
        sdk.send_many(sdk_events)
    events += sdk_events
    # Three values no decoder reads, put on the input by an operator (streamscore-cli).
    cli = _as(p, cluster, "cli")
    garbage = Producer(producer_config(cli.settings))
    for i in range(3):
        garbage.produce(t.events, key=f"bad-{i}".encode(), value=b"\x00not avro")
    assert garbage.flush(30) == 0

    # The worker, as streamscore-worker: every record on the input (the least-privilege tests
    # above left a few undecodable ones there too) a prediction or a dead letter.
    total = p.count("Interaction")
    assert total >= len(events) + 3
    as_worker = _as(p, cluster, "worker").settings
    worker = scoring_worker(as_worker)
    probes = serve(worker_probes(as_worker, worker), "127.0.0.1", 0)
    try:
        summary = worker.run(max_events=total, idle_timeout=90)
        probe_url = f"http://127.0.0.1:{probes.server_address[1]}"
        outputs += [_body(f"{probe_url}/metrics"), _body(f"{probe_url}/readyz")]
    finally:
        probes.shutdown()
        probes.server_close()
    assert "streamscore_messages_consumed_total" in outputs[-2]  # the bodies were read
    assert '"checks"' in outputs[-1]
    assert summary.consumed == total
    assert summary.predictions + summary.dead_letters == total
    assert summary.dead_letters == total - len(events)
    decode = p.codec("Prediction").decode_one
    records = [
        r
        for r in (decode(m.value()) for m in cli.read("Prediction", p.count("Prediction")))
        if isinstance(r, dict)
    ]
    assert {_event_id(r) for r in records} == {e["event_id"] for e in events}
    # Scored by the model with the features the worker read from the Redis Cluster as its own
    # user: none degraded, and only the world's featureless users fell back to defaults.
    assert not any(r["degraded"] for r in records)
    enriched = [r for r in records if r["user_id"] not in p.missing_users]
    assert enriched and all(r["missing_features"] == [] for r in enriched)

    # Replay, as streamscore-replay: the input range re-scored into a sandbox, in transactions.
    rp = _as(p, cluster, "replay")
    run = run_id({"smoke": uuid.uuid4().hex})
    tag = uuid.uuid4().hex[:8]
    sandbox, dlq = f"sandbox.{tag}.predictions", f"sandbox.{tag}.dlq"
    consumer = Consumer(consumer_config(rp.settings, group_of(run)))
    try:
        plan, _ = resolve(
            consumer,
            run,
            t.events,
            sandbox,
            from_ms=int(time.time() * 1000) - 3_600_000,
            model=p.trained.version,
            dead_letters=dlq,
        )
        ensure_targets(
            rp.settings,
            [
                TopicSpec(sandbox, 3, "string", "", "", "", ""),
                TopicSpec(dlq, 1, "string", "", "", "", ""),
            ],
        )
        outcome = execute(
            plan, consumer, fence(rp.settings, run), replay_rescorer(rp.settings, plan)
        )
    finally:
        consumer.close()
    assert outcome.read == total
    assert outcome.predictions + outcome.dead_letters == total

    # Three one-shot commands, as streamscore-cli.
    for args in (
        ("--json", "lag"),
        ("--json", "dlq", "inspect", "--timeout", "20"),
        ("tail", t.predictions, "-n", "3", "--from-beginning"),
    ):
        ran = cli_in_process(cli, *args)
        outputs += [ran.stdout, ran.stderr]
        assert ran.returncode == 0, (args, ran.stderr)
    lag, tailed = json.loads(outputs[-6]), outputs[-2]
    assert as_worker.worker.scoring_group in json.dumps(lag)
    assert len([line for line in tailed.splitlines() if line.strip()]) == 3, tailed
    # dlq inspect: the worker's dead letters (test_worker left one raw value there, no letter).
    assert json.loads(outputs[-4])["total"] == summary.dead_letters

    # dlq redrive, as streamscore-cli: every letter back on the input, once.
    before = p.count("Interaction")
    ran = cli_in_process(cli, "--json", "dlq", "redrive", "--execute", "--timeout", "20")
    outputs += [ran.stdout, ran.stderr]
    assert ran.returncode == 0, ran.stderr
    assert p.count("Interaction") == before + summary.dead_letters

    # `config show` as each role masks its passwords.
    for role in ("worker", "api", "replay", "cli", "control", "admin"):
        ran = cli_in_process(_as(p, cluster, role), "config", "show")
        assert ran.returncode == 0, ran.stderr
        outputs += [ran.stdout, ran.stderr]

    # No password, Kafka's or Redis's, in any output (the worker's and the API's /metrics and
    # /readyz bodies included), log record or log file of the run.
    secrets_ = [*cluster.passwords.values(), *redis_passwords(cluster.base).values()]
    files = [f for f in cluster.base.home.rglob("*.log") if f.is_file()]
    texts = [*outputs, caplog.text, *(f.read_text(errors="replace") for f in files)]
    assert len(files) >= 3
    leaks = [s for s in secrets_ for text in texts if s in text]
    assert leaks == []


def test_a_refused_command_is_one_line_and_exit_2(cluster: Cluster, secured: Pipeline) -> None:
    """The API's principal asks for the dead letters: one line naming it, the operation and the
    topic or group, exit 2, and its password nowhere in the output."""
    done = run_cli(as_role(secured.settings, "api"), "dlq", "inspect", "--timeout", "20")
    lines = [ln for ln in done.stderr.strip().splitlines() if ln]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: streamscore-api is not allowed to Read "), lines
    assert cluster.passwords["streamscore-api"] not in done.stdout + done.stderr


@pytest.mark.parametrize(("command", "operation"), [("produce", "Write"), ("tail", "Read")])
def test_a_refused_topic_is_named_with_the_operation(
    cluster: Cluster, secured: Pipeline, command: str, operation: str
) -> None:
    """The worker's principal writes or reads the labels topic: the refusal line names the
    operation and the topic (not a Read of a topic "not named by the broker", not "does not
    exist", exit 3)."""
    labels = secured.settings.topics.labels
    args = (labels, "--example") if command == "produce" else (labels, "-n", "1")
    done = run_cli(as_role(secured.settings, "worker"), command, *args)
    lines = [ln for ln in done.stderr.strip().splitlines() if ln]
    assert done.returncode == 2, done.stderr
    assert lines == [
        f"error: streamscore-worker is not allowed to {operation} topic {labels} "
        "(TOPIC_AUTHORIZATION_FAILED)"
    ]


@pytest.mark.parametrize("wrong", ["password", "ca"])
@pytest.mark.parametrize(
    ("role", "command"), [("cli", ("lag",)), ("control", ("worker", "control-plane"))]
)
def test_a_refused_ca_or_password_is_one_line_and_exit_2(
    cluster: Cluster,
    secured: Pipeline,
    tmp_path: Path,
    wrong: str,
    role: str,
    command: tuple[str, ...],
) -> None:
    """A one-shot command and the control plane, given a password the cluster refuses or a CA
    that did not sign the brokers' certificates: one line naming the principal and the cause,
    exit 2, within a minute (librdkafka and faust retry for ever); the password nowhere."""
    s = as_role(secured.settings, role)
    if wrong == "password":
        kafka = s.kafka.model_copy(update={"sasl_password": SecretStr("not-the-password")})
        cause = "(SASL_AUTHENTICATION_FAILED: SASL authentication error"
    else:
        other = tls.ensure_ca(tmp_path / "other-ca")
        kafka = s.kafka.model_copy(update={"ssl_ca_location": other})
        cause = "TLS handshake refused (SSL handshake failed: certificate verify failed"
    t0 = time.monotonic()
    done = run_cli(s.model_copy(update={"kafka": kafka}), *command)
    took = time.monotonic() - t0
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("error: ")]
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith(f"error: streamscore-{role} could not "), lines
    assert cause in lines[0], lines
    assert cluster.passwords[f"streamscore-{role}"] not in done.stdout + done.stderr
    assert took < 60, took
