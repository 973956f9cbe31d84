"""Loading features from a file through the CLI, and training refusing data it must not use."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from services.core.settings import to_env
from services.features.spec import FeatureSpec
from services.scoring.registry import MlflowRegistry
from services.training.pipeline import TrainingRefused, train_and_register
from streams.adapters import feature_store
from streams.cli import cli, main
from tests.integration.conftest import Stack
from tests.integration.pipeline_env import Pipeline, make_pipeline

pytestmark = [pytest.mark.integration]
SPEC = FeatureSpec.load()


@pytest.fixture
def pipeline(stack: Stack, tmp_path: Path) -> Iterator[Pipeline]:
    yield from make_pipeline(stack, tmp_path)


def _csv(path: Path, keys: list[str], values: np.ndarray) -> Path:
    names = SPEC.group("user").names
    lines = [",".join(["user_id", *names])]
    lines += [
        ",".join([k, *(repr(float(x)) for x in row)]) for k, row in zip(keys, values, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_features_load_from_csv_round_trips_as_float32(pipeline: Pipeline, tmp_path: Path) -> None:
    rows = np.random.default_rng(4).normal(size=(30, 16))
    keys = [f"csv-user-{i}" for i in range(30)]
    result = CliRunner().invoke(
        cli,
        [
            "--json",
            "features",
            "load",
            "--file",
            str(_csv(tmp_path / "u.csv", keys, rows)),
            "--group",
            "user",
        ],
        env=to_env(pipeline.settings),
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    got = feature_store(pipeline.settings).get_many({"user": keys})["user"]
    assert got.found.all()
    assert np.array_equal(got.values, rows.astype(np.float32))


def test_features_load_keeps_each_keys_latest_valid_snapshot(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    names = SPEC.group("user").names
    rows = np.random.default_rng(5).normal(size=(4, 16)).round(3)
    future = 4_000_000_000_000  # valid only in 2096
    lines = [",".join(["user_id", "valid_from", *names])]
    for key, when, row in (("snap-a", 1000, rows[0]), ("snap-a", 2000, rows[1]),
                           ("snap-a", future, rows[2]), ("snap-b", 1000, rows[3])):  # fmt: skip
        lines.append(",".join([key, str(when), *(repr(float(x)) for x in row)]))
    path = tmp_path / "snapshots.csv"
    path.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(
        cli,
        ["--json", "features", "load", "--file", str(path)],  # the group from its key column
        env=to_env(pipeline.settings),
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["not_valid_yet"] == 1
    got = feature_store(pipeline.settings).get_many({"user": ["snap-a", "snap-b"]})["user"]
    assert got.found.tolist() == [True, True]
    assert np.array_equal(got.values, rows[[1, 3]].astype(np.float32))


def test_features_load_refuses_a_bad_file(
    pipeline: Pipeline,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rows = np.zeros((3, 16))
    rows[1, 4] = np.nan
    path = _csv(tmp_path / "bad.csv", ["a", "b", "c"], rows)
    for name, value in to_env(pipeline.settings).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exc:
        main(["features", "load", "--file", str(path), "--group", "user"])
    assert exc.value.code == 2
    assert "rows [2]" in capsys.readouterr().err  # data rows counted from 1, as everywhere
    found = feature_store(pipeline.settings).get_many({"user": ["a"]})["user"].found
    assert found.tolist() == [False]  # nothing half-loaded


def test_training_without_features_is_refused(pipeline: Pipeline) -> None:
    settings = pipeline.settings.model_copy(
        update={"redis": pipeline.settings.redis.model_copy(update={"key_prefix": "empty:"})}
    )
    events = pipeline.world.events(2000, start_index=5_000_000)
    labels = {x["event_id"]: x["engaged"] for x in pipeline.world.labels(events)}
    registry = MlflowRegistry(settings)
    before = registry.versions()
    with pytest.raises(TrainingRefused) as exc:
        train_and_register(registry, SPEC, feature_store(settings), events, labels)
    assert any("load features first" in p for p in exc.value.report.problems)
    assert registry.versions() == before  # nothing registered
