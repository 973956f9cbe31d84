"""The delivery domain, a regression task, by configuration alone: the unchanged worker, DLQ,
training and registration predict minutes, not probabilities. The served values are checked
against the model file read by LightGBM itself over rows encoded here by hand from the spec,
and the model against the synthetic world's known truth: its error must be near the noise's."""

from __future__ import annotations

import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightgbm
import mlflow
import numpy as np
import pytest
from confluent_kafka import Producer

from services.kafka.config import producer_config
from services.scoring.registry import MlflowRegistry
from services.synthetic.delivery import hostile_values, make, oracle_mae
from services.synthetic.world import strip_private
from streams.adapters import feature_spec
from streams.runtime import scoring_worker
from tests.integration.pipeline_env import Pipeline, cli_in_process, domain_fixture
from tests.integration.task_loop import (
    FASTER_KITCHENS,
    SHADOWED,
    check_request_and_retrain,
    learning_loop,
)

pytestmark = [pytest.mark.integration, pytest.mark.kafka_only]

VEHICLES = ["UNKNOWN", "BIKE", "SCOOTER", "CAR"]  # codes: the schema's symbol order
COURIER_DEFAULTS = [18.0, 120.0]
NAMES = [  # the delivery spec's feature order, written out
    "courier_speed_kmh", "courier_deliveries_30d", "restaurant_prep_minutes",
    "restaurant_orders_7d", "distance_km", "item_count", "basket_value", "vehicle",
    "is_raining", "hour_of_day", "day_of_week",
]  # fmt: skip

delivery = domain_fixture("delivery")


def hand_row(
    e: dict[str, Any], couriers: dict[str, list[float]], restaurants: dict[str, list[float]]
) -> list[float]:
    """The model input of one order, written out from the delivery domain's features.json."""
    when = datetime.fromtimestamp(e["event_time"] / 1000, tz=UTC)
    return [
        *couriers.get(e["courier_id"], COURIER_DEFAULTS),
        *restaurants[e["restaurant_id"]],
        e["distance_km"],
        float(e["item_count"]),
        e["basket_value"],
        float(VEHICLES.index(e["vehicle"])),
        1.0 if e["is_raining"] else 0.0,
        float(when.hour),
        float(when.weekday()),
    ]


def _tables(p: Pipeline) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    couriers = {k: list(map(float, v)) for k, v in zip(*p.world.features("courier"), strict=True)}
    couriers = {k: v for k, v in couriers.items() if k not in p.missing_users}
    restaurants = {
        k: list(map(float, v)) for k, v in zip(*p.world.features("restaurant"), strict=True)
    }
    return couriers, restaurants


def booster_of(p: Pipeline, version: str) -> lightgbm.Booster:
    """The registered version's model file, read by LightGBM (not by our loader)."""
    registry = MlflowRegistry(p.settings)
    mv = registry.client.get_model_version(p.settings.model.name, version)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=mv.source, dst_path=tmp))
        return lightgbm.Booster(model_file=str(local / "model.txt"))


