"""The learning loop of a delivery task on its module's pipeline, with the control plane's own
functions on the real broker, Redis and MLflow: a shifted stream (orders from a farther zone,
whose kitchens are faster) scored by v1; the worker's prediction drift and the label join's
error drift fire; the aggregator turns the signals into a retrain request; the retrainer trains
v2 on the rows the feature log holds and puts it in shadow; the shadow period's labels give the
paired comparison; ``models promote``; ``replay`` of the shadow period with v2 and ``replay
diff`` against what v1 served. Each module asserts what its task makes of it."""

from __future__ import annotations

import importlib
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Producer

from services.domain.config import load_domain
from services.kafka.config import producer_config
from services.retrain.policy import retrain_request
from services.retrain.trainer import ACTOR, answer
from services.scoring.registry import MlflowRegistry
from services.synthetic.delivery import band_of
from services.synthetic.history import training_history
from services.synthetic.world import strip_private
from services.training.pipeline import train_and_register
from streams.adapters import feature_spec, feature_store
from streams.control.loop import decode_labels, join_labels
from streams.control.state import ControlState, build_state
from streams.runtime import scoring_worker
from streams.topics import sandbox_topic
from tests.integration.pipeline_env import Pipeline, cli_in_process, with_model

FARTHER = 2.5  # the shifted orders' distances, times the usual (the inputs move)
# Minutes every shifted order takes less than the old truth says (the concept moves): the
# other way from the inputs, so the bands keep examples of every class to train on.
FASTER_KITCHENS = 8.0
BEFORE, SHIFTED, SHADOWED = 1500, 1500, 600  # orders: about 250 per input partition before
LABEL_BATCH = 500  # labels per join, as the control plane's agent takes them


@dataclass
class Loop:
    p: Pipeline  # the module's pipeline with a registered model of its own
    state: ControlState
    shift_time: int  # the event time of the first shifted order
    drift: list[dict[str, Any]]  # the worker's signals, from the drift topic
    errors: list[dict[str, Any]]  # the label join's
    request: dict[str, Any]
    outcome: dict[str, Any]  # the retrainer's answer
    served: dict[str, dict[str, Any]]  # the shadow period: v1's predictions by event id
    shadow: dict[str, dict[str, Any]]  # and v2's, from the shadow topic
    labels: dict[str, dict[str, Any]]  # the shadow period's outcomes by event id
    paired: dict[str, float]
    decision: tuple[str, str]
    promoted: dict[str, Any]  # `models promote --json`
    replayed: dict[str, dict[str, Any]]  # the sandbox's predictions by event id
    diff: dict[str, Any]  # `replay diff --json`
    diff_markdown: str
    seconds: dict[str, float] = field(default_factory=dict)


def check_request_and_retrain(loop: Loop, error: dict[str, Any]) -> dict[str, Any]:
    """What every task's loop asks of the request and of v2, whatever the task: ``error`` is
    v1's error signal (the label join's, all partitions); returns v2's holdout metrics."""
    assert (error["signal"], error["partition"], error["model_version"]) == ("error", -1, "1")
    assert loop.request["requested_by"] == "control-plane"
    fired = {x["signal"] for x in loop.drift + loop.errors}
    assert set(loop.request["reason"].removeprefix("drift: ").split(", ")) <= fired, loop.request
    assert loop.request["window_start"] < loop.shift_time, loop.request
    # v2: a model of the new concept, from the rows as served, from the change on.
    o = loop.outcome
    assert o["version"] == "2" and set(o["feature_rows"]) == {"feature_log"}, o
    assert abs(o["window_start"] - loop.shift_time) < 100, (o["window_start"], loop.shift_time)
    return dict(o["metrics"])


def shift(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e | {"distance_km": round(e["distance_km"] * FARTHER, 2)} for e in raw]


def outcomes(p: Pipeline, raw: list[dict[str, Any]], sooner: float) -> list[dict[str, Any]]:
    """The world's outcomes of ``raw`` (its truth over the orders as sent), ``sooner`` minutes
    earlier: both domains' targets, the band from the new minutes."""
    labels = p.world.labels(raw)
    minutes = [round(max(lab["delivery_minutes"] - sooner, 1.0), 3) for lab in labels]
    return [
        lab
        | {
            "delivery_minutes": m,
            "eta_band": band,
            "label_time": lab["event_time"] + int(m * 60_000),
        }
        for lab, m, band in zip(labels, minutes, band_of(minutes), strict=True)
    ]


