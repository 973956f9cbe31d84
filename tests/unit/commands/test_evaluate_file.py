"""`streamscore evaluate-file`: the task's metrics of a scored file, against its kept label column,
equal to training's own definitions for each task (what the Airflow DAG compares)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from services.core.task import Task
from services.training.train import evaluate_task
from streams.cli import main

RNG = np.random.default_rng(3)
N = 300
CLASSES = ("UNDER_25", "FROM_25_TO_35", "OVER_35")


def run(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    domain: str,
    *args: str,
) -> tuple[int, str, str]:
    monkeypatch.setenv("STREAMSCORE_DOMAIN", domain)
    monkeypatch.setenv("STREAMSCORE_HOME", str(tmp_path / "home"))
    code = 0
    try:
        main(list(args))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def _scored(**columns: Any) -> pd.DataFrame:
    """A file as `score-file --keep-columns` writes it: the prediction's columns, then the
    input's."""
    ids = [f"e-{i}" for i in range(N)]
    head = {"event_id": ids, "prediction_id": [f"p-{i}" for i in range(N)]}
    tail = {"model_name": "m", "model_version": "3", "variant": "champion", "degraded": False}
    return pd.DataFrame(head | columns | tail)


def test_binary_labels_written_as_text_are_read_as_booleans(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A CSV cell "False" is false (bool("False") is not): the base rate is the labels'."""
    y = RNG.integers(0, 2, N)
    p = np.clip(0.3 + 0.4 * y + RNG.normal(0, 0.2, N), 0.01, 0.99)
    path = tmp_path / "scored.csv"
    _scored(score=p, engaged=[bool(v) for v in y]).to_csv(path, index=False)
    code, out, err = run(
        monkeypatch, capsys, tmp_path, "feed", "--json", "evaluate-file", str(path)
    )
    assert code == 0, err
    report = json.loads(out)
    expected = evaluate_task(Task("binary"), y, p)
    assert (report["task"], report["loss"], report["rows"]) == ("binary", "log_loss", N)
    assert report["label_column"] == "engaged"
    assert report["metrics"] == pytest.approx(expected)
    assert report["metrics"]["base_rate"] == pytest.approx(y.mean())


def test_regression_is_mae_and_rmse_of_the_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    y = RNG.uniform(10, 60, N)
    value = y + RNG.normal(0, 4, N)
    path = tmp_path / "scored.jsonl"
    _scored(score=value, delivery_minutes=y).to_json(path, orient="records", lines=True)
    code, out, err = run(
        monkeypatch, capsys, tmp_path, "delivery", "--json", "evaluate-file", str(path)
    )
    assert code == 0, err
    report = json.loads(out)
    assert (report["task"], report["loss"]) == ("regression", "mae")
    assert report["metrics"] == pytest.approx(evaluate_task(Task("regression"), y, value))
    assert "log_loss" not in report["metrics"]
    code, out, _ = run(monkeypatch, capsys, tmp_path, "delivery", "evaluate-file", str(path))
    assert code == 0 and f"{N} rows, regression: MAE " in out


def test_multiclass_takes_a_probability_column_per_class_in_the_classes_order(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    y = RNG.integers(0, 3, N)
    probs = RNG.dirichlet(np.ones(3), N)
    probs[np.arange(N), y] += 0.5
    probs /= probs.sum(axis=1, keepdims=True)
    # The columns in another order than the classes': each is taken by its name.
    columns = {f"probability__{c}": probs[:, i] for i, c in reversed(list(enumerate(CLASSES)))}
    frame = _scored(
        score=probs.max(axis=1),
        predicted_class=[CLASSES[i] for i in probs.argmax(axis=1)],
        **columns,
        eta_band=[CLASSES[i] for i in y],
    )
    path = tmp_path / "scored.csv"
    frame.to_csv(path, index=False)
    code, out, err = run(
        monkeypatch, capsys, tmp_path, "delivery_band", "--json", "evaluate-file", str(path)
    )
    assert code == 0, err
    report = json.loads(out)
    assert (report["task"], report["loss"]) == ("multiclass", "log_loss")
    expected = evaluate_task(Task("multiclass", CLASSES), y, probs)
    assert report["metrics"] == pytest.approx(expected)

    frame.drop(columns=["probability__OVER_35"]).to_csv(path, index=False)
    code, _, err = run(monkeypatch, capsys, tmp_path, "delivery_band", "evaluate-file", str(path))
    assert code == 2 and "no probability__OVER_35" in err


def test_a_label_renamed_by_score_file_or_named_by_target_is_found(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    y = RNG.uniform(10, 60, N)
    path = tmp_path / "scored.csv"
    # An input column named like an output column is kept as input_<name> by score-file.
    _scored(score=y + 1.0, input_score=y).to_csv(path, index=False)
    code, out, err = run(
        monkeypatch, capsys, tmp_path, "delivery", "--json", "evaluate-file", str(path),
        "--target", "score",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    assert report["label_column"] == "input_score"
    assert report["metrics"]["mae"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("cells", "said"),
    [
        ({"score": 30.0}, "no label column 'delivery_minutes'"),
        ({"score": 30.0, "delivery_minutes": "soon"}, "row 1, delivery_minutes"),
    ],
)
def test_a_missing_or_unreadable_label_exits_2_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    cells: dict[str, Any],
    said: str,
) -> None:
    path = tmp_path / "scored.csv"
    _scored(**cells).to_csv(path, index=False)
    code, _, err = run(monkeypatch, capsys, tmp_path, "delivery", "evaluate-file", str(path))
    assert code == 2 and said in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize(
    ("domain", "cells", "said"),
    [
        # No score column (a file score-file did not write): one line, not a KeyError.
        ("delivery", {"delivery_minutes": 30.0}, "no score column"),
        ("delivery", {"score": "fast", "delivery_minutes": 30.0}, "row 1, score: 'fast'"),
        ("delivery", {"score": None, "delivery_minutes": 30.0}, "row 1, score: "),
        (
            "delivery_band",
            {f"probability__{c}": "x" if c == "OVER_35" else 0.5 for c in CLASSES}
            | {"eta_band": "OVER_35"},
            "row 1, probability__OVER_35: 'x'",
        ),
    ],
)
def test_a_missing_or_unreadable_output_exits_2_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    domain: str,
    cells: dict[str, Any],
    said: str,
) -> None:
    path = tmp_path / "scored.csv"
    _scored(**cells).to_csv(path, index=False)
    code, _, err = run(monkeypatch, capsys, tmp_path, domain, "evaluate-file", str(path))
    assert code == 2 and said in err and len(err.strip().splitlines()) == 1, err