def test_the_worker_predicts_minutes_near_the_truth_and_refuses_bad_orders(
    delivery: Pipeline,
) -> None:
    p = delivery
    codec = p.codec("Order")
    raw = p.world.events(1500)
    events = [strip_private(e) for e in raw]
    bad = hostile_values(codec, events[0])
    sent = [
        (e["courier_id"].encode(), v, [])
        for e, v in zip(events, codec.encode_many(events), strict=True)
    ]
    sent += [(b"courier-hostile", v, []) for v, _, _ in bad]
    p.produce(sent)

    summary = scoring_worker(p.settings).run(max_events=len(sent), idle_timeout=60)
    assert (summary.predictions, summary.dead_letters) == (len(events), len(bad))
    decode = p.codec("Prediction").decode_one
    predictions = [decode(m.value()) for m in p.read("Prediction", len(events))]
    letters = [p.codec("DeadLetter").decode_one(m.value()) for m in p.read("DeadLetter", len(bad))]
    assert sorted(x["event_id"] for x in predictions) == sorted(e["event_id"] for e in events)
    assert sorted((d["stage"], d["reason"]) for d in letters) == sorted((s, r) for _, s, r in bad)

    # The served values are the offline model's over hand-encoded rows.
    couriers, restaurants = _tables(p)
    by_id = {e["event_id"]: e for e in events}
    rows = np.asarray([hand_row(by_id[x["event_id"]], couriers, restaurants) for x in predictions])
    served = np.asarray([x["score"] for x in predictions])
    offline = booster_of(p, p.trained.version).predict(rows)
    np.testing.assert_allclose(served, offline, rtol=1e-9, atol=1e-9)
    assert served.min() > 1.0 and served.max() > 1.0  # minutes, not a probability
    for x in predictions:
        assert "decision" not in x and x["variant"] == "champion"

    # Against the known truth, on orders whose courier has features: the model's error is
    # close to the noise (no model does better on average than the truth without noise).
    truth = {lab["event_id"]: lab["delivery_minutes"] for lab in p.world.labels(raw)}
    expected = dict(zip((e["event_id"] for e in raw), p.world.expected_minutes(raw), strict=True))
    known = [i for i, x in enumerate(predictions) if not x["missing_features"]]
    ids = [predictions[i]["event_id"] for i in known]
    y = np.asarray([truth[i] for i in ids])
    model_mae = float(np.abs(served[known] - y).mean())
    oracle = float(np.abs(np.asarray([expected[i] for i in ids]) - y).mean())
    print(
        f"\ndelivery: MAE {model_mae:.3f} model, {oracle:.3f} truth without noise, "
        f"{len(known)} orders"
    )
    assert abs(oracle - oracle_mae()) < 0.2  # the oracle is what the generator says it is
    assert model_mae < 1.3 * oracle, (model_mae, oracle)
    assert p.trained.metrics["holdout_mae"] < 1.3 * oracle_mae() + 0.3
    assert "holdout_auc" not in p.trained.metrics


