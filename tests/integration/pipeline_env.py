"""An isolated scoring pipeline on the session stack: its own topics, group, Redis prefix,
schema manifest, MLflow model name; a small world with features loaded and a champion trained."""

from __future__ import annotations

import dataclasses
import importlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from unittest import mock

import numpy as np
import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from services.codec.avro import AvroCodec
from services.codec.factory import codec_for
from services.codec.manifest import MANIFEST_FILE, Manifest
from services.codec.schemas import load_schemas
from services.core.settings import Settings, domain_folder, to_env
from services.domain.config import load_domain
from services.kafka.admin import ensure_topics
from services.kafka.config import consumer_config, producer_config
from services.scoring.registry import MlflowRegistry
from services.synthetic.history import training_history
from services.synthetic.world import strip_private
from services.training.pipeline import TrainResult, train_and_register
from streams.adapters import feature_spec, feature_store
from streams.topics import by_record, topic_table
from tests.integration.conftest import Stack


@dataclass
class Pipeline:
    settings: Settings
    world: Any  # the domain's generator world (services.synthetic.world.World for the feed)
    trained: TrainResult
    missing_users: set[str]

    def codec(self, record: str) -> AvroCodec:
        """The codec of ``record``'s topic, built once (building reads schemas from disk)."""
        cache: dict[str, AvroCodec] = self.__dict__.setdefault("_codecs", {})
        if record not in cache:
            cache[record] = codec_for(self.settings, by_record(self.settings.topics, record))
        return cache[record]

    def produce(self, values: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]) -> None:
        producer = Producer(producer_config(self.settings))
        topic = self.settings.topics.events
        for key, value, headers in values:
            producer.produce(topic, key=key, value=value, headers=headers)
            producer.poll(0)
        assert producer.flush(30) == 0

    def read(self, record: str, expected: int, timeout: float = 90) -> list[Any]:
        """Every message of ``record``'s topic, until ``expected`` arrived or the time is up."""
        return self.read_topic(by_record(self.settings.topics, record).name, expected, timeout)

    def count(self, record: str) -> int:
        """Messages ``record``'s topic holds now (its watermarks: no waiting)."""
        name = by_record(self.settings.topics, record).name
        consumer = Consumer(consumer_config(self.settings, f"counter-{uuid.uuid4().hex[:8]}"))
        deadline = time.monotonic() + 30
        try:
            parts = consumer.list_topics(name, timeout=10).topics[name].partitions
            while True:  # a new topic's leaders may still be settling: ask again
                try:
                    marks = [
                        consumer.get_watermark_offsets(TopicPartition(name, q), 10) for q in parts
                    ]
                    break
                except KafkaException:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        finally:
            consumer.close()
        return sum(high - low for low, high in marks)

    def read_topic(
        self,
        name: str,
        expected: int,
        timeout: float = 90,
        counts: Callable[[Any], bool] = lambda m: True,
    ) -> list[Any]:
        """Every message of topic ``name``, until ``expected`` of them that ``counts`` arrived
        or the time is up."""
        consumer = Consumer(consumer_config(self.settings, f"reader-{uuid.uuid4().hex[:8]}"))
        # assign(), not subscribe(): no group join, so a read costs milliseconds, not seconds.
        parts = consumer.list_topics(name, timeout=10).topics[name].partitions
        consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in parts])
        out: list[Any] = []
        seen = 0
        deadline = time.monotonic() + timeout
        try:
            while seen < expected and time.monotonic() < deadline:
                got = [m for m in consumer.consume(1000, 0.2) if m.error() is None]
                seen += sum(1 for m in got if counts(m))
                out += got
            # Anything beyond the expected count would be a duplicate: look briefly for more.
            extra_deadline = time.monotonic() + 0.5
            while time.monotonic() < extra_deadline:
                out += [m for m in consumer.consume(1000, 0.1) if m.error() is None]
        finally:
            consumer.close()
        return out

    def env(self) -> dict[str, str]:
        """These settings as STREAMSCORE_* variables, for a worker subprocess."""
        return to_env(self.settings)


_MODELS: dict[str, tuple[str, TrainResult]] = {}


