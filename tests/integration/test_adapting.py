"""docs/adapting.md's walkthrough, run as written: from files of features, an outside model and
events to predictions on the topic, then training from files and a rollout. Every line of its
``sh`` blocks runs, in order, on the payments domain; only the domain's topic names are mapped to
this test's own topics."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import lightgbm
import numpy as np
import pandas as pd
import pytest

from services.synthetic.world import strip_private
from tests.integration.pipeline_env import (
    Pipeline,
    cli_in_process,
    domain_fixture,
    with_model,
)
from tests.integration.test_payments_domain import NAMES, _events_at, _history, _tables, hand_row

pytestmark = [pytest.mark.integration, pytest.mark.kafka_only]
DOC = Path(__file__).resolve().parents[2] / "docs" / "adapting.md"


payments = domain_fixture("payments")


def _commands() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    return [line for b in blocks for line in b.splitlines() if line.strip()]


def _files(p: Pipeline, folder: Path) -> int:
    """The files the walkthrough names, from the payments world; returns how many events
    transactions.jsonl holds."""
    world = p.world
    for group, name in (("card", "cards.csv"), ("merchant", "merchants.csv")):
        keys, rows = world.features(group)
        frame = pd.DataFrame(
            rows, columns=p.settings and NAMES[:4] if group == "card" else NAMES[4:7]
        )
        frame.insert(0, f"{group}_id", keys)
        frame.to_csv(folder / name, index=False)
    _, merchants = _tables(p)
    # cards.csv holds every card, so the outside model is trained on all of their features.
    cards = {k: list(map(float, v)) for k, v in zip(*world.features("card"), strict=True)}
    events, labels = _history(p, 3000, 60_000_000)
    X = np.asarray([hand_row(e, cards, merchants) for e in events])
    y = np.asarray([lab["is_fraud"] for lab in labels], dtype=int)
    lightgbm.train(
        {"objective": "binary", "num_leaves": 15, "verbose": -1},
        lightgbm.Dataset(X, y, feature_name=NAMES),
        num_boost_round=30,
    ).save_model(str(folder / "fraud-gbm.txt"))
    hold_events, hold_labels = _history(p, 500, 61_000_000)
    pd.DataFrame(
        [e | {"is_fraud": lab["is_fraud"]} for e, lab in zip(hold_events, hold_labels, strict=True)]
    ).to_csv(folder / "holdout.csv", index=False)
    fresh = [strip_private(e) for e in _events_at(p, 20, 62_000_000)]
    (folder / "transactions.jsonl").write_text("".join(json.dumps(e) + "\n" for e in fresh))
    pd.DataFrame(events).to_csv(folder / "history.csv", index=False)
    pd.DataFrame(labels)[["event_id", "is_fraud", "card_id"]].to_csv(
        folder / "chargebacks.csv", index=False
    )
    return len(fresh)


def test_the_walkthrough_runs_as_written(payments: Pipeline, tmp_path: Path) -> None:
    p = with_model(payments, f"fraud-docs-{tmp_path.name[-8:]}")  # no versions yet
    sent = _files(p, tmp_path)
    declared = json.loads((p.settings.domain_dir / "domain.json").read_text())["topics"]
    t = p.settings.topics
    ours = {
        declared["events"]: t.events,
        declared["predictions"]: t.predictions,
        declared["labels"]: t.labels,
    }
    commands = _commands()
    assert [c.split()[1] for c in commands][:4] == ["domain", "schemas", "topics", "features"]
    outputs = {}
    here = Path.cwd()
    os.chdir(tmp_path)
    try:
        for line in commands:
            args = [ours.get(a, a) for a in shlex.split(line)]
            assert args[0] == "streamscore", line
            ran = cli_in_process(p, "--json", *args[1:])
            assert ran.returncode == 0, f"{line}\n{ran.stderr}"
            outputs[" ".join(args[1:3])] = ran.stdout
    finally:
        os.chdir(here)
    registered = json.loads(outputs["models register"])
    assert (registered["version"], registered["champion"]) == ("1", True)
    scored = [json.loads(x) for x in outputs["tail " + t.predictions].splitlines()]
    assert len(scored) == sent == 20
    assert {x["value"]["model_version"] for x in scored} == {"1"}
    trained = json.loads(outputs["train --events"])
    assert trained["version"] == "2" and trained["validation"]["rows"] == 3000
    shown = json.loads(outputs["domain show"])
    assert shown["features"] == NAMES
