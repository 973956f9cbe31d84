"""The peers `streamscore load bench` runs against the real worker, each in its own process.

Written independently of streamscore's services (their own decoding, Redis reads, row assembly
and encoding; only the Avro schemas, the feature spec file and the model file are shared), so
that equal scores are evidence and not a tautology:

- ``naive``: one event at a time: poll one message, decode, two Redis GETs, predict one row,
  encode, produce.
- ``bare``: a hand-written micro-batch loop: consume(1000), decode, one MGET, one predict,
  encode, produce; commit every second. No validation, metrics, DLQ or drift.
- ``ceiling``: consume and produce the same bytes: the cost of Kafka alone.
- ``openloop``: not a peer: the open-loop producer of the latency runs (a fixed arrival rate).

    python -m load.bench_peers IMPL CONFIG.json

Each prints one JSON line: events, the busy window (first message, last acknowledgement), CPU
seconds over it and peak RSS.
"""

from __future__ import annotations

import hashlib
import io
import json
import signal
import struct
import sys
import time
from pathlib import Path
from typing import Any

import fastavro
import lightgbm as lgb
import numpy as np
import redis
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

SURFACES = ("UNKNOWN", "HOME_FEED", "EXPLORE", "PROFILE", "SEARCH", "NOTIFICATIONS")
DEVICES = ("UNKNOWN", "IOS", "ANDROID", "WEB")


