"""Faults around worker processes, the broker and the registry (long: `make faults`).

Workers run as processes of their own (`streamscore worker scoring`), killed and started as an
orchestrator would; events keep flowing meanwhile; every output is read back and accounted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from services.embedded.stack import BROKER, EmbeddedStack
from services.scoring.registry import MlflowRegistry
from streams.runtime import scoring_worker
from streams.topics import topic_table
from tests.faults.harness import (
    Sent,
    WorkerProcess,
    account,
    garbage_items,
    good_items,
    outputs_count,
    read_topic,
    record,
    send,
    wait_accounted,
    wait_for,
)
from tests.integration.conftest import Stack, free_port, isolated_settings
from tests.integration.pipeline_env import (
    Guarantee,
    Pipeline,
    committed_total,
    make_pipeline,
    with_guarantee,
    with_two_versions,
)

pytestmark = [pytest.mark.integration, pytest.mark.faults]
FAST = {"max_messages": 200, "timeout_seconds": 0.05}
# The process cases run under both guarantees: at_least_once scores an uncommitted tail again
# (duplicates), exactly_once shows none of them to a read_committed reader (the harness's).
GUARANTEES = pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])


def _duplicates(tally_duplicated: int, guarantee: Guarantee) -> str:
    """The observed column; under exactly_once a duplicate fails the case."""
    if guarantee == "exactly_once":
        assert tally_duplicated == 0, f"{tally_duplicated} duplicates under exactly_once"
    return f"{tally_duplicated} duplicates"


def _streaming(
    p: Pipeline, n: int, rate: float, start: int = 0
) -> tuple[threading.Thread, list[Sent]]:
    sent: list[Sent] = []
    thread = threading.Thread(
        target=lambda: sent.extend(send(p, good_items(p, n, start=start), rate=rate)), daemon=True
    )
    thread.start()
    return thread, sent


@GUARANTEES
def test_sigkill_mid_stream_and_restart(stack: Stack, tmp_path: Path, guarantee: Guarantee) -> None:
    """The killed instance is started again with its worker id (so, under exactly_once, its
    transactional id: the new process fences the old one and aborts its open batch)."""
    p = next(make_pipeline(stack, tmp_path, batch=FAST | {"commit_interval_seconds": 2}))
    p = with_guarantee(p, guarantee)
    same = {"STREAMSCORE_WORKER__WORKER_ID": "instance-0"}
    started = time.monotonic()
    first = WorkerProcess(p, tmp_path, "first", env=same)
    first.wait_assigned()
    flow, sent = _streaming(p, 6000, rate=1000)
    wait_for(lambda: outputs_count(p) >= 2000, 60, "2,000 outputs before the kill")
    first.kill()
    second = WorkerProcess(p, tmp_path, "second", env=same)
    flow.join(60)
    wait_accounted(p, sent, 120)
    assert second.stop() == 0
    tally = account(p, sent)
    assert tally.lost == 0 and tally.predicted == 6000
    record(
        f"SIGKILL a worker mid-stream, start it again ({guarantee})",
        "the uncommitted tail (at most one commit interval) is scored again: duplicates, no loss"
        if guarantee == "at_least_once"
        else "its open transaction is aborted: no duplicate, no loss",
        _duplicates(tally.duplicated, guarantee),
        tally,
        time.monotonic() - started,
    )


@GUARANTEES
def test_rebalance_under_load(stack: Stack, tmp_path: Path, guarantee: Guarantee) -> None:
    """A second worker joins, the first leaves (SIGTERM), a third joins, the second is killed;
    events flow all the while."""
    p = with_guarantee(next(make_pipeline(stack, tmp_path, batch=FAST)), guarantee)
    started = time.monotonic()
    a = WorkerProcess(p, tmp_path, "a")
    a.wait_assigned()
    flow, sent = _streaming(p, 12_000, rate=600)
    wait_for(lambda: outputs_count(p) >= 1500, 60, "a running start")
    b = WorkerProcess(p, tmp_path, "b")
    b.wait_assigned()
    assert a.stop() == 0  # leaves: commits what is acknowledged, revokes cleanly
    c = WorkerProcess(p, tmp_path, "c")
    c.wait_assigned()
    wait_for(lambda: outputs_count(p) >= 7000, 90, "work after the third joined")
    b.kill()
    flow.join(60)
    wait_accounted(p, sent, 180)
    assert c.stop() == 0
    tally = account(p, sent)
    assert tally.lost == 0 and tally.predicted == 12_000
    record(
        f"rebalance under load: join, leave (SIGTERM), join, SIGKILL, at 600 events/s "
        f"({guarantee})",
        "every event scored; duplicates only from the killed worker's uncommitted tail"
        if guarantee == "at_least_once"
        else "every event scored once (the killed worker's open batch aborted)",
        _duplicates(tally.duplicated, guarantee),
        tally,
        time.monotonic() - started,
    )


@pytest.fixture
def own_stack(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A broker of this test's own (the same kind as the session's), to restart."""
    home = tmp_path_factory.mktemp("restartable")
    settings = isolated_settings(home)
    embedded = EmbeddedStack(settings)
    status = embedded.up(topic_table(settings.topics), stack.kind)  # type: ignore[arg-type]
    try:
        yield Stack(stack.kind, settings, status)
    finally:
        embedded.down()


