"""`streamscore load bench`: the scoring worker against naive, bare and ceiling peers, in one run.

On a private embedded stack (its own home and ports, stopped afterwards), with the same
pre-filled events, Redis features and registered model for every implementation:

1. ``naive``, ``bare`` and ``ceiling`` (``load/bench_peers.py``), then the real worker
   (``streamscore worker scoring``, every feature on) in one and in two processes. Rounds are
   interleaved (A B C D E, A B C D E, ...); every figure is a median over rounds, and ratios are
   taken pair by pair within a round, so a machine that drifts between rounds cancels out.
2. ``--latency``: open-loop latency of one worker at fixed arrival rates, read back by a
   separate consumer (read time minus the event time stamped at send).
3. ``--soak S``: one worker at half its measured maximum for S seconds; RSS sampled, lag at the
   end.

Per run: events/s over the busy window (first message taken to last output acknowledged),
worker CPU µs/event over that window, broker + Redis CPU µs/event (from /proc), peak RSS. Every
run's outputs are counted (predictions + dead letters must equal its input) and a sample of its
scores is compared with the offline model's (LightGBM's own predictor).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import confluent_kafka
import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from services.codec.avro import AvroCodec
from services.codec.factory import codec_for, schemas_dir
from services.codec.manifest import MANIFEST_FILE, Manifest
from services.codec.schemas import load_schemas
from services.core.settings import Settings, to_env
from services.embedded import kafka_cluster
from services.embedded.stack import EmbeddedStack
from services.features.assemble import assemble, lookup_requests
from services.kafka.admin import ensure_topics
from services.kafka.config import admin_config, consumer_config, producer_config
from services.kafka.topics import TopicSpec
from services.scoring.registry import MlflowRegistry
from services.synthetic.world import World, strip_private
from services.training.pipeline import train_and_register
from streams.adapters import feature_spec, feature_store
from streams.topics import by_record, topic_table

# streamscore_eos: the worker with STREAMSCORE_WORKER__PROCESSING_GUARANTEE=exactly_once (one
# transaction per batch), to price the guarantee against the streamscore row of the same run.
# streamscore_nolog: the worker with STREAMSCORE_FEATURES__LOG=false, to price the feature
# log against the streamscore row of the same run.
IMPLS = (
    "naive",
    "bare",
    "ceiling",
    "streamscore",
    "streamscore_x2",
    "streamscore_eos",
    "streamscore_nolog",
)
PARTITIONS = 6
SAMPLE = 2000  # scores per run compared with the offline model
Say = Callable[[str], None]


@dataclass
class Run:
    impl: str
    round: int
    events: int
    seconds: float
    events_per_second: float
    worker_cpu_us: float  # worker process(es) CPU per event over the busy window
    infra_cpu_us: float  # broker + Redis CPU per event over the busy window
    broker_cpu_us: float
    redis_cpu_us: float
    max_rss_mb: float  # peak resident memory of the largest process
    rss_mb: float  # resident memory at the end of the run (steady state after the work)
    outputs: int  # predictions + dead letters read back
    max_score_diff: float  # against the offline model, on the sampled events found


@dataclass
class Env:
    settings: Settings  # the bench's: private home, ports, topics, model name
    workdir: Path
    events: int
    naive_events: int
    infra_pids: dict[str, int]
    peer: dict[str, Any]
    reference: dict[str, float]
    out_codec: AvroCodec
    counter: int = 0
    notes: list[str] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime (and reaped children's) of a process, from /proc; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@contextmanager
def private_stack(broker: str, say: Say) -> Iterator[tuple[Settings, dict[str, int]]]:
    """An embedded stack of the bench's own (home, ports), stopped on the way out."""
    home = Path(tempfile.mkdtemp(prefix="streamscore-bench-"))
    local = {
        "broker": broker,
        "kafka_port": free_port(),
        "kafka_controller_port": free_port(),
        "redis_port": free_port(),
        "start_timeout_seconds": 120.0,
    }
    s = Settings(home=home, local=local)
    stack = EmbeddedStack(s)
    try:
        status = stack.up(topic_table(s.topics))
        say(f"stack: {status.broker} on {status.bootstrap_servers}, Redis {status.redis_url}")
        pids = {c.name: c.pid for c in status.components if c.pid is not None}
        yield s, pids
    finally:
        stack.down()
        shutil.rmtree(home, ignore_errors=True)