class Peer:
    """What every peer shares: clients, schemas, the model and the hand-written row layout."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.consumer = Consumer(  # the open-loop producer consumes nothing: a throwaway group
            {
                "bootstrap.servers": cfg["bootstrap"],
                "group.id": cfg.get("group", "bench-openloop"),
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 10,
                # Longer for bare in --capacity: above its longest pause (SIGSTOP).
                "session.timeout.ms": cfg.get("session_timeout_ms", 6000),
                "heartbeat.interval.ms": 1000,
            }
        )
        self.producer = Producer(producer_settings(cfg))
        self.acked = 0
        self.last_acked_at = 0.0

    def load_scoring(self) -> None:
        cfg = self.cfg
        schemas = Path(cfg["schemas_dir"])
        self.reader = fastavro.parse_schema(
            _no_logical(json.loads((schemas / "Interaction.avsc").read_text()))
        )
        self.writer = fastavro.parse_schema(
            _no_logical(json.loads((schemas / "Prediction.avsc").read_text()))
        )
        self.out_header = b"\x00" + struct.pack(">I", cfg["output_schema_id"])
        self.booster = lgb.Booster(model_file=cfg["model_file"])
        spec = json.loads(Path(cfg["spec_file"]).read_text())
        self.defaults = {
            g["name"]: np.array([f["default"] for f in g["features"]], dtype=np.float32)
            for g in spec["groups"]
        }
        self.prefix = f"{cfg['key_prefix']}feat:{spec['version']}:"
        self.redis = redis.Redis.from_url(cfg["redis_url"])

    def delivered(self, err: Any, _msg: Any) -> None:
        if err is not None:
            raise SystemExit(f"delivery failed: {err}")
        self.acked += 1
        self.last_acked_at = time.time()

    def decode(self, value: bytes) -> dict[str, Any]:
        stream = io.BytesIO(value)
        stream.seek(5)
        record: dict[str, Any] = fastavro.schemaless_reader(stream, self.reader, None)
        return record

    def row(self, e: dict[str, Any], user: bytes | None, item: bytes | None) -> list[float]:
        u = np.frombuffer(user, np.float32) if user else self.defaults["user"]
        i = np.frombuffer(item, np.float32) if item else self.defaults["item"]
        rtt = e.get("network_rtt_ms")
        return [
            *u.tolist(),
            *i.tolist(),
            e["position"],
            e["session_depth"],
            e["item_age_hours"],
            e["user_tenure_days"],
            float("nan") if rtt is None else rtt,
            float(e["is_following_author"]),
            float(e["is_video"]),
            float(e.get("is_sponsored", False)),
            SURFACES.index(e["surface"]) if e["surface"] in SURFACES else 0,
            DEVICES.index(e["device"]) if e["device"] in DEVICES else 0,
            (e["event_time"] // 3_600_000) % 24,
        ]

    def encode(self, e: dict[str, Any], score: float, now_ms: int, missing: list[str]) -> bytes:
        version = self.cfg["model_version"]
        buf = io.BytesIO()
        fastavro.schemaless_writer(
            buf,
            self.writer,
            {
                "prediction_id": hashlib.sha256(
                    f"{e['event_id']}\x1f{version}".encode()
                ).hexdigest()[:32],
                "event_id": e["event_id"],
                "user_id": e["user_id"],
                "item_id": e["item_id"],
                "score": score,
                "model_name": self.cfg["model_name"],
                "model_version": version,
                "variant": "champion",
                "degraded": False,
                "missing_features": missing,
                "event_time": e["event_time"],
                "scored_at": now_ms,
            },
        )
        return self.out_header + buf.getvalue()

    def report(self, events: int, first: float, cpu0: float, **extra: Any) -> None:
        print(
            json.dumps(
                extra
                | {
                    "events": events,
                    "first_message_at": first,
                    "last_acked_at": self.last_acked_at,
                    "busy_cpu_seconds": time.process_time() - cpu0,
                    "max_rss_bytes": status_bytes("VmHWM:"),
                    "rss_bytes": status_bytes("VmRSS:"),
                }
            ),
            flush=True,
        )


def producer_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """The peers' producer. Whatever runs live (the open-loop source, bare in --capacity)
    lingers 1 ms, as the worker's producer does (STREAMSCORE_KAFKA__LINGER_MS): a longer linger
    would be latency that the worker does not pay, and the open-loop source at linger 0 paid a
    broker request per event (more CPU than the implementation under test spent on it).
    Backlog runs linger 5 ms.

    >>> producer_settings({"bootstrap": "b:9092", "live": True})["linger.ms"]
    1
    """
    live = "rate" in cfg or bool(cfg.get("live"))
    return {
        "bootstrap.servers": cfg["bootstrap"],
        "linger.ms": 1 if live else 5,
        "acks": "all",
        "enable.idempotence": True,
        "compression.type": "lz4",
        "socket.nagle.disable": True,
    }


def final_commit(consumer: Consumer) -> None:
    """The last synchronous commit; nothing left to commit (the periodic asynchronous commit
    already covered every offset) is no failure."""
    try:
        consumer.commit(asynchronous=False)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError._NO_OFFSET:
            raise


def status_bytes(field: str) -> int:
    """VmRSS (now) or VmHWM (this process's own peak; ru_maxrss carries the parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    return 0


def _no_logical(schema: Any) -> Any:
    """Timestamps as plain longs (epoch ms), as streamscore's codec reads them."""
    if isinstance(schema, dict):
        if schema.get("logicalType") in ("timestamp-millis", "timestamp-micros"):
            return {k: v for k, v in schema.items() if k != "logicalType"}
        return {k: _no_logical(v) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_no_logical(s) for s in schema]
    return schema


def run_naive(p: Peer) -> None:
    p.load_scoring()
    target, out = p.cfg["events"], p.cfg["output_topic"]
    p.consumer.subscribe([p.cfg["input_topic"]])
    done, first, cpu0, next_commit = 0, 0.0, 0.0, 0.0
    while done < target:
        m = p.consumer.poll(1.0)
        if m is None or m.error():
            continue
        if not first:
            first, cpu0 = time.time(), time.process_time()
        e = p.decode(m.value())  # type: ignore[arg-type]
        user = p.redis.get(f"{p.prefix}user:{e['user_id']}")
        item = p.redis.get(f"{p.prefix}item:{e['item_id']}")
        missing = [g for g, b in (("user", user), ("item", item)) if b is None]
        score = float(p.booster.predict(np.array([p.row(e, user, item)]), num_threads=1)[0])  # type: ignore[arg-type]
        p.producer.produce(
            out,
            p.encode(e, score, int(time.time() * 1000), missing),
            m.key(),
            on_delivery=p.delivered,
        )
        p.producer.poll(0)
        done += 1
        if time.monotonic() > next_commit:
            p.consumer.commit(asynchronous=True)
            next_commit = time.monotonic() + 1
    p.producer.flush(60)
    final_commit(p.consumer)
    p.report(done, first, cpu0)
    p.consumer.close()


def run_bare(p: Peer) -> None:
    """The hand-written loop. ``live``: it runs until SIGTERM and takes what has arrived (else
    waits for one message), as a latency-minded loop would; otherwise it reads ``events``."""
    p.load_scoring()
    live = bool(p.cfg.get("live"))
    target, out = (2**62 if live else p.cfg["events"]), p.cfg["output_topic"]
    stopping: list[int] = []
    if live:
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    p.consumer.subscribe([p.cfg["input_topic"]])
    done, first, cpu0, next_commit = 0, 0.0, 0.0, 0.0
    uncommitted = False
    while done < target and not stopping:
        if live:
            got = p.consumer.consume(1000, 0) or p.consumer.consume(1, 0.1)
        else:
            got = p.consumer.consume(1000, 0.1)
        batch = [m for m in got if not m.error()]
        if not batch:
            if uncommitted and live and time.monotonic() > next_commit:
                # Idle: commit the last batch too (the worker does), so that the harness sees
                # lag 0 before it stops this process between probes.
                p.consumer.commit(asynchronous=True)
                uncommitted, next_commit = False, time.monotonic() + 1
            continue
        if not first:
            first, cpu0 = time.time(), time.process_time()
        events = [p.decode(m.value()) for m in batch]  # type: ignore[arg-type]
        keys = [f"{p.prefix}user:{e['user_id']}" for e in events]
        keys += [f"{p.prefix}item:{e['item_id']}" for e in events]
        blobs = p.redis.mget(keys)
        n = len(events)
        X = np.array([p.row(e, blobs[i], blobs[n + i]) for i, e in enumerate(events)])  # type: ignore[arg-type]
        scores = p.booster.predict(X, num_threads=1)
        now = int(time.time() * 1000)
        for i, (m, e) in enumerate(zip(batch, events, strict=True)):
            missing = [g for g, b in (("user", blobs[i]), ("item", blobs[n + i])) if b is None]
            p.producer.produce(
                out, p.encode(e, float(scores[i]), now, missing), m.key(), on_delivery=p.delivered
            )
        p.producer.poll(0)
        done += n
        uncommitted = True
        if time.monotonic() > next_commit:
            p.consumer.commit(asynchronous=True)
            uncommitted, next_commit = False, time.monotonic() + 1
    p.producer.flush(60)
    final_commit(p.consumer)
    p.report(done, first, cpu0)
    p.consumer.close()


def run_ceiling(p: Peer) -> None:
    target, out = p.cfg["events"], p.cfg["output_topic"]
    p.consumer.subscribe([p.cfg["input_topic"]])
    done, first, cpu0, next_commit = 0, 0.0, 0.0, 0.0
    while done < target:
        batch = [m for m in p.consumer.consume(1000, 0.1) if not m.error()]
        if not batch:
            continue
        if not first:
            first, cpu0 = time.time(), time.process_time()
        for m in batch:
            p.producer.produce(out, m.value(), m.key(), on_delivery=p.delivered)
        p.producer.poll(0)
        done += len(batch)
        if time.monotonic() > next_commit:
            p.consumer.commit(asynchronous=True)
            next_commit = time.monotonic() + 1
    p.producer.flush(60)
    final_commit(p.consumer)
    p.report(done, first, cpu0)
    p.consumer.close()


# The generator's shortest sleep: above 1,000 events/s it wakes each millisecond and sends
# what has fallen due since (a batch), instead of spinning; below, it sleeps until the next due.
GENERATOR_TICK = 0.001


def run_openloop(p: Peer) -> None:
    """Produce pre-encoded events at ``rate`` per second for ``seconds``. Event i is due at
    start + i / rate and carries that due time as its event_time, so a reader's latency (read
    time minus event_time) includes any delay of the generator itself: a stalled or late send
    cannot hide a stall of the system (no coordinated omission). The generator sleeps until
    the next event is due (at least 1 ms), sends through a producer that lingers 1 ms (batches,
    not a broker request per event), and reports how far behind schedule it sent (p99, max)."""
    cfg = p.cfg
    bodies: list[tuple[bytes, bytes, int]] = [
        (bytes.fromhex(k), bytes.fromhex(v), t) for k, v, t in cfg["bodies"]
    ]
    rate, seconds, topic = float(cfg["rate"]), float(cfg["seconds"]), cfg["input_topic"]
    total = max(1, round(rate * seconds))
    sends: list[tuple[float, int, int]] = []  # (time, first, end) per wake-up that sent
    start, cpu0, sent = time.time(), time.process_time(), 0
    while sent < total:
        due = min(total, due_count(start, rate, time.time()))
        first = sent
        while sent < due:
            key, body, at = bodies[sent % len(bodies)]
            # event_time sits at a known position of the pre-encoded body: patch it in place.
            stamp = _zigzag_long(int((start + sent / rate) * 1000))
            try:
                p.producer.produce(
                    topic, body[:at] + stamp + body[at + 6 :], key, on_delivery=p.delivered
                )
            except BufferError:  # the local queue is full: serve it (this shows as lag)
                p.producer.poll(GENERATOR_TICK)
                continue
            sent += 1
        if sent > first:
            sends.append((time.time(), first, sent))
        p.producer.poll(0)
        if sent < total:
            # Pacing of an open-loop source (until the next event is due), not synchronisation.
            time.sleep(max(start + sent / rate - time.time(), GENERATOR_TICK))
    p.producer.flush(60)
    lags = schedule_lags(start, rate, sends)
    p.report(
        sent,
        start,
        cpu0,
        elapsed_seconds=sends[-1][0] - start + 1 / rate,
        lag_p99_ms=round(float(np.percentile(lags, 99)) * 1000, 3),
        lag_max_ms=round(float(lags.max()) * 1000, 3),
    )


def due_count(start: float, rate: float, now: float) -> int:
    """How many events are due by ``now``: event i is due at start + i / rate.

    >>> due_count(100.0, 500.0, 100.0), due_count(100.0, 500.0, 100.0039)
    (1, 2)
    """
    return int((now - start) * rate) + 1 if now >= start else 0


def schedule_lags(start: float, rate: float, sends: list[tuple[float, int, int]]) -> Any:
    """Seconds each event was sent behind its due time, from (time, first, end) per wake-up:
    events first..end-1 went out by that time.

    >>> schedule_lags(10.0, 100.0, [(10.0, 0, 1), (10.025, 1, 3)]).round(3).tolist()
    [0.0, 0.015, 0.005]
    """
    if not sends:
        return np.zeros(1)
    return np.concatenate([t - (start + np.arange(a, b) / rate) for t, a, b in sends])


def _zigzag_long(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z & ~0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def main() -> None:
    impl, config = sys.argv[1], json.loads(Path(sys.argv[2]).read_text())
    peer = Peer(config)
    {"naive": run_naive, "bare": run_bare, "ceiling": run_ceiling, "openloop": run_openloop}[impl](
        peer
    )


if __name__ == "__main__":
    main()