def _stream_index(p: Pipeline, after: int) -> int:
    """A world index whose event time is two seconds from now (a live stream), past ``after``."""
    return max(after, int(time.time() * 1000) - p.world.start_time_ms + 2000)


def _score(p: Pipeline, raw: list[dict[str, Any]]) -> Any:
    events = [strip_private(e) for e in raw]
    codec = p.codec("Order")
    p.produce(
        [
            (e["courier_id"].encode(), v, [])
            for e, v in zip(events, codec.encode_many(events), strict=True)
        ]
    )
    summary = scoring_worker(p.settings).run(max_events=len(events), idle_timeout=60)
    assert summary.predictions == len(events), summary
    return summary


def _send_labels(
    p: Pipeline, record: str, labels: list[dict[str, Any]]
) -> list[tuple[int, int, bytes | None]]:
    """``labels`` on the label topic as ``record`` has them; back as the agent reads them
    ((partition, offset, value)), in event-time order."""
    codec = p.codec(record)
    fields = [f["name"] for f in codec.record.source["fields"]]
    producer = Producer(producer_config(p.settings))
    for lab in labels:
        value = codec.encode_one({k: lab[k] for k in fields})
        producer.produce(p.settings.topics.labels, key=lab["event_id"].encode(), value=value)
    assert producer.flush(30) == 0
    wanted = {lab["event_id"] for lab in labels}
    mine = [
        m
        for m in p.read_topic(
            p.settings.topics.labels, len(labels), counts=lambda m: m.key().decode() in wanted
        )
        if m.key().decode() in wanted
    ]
    assert len(mine) == len(labels)
    time_of = {lab["event_id"]: lab["event_time"] for lab in labels}
    mine.sort(key=lambda m: time_of[m.key().decode()])
    return [(m.partition() or 0, m.offset() or 0, m.value()) for m in mine]


def _join(state: ControlState, sent: list[tuple[int, int, bytes | None]]) -> list[dict[str, Any]]:
    """The label agent's work, batch by batch; the drift signals it returns."""
    signals = []
    for start in range(0, len(sent), LABEL_BATCH):
        signals += join_labels(state, decode_labels(state, sent[start : start + LABEL_BATCH]))
    return signals


def _predictions(p: Pipeline, topic: str, wanted: set[str]) -> dict[str, dict[str, Any]]:
    decode = p.codec("Prediction").decode_one
    out = {}
    for m in p.read_topic(
        topic, len(wanted), counts=lambda m: decode(m.value())["event_id"] in wanted
    ):
        rec = decode(m.value())
        if rec["event_id"] in wanted:
            assert rec["event_id"] not in out, f"{rec['event_id']} twice on {topic}"
            out[rec["event_id"]] = rec
    assert set(out) == wanted, (topic, len(out), len(wanted))
    return out


def _v1(p: Pipeline) -> Pipeline:
    """The pipeline with a model of its own (the module's is shared with other modules): v1
    trained on the day before the stream, as the module's champion was; and the control
    plane's settings for a loop of seconds."""
    q = with_model(p, f"loop-{uuid.uuid4().hex[:8]}")
    s = q.settings
    settings = s.model_copy(
        update={
            "retrain": s.retrain.model_copy(
                update={"min_labelled": 1000, "min_shadow_seconds": 0.0, "min_labels": 300}
            )
        }
    )
    q = Pipeline(settings, p.world, p.trained, p.missing_users)
    spec = feature_spec(settings)
    declared = load_domain(settings.domain_dir)
    generator = importlib.import_module(str(declared.generator))
    history = training_history(
        generator.make, spec, p.world.start_time_ms, 4000, 20_000_000, seed=p.world.seed,
        entities=400,
    )  # fmt: skip
    label = declared.label
    labels = {x[label.join_key]: x[label.target] for x in p.world.labels(history)}
    # Never served: the features of these orders are Redis's (this world's never move).
    train_and_register(
        MlflowRegistry(settings), spec, feature_store(settings, spec), history, labels,
        seed=7, task=declared.task,
    )  # fmt: skip
    return q