def _free_block(offsets: tuple[int, ...]) -> int:
    """A base port p with every p + offset free on loopback."""
    for _ in range(200):
        base = free_port()
        if base + max(offsets) < 65000 and all(_port_free(base + o) for o in offsets):
            return base
    raise RuntimeError("no free block of ports on loopback")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@contextmanager
def private_cluster(say: Say) -> Iterator[tuple[Settings, dict[str, int]]]:
    """The secured cluster of `local up --cluster`, of the bench's own: three Kafka nodes
    (RF 3, min.insync.replicas=2, SASL_SSL with SCRAM-SHA-512, ACLs) and the Redis Cluster
    (TLS, users). The bench connects as the admin (a super user, so the ACL check is the
    authorizer's short cut for it); every producer writes with acks=all, as always."""
    home = Path(tempfile.mkdtemp(prefix="streamscore-bench-cluster-"))
    kafka_ports = tuple(off + n for off in (0, 10, 20) for n in range(3))
    redis_ports = tuple(off + n for off in (0, 10000) for n in range(6))
    local = {
        "cluster_port": _free_block(kafka_ports),
        "redis_cluster_port": _free_block(redis_ports),
        "start_timeout_seconds": 180.0,
    }
    s = Settings(home=home, local=local)
    stack = EmbeddedStack(s)
    try:
        t0 = time.monotonic()
        status = stack.up(topic_table(s.topics), cluster=True)
        say(
            f"cluster: {status.bootstrap_servers}, Redis {status.redis_url}, up in "
            f"{time.monotonic() - t0:.0f} s"
        )
        # Three brokers and six Redis nodes: their CPU is not sampled.
        yield kafka_cluster.as_role(s, "admin"), {}
    finally:
        stack.down()
        shutil.rmtree(home, ignore_errors=True)


def cluster_row(env: Env, rounds: int, step: Callable[[str], None]) -> dict[str, Any]:
    """The real worker (one process) on the cluster: its row of the throughput table."""
    runs = throughput(env, rounds, ("streamscore",), step)
    row: dict[str, Any] = summarise(runs)["rows"]["streamscore"]
    return row | {"runs_detail": [asdict(r) for r in runs]}


def _topic(name: str, record: str, partitions: int = PARTITIONS) -> TopicSpec:
    return TopicSpec(name, partitions, "string", record, "bench", "bench", "bench")


def add_topics(s: Settings, names: dict[str, str]) -> None:
    """Create topics (name -> record) and register their subjects in the bench's manifest."""
    records = load_schemas(schemas_dir(s))
    path = schemas_dir(s) / MANIFEST_FILE
    manifest = Manifest.load(path)
    for name, record in names.items():
        manifest, _, _ = manifest.register(f"{name}-value", records[record])
    manifest.dump(path)
    specs = [_topic(n, r) for n, r in names.items()]
    ensure_topics(AdminClient(admin_config(s)), specs, 30)