def make_pipeline(
    stack: Stack, tmp_path: Path, domain: str = "feed", **overrides: Any
) -> Iterator[Pipeline]:
    """A pipeline for ``domain`` (a shipped one): its folder copied, topics of its own, the
    domain's world (400 entities of its first group) with features loaded, a champion trained."""
    tag = uuid.uuid4().hex[:10]
    schemas = tmp_path / "schemas"
    shutil.copytree(domain_folder(domain), schemas, ignore=shutil.ignore_patterns("domains"))
    declared = load_domain(schemas)
    drift = json.loads((schemas / "domain.json").read_text()).get("drift_features", [])
    model_name = json.loads((schemas / "domain.json").read_text()).get("model_name", "model")
    base = stack.settings.model_dump()
    cache_key = f"{stack.settings.home}:{domain}"
    settings = Settings(
        **{
            **base,
            "domain": domain,
            "topics": {
                "events": f"test.interactions-{tag}.v1",
                "predictions": f"test.predictions-{tag}.v1",
                "labels": f"test.labels-{tag}.v1",
                "drift_signals": f"test.drift-{tag}.v1",
                "retrain_requests": f"test.retrain-{tag}.v1",
                "model_events": f"test.model-events-{tag}.v1",
                "shadow_predictions": f"test.shadow-{tag}.v1",
                "feature_log": f"test.feature-log-{tag}.v1",
                "event_record": declared.event_record,
                "prediction_record": declared.prediction_record,
                "label_record": declared.label.record,
            },
            "schema_registry": base["schema_registry"] | {"schemas_dir": schemas},
            "redis": base["redis"] | {"key_prefix": f"test:{tag}:"},
            "worker": {"scoring_group": f"streamscore-scoring-{tag}"},
            "model": base["model"] | {"name": _MODELS.get(cache_key, (f"{model_name}-{tag}",))[0]},
            "drift": base["drift"] | {"features": tuple(drift)},
            "metrics": {"enabled": False},
            **overrides,
        }
    )
    records = load_schemas(schemas)
    manifest = Manifest.load(schemas / MANIFEST_FILE)
    for topic in topic_table(settings.topics):
        manifest, _, _ = manifest.register(topic.subject, records[topic.value_record])
    manifest.dump(schemas / MANIFEST_FILE)
    ensure_topics(stack.admin(), topic_table(settings.topics), 30)

    spec = feature_spec(settings)
    generator = importlib.import_module(str(declared.generator))
    now = int(time.time() * 1000)
    world = generator.make(spec, seed=7, entities=400, start_time_ms=now)
    store = feature_store(settings, spec)
    first = spec.groups[0].name
    keys, rows = world.features(first)
    # Entities drawing about 5% of the traffic have no features: flagged and defaulted, not
    # dropped.
    weights = world.weights(first)
    order = np.argsort(weights)
    cut = int(np.searchsorted(np.cumsum(weights[order]), 0.05))
    missing = {keys[i] for i in order[:cut]}
    keep = [i for i in range(len(keys)) if keys[i] not in missing]
    store.put_many(first, [keys[i] for i in keep], rows[keep])
    for g in spec.groups[1:]:
        store.put_many(g.name, *world.features(g.name))
    cached = _MODELS.get(cache_key)
    if cached is None:
        # History over the whole day before now: a world whose truth depends on the hour
        # (the delivery world's rush hours) is learnt at every hour a test may stream in.
        history = training_history(
            generator.make, spec, now, 6000, 10_000_000, seed=7, entities=400
        )
        label = declared.label
        labels = {x[label.join_key]: x[label.target] for x in world.labels(history)}
        # One model per stack and domain: training and MLflow cost seconds, and every test's
        # features are the same world's, so the same model serves all of them.
        trained = train_and_register(
            MlflowRegistry(settings), spec, store, history, labels, seed=7, task=declared.task
        )
        _MODELS[cache_key] = (settings.model.name, trained)
    else:
        trained = cached[1]
    yield Pipeline(settings, world, trained, missing)


