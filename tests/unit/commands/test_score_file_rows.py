"""`score-file`'s output rows (hand-written records as the oracle) and its refusal of an output
folder that does not exist, before any model is loaded."""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from services.core.errors import StreamMLError
from streams.cli import main
from streams.commands.score_file import _ParquetWriter, _TextWriter, prediction_row

RECORD = {
    "prediction_id": "p-1",
    "event_id": "e-1",
    "card_id": "c-1",
    "merchant_id": "m-1",
    "score": 0.25,
    "model_name": "fraud",
    "model_version": "4",
    "variant": "champion",
    "degraded": False,
    "missing_features": ["card", "merchant"],
    "event_time": 1_000,
    "scored_at": 2_000,
}
CARRY = ("card_id", "merchant_id")


def test_a_row_names_its_prediction_model_and_time_and_lists_missing_features() -> None:
    row = prediction_row(RECORD, CARRY, "jsonl")
    assert row == {
        "event_id": "e-1",
        "prediction_id": "p-1",
        "card_id": "c-1",
        "merchant_id": "m-1",
        "score": 0.25,
        "model_name": "fraud",
        "model_version": "4",
        "variant": "champion",
        "degraded": False,
        "missing_features": ["card", "merchant"],
        "scored_at": 2_000,
    }
    assert prediction_row(RECORD, CARRY, "parquet")["missing_features"] == ["card", "merchant"]
    assert prediction_row(RECORD, CARRY, "csv")["missing_features"] == "card,merchant"
    assert prediction_row(RECORD | {"missing_features": []}, CARRY, "csv")["missing_features"] == ""


def test_kept_columns_follow_the_prediction_and_never_overwrite_it() -> None:
    source = {
        "event_id": "e-1",
        "card_id": "c-1",
        "amount": "12.50",
        "is_fraud": "1",
        "score": "old score",
        "model_version": "old",
    }
    row = prediction_row(RECORD, CARRY, "csv", source)
    assert list(row)[-4:] == ["amount", "is_fraud", "input_score", "input_model_version"]
    assert (row["is_fraud"], row["amount"]) == ("1", "12.50")
    assert (row["score"], row["input_score"]) == (0.25, "old score")
    assert (row["model_version"], row["input_model_version"]) == ("4", "old")


def test_an_output_folder_that_does_not_exist_is_one_line_before_any_model_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMSCORE_HOME", str(tmp_path / "home"))  # no model registered
    source = tmp_path / "in.csv"
    source.write_text("event_id\ne-1\n")
    missing = tmp_path / "no" / "such"
    with pytest.raises(SystemExit) as exit_:
        main(["score-file", str(source), "--out", str(missing / "scores.csv")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err == f"error: {missing}: no such folder for --out (create it first)\n"
    assert not missing.exists()


def test_csv_output_has_every_column_of_the_first_chunk_and_refuses_new_ones(
    tmp_path: Path,
) -> None:
    out = tmp_path / "scores.csv"
    writer = _TextWriter(out, "csv", append=False)
    writer.write([{"event_id": "e-1", "score": 0.5}, {"event_id": "e-2", "score": 0.25, "x": "7"}])
    writer.write([{"event_id": "e-3", "score": 1.0}])  # no x: an empty cell
    with pytest.raises(StreamMLError, match=r"scores.csv: rows past the first chunk .* \(y\)"):
        writer.write([{"event_id": "e-4", "score": 0.0, "y": "new"}])
    writer.close()
    with out.open(newline="") as f:
        assert list(csv.reader(f)) == [
            ["event_id", "score", "x"],
            ["e-1", "0.5", ""],
            ["e-2", "0.25", "7"],
            ["e-3", "1.0", ""],
        ]


def test_parquet_output_keeps_missing_features_as_lists_across_chunks(tmp_path: Path) -> None:
    out = tmp_path / "scores.parquet"
    writer = _ParquetWriter(out)
    # The first chunk: nobody missed a feature, and only the second row has the label.
    writer.write(
        [
            {"event_id": "e-1", "missing_features": []},
            {"event_id": "e-2", "missing_features": [], "label": 1},
        ]
    )
    writer.write([{"event_id": "e-3", "missing_features": ["card"]}])  # no label: null
    with pytest.raises(StreamMLError, match=r"\(extra\)"):
        writer.write([{"event_id": "e-4", "missing_features": [], "extra": 1}])
    writer.close()
    assert pq.read_table(out).to_pylist() == [
        {"event_id": "e-1", "missing_features": [], "label": None},
        {"event_id": "e-2", "missing_features": [], "label": 1},
        {"event_id": "e-3", "missing_features": ["card"], "label": None},
    ]