def prepare(base: Settings, pids: dict[str, int], events: int, naive: int, say: Say) -> Env:
    """Topics, schemas, features, a registered model, the pre-filled input, offline scores."""
    tag = uuid.uuid4().hex[:8]
    work = base.home / f"bench-{tag}"
    shutil.copytree(schemas_dir(base), work / "schemas")
    names = {
        k: f"bench.{k.replace('_', '-')}-{tag}.v1"
        for k in base.topics.model_dump()
        if not k.endswith("_record")  # record names, not topics
    }
    s = Settings(
        home=base.home,
        local=base.local,
        kafka=base.kafka,  # the secured cluster's credentials, when the stack is that
        topics=names,
        schema_registry={"schemas_dir": work / "schemas"},
        redis=base.redis.model_copy(update={"key_prefix": f"bench:{tag}:"}),
        model={"name": f"bench-{tag}"},
    )
    spec = feature_spec(s)
    store = feature_store(s, spec)
    add_topics(s, {t.name: t.value_record for t in topic_table(s.topics)})
    env = Env(s, work, events, naive, pids, {}, {}, codec_for(s, by_record(s.topics, "Prediction")))
    now = int(time.time() * 1000)
    world = World(spec, start_time_ms=now - 600_000, rate_per_second=max(events / 300, 100.0))
    for group in ("user", "item"):
        store.put_many(group, *world.features(group))
    say("training a LightGBM model on 30,000 historical events and registering it in MLflow")
    history = World(spec, start_time_ms=now - 3_600_000).events(30_000, start_index=10**8)
    labels = {x["event_id"]: x["engaged"] for x in world.labels(history)}
    train_and_register(MlflowRegistry(s), spec, store, history, labels)
    model = MlflowRegistry(s).load(alias="champion")
    model_file = work / "model.txt"
    model_file.write_text(model.model.model_to_string(), encoding="utf-8")

    evs = [strip_private(e) for e in world.events(events)]
    values = codec_for(s, by_record(s.topics, "Interaction")).encode_many(evs)
    say(f"pre-filling the input topic with {events:,} events")
    producer = Producer(producer_config(s, **{"linger.ms": 20}))
    for e, v in zip(evs, values, strict=True):
        _produce(producer, s.topics.events, v, e["user_id"].encode())
    producer.flush(120)
    # The oracle: LightGBM's own predictor (not the compiled model the worker serves), on rows
    # assembled from the store, for a sample of the events.
    sample = evs[:: max(1, len(evs) // SAMPLE)]
    matrix = assemble(spec, sample, store.get_many(lookup_requests(spec, sample)))
    offline = model.model.predict(matrix.values, num_threads=1)
    env.reference = {e["event_id"]: float(x) for e, x in zip(sample, offline, strict=True)}
    # Open-loop bodies: event_time (a 6-byte varint today) follows the event id.
    time_at = 5 + 1 + len(evs[0]["event_id"])
    env.peer = {
        "bootstrap": s.kafka_bootstrap,
        "redis_url": s.redis_url,
        "input_topic": s.topics.events,
        "key_prefix": s.redis.key_prefix,
        "spec_file": str(s.features.spec_path or schemas_dir(s) / "features.json"),
        "schemas_dir": str(work / "schemas"),
        "model_file": str(model_file),
        "model_name": model.name,
        "model_version": model.version,
        "output_schema_id": env.out_codec.schema_id,
        "bodies": [
            (e["user_id"].encode().hex(), v.hex(), time_at)
            for e, v in zip(evs[:5000], values[:5000], strict=False)
        ],
    }
    return env


def _produce(producer: Producer, topic: str, value: bytes, key: bytes) -> None:
    while True:
        try:
            producer.produce(topic, value, key)
            return
        except BufferError:
            producer.poll(0.1)


def _worker_settings(env: Env, input_topic: str, output_topic: str, group: str) -> Settings:
    """The real worker with every feature on: validation, DLQ, metrics, drift monitors, the
    prediction store, and rate limits (generous, so that they cost but never refuse)."""
    s = env.settings
    topics = s.topics.model_copy(update={"events": input_topic, "predictions": output_topic})
    return s.model_copy(
        update={
            "topics": topics,
            "worker": s.worker.model_copy(update={"scoring_group": group}),
            "metrics": s.metrics.model_copy(update={"enabled": True, "port": 0}),
            "rate_limit": s.rate_limit.model_copy(
                update={"enabled": True, "rate_per_second": 1e9, "burst": 10**9}
            ),
        }
    )


def launch_worker(
    settings: Settings, *args: str, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """The worker in a process of its own; its output to ``log`` when given (a live worker
    runs for many minutes, and pipes nobody reads would block it once full)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCORE_")}
    env |= to_env(settings)
    return _spawn(
        [
            sys.executable,
            "-m",
            "streams.cli",
            "--json",
            "--log-level",
            "WARNING",
            "worker",
            "scoring",
            *args,
        ],
        env,
        log,
    )


def _spawn(cmd: list[str], env: dict[str, str] | None, log: Path | None) -> subprocess.Popen[bytes]:
    """Our own process; stdout and stderr to pipes, or both to ``log`` (appended)."""
    if log is None:
        return subprocess.Popen(  # noqa: S603 (our own CLI and modules)
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    with log.open("ab") as out:  # the child has its own copy of the descriptor
        return subprocess.Popen(  # noqa: S603 (our own CLI and modules)
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _launch_peer(
    env: Env, impl: str, config: dict[str, Any], log: Path | None = None
) -> subprocess.Popen[bytes]:
    path = env.workdir / f"{impl}-{env.counter}.json"
    path.write_text(json.dumps(env.peer | config), encoding="utf-8")
    return _spawn([sys.executable, "-m", "load.bench_peers", impl, str(path)], None, log)


def _finish(procs: list[subprocess.Popen[bytes]], timeout: float) -> list[dict[str, Any]]:
    reports = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        text = out.decode()
        start = text.find("{")  # the report: one JSON object, on one line or indented
        if p.returncode != 0 or start < 0:
            tail = err.decode(errors="replace")[-2000:]
            raise RuntimeError(f"bench process exited {p.returncode}: {tail}")
        reports.append(json.loads(text[start:]))
    return reports


def run_one(env: Env, impl: str, rnd: int) -> Run:
    env.counter += 1
    out = f"bench.out-{env.counter}-{impl.replace('_', '-')}.v1"
    add_topics(env.settings, {out: "Prediction"})
    group = f"bench-{env.counter}-{impl}"
    target = env.naive_events if impl == "naive" else env.events
    dlq = f"{env.settings.topics.events}.dlq"
    # Transactions leave a commit marker per partition: count what a reader sees instead.
    count = _count_read if impl == "streamscore_eos" else _count
    dlq_before = count(env, dlq)
    sampler = InfraSampler(env.infra_pids)
    sampler.start()
    if impl.startswith("streamscore"):
        s = _worker_settings(env, env.settings.topics.events, out, group)
        if impl == "streamscore_nolog":
            s = s.model_copy(update={"features": s.features.model_copy(update={"log": False})})
        if impl == "streamscore_eos":
            eos = s.worker.model_copy(update={"processing_guarantee": "exactly_once"})
            s = s.model_copy(update={"worker": eos})
        if impl in ("streamscore", "streamscore_eos", "streamscore_nolog"):
            procs = [launch_worker(s, "--max-events", str(target))]
        else:  # two processes share the partitions; each stops when idle
            procs = [launch_worker(s, "--timeout", "3") for _ in range(2)]
    else:
        procs = [_launch_peer(env, impl, {"output_topic": out, "group": group, "events": target})]
    try:
        reports = _finish(procs, timeout=600)
    finally:
        sampler.stop()
    start = min(r["first_message_at"] for r in reports if r.get("first_message_at"))
    end = max(r["last_acked_at"] for r in reports if r.get("last_acked_at"))
    infra = {name: sampler.between(name, start, end) for name in env.infra_pids}
    outputs = count(env, out) + count(env, dlq) - dlq_before
    diff = _score_diff(env, out) if impl != "ceiling" else 0.0
    seconds = max(end - start, 1e-9)
    return Run(
        impl,
        rnd,
        target,
        round(seconds, 3),
        round(target / seconds, 1),
        round(sum(r["busy_cpu_seconds"] for r in reports) / target * 1e6, 2),
        round(sum(infra.values()) / target * 1e6, 2),
        round(infra.get("broker", 0.0) / target * 1e6, 2),
        round(infra.get("redis", 0.0) / target * 1e6, 2),
        round(max(r["max_rss_bytes"] for r in reports) / 2**20, 1),
        round(max(r.get("rss_bytes", 0) for r in reports) / 2**20, 1),
        outputs,
        diff,
    )


class InfraSampler:
    """CPU seconds of the broker and Redis, sampled every 50 ms, so that a run's share can be
    taken over its busy window (start-up, group joins and idle tails left out)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.samples: dict[str, list[tuple[float, float]]] = {n: [] for n in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            now = time.time()
            for name, pid in self.pids.items():
                self.samples[name].append((now, cpu_seconds(pid)))
            if self._stop.wait(0.05):
                return

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        now = time.time()
        for name, pid in self.pids.items():
            self.samples[name].append((now, cpu_seconds(pid)))

    def between(self, name: str, start: float, end: float) -> float:
        ts, cpu = zip(*self.samples[name], strict=True)
        return float(np.interp(end, ts, cpu) - np.interp(start, ts, cpu))


def _count(env: Env, topic: str) -> int:
    """Messages in ``topic`` (high minus low watermarks over its partitions)."""
    c = Consumer(consumer_config(env.settings, f"bench-count-{uuid.uuid4().hex[:6]}"))
    try:
        meta = c.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            return 0
        total = 0
        for p in meta.partitions:
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total
    finally:
        c.close()


def _count_read(env: Env, topic: str) -> int:
    """Messages a read_committed consumer reads in ``topic`` up to its end (transaction
    markers and aborted messages take offsets but are not read)."""
    c = Consumer(consumer_config(env.settings, f"bench-count-{uuid.uuid4().hex[:6]}"))
    try:
        meta = c.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            return 0
        ends = {
            p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in meta.partitions
        }
        todo = {p for p, end in ends.items() if end > 0}
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in todo])
        total, deadline = 0, time.monotonic() + 120
        while todo and time.monotonic() < deadline:
            total += sum(1 for m in c.consume(1000, 0.2) if m.error() is None)
            for tp in c.position([TopicPartition(topic, p) for p in list(todo)]):
                if tp.offset >= ends[tp.partition]:
                    todo.discard(tp.partition)
        if todo:
            raise RuntimeError(f"{topic}: partitions {sorted(todo)} not read to their end")
        return total
    finally:
        c.close()


def _score_diff(env: Env, topic: str) -> float:
    """Largest |score - offline score| over the sampled events found in ``topic``."""
    c = Consumer(consumer_config(env.settings, f"bench-read-{uuid.uuid4().hex[:6]}"))
    worst, found = 0.0, 0
    try:
        meta = c.list_topics(topic, timeout=10).topics[topic]
        ends = {}
        for p in meta.partitions:
            ends[p] = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
        c.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
        remaining = {p for p, end in ends.items() if end > 0}
        deadline = time.monotonic() + 120
        while remaining and time.monotonic() < deadline:
            batch = [m for m in c.consume(5000, 1.0) if m.error() is None]
            for m, rec in zip(
                batch, env.out_codec.decode_many([m.value() for m in batch]), strict=True
            ):
                part, offset = m.partition() or 0, m.offset() or 0
                if offset + 1 >= ends[part]:
                    remaining.discard(part)
                if isinstance(rec, dict) and rec["event_id"] in env.reference:
                    found += 1
                    worst = max(worst, abs(rec["score"] - env.reference[rec["event_id"]]))
    finally:
        c.close()
    return worst if found else float("nan")


def throughput(
    env: Env, rounds: int, impls: tuple[str, ...], tick: Callable[[str], None]
) -> list[Run]:
    runs = []
    for rnd in range(rounds):
        for impl in impls:
            tick(f"round {rnd + 1}/{rounds}: {impl}")
            runs.append(run_one(env, impl, rnd))
    return runs


def summarise(runs: list[Run]) -> dict[str, Any]:
    """Medians per implementation, and pairwise ratios within a round, then their median."""
    by_impl: dict[str, list[Run]] = {}
    for r in runs:
        by_impl.setdefault(r.impl, []).append(r)
    rows: dict[str, dict[str, Any]] = {
        impl: {
            "events_per_second": statistics.median(r.events_per_second for r in rs),
            "worker_cpu_us": statistics.median(r.worker_cpu_us for r in rs),
            "infra_cpu_us": statistics.median(r.infra_cpu_us for r in rs),
            "broker_cpu_us": statistics.median(r.broker_cpu_us for r in rs),
            "redis_cpu_us": statistics.median(r.redis_cpu_us for r in rs),
            "max_rss_mb": statistics.median(r.max_rss_mb for r in rs),
            "rss_mb": statistics.median(r.rss_mb for r in rs),
            "runs": len(rs),
            "all_accounted": all(r.outputs == r.events for r in rs),
            "max_score_diff": max(r.max_score_diff for r in rs),
        }
        for impl, rs in by_impl.items()
    }
    rate = {(r.impl, r.round): r.events_per_second for r in runs}
    rounds = sorted({r.round for r in runs})

    def ratio(a: str, b: str) -> float | None:
        pairs = [rate[(a, k)] / rate[(b, k)] for k in rounds if (a, k) in rate and (b, k) in rate]
        return round(statistics.median(pairs), 2) if pairs else None

    for impl, row in rows.items():
        row["vs_naive"] = ratio(impl, "naive")
        row["vs_bare"] = ratio(impl, "bare")
    ratios = {
        "streamscore_vs_bare": ratio("streamscore", "bare"),
        "streamscore_vs_naive": ratio("streamscore", "naive"),
        "two_processes_vs_one": ratio("streamscore_x2", "streamscore"),
        "feature_log_off_vs_on": ratio("streamscore_nolog", "streamscore"),
        "exactly_once_vs_at_least_once": ratio("streamscore_eos", "streamscore"),
    }
    return {"rows": rows, "ratios": ratios}


def _reader(env: Env, topic: str, stop: threading.Event, out: list[tuple[int, float]]) -> None:
    """Read predictions as they come: (event_time ms, read time s) per prediction."""
    c = Consumer(
        consumer_config(env.settings, f"bench-lat-{uuid.uuid4().hex[:6]}")
        | {"auto.offset.reset": "earliest"}
    )
    c.subscribe([topic])
    try:
        while not stop.is_set():
            # What has arrived, without waiting for 1000 (consume(n, t) waits for n or t).
            got = c.consume(1000, 0) or c.consume(1, 0.05)
            batch = [m for m in got if m.error() is None]
            if not batch:
                continue
            now = time.time()
            for rec in env.out_codec.decode_many([m.value() for m in batch]):
                if isinstance(rec, dict):
                    out.append((rec["event_time"], now))
    finally:
        c.close()


def _start_live_worker(env: Env, tag: str) -> tuple[subprocess.Popen[bytes], str, str]:
    """A long-running worker on a fresh, empty input topic; returns it once it has partitions."""
    env.counter += 1
    inp, out = f"bench.lat-in-{env.counter}-{tag}.v1", f"bench.lat-out-{env.counter}-{tag}.v1"
    add_topics(env.settings, {inp: "Interaction", out: "Prediction", f"{inp}.dlq": "DeadLetter"})
    proc = launch_worker(_worker_settings(env, inp, out, f"bench-live-{env.counter}"))
    return proc, inp, out


def _wait_scoring(
    env: Env,
    proc: subprocess.Popen[bytes],
    inp: str,
    samples: list[tuple[int, float]],
    timeout: float = 120,
) -> None:
    """Until the live worker has scored a first probe event (read back by the reader)."""
    key, body, _ = env.peer["bodies"][0]
    producer = Producer(producer_config(env.settings))
    producer.produce(inp, bytes.fromhex(body), bytes.fromhex(key))
    producer.flush(30)
    deadline = time.monotonic() + timeout
    while not samples:
        if proc.poll() is not None:
            err = proc.communicate()[1].decode(errors="replace")[-2000:]
            raise RuntimeError(f"the live worker exited {proc.returncode}: {err}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the live worker on {inp} scored nothing in {timeout:.0f} s")
        time.sleep(0.1)  # waiting for the reader thread, with a deadline


def latency(
    env: Env, rates: list[float], seconds: float, warmup: float, tick: Say
) -> list[dict[str, Any]]:
    proc, inp, out = _start_live_worker(env, "lat")
    rows = []
    samples: list[tuple[int, float]] = []
    stop = threading.Event()
    reader = threading.Thread(target=_reader, args=(env, out, stop, samples), daemon=True)
    try:
        reader.start()
        _wait_scoring(env, proc, inp, samples)
        for rate in rates:
            tick(f"latency at {rate:,.0f} events/s for {seconds:.0f} s")
            env.counter += 1
            t0 = time.time()
            sender = _launch_peer(
                env, "openloop", {"input_topic": inp, "rate": rate, "seconds": seconds}
            )
            (sent,) = _finish([sender], timeout=seconds + 120)
            _drain(samples, sent["events"], t0, timeout=30)
            window = [
                (read - et / 1000.0) * 1000.0
                for et, read in samples
                if et / 1000.0 >= t0 + warmup and et / 1000.0 <= t0 + seconds
            ]
            lat = np.asarray(window)
            rows.append(
                {
                    "rate": round(rate),
                    "achieved_rate": round(sent["events"] / seconds),
                    "samples": int(lat.size),
                    "p50_ms": round(float(np.percentile(lat, 50)), 2) if lat.size else None,
                    "p95_ms": round(float(np.percentile(lat, 95)), 2) if lat.size else None,
                    "p99_ms": round(float(np.percentile(lat, 99)), 2) if lat.size else None,
                }
            )
    finally:
        stop.set()
        proc.terminate()
        proc.communicate(timeout=60)
    return rows


def _drain(samples: list[tuple[int, float]], want: int, t0: float, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(1 for et, _ in samples if et / 1000.0 >= t0) >= want:
            return
        time.sleep(0.1)  # waiting for the reader thread to catch up, with a deadline


def soak(env: Env, rate: float, seconds: float, tick: Say) -> dict[str, Any]:
    proc, inp, out = _start_live_worker(env, "soak")
    group = f"bench-live-{env.counter}"
    rss: list[tuple[float, int]] = []
    samples: list[tuple[int, float]] = []
    stop = threading.Event()
    reader = threading.Thread(target=_reader, args=(env, out, stop, samples), daemon=True)
    try:
        reader.start()
        _wait_scoring(env, proc, inp, samples)
        env.counter += 1
        t0 = time.monotonic()
        sender = _launch_peer(
            env, "openloop", {"input_topic": inp, "rate": rate, "seconds": seconds}
        )
        while sender.poll() is None:
            rss.append((time.monotonic() - t0, rss_bytes(proc.pid)))
            tick(
                f"soak: {time.monotonic() - t0:.0f}/{seconds:.0f} s, worker RSS "
                f"{rss[-1][1] / 2**20:.0f} MB"
            )
            time.sleep(5)  # the sampling period, not synchronisation
        (sent,) = _finish([sender], timeout=120)
        lag = _lag_when_settled(env, inp, group, timeout=60)
    finally:
        stop.set()
        proc.terminate()
        proc.communicate(timeout=60)
    steady = [b for t, b in rss if t >= min(60.0, seconds / 4)] or [b for _, b in rss]
    first, last = steady[0], steady[-1]
    return {
        "rate": round(rate),
        "seconds": seconds,
        "sent": sent["events"],
        "rss_mb_start": round(first / 2**20, 1),
        "rss_mb_end": round(last / 2**20, 1),
        "rss_mb_max": round(max(steady) / 2**20, 1),
        "rss_growth_ratio": round(last / first - 1, 3) if first else None,
        "lag_at_end": lag,
        "rss_samples": [(round(t), round(b / 2**20, 1)) for t, b in rss],
    }


def _lag_when_settled(env: Env, topic: str, group: str, timeout: float) -> int:
    """The group's lag on ``topic`` once it reaches 0, or its value at the deadline."""
    c = Consumer(consumer_config(env.settings, group))
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        deadline = time.monotonic() + timeout
        while True:
            committed = c.committed(parts, timeout=10)
            lag = 0
            for tp in committed:
                high = c.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)[1]
                lag += high - max(tp.offset, 0)
            if lag == 0 or time.monotonic() > deadline:
                return lag
            time.sleep(0.5)  # polling the broker for a condition, with a deadline
    finally:
        c.close()


def machine() -> dict[str, Any]:

    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "confluent_kafka": version("confluent-kafka"),
        "librdkafka": confluent_kafka.libversion()[0],
        "fastavro": version("fastavro"),
        "cavro": version("cavro"),
        "lightgbm": version("lightgbm"),
        "lleaves": version("lleaves"),
        "llvmlite": version("llvmlite"),
        "numpy": version("numpy"),
        "redis_py": version("redis"),
    }


def cost(rows: dict[str, Any], price: float) -> dict[str, Any]:
    """CPU core-seconds per million events, and their price at ``price`` per core-hour."""
    out = {}
    for impl, row in rows.items():
        core_s = row["worker_cpu_us"] + row["infra_cpu_us"]  # µs/event = core-s per 1M
        out[impl] = {
            "core_seconds_per_million": round(core_s, 1),
            "cost_per_million": round(core_s / 3600 * price, 5),
        }
    return out


__all__ = [
    "Env",
    "Run",
    "asdict",
    "cost",
    "latency",
    "machine",
    "prepare",
    "private_stack",
    "soak",
    "summarise",
    "throughput",
]
