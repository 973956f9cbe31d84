"""The payments domain, by configuration alone: the unchanged worker, DLQ and rollout over card
transactions. The scores are checked against an offline oracle: the model file read by LightGBM
itself, over rows this test encodes by hand from the domain's documented spec."""

from __future__ import annotations

import json
import math
import tempfile
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightgbm
import mlflow
import numpy as np
import pytest

from services.scoring.registry import MlflowRegistry
from services.synthetic.hostile import any_domain_hostile_values
from services.synthetic.payments import make
from services.synthetic.world import strip_private
from streams.adapters import feature_spec
from streams.runtime import scoring_worker
from tests.integration.pipeline_env import Pipeline, cli_in_process, domain_fixture

pytestmark = [pytest.mark.integration, pytest.mark.kafka_only]

CURRENCIES = ["EUR", "USD", "GBP", "CHF", "JPY"]  # one-hot, in the spec's order
CHANNELS = ["UNKNOWN", "POS", "ECOM", "ATM", "MOTO"]  # codes: the schema's symbol order
MCC = ["5411", "5812", "5999", "5732", "5944", "4829", "7995"]  # vocabulary; others: 7
CARD_DEFAULTS = [2.0, 60.0, 400.0, 0.0]


payments = domain_fixture("payments")


def hand_row(
    e: dict[str, Any], cards: dict[str, list[float]], merchants: dict[str, Any]
) -> list[float]:
    """The model input of one transaction, written out from docs/adapting.md's payments spec."""
    when = datetime.fromtimestamp(e["event_time"] / 1000, tz=UTC)
    return [
        *cards.get(e["card_id"], CARD_DEFAULTS),
        *merchants[e["merchant_id"]],
        e["amount"],
        *[1.0 if e["currency"] == c else 0.0 for c in CURRENCIES],
        float(CHANNELS.index(e["channel"])),
        float(MCC.index(e["merchant_category"]) if e["merchant_category"] in MCC else 7),
        float(zlib.crc32(e["country"].encode()) % 64),
        1.0 if e["card_present"] else 0.0,
        float(when.hour),
        float(when.weekday()),
    ]


def booster_of(p: Pipeline, version: str) -> lightgbm.Booster:
    """The registered version's model file, read by LightGBM (not by our loader)."""
    registry = MlflowRegistry(p.settings)
    mv = registry.client.get_model_version(p.settings.model.name, version)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=mv.source, dst_path=tmp))
        return lightgbm.Booster(model_file=str(local / "model.txt"))


def test_the_worker_scores_transactions_and_refuses_bad_ones(payments: Pipeline) -> None:
    p = payments
    codec = p.codec("Transaction")
    raw = p.world.events(1500)
    events = [strip_private(e) for e in raw]
    template = events[0]
    bad = any_domain_hostile_values(codec, template) + [
        (codec.encode_one(template | {"amount": -5.0}), "validate", "out_of_range"),
        (codec.encode_one(template | {"merchant_category": "54x1"}), "validate", "bad_format"),
        (codec.encode_one(template | {"amount": math.inf}), "validate", "not_finite"),
        (codec.encode_one(template | {"country": "Germany"}), "validate", "bad_format"),
    ]
    sent = [
        (e["card_id"].encode(), v, [])
        for e, v in zip(events, codec.encode_many(events), strict=True)
    ]
    sent += [(b"card-hostile", v, [("case", f"{j}".encode())]) for j, (v, _, _) in enumerate(bad)]
    p.produce(sent)

    summary = scoring_worker(p.settings).run(max_events=len(sent), idle_timeout=60)
    assert (summary.predictions, summary.dead_letters) == (len(events), len(bad))
    predictions = [
        p.codec("Prediction").decode_one(m.value()) for m in p.read("Prediction", len(events))
    ]
    letters = [p.codec("DeadLetter").decode_one(m.value()) for m in p.read("DeadLetter", len(bad))]
    # Every event is accounted for: predictions + dead letters = input.
    assert len(predictions) + len(letters) == len(sent)
    assert sorted(x["event_id"] for x in predictions) == sorted(e["event_id"] for e in events)
    assert sorted((d["stage"], d["reason"]) for d in letters) == sorted((s, r) for _, s, r in bad)

    # The scores are the offline model's over hand-encoded rows.
    cards = dict(zip(*p.world.features("card"), strict=True))
    hidden = p.missing_users
    cards = {k: list(map(float, v)) for k, v in cards.items() if k not in hidden}
    merchants = {k: list(map(float, v)) for k, v in zip(*p.world.features("merchant"), strict=True)}
    by_id = {e["event_id"]: e for e in events}
    booster = booster_of(p, p.trained.version)
    rows = np.asarray([hand_row(by_id[x["event_id"]], cards, merchants) for x in predictions])
    offline = booster.predict(rows)
    served = np.asarray([x["score"] for x in predictions])
    np.testing.assert_allclose(served, offline, rtol=1e-9, atol=1e-12)
    # The prediction carries the domain's keys; a hidden card is flagged, not dropped.
    for x in predictions:
        e = by_id[x["event_id"]]
        assert (x["card_id"], x["merchant_id"]) == (e["card_id"], e["merchant_id"])
        assert x["missing_features"] == (["card"] if e["card_id"] in hidden else [])
        assert x["model_name"] == p.settings.model.name and x["variant"] == "champion"
    assert any(x["missing_features"] for x in predictions)
    # The model learnt the synthetic fraud: better than chance against the world's truth.
    truth = {lab["event_id"]: lab["is_fraud"] for lab in p.world.labels(raw)}
    from sklearn.metrics import roc_auc_score

    y = [truth[x["event_id"]] for x in predictions]
    assert roc_auc_score(y, served) > 0.75