@GUARANTEES
@pytest.mark.timeout(600)  # exactly_once may add a worker stop (45 s) and a start
def test_broker_restart_while_the_worker_runs(
    own_stack: Stack, tmp_path: Path, guarantee: Guarantee
) -> None:
    if own_stack.kind != "kafka":
        pytest.skip("tansu keeps no data across a restart here; the case is Apache Kafka's")
    p = with_guarantee(next(make_pipeline(own_stack, tmp_path, batch=FAST)), guarantee)
    started = time.monotonic()
    same = {"STREAMSCORE_WORKER__WORKER_ID": "instance-0"}
    worker = WorkerProcess(p, tmp_path, "w", env=same)
    worker.wait_assigned()
    sent = send(p, good_items(p, 2000, start=0))
    # Committed before the broker stops: what Kafka keeps across the restart is then on test.
    wait_for(lambda: committed_total(p) >= 2000, 60, "the first 2,000 committed")
    embedded = EmbeddedStack(own_stack.settings)
    embedded.down(only=(BROKER,))
    time.sleep(5)  # the fault itself: the broker stays down for five seconds
    embedded.up(topic_table(own_stack.settings.topics), own_stack.kind)  # type: ignore[arg-type]
    sent += send(p, good_items(p, 2000, start=2000))
    restarted = ""
    if guarantee == "exactly_once":
        # librdkafka (2.16) can wait for ever in send_offsets_to_transaction on the group
        # coordinator it cached before the restart; the worker then stops with one line, and
        # is started again as an orchestrator would (same id: it aborts the open batch).
        wait_for(
            lambda: worker.proc.poll() is not None or committed_total(p) >= 4000,
            180,
            "everything committed, or the worker stopped",
        )
        if worker.proc.poll() is not None:
            assert "did not return from the transaction's" in worker.text(), worker.text()[-2000:]
            worker = WorkerProcess(p, tmp_path, "w-again", env=same)
            restarted = "the client hung in a transaction call: the worker stopped, started again"
    wait_accounted(p, sent, 180)
    assert worker.proc.poll() is None, worker.text()[-2000:]
    log = worker.text()
    assert worker.stop() == 0
    tally = account(p, sent)
    assert tally.lost == 0 and tally.predicted == 4000
    record(
        f"broker stopped 5 s and restarted (Apache Kafka keeps its data) ({guarantee})",
        "the worker reconnects and goes on; commits refused meanwhile are routine",
        f"{_duplicates(tally.duplicated, guarantee)}; "
        + (restarted or "the same worker process scored everything")
        + (
            " (its consumer was replaced: it had not rejoined the group)"
            if "replacing the consumer" in log
            else ""
        ),
        tally,
        time.monotonic() - started,
    )