def domain_fixture(domain: str) -> Any:
    """A module-scoped fixture: a pipeline of ``domain`` of the module's own."""

    @pytest.fixture(scope="module")
    def pipeline(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
        yield from make_pipeline(stack, tmp_path_factory.mktemp(domain), domain=domain)

    return pipeline


def world_events(p: Pipeline, n: int, start: int = 0) -> list[dict[str, Any]]:
    return [strip_private(e) for e in p.world.events(n, start_index=start)]


def with_model(p: Pipeline, name: str, **model: Any) -> Pipeline:
    """The same pipeline with its own registered-model name (and other model settings)."""
    settings = p.settings.model_copy(
        update={"model": p.settings.model.model_copy(update={"name": name, **model})}
    )
    return Pipeline(settings, p.world, p.trained, p.missing_users)


def with_two_versions(p: Pipeline, name: str) -> Pipeline:
    """The pipeline with a registered model of its own: v1 champion, v2 trained on another
    seed (history from the same world as the features in Redis, at indexes no test streams)."""
    q = with_model(p, name)
    spec = feature_spec(q.settings)
    store = feature_store(q.settings, spec)
    declared = load_domain(q.settings.domain_dir)
    generator = importlib.import_module(str(declared.generator))
    now = q.world.start_time_ms  # the stream's clock: history is the day before it
    history = training_history(
        generator.make, spec, now, 4000, 20_000_000, seed=q.world.seed, entities=400
    )
    label = declared.label
    labels = {x[label.join_key]: x[label.target] for x in q.world.labels(history)}
    registry = MlflowRegistry(q.settings)
    for seed in (7, 8):
        train_and_register(registry, spec, store, history, labels, seed=seed, task=declared.task)
    return q


Guarantee = Literal["at_least_once", "exactly_once"]


def with_guarantee(p: Pipeline, guarantee: Guarantee) -> Pipeline:
    """``p`` with the scoring workers' processing guarantee set."""
    worker = p.settings.worker.model_copy(update={"processing_guarantee": guarantee})
    return dataclasses.replace(p, settings=p.settings.model_copy(update={"worker": worker}))


def committed_total(p: Pipeline, group: str | None = None) -> int:
    """Offsets ``group`` (the scoring group by default) has committed on the input, summed over
    its partitions."""
    probe = Consumer(consumer_config(p.settings, group or p.settings.worker.scoring_group))
    try:
        topic = p.settings.topics.events
        parts = probe.list_topics(topic, timeout=10).topics[topic].partitions
        done = probe.committed([TopicPartition(topic, q) for q in parts], timeout=10)
        return sum(max(tp.offset, 0) for tp in done)
    finally:
        probe.close()


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """``streamscore ARGS`` in a subprocess configured by ``settings`` only (as ops run it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCORE_")}
    return subprocess.run(  # noqa: S603 (our own CLI)
        [sys.executable, "-m", "streams.cli", *args],
        env=env | to_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


_CLI_LOCK = threading.Lock()


def cli_in_process(p: Pipeline, *args: str) -> Ran:
    """The console script's ``main`` in this process, with the pipeline's settings as env (a
    subprocess would pay several seconds of imports and MLflow start-up per call)."""
    from streams.cli import main

    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    rc: int | str | None = 0
    with (
        _CLI_LOCK,
        mock.patch.dict(os.environ, p.env()),
        redirect_stdout(out),
        redirect_stderr(err),
    ):
        try:
            main(list(args))
        except SystemExit as exc:
            rc = exc.code
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)
    return Ran(int(rc or 0), out.getvalue(), err.getvalue())


def limit_message_bytes(admin: AdminClient, topic: str, max_bytes: int) -> None:
    """Set ``topic``'s max.message.bytes on the broker (a dead-letter topic too small for some
    letters), waiting for the change."""
    entry = ConfigEntry(
        "max.message.bytes", str(max_bytes), incremental_operation=AlterConfigOpType.SET
    )
    resource = ConfigResource("topic", topic, incremental_configs=[entry])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)


def start_control_plane(
    env: dict[str, str],
) -> tuple[subprocess.Popen[bytes], list[str], threading.Thread]:
    """``streamscore worker control-plane`` as a process of its own with ``env``; its stderr
    lines are collected into the returned list by the returned thread as they come (join it
    for the whole of stderr once the process has ended)."""
    control = subprocess.Popen(  # noqa: S603 (our own CLI)
        [sys.executable, "-m", "streams.cli", "worker", "control-plane"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    lines: list[str] = []

    def collect() -> None:
        assert control.stderr is not None
        for raw in iter(control.stderr.readline, b""):
            lines.append(raw.decode(errors="replace"))

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    return control, lines, reader