NAMES = [  # the payments spec's feature order, written out (docs/adapting.md)
    "card_txn_count_24h", "card_amount_mean_30d", "card_age_days", "card_chargebacks_90d",
    "merchant_fraud_rate_90d", "merchant_ticket_mean", "merchant_age_days", "amount",
    "currency__EUR", "currency__USD", "currency__GBP", "currency__CHF", "currency__JPY", "channel",
    "merchant_category", "country", "card_present", "hour_of_day", "day_of_week",
]  # fmt: skip


def _events_at(p: Pipeline, n: int, start: int, ago_ms: int = 0) -> list[dict[str, Any]]:
    """``n`` events of the pipeline's world from index ``start``, the first ``ago_ms`` before
    now (the world's clock runs at 1,000 events a second)."""
    world = make(
        feature_spec(p.settings),
        seed=7,
        entities=400,
        start_time_ms=int(time.time() * 1000) - start - ago_ms,
    )
    return world.events(n, start_index=start)


def _history(p: Pipeline, n: int, start: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    raw = _events_at(p, n, start, ago_ms=3_600_000)
    return [strip_private(e) for e in raw], p.world.labels(raw)


def _tables(p: Pipeline) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    cards = {k: list(map(float, v)) for k, v in zip(*p.world.features("card"), strict=True)}
    cards = {k: v for k, v in cards.items() if k not in p.missing_users}
    merchants = {k: list(map(float, v)) for k, v in zip(*p.world.features("merchant"), strict=True)}
    return cards, merchants


def test_a_model_trained_elsewhere_is_registered_shadowed_and_promoted(
    payments: Pipeline, tmp_path: Path
) -> None:
    import pandas as pd

    p = payments
    cards, merchants = _tables(p)
    events, labels = _history(p, 4000, 30_000_000)
    X = np.asarray([hand_row(e, cards, merchants) for e in events])
    y = np.asarray([lab["is_fraud"] for lab in labels], dtype=int)
    # Trained outside streamscore: plain LightGBM, feature names given as the spec lists them.
    booster = lightgbm.train(
        {"objective": "binary", "num_leaves": 15, "verbose": -1, "seed": 3},
        lightgbm.Dataset(X, y, feature_name=NAMES),
        num_boost_round=40,
    )
    model = tmp_path / "fraud-gbm.txt"
    booster.save_model(str(model))
    shuffled = tmp_path / "shuffled.txt"
    lightgbm.train(
        {"objective": "binary", "verbose": -1},
        lightgbm.Dataset(X[:, ::-1], y, feature_name=NAMES[::-1]),
        num_boost_round=2,
    ).save_model(str(shuffled))
    holdout_events, holdout_labels = _history(p, 600, 31_000_000)
    holdout = tmp_path / "holdout.csv"
    pd.DataFrame(
        [
            e | {"is_fraud": lab["is_fraud"]}
            for e, lab in zip(holdout_events, holdout_labels, strict=True)
        ]
    ).to_csv(holdout, index=False)

    refused = cli_in_process(p, "models", "register", str(shuffled))
    assert refused.returncode == 2 and "the same names in another order" in refused.stderr, (
        refused.stderr
    )
    ran = cli_in_process(
        p, "--json", "models", "register", str(model), "--holdout", str(holdout), "--features-now"
    )
    assert ran.returncode == 0, ran.stderr
    out = json.loads(ran.stdout)
    version = out["version"]
    assert out["champion"] is False and out["metrics"]["holdout_rows"] == 600
    assert out["metrics"]["holdout_auc"] > 0.75
    registry = MlflowRegistry(p.settings)
    tags = registry.client.get_model_version(p.settings.model.name, version).tags
    import hashlib

    assert tags["source_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert tags["origin"] == "external"

    # Shadow: the champion still serves; the new version's scores go to the shadow topic.
    assert (
        cli_in_process(p, "models", "shadow", version, "-m", "try the outside model").returncode
        == 0
    )
    fresh = [strip_private(e) for e in _events_at(p, 300, 40_000_000)]
    codec = p.codec("Transaction")
    p.produce(
        [
            (e["card_id"].encode(), v, [])
            for e, v in zip(fresh, codec.encode_many(fresh), strict=True)
        ]
    )
    scoring_worker(p.settings).run(max_events=len(fresh), idle_timeout=60)
    shadow = [
        p.codec("Prediction").decode_one(m.value())
        for m in p.read_topic(p.settings.topics.shadow_predictions, len(fresh))
    ]
    assert len(shadow) == len(fresh)
    assert {(s["variant"], s["model_version"]) for s in shadow} == {("shadow", version)}
    by_id = {e["event_id"]: e for e in fresh}
    rows = np.asarray([hand_row(by_id[s["event_id"]], cards, merchants) for s in shadow])
    np.testing.assert_allclose([s["score"] for s in shadow], booster.predict(rows), rtol=1e-9)

    # Promote: it serves.
    assert (
        cli_in_process(p, "models", "promote", version, "-m", "shadow looked right").returncode == 0
    )
    later = [strip_private(e) for e in _events_at(p, 200, 41_000_000)]
    p.produce(
        [
            (e["card_id"].encode(), v, [])
            for e, v in zip(later, codec.encode_many(later), strict=True)
        ]
    )
    scoring_worker(p.settings).run(max_events=len(later), idle_timeout=60)
    wanted = {e["event_id"] for e in later}
    decode = p.codec("Prediction").decode_one
    messages = p.read_topic(
        p.settings.topics.predictions,
        len(later),
        counts=lambda m: decode(m.value())["event_id"] in wanted,
    )
    served = [x for x in map(decode, (m.value() for m in messages)) if x["event_id"] in wanted]
    assert len(served) == len(later)
    assert {(x["variant"], x["model_version"]) for x in served} == {("champion", version)}


def test_train_from_files_and_refuse_a_bad_row(payments: Pipeline, tmp_path: Path) -> None:
    import pandas as pd

    p = payments
    events, labels = _history(p, 3000, 50_000_000)
    ev_file, lab_file = tmp_path / "tx.csv", tmp_path / "chargebacks.parquet"
    pd.DataFrame(events).to_csv(ev_file, index=False)
    pd.DataFrame(labels)[["event_id", "is_fraud"]].to_parquet(lab_file)
    ran = cli_in_process(
        p, "--json", "train", "--events", str(ev_file), "--labels", str(lab_file), "--features-now"
    )
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["validation"]["rows"] == 3000

    bad = pd.DataFrame(events[:400])
    bad.loc[3, "amount"] = -1.0  # a rule breaks
    bad.loc[5, "channel"] = "FAX"  # not a symbol of the schema
    bad.to_csv(ev_file, index=False)
    refused = cli_in_process(
        p, "--json", "train", "--events", str(ev_file), "--labels", str(lab_file)
    )
    assert refused.returncode == 2  # refused input, nothing trained (exit 1 is infrastructure)
    problems = json.loads(refused.stdout)["problems"]
    # Each row named one way: file, row number (first data row is 1) and event id.
    sixth, fourth = events[5]["event_id"], events[3]["event_id"]
    assert any(f"row 6 (event {sixth}): channel" in x for x in problems), problems
    assert any(f"row 4 (event {fourth})" in x and "amount" in x for x in problems), problems


def test_features_load_from_a_file_for_any_group(payments: Pipeline, tmp_path: Path) -> None:
    import pandas as pd

    p = payments
    f = tmp_path / "merchants.csv"
    row = {
        "merchant_id": "m-new-1",
        "merchant_fraud_rate_90d": 0.5,
        "merchant_ticket_mean": 12.0,
        "merchant_age_days": 3.0,
    }
    pd.DataFrame([row]).to_csv(f, index=False)
    assert (
        cli_in_process(p, "features", "load", "--file", str(f), "--group", "merchant").returncode
        == 0
    )
    got = json.loads(cli_in_process(p, "--json", "features", "get", "merchant", "m-new-1").stdout)
    assert got["found"] and got["features"]["merchant_fraud_rate_90d"] == 0.5
    wrong = cli_in_process(p, "features", "load", "--file", str(f), "--group", "user")
    assert wrong.returncode == 2 and "card, merchant" in wrong.stderr