def _history(p: Pipeline, n: int, start: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    world = make(
        feature_spec(p.settings),
        seed=7,
        entities=400,
        start_time_ms=int(time.time() * 1000) - start - 3_600_000,
    )
    raw = world.events(n, start_index=start)
    return [strip_private(e) for e in raw], p.world.labels(raw)


def test_train_from_files_and_register_only_a_model_of_the_task(
    delivery: Pipeline, tmp_path: Path
) -> None:
    import pandas as pd

    p = delivery
    events, labels = _history(p, 3000, 50_000_000)
    ev_file, lab_file = tmp_path / "orders.csv", tmp_path / "deliveries.csv"
    pd.DataFrame(events).to_csv(ev_file, index=False)
    pd.DataFrame(labels)[["event_id", "delivery_minutes"]].to_csv(lab_file, index=False)
    # These orders were never scored: the feature log has none of them, and Redis as it is
    # now is not read unless asked for.
    ran = cli_in_process(p, "--json", "train", "--events", str(ev_file), "--labels", str(lab_file))
    assert ran.returncode == 2, ran.stderr
    log = p.settings.topics.feature_log
    assert f"none of the 3,000 labelled events has a row in the feature log {log}" in ran.stderr
    assert "--features-now" in ran.stderr
    ran = cli_in_process(
        p, "--json", "train", "--events", str(ev_file), "--labels", str(lab_file), "--features-now"
    )
    assert ran.returncode == 0, ran.stderr
    assert "warning: 3,000 events take their entity features from Redis as it is now" in ran.stderr
    out = json.loads(ran.stdout)
    assert out["feature_rows"] == {"online_store_now": 3000}
    assert out["feature_log"]["not_logged"] == 3000
    assert out["validation"]["rows"] == 3000
    assert out["metrics"]["holdout_mae"] < 1.3 * oracle_mae() + 0.5
    assert out["metrics"]["holdout_rmse"] >= out["metrics"]["holdout_mae"]

    # A classifier is another task's model: refused in one line, exit 2.
    couriers, restaurants = _tables(p)
    X = np.asarray([hand_row(e, couriers, restaurants) for e in events])
    minutes = np.asarray([lab["delivery_minutes"] for lab in labels])
    binary = tmp_path / "late.txt"
    lightgbm.train(
        {"objective": "binary", "verbose": -1},
        lightgbm.Dataset(X, (minutes > 30).astype(int), feature_name=NAMES),
        num_boost_round=5,
    ).save_model(str(binary))
    refused = cli_in_process(p, "models", "register", str(binary), "--base-rate", "0.3")
    assert refused.returncode == 2
    assert "a binary model, but this domain's task is regression" in refused.stderr

    # A regression model trained elsewhere is registered, with the task's holdout metrics.
    outside = tmp_path / "eta.txt"
    lightgbm.train(
        {"objective": "regression", "verbose": -1, "seed": 3},
        lightgbm.Dataset(X, minutes, feature_name=NAMES),
        num_boost_round=200,
    ).save_model(str(outside))
    holdout_events, holdout_labels = _history(p, 600, 51_000_000)
    holdout = tmp_path / "holdout.csv"
    pd.DataFrame(
        [
            e | {"delivery_minutes": lab["delivery_minutes"]}
            for e, lab in zip(holdout_events, holdout_labels, strict=True)
        ]
    ).to_csv(holdout, index=False)
    ran = cli_in_process(p, "--json", "models", "register", str(outside), "--holdout", str(holdout))
    assert ran.returncode == 2 and "--features-now" in ran.stderr, ran.stderr
    ran = cli_in_process(
        p, "--json", "models", "register", str(outside), "--holdout", str(holdout), "--features-now"
    )
    assert ran.returncode == 0, ran.stderr
    metrics = json.loads(ran.stdout)["metrics"]
    assert metrics["holdout_rows"] == 600 and metrics["holdout_mae"] < 3.0


def _score_and_label(
    p: Pipeline, label_record: str, n: int, start: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[tuple[int, int, bytes | None]]]:
    """``n`` orders from index ``start`` (the world's clock: ``start`` ms after the pipeline
    began, inside the rules' time window) scored by the worker, which keeps what it served in
    the prediction store; then their labels on the label topic: (predictions, labels, the label
    messages)."""
    raw = p.world.events(n, start_index=start)
    events = [strip_private(e) for e in raw]
    codec = p.codec("Order")
    p.produce(
        [
            (e["courier_id"].encode(), v, [])
            for e, v in zip(events, codec.encode_many(events), strict=True)
        ]
    )
    scoring_worker(p.settings).run(max_events=n, idle_timeout=60)
    wanted = {e["event_id"] for e in events}
    decode = p.codec("Prediction").decode_one
    messages = p.read_topic(
        p.settings.topics.predictions, n, counts=lambda m: decode(m.value())["event_id"] in wanted
    )
    predictions = [x for x in map(decode, (m.value() for m in messages)) if x["event_id"] in wanted]
    labels = p.world.labels(raw)
    label_codec = p.codec(label_record)
    # The world's labels carry both domains' targets: each sends its own record's fields.
    fields = [f["name"] for f in label_codec.record.source["fields"]]
    producer = Producer(producer_config(p.settings))
    for lab in labels:
        value = label_codec.encode_one({k: lab[k] for k in fields})
        producer.produce(p.settings.topics.labels, key=lab["event_id"].encode(), value=value)
    assert producer.flush(30) == 0
    sent = [
        (m.partition() or 0, m.offset() or 0, m.value())
        for m in p.read_topic(p.settings.topics.labels, n)
    ]
    return predictions, labels, sent


def test_labels_join_to_what_was_served_with_the_tasks_quality(delivery: Pipeline) -> None:
    """The control plane's label join on the real prediction store: the error per event is the
    absolute error, and the book's quality is MAE, RMSE and bias of what was served."""
    from streams.control.loop import decode_labels, join_labels
    from streams.control.state import build_state

    p = delivery
    predictions, labels, sent = _score_and_label(p, "Delivery", 600, 5_000)
    state = build_state(p.settings)
    assert join_labels(state, decode_labels(state, sent), detect=False) == []
    q = state.book.quality(p.trained.version, "champion")
    truth = {lab["event_id"]: lab["delivery_minutes"] for lab in labels}
    err = np.asarray([x["score"] - truth[x["event_id"]] for x in predictions])
    assert q["count"] == 600
    assert abs(q["mae"] - np.abs(err).mean()) < 1e-9 and abs(q["bias"] - err.mean()) < 1e-9
    assert q["mae"] < 2.5 and "log_loss" not in q


def test_drift_retrain_shadow_promote_and_replay_diff_in_minutes(delivery: Pipeline) -> None:
    """The learning loop of a regression model (``task_loop``): orders from a farther zone
    move the served minutes (prediction drift) and faster kitchens the errors (error drift);
    v2 is trained on the feature log's rows of the new concept, shadowed, promoted, and the
    replay diff of the shadow period gives the score deltas, in minutes."""
    loop = learning_loop(delivery, "Delivery")
    print(f"\ndelivery learning loop, seconds per stage: {loop.seconds}")

    # The worker's detectors on the served minutes, and the label join's on the absolute error.
    minutes = [x for x in loop.drift if x["signal"] == "score"]
    assert len({x["partition"] for x in minutes}) >= 2, loop.drift
    for x in minutes:  # later (the "after" mean covers the newest ~1,000 orders of the partition)
        assert x["stats_after"]["mean"] > x["stats_before"]["mean"], x
    assert loop.errors, "no error drift"
    error = loop.errors[0]
    assert error["stats_before"]["mean"] < 2.5 < 4.0 < error["stats_after"]["mean"], error
    m = check_request_and_retrain(loop, error)  # and v2, a regression model of the new concept
    assert "holdout_auc" not in m and "holdout_log_loss" not in m
    print(f"holdout MAE {m['holdout_mae']:.3f} v2, {m['champion_holdout_mae']:.3f} v1 (minutes)")
    assert m["holdout_mae"] < 0.5 * m["champion_holdout_mae"], m

    # Shadow: v2's minutes on the shadow topic, records of the served shape; then the paired
    # comparison on the same labelled orders.
    assert loop.outcome["now_serving"] == "champion v1, shadow v2"
    for event_id, x in loop.shadow.items():
        served = loop.served[event_id]
        assert (x["model_version"], x["variant"]) == ("2", "shadow")
        assert (served["model_version"], served["variant"]) == ("1", "champion")
        assert set(x) == set(served) and "probabilities" not in x
    delta = np.asarray([x["score"] - loop.served[e]["score"] for e, x in loop.shadow.items()])
    # v2 says sooner, by about what the kitchens gained (the median: v1, never trained on such
    # distances, falls short on the farthest orders, which v2 was trained on).
    assert -1.4 * FASTER_KITCHENS < np.median(delta) < -0.6 * FASTER_KITCHENS, np.median(delta)
    truth = np.asarray([loop.labels[e]["delivery_minutes"] for e in loop.shadow])
    v1 = np.asarray([loop.served[e]["score"] for e in loop.shadow])
    v2 = np.asarray([x["score"] for x in loop.shadow.values()])
    q = loop.paired
    assert q["count"] == SHADOWED
    assert abs(q["champion_mae"] - np.abs(v1 - truth).mean()) < 1e-9
    assert abs(q["challenger_mae"] - np.abs(v2 - truth).mean()) < 1e-9
    assert loop.decision[0] == "promote", loop.decision
    assert "online MAE champion" in loop.decision[1]
    assert MlflowRegistry(loop.p.settings).rollout_state().champion == "2"

    # The replay with v2 gives v2's shadow minutes bit for bit; the diff is their deltas.
    assert {e: x["score"] for e, x in loop.replayed.items()} == {
        e: x["score"] for e, x in loop.shadow.items()
    }
    d = loop.diff
    assert (d["matched"], d["changed"], d["only_in_other"]) == (SHADOWED, SHADOWED, 0)
    assert d["threshold"] is None and d["flips_up"] == d["flips_down"] == 0
    assert d["class_changes"] == 0 and d["confusion"] == {}
    assert abs(d["delta"]["mean"] - delta.mean()) < 1e-9
    assert abs(d["delta"]["abs_max"] - np.abs(delta).max()) < 1e-9
    [pair] = d["by_version"]
    assert (pair["base_version"], pair["other_version"], pair["events"]) == ("1", "2", SHADOWED)
    assert "decision flips" not in loop.diff_markdown and "## Classes" not in loop.diff_markdown
    assert f"- changed: {SHADOWED} (100" in loop.diff_markdown, loop.diff_markdown