def _cli(p: Pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCORE_")} | p.env()
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env=env | {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_corrupted_champion_artifact(stack: Stack, tmp_path: Path) -> None:
    """v2 was promoted over v1; then v2's stored model is changed on disk. A worker started
    afterwards refuses v2 and serves v1 (the previous champion), and counts the fallback."""
    p = with_two_versions(
        next(make_pipeline(stack, tmp_path, batch=FAST)), f"corrupt-{tmp_path.name[-20:]}"
    )
    assert _cli(p, "models", "promote", "2", "-m", "fault kit").returncode == 0
    started = time.monotonic()
    source = MlflowRegistry(p.settings).client.get_model_version(p.settings.model.name, "2")
    model_txt = Path(urlparse(str(source.source)).path) / "model.txt"
    model_txt.write_text(model_txt.read_text().replace("leaf_value=", "leaf_value=3", 1))
    sent = send(p, good_items(p, 500, start=0))
    summary = scoring_worker(p.settings).run(max_events=500, idle_timeout=30)
    tally = account(p, sent)
    decoded = [p.codec("Prediction").decode_one(m.value()) for m in read_topic(p, "Prediction")]
    assert {d["model_version"] for d in decoded if isinstance(d, dict)} == {"1"}
    assert summary.predictions == 500 and tally.lost == 0
    record(
        "the champion's stored artifact corrupted, worker (re)started",
        "the corrupted version is refused (sha256); the previous champion serves",
        "v2 refused, v1 served every event",
        tally,
        time.monotonic() - started,
    )


def test_registry_down_during_a_promotion(stack: Stack, tmp_path: Path) -> None:
    """An MLflow tracking server goes away while v1 serves. `models promote 2` fails with a
    clear error and changes nothing; the worker keeps v1. Back up, the promotion lands and the
    worker swaps to v2."""
    import urllib.request

    port = free_port()
    argv = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination", str(tmp_path / "server-artifacts"), "--workers", "1",
    ]  # fmt: skip

    def server_up() -> subprocess.Popen[bytes]:
        with (tmp_path / "mlflow-server.log").open("ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)

        def answers() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                    return True
            except OSError:
                return False

        wait_for(answers, 120, "the MLflow server")
        return proc

    def server_down(proc: subprocess.Popen[bytes]) -> None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:  # gunicorn's workers slow to stop on a loaded host
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)

    server = server_up()
    try:
        base = next(make_pipeline(stack, tmp_path, batch=FAST))
        remote = base.settings.model.model_copy(
            update={"tracking_uri": f"http://127.0.0.1:{port}", "poll_seconds": 2.0}
        )
        p = with_two_versions(
            Pipeline(
                base.settings.model_copy(update={"model": remote}),
                base.world,
                base.trained,
                base.missing_users,
            ),
            f"outage-{tmp_path.name[-20:]}",
        )
        started = time.monotonic()
        worker = WorkerProcess(p, tmp_path, "w", env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})
        worker.wait_assigned()
        sent = send(p, good_items(p, 500, start=0))
        wait_for(lambda: outputs_count(p) >= 500, 60, "v1 serving")
        server_down(server)
        refused = _cli(p, "models", "promote", "2", "-m", "during an outage")
        assert refused.returncode != 0
        assert "unavailable" in (refused.stderr + refused.stdout).lower()
        sent += send(p, good_items(p, 500, start=500))
        wait_for(lambda: outputs_count(p) >= 1000, 60, "scoring during the outage")
        wait_for(lambda: "model registry unavailable" in worker.text(), 30, "the outage noticed")
        server = server_up()
        assert _cli(p, "models", "promote", "2", "-m", "after the outage").returncode == 0
        wait_for(lambda: "swapped to" in worker.text(), 60, "the swap to v2")
        sent += send(p, good_items(p, 500, start=1000))
        wait_accounted(p, sent, 60)
        assert worker.stop() == 0
        tally = account(p, sent)
        decoded = [p.codec("Prediction").decode_one(m.value()) for m in read_topic(p, "Prediction")]
        early = {s.event_id for s in sent[:1000]}
        by_version = {
            d["model_version"] for d in decoded if isinstance(d, dict) and d["event_id"] in early
        }
        assert by_version == {"1"} and tally.lost == 0 and tally.predicted == 1500
        assert any(isinstance(d, dict) and d["model_version"] == "2" for d in decoded)
        record(
            "MLflow tracking server down during a promotion",
            "the promotion fails with a clear error and changes nothing; workers keep serving",
            "promote exited non-zero; v1 served through the outage; v2 after it came back",
            tally,
            time.monotonic() - started,
        )
    finally:
        if server.poll() is None:
            server_down(server)


def test_dead_letter_topic_deleted(stack: Stack, tmp_path: Path) -> None:
    """The dead-letter topic is gone (auto-creation is off): the worker stops with a clear
    error and commits nothing past the dead letter it could not write. Recreated, a restart
    writes it."""
    from services.core.errors import PublishError
    from services.kafka.admin import ensure_topics

    p = next(make_pipeline(stack, tmp_path, batch=FAST))
    dlq = f"{p.settings.topics.events}.dlq"
    admin = stack.admin()
    for future in admin.delete_topics([dlq]).values():
        future.result(30)
    started = time.monotonic()
    sent = send(p, good_items(p, 200, start=0) + garbage_items(5) + good_items(p, 200, start=200))
    with pytest.raises(PublishError) as raised:
        scoring_worker(p.settings).run(max_events=405, idle_timeout=120)
    stopped = raised.value
    assert stopped.stage == "publish", stopped
    # Nothing committed past an input whose dead letter was not written.
    from confluent_kafka import Consumer, TopicPartition

    from services.kafka.config import consumer_config

    probe = Consumer(consumer_config(p.settings, p.settings.worker.scoring_group))
    topic = p.settings.topics.events
    committed = {
        tp.partition: tp.offset
        for tp in probe.committed([TopicPartition(topic, s.partition) for s in sent], timeout=10)
    }
    probe.close()
    for s in sent[200:205]:  # the garbage
        assert committed[s.partition] <= s.offset, (s, committed)
    wait_for(
        lambda: ensure_topics(admin, topic_table(p.settings.topics), 30) is not None, 60, "recreate"
    )
    scoring_worker(p.settings).run(max_events=405, idle_timeout=30)
    tally = account(p, sent)
    assert tally.lost == 0 and tally.dead_lettered == 5
    record(
        "dead-letter topic deleted (auto-creation off)",
        "the worker stops with PublishError and commits nothing past it; after the topic is "
        "recreated a restart writes the dead letters",
        "stopped, then every input accounted after the restart",
        tally,
        time.monotonic() - started,
    )
    # Checked last, so that the recovery above is checked whatever this says: the error is the
    # dead letters' own and names the topic that could not be written, not another output's or
    # the input's. (Today it carries the input partition and only "Unknown topic or partition".)
    assert stopped.topic == dlq and dlq in str(stopped), repr(stopped)
