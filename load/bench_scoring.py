"""Scoring throughput: per-stage cost in one process, and the real worker end to end on Kafka.

    python -m load.bench_scoring [--events 100000] [--batch 1000] [--json]

Needs the embedded stack (`streamscore local up`) or STREAMSCORE_* pointing at one. It loads the
synthetic world's features, trains a model into an isolated MLflow model name, pre-fills an
isolated input topic, then (1) times each stage of ``process_batch`` on in-memory batches and
(2) runs the real ``ScoringWorker`` over the topic and reports events per second, from first
consume to last commit. Numbers are medians of --repeats stage timings; the end-to-end run is one
pass (the topic is consumed once).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
import uuid
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from services.codec.factory import codec_for, schemas_dir
from services.codec.manifest import MANIFEST_FILE, Manifest
from services.codec.schemas import load_schemas
from services.core.records import Inbound
from services.core.settings import Settings
from services.features.assemble import assemble, lookup_requests
from services.kafka.admin import ensure_topics
from services.kafka.config import admin_config, producer_config
from services.scoring.pipeline import process_batch
from services.scoring.registry import MlflowRegistry
from services.scoring.stages import Stages
from services.synthetic.world import World, strip_private
from services.training.pipeline import train_and_register
from services.validation.rules import RecordRules, validate_many
from streams.adapters import feature_spec, feature_store
from streams.runtime import scoring_worker
from streams.topics import by_record, topic_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="Indented JSON (default: one line).")
    args = parser.parse_args()

    tag = uuid.uuid4().hex[:8]
    base = Settings()
    tmp = tempfile.mkdtemp(prefix="bench-schemas-")
    shutil.copytree(schemas_dir(base), f"{tmp}/schemas")
    s = Settings(
        topics={k: f"bench.{k.replace('_', '-')}-{tag}.v1" for k in base.topics.model_dump()},
        schema_registry={"schemas_dir": f"{tmp}/schemas"},
        redis={"key_prefix": f"bench:{tag}:"},
        worker={"scoring_group": f"bench-{tag}"},
        model={"name": f"bench-{tag}"},
        batch={"max_messages": args.batch},
        metrics={"enabled": False},
    )
    records = load_schemas(s.schema_registry.schemas_dir)  # type: ignore[arg-type]
    manifest = Manifest.load(s.schema_registry.schemas_dir / MANIFEST_FILE)  # type: ignore[operator]
    for topic in topic_table(s.topics):
        manifest, _, _ = manifest.register(topic.subject, records[topic.value_record])
    manifest.dump(s.schema_registry.schemas_dir / MANIFEST_FILE)  # type: ignore[operator]
    ensure_topics(AdminClient(admin_config(s)), topic_table(s.topics), 30)

    spec = feature_spec(s)
    store = feature_store(s, spec)
    now = int(time.time() * 1000)
    world = World(spec, start_time_ms=now - args.events, rate_per_second=1000)
    for group in ("user", "item"):
        store.put_many(group, *world.features(group))
    history = World(spec, start_time_ms=now - 3_600_000).events(30_000, start_index=10**8)
    labels = {x["event_id"]: x["engaged"] for x in world.labels(history)}
    train_and_register(MlflowRegistry(s), spec, store, history, labels)
    model = MlflowRegistry(s).load(alias="champion")

    events = [strip_private(e) for e in world.events(args.events)]
    codec = codec_for(s, by_record(s.topics, "Interaction"))
    out_codec = codec_for(s, by_record(s.topics, "Prediction"))
    values = codec.encode_many(events)
    rules = RecordRules.load("Interaction", s.schema_registry.schemas_dir / "rules")  # type: ignore[operator]
    batches = [
        (events[i : i + args.batch], values[i : i + args.batch])
        for i in range(0, len(events), args.batch)
    ]

    def timed(fn: Any) -> float:
        runs = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            for evs, vals in batches:
                fn(evs, vals)
            runs.append((time.perf_counter() - t) / len(events) * 1e6)
        return round(statistics.median(runs), 2)

    stage = {
        "decode": timed(lambda e, v: codec.decode_many(v)),
        "validate": timed(lambda e, v: validate_many(e, rules, now)),
        "redis_lookup": timed(lambda e, v: store.get_many(lookup_requests(spec, e))),
        "assemble": timed(lambda e, v: assemble(spec, e, store.get_many(lookup_requests(spec, e)))),
        "predict": timed(
            lambda e, v: model.predict(
                assemble(spec, e, store.get_many(lookup_requests(spec, e))).values
            )
        ),
    }
    inb = [[Inbound("t", 0, i, None, v) for i, v in enumerate(vals)] for _, vals in batches]
    pipeline_us = []
    encode_us = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        stages = Stages.of(codec, rules, spec, store.get_many, model)
        results = [process_batch(stages, b, now) for b in inb]
        pipeline_us.append((time.perf_counter() - t) / len(events) * 1e6)
        t = time.perf_counter()
        for r in results:
            out_codec.encode_many([p.record for p in r.predictions])
        encode_us.append((time.perf_counter() - t) / len(events) * 1e6)
    stage["process_batch_total"] = round(statistics.median(pipeline_us), 2)
    stage["encode_predictions"] = round(statistics.median(encode_us), 2)

    producer = Producer(producer_config(s, **{"linger.ms": 20}))
    for e, v in zip(events, values, strict=True):
        producer.produce(s.topics.events, key=e["user_id"].encode(), value=v)
        producer.poll(0)
    producer.flush(60)
    worker = scoring_worker(s, model)
    summary = worker.run(max_events=len(events), idle_timeout=30)
    result = {
        "events": len(events),
        "batch": args.batch,
        "stage_us_per_event": stage,
        "worker_end_to_end": {
            "consumed": summary.consumed,
            "predictions": summary.predictions,
            "seconds": round(summary.elapsed_seconds, 2),
            "events_per_second": round(summary.consumed / summary.elapsed_seconds),
        },
    }
    print(json.dumps(result, indent=2 if args.json else None))


if __name__ == "__main__":
    main()