def learning_loop(p: Pipeline, label_record: str) -> Loop:
    """The loop on ``p`` (labels sent as ``label_record``): each stage is checked to have
    happened; what it gave is returned for the task's module to judge."""
    clock = time.monotonic()
    seconds: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal clock
        now = time.monotonic()
        seconds[name], clock = round(now - clock, 1), now

    q = _v1(p)
    s = q.settings
    registry = MlflowRegistry(s)
    assert registry.rollout_state().champion == "1"
    lap("v1")

    # The stream: as usual, then shifted. One worker run: its detectors learn the usual first.
    start = _stream_index(q, 0)
    before = q.world.events(BEFORE, start_index=start)
    shifted = shift(q.world.events(SHIFTED, start_index=start + BEFORE))
    _score(q, before + shifted)
    decode = q.codec("DriftSignal").decode_one
    mine = s.model.name

    def prediction_drift(m: Any) -> bool:
        signal = decode(m.value())
        return signal["model_name"] == mine and not signal["signal"].startswith("feature:")

    drift = [
        decode(m.value())
        for m in q.read_topic(s.topics.drift_signals, 2, timeout=30, counts=prediction_drift)
    ]
    drift = [x for x in drift if x["model_name"] == mine]
    lap("stream")

    # Their outcomes, the shifted ones sooner than the old truth, through the label join.
    state = build_state(s)
    labels = outcomes(q, before, 0.0) + outcomes(q, shifted, FASTER_KITCHENS)
    errors = _join(state, _send_labels(q, label_record, labels))
    lap("labels")

    # The signals as the control plane's drift agent takes them: the worker's first.
    request = None
    for signal in sorted(drift, key=lambda x: x["detected_at"]) + errors:
        now = int(time.time() * 1000)
        evidence = state.aggregator.add(signal, now)
        if evidence is not None and request is None:
            request = retrain_request(
                mine,
                signal["model_version"],
                evidence,
                s.retrain.window_seconds * 1000,
                now,
                ACTOR,
                margin_ms=int(s.retrain.change_point_margin_seconds * 1000),
            )
    assert request is not None, (drift, errors)
    codec = state.codecs["RetrainRequest"]
    request = codec.decode_one(codec.encode_one(request))  # what the retrain topic carries
    outcome = answer(s, state.registry, state.spec, state.features, state.trainer_codecs, request)
    assert outcome["status"] == "shadowed", outcome
    lap("retrain")

    # The shadow period: more shifted orders, scored by v1 and, in shadow, by v2; their labels.
    first = _stream_index(q, start + BEFORE + SHIFTED)
    since = int(time.time() * 1000) - 1
    raw = shift(q.world.events(SHADOWED, start_index=first))
    summary = _score(q, raw)
    assert summary.shadow_predictions == SHADOWED, summary
    until = int(time.time() * 1000) + 1
    ids = {e["event_id"] for e in raw}
    served = _predictions(q, s.topics.predictions, ids)
    shadow = _predictions(q, s.topics.shadow_predictions, ids)
    later = outcomes(q, raw, FASTER_KITCHENS)
    _join(state, _send_labels(q, label_record, later))
    paired = state.book.paired_quality("1", outcome["version"], outcome["shadow_since_ms"])
    decision = state.promotion.decide(outcome["shadow_since_ms"], int(time.time() * 1000), paired)
    lap("shadow")

    promoted = cli_in_process(q, "--json", "models", "promote", outcome["version"], "-m", "loop")
    assert promoted.returncode == 0, promoted.stderr[-2000:]
    lap("promote")

    # The shadow period again, with v2, against what v1 served.
    sandbox = f"loop-{uuid.uuid4().hex[:8]}"
    window = ["--from-time", str(since), "--to-time", str(until)]
    ran = cli_in_process(
        q, "--json", "replay", *window, "--model", outcome["version"], "--sandbox", sandbox,
        "--execute", "--rate", "0",
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert json.loads(ran.stdout)["outcome"]["predictions"] == SHADOWED, ran.stdout
    replayed = _predictions(q, sandbox_topic(sandbox), ids)
    ran = cli_in_process(q, "--json", "replay", "diff", sandbox)
    assert ran.returncode == 0, ran.stderr[-3000:]
    md = cli_in_process(q, "replay", "diff", sandbox)
    assert md.returncode == 0, md.stderr[-3000:]
    lap("replay")
    return Loop(
        q, state, shifted[0]["event_time"], drift, errors, request, outcome, served, shadow,
        {lab["event_id"]: lab for lab in later}, paired, decision,
        json.loads(promoted.stdout), replayed, json.loads(ran.stdout), md.stdout, seconds,
    )  # fmt: skip
