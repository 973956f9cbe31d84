"""Domains are configuration: the shipped ones load, a broken folder is refused with an error
naming the part, and no domain's feature or enum name appears in services/ or streams/."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from services.core.errors import ConfigError
from services.core.settings import Settings
from services.domain.config import load_domain

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = {
    "feed": ROOT / "schemas",
    **{
        name: ROOT / "schemas" / "domains" / name
        for name in ("payments", "delivery", "delivery_band")
    },
}
# Words a domain uses as a feature name that the platform also uses in their ordinary sense:
# a Kafka consumer's "position" (its next offset) is not the feed's slot position.
ORDINARY = {"position"}


def _domain_words(folder: Path) -> set[str]:
    """Every feature, event field, enum symbol, key and label name the domain declares."""
    d = load_domain(folder)
    words = {d.key_field, d.label.target, *d.spec.carry}
    for g in d.spec.groups:
        words |= {g.key_field, *g.names}
    for c in d.spec.context:
        words |= {c.name, c.field, *c.symbols}
    for record in (d.event_record, d.label.record):
        for f in d.records[record].source["fields"]:
            words.add(f["name"])
            for t in f["type"] if isinstance(f["type"], list) else [f["type"]]:
                if isinstance(t, dict) and t.get("type") == "enum":
                    words |= set(t["symbols"])
    return words - {"event_id", "event_time", "label_time"} - ORDINARY


# The shipped domains' synthetic worlds are those domains' own code (as their schemas are data):
# a domain's generator is the one place its fields are named in Python.
DOMAIN_CODE = ROOT / "services" / "synthetic"


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_no_feature_or_enum_name_of_a_domain_in_the_code(name: str) -> None:
    words = _domain_words(SHIPPED[name])
    assert len(words) > 15  # the check has something to find
    pattern = re.compile(r"\b(" + "|".join(sorted(map(re.escape, words))) + r")\b")
    hits = [
        f"{path.relative_to(ROOT)}:{n}: {m.group(1)}"
        for top in ("services", "streams")
        for path in sorted((ROOT / top).rglob("*.py"))
        if DOMAIN_CODE not in path.parents
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        for m in pattern.finditer(line)
    ]
    assert hits == []


def test_the_shipped_domains_load() -> None:
    feed, payments = load_domain(SHIPPED["feed"]), load_domain(SHIPPED["payments"])
    assert (feed.event_record, feed.key_field, feed.label.target) == (
        "Interaction",
        "user_id",
        "engaged",
    )
    assert (payments.event_record, payments.key_field, payments.label.target) == (
        "Transaction",
        "card_id",
        "is_fraud",
    )
    # The channel enum took its symbols from the schema; currency declared its own.
    channel = next(c for c in payments.spec.context if c.name == "channel")
    assert channel.symbols == ("UNKNOWN", "POS", "ECOM", "ATM", "MOTO")
    # The task: binary unless declared; a multiclass task's classes are the target enum's.
    assert (feed.task.kind, payments.task.kind) == ("binary", "binary")
    assert load_domain(SHIPPED["delivery"]).task.kind == "regression"
    band = load_domain(SHIPPED["delivery_band"]).task
    assert (band.kind, band.classes) == ("multiclass", ("UNDER_25", "FROM_25_TO_35", "OVER_35"))


def test_settings_take_topics_and_model_from_the_domain_unless_set(monkeypatch: Any) -> None:
    monkeypatch.setenv("STREAMSCORE_DOMAIN", "payments")
    s = Settings()
    assert (s.topics.events, s.topics.labels) == (
        "payments.transactions.v1",
        "payments.chargebacks.v1",
    )
    assert (s.topics.event_record, s.model.name, s.drift.features) == (
        "Transaction",
        "fraud",
        ("amount",),
    )
    monkeypatch.setenv("STREAMSCORE_TOPICS__EVENTS", "mine.v1")
    monkeypatch.setenv("STREAMSCORE_MODEL__NAME", "fraud-eu")
    s = Settings()
    assert (s.topics.events, s.topics.predictions, s.model.name) == (
        "mine.v1",
        "payments.predictions.v1",
        "fraud-eu",
    )


def test_a_missing_domain_folder_is_refused(monkeypatch: Any, tmp_path: Path) -> None:
    monkeypatch.setenv("STREAMSCORE_DOMAIN", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="nowhere does not exist"):
        Settings()


def _edit_json(path: Path, change: Callable[[Any], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _context(name: str) -> Callable[[Any], Any]:
    return lambda d: next(c for c in d["context"] if c["name"] == name)


def _field(name: str) -> Callable[[Any], Any]:
    return lambda d: next(f for f in d["fields"] if f["name"] == name)


BROKEN: list[tuple[str, str, Callable[[Any], None], str]] = [
    (
        "features.json",
        "a feature naming a field the schema lacks",
        lambda d: _context("amount")(d).update(field="amount_eur"),
        "names field 'amount_eur', which Transaction lacks",
    ),
    (
        "Transaction.avsc",
        "an entity key that is not a string",
        lambda d: _field("merchant_id")(d).update(type="long"),
        "entity key Transaction.merchant_id must be a (non-null) string",
    ),
    (
        "rules/Transaction.json",
        "a rule on a missing field",
        lambda d: d["fields"].update(tip={"min": 0}),
        "a rule on field 'tip', which Transaction lacks",
    ),
    (
        "features.json",
        "an enum symbol the schema does not have",
        lambda d: _context("currency")(d).update(symbols=["EUR", "BTC"]),
        "symbols ['BTC'] are not in Transaction.currency",
    ),
    (
        "features.json",
        "a kind that does not fit the field's type",
        lambda d: _context("country")(d).update(kind="number", buckets=0),
        "kind number needs a double or float or int or long field, but Transaction.country",
    ),
    (
        "Chargeback.avsc",
        "a label target that is not boolean",
        lambda d: _field("is_fraud")(d).update(type="string"),
        "target 'is_fraud' must be a boolean field",
    ),
    (
        "features.json",
        "a carried field the prediction lacks",
        lambda d: d.update(carry=["card_id", "country"]),
        "carry field 'country' is not in Prediction",
    ),
    (
        "domain.json",
        "an event record with no schema",
        lambda d: d["event"].update(record="Payment"),
        "record 'Payment' has no Payment.avsc",
    ),
    (
        "domain.json",
        "a drift feature that is not a numeric field",
        lambda d: d.update(drift_features=["country"]),
        "drift feature 'country' is not a numeric field",
    ),
    (
        "domain.json",
        "a decision threshold outside [0, 1]",
        lambda d: d["prediction"].update(decision_threshold=1.5),
        "prediction.decision_threshold 1.5: a number in [0, 1]",
    ),
    (
        "Prediction.avsc",
        "a decision threshold without the decision field",
        lambda d: d.update(fields=[f for f in d["fields"] if f["name"] != "decision"]),
        'a decision threshold is declared: add the field {"name": "decision"',
    ),
    (
        "domain.json",
        "a task that is not one of the three",
        lambda d: d.update(task="ranking"),
        "task 'ranking': one of binary, regression, multiclass",
    ),
    (
        "domain.json",
        "a regression task over a boolean target",
        lambda d: d.update(task="regression"),
        "target 'is_fraud' must be a (non-null) number field",
    ),
    (
        "domain.json",
        "a multiclass task over a boolean target",
        lambda d: d.update(task="multiclass"),
        "target 'is_fraud' must be a (non-null) enum field for a multiclass task",
    ),
    (
        "Prediction.avsc",
        "a binary prediction carrying class probabilities",
        lambda d: d["fields"].append(
            {"name": "probabilities", "type": {"type": "map", "values": "double"}, "default": {}}
        ),
        "['probabilities'] are for a multiclass task; this domain's task is binary",
    ),
]


@pytest.mark.parametrize(
    "file, what, change, says", BROKEN, ids=[b[1].replace(" ", "-") for b in BROKEN]
)
def test_a_broken_domain_is_refused_naming_the_part(
    tmp_path: Path, file: str, what: str, change: Callable[[Any], None], says: str
) -> None:
    folder = tmp_path / "payments"
    shutil.copytree(SHIPPED["payments"], folder)
    _edit_json(folder / file, change)
    drift = tuple(json.loads((folder / "domain.json").read_text())["drift_features"])
    with pytest.raises(ConfigError) as refused:
        load_domain(folder, drift_features=drift)
    assert says in str(refused.value), what
