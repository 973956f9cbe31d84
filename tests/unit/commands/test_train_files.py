"""`train` and `features matrix` from files: point-in-time snapshots, training controls,
calibration in the run and in `models show`, and refused rows (exit 2, each named one way)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from services.features.spec import FeatureSpec
from services.synthetic.world import World, strip_private
from streams.cli import cli

SPEC = FeatureSpec.load()
WORLD = World(SPEC, n_users=50, n_items=30, seed=4)
RAW = WORLD.events(1500)
EVENTS = [strip_private(e) for e in RAW]
CHANGED_AT = max(int(e["event_time"]) for e in EVENTS) + 1  # the second snapshot: after all


def run(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Any]:
    """Events, labels, and per group two snapshots: the world's rows valid from 0, and other
    rows (+3) valid only after every event."""
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(e) + "\n" for e in EVENTS), encoding="utf-8")
    labels = tmp_path / "labels.csv"
    pd.DataFrame(WORLD.labels(RAW)).to_csv(labels, index=False)
    snapshots = {}
    for g in SPEC.groups:
        keys, rows = WORLD.features(g.name)
        old = pd.DataFrame(rows, columns=g.names).assign(**{g.key_field: keys, "valid_from": 0})
        new = pd.DataFrame(rows + 3.0, columns=g.names).assign(
            **{g.key_field: keys, "valid_from": CHANGED_AT}
        )
        path = tmp_path / f"{g.name}s.csv"
        pd.concat([old, new]).to_csv(path, index=False)
        snapshots[g.name] = (path, dict(zip(keys, rows, strict=True)))
    env = {"STREAMSCORE_HOME": str(tmp_path / "home"), "STREAMSCORE_MODEL__COMPILE": "false"}
    return {"events": events, "labels": labels, "snapshots": snapshots, "env": env, "tmp": tmp_path}


def test_features_matrix_joins_each_event_as_of_its_time(files: dict[str, Any]) -> None:
    out = files["tmp"] / "X.parquet"
    paths = [str(p) for p, _ in files["snapshots"].values()]
    feature_args = [a for p in paths for a in ("--features", p)]
    code, text = run(
        files["env"], "features", "matrix", "--events", str(files["events"]), *feature_args,
        "--out", str(out), "--json",
    )  # fmt: skip
    assert code == 0, text
    frame = pd.read_parquet(out)
    assert frame["event_id"].tolist() == [e["event_id"] for e in EVENTS]
    _, users = files["snapshots"]["user"]
    names = SPEC.group("user").names
    # The hand-written oracle: each event's user row from the first snapshot, as float32.
    expected = np.vstack([users[e["user_id"]] for e in EVENTS]).astype(np.float32)
    assert np.array_equal(frame[names].to_numpy(), expected.astype(np.float64))
    assert frame["position"].tolist() == [float(e["position"]) for e in EVENTS]

    later = files["tmp"] / "later.parquet"
    code, _ = run(
        files["env"], "features", "matrix", "--events", str(files["events"]), *feature_args,
        "--as-of", str(CHANGED_AT), "--out", str(later),
    )  # fmt: skip
    assert code == 0
    moved = pd.read_parquet(later)[names].to_numpy()
    assert np.array_equal(moved, (expected + np.float32(3.0)).astype(np.float64))


def test_train_from_files_with_controls_and_calibration(files: dict[str, Any]) -> None:
    params = files["tmp"] / "params.json"
    params.write_text(json.dumps({"num_leaves": 7, "num_boost_round": 40}), encoding="utf-8")
    feature_args = [a for p, _ in files["snapshots"].values() for a in ("--features", str(p))]
    code, out = run(
        files["env"], "train", "--events", str(files["events"]), "--labels", str(files["labels"]),
        *feature_args, "--params", str(params), "--run-name", "pit-isotonic",
        "--holdout-by", "time", "--calibrate", "isotonic", "--json",
    )  # fmt: skip
    assert code == 0, out
    result = json.loads(out)
    assert result["feature_rows"] == {"point_in_time": len(EVENTS)}
    m = result["metrics"]
    assert 0 <= m["holdout_ece"] <= 1 and 0 <= m["holdout_ece_uncalibrated"] <= 1
    assert m["calibration_rows"] == pytest.approx(0.2 * 0.8 * len(EVENTS), abs=1)
    code, shown = run(files["env"], "models", "show", result["version"], "--json")
    assert code == 0
    data = json.loads(shown)
    assert data["calibration"] == {
        "ece_before": pytest.approx(m["holdout_ece_uncalibrated"]),
        "ece_after": pytest.approx(m["holdout_ece"]),
    }

    import mlflow

    mlflow.set_tracking_uri(
        f"sqlite:///{Path(files['env']['STREAMSCORE_HOME']) / 'mlflow' / 'mlflow.db'}"
    )
    run_info = mlflow.get_run(result["run_id"])
    assert run_info.info.run_name == "pit-isotonic"
    assert run_info.data.params["num_leaves"] == "7"
    assert run_info.data.params["num_boost_round"] == "40"
    assert run_info.data.params["holdout"] == "newest"
    assert run_info.data.params["calibration"] == "isotonic"


def test_refused_rows_exit_2_and_are_named_by_row_and_event(files: dict[str, Any]) -> None:
    rows = [dict(e) for e in EVENTS[:300]]
    rows[4]["position"] = "four"  # not a number: the schema refuses it
    rows[9]["position"] = -3  # a number, but the rules refuse it
    events = files["tmp"] / "bad.jsonl"
    events.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    code, out = run(
        files["env"], "train", "--events", str(events), "--labels", str(files["labels"]), "--json"
    )
    assert code == 2
    problems = json.loads(out)["problems"]
    assert problems[0].startswith(f"bad.jsonl row 5 (event {rows[4]['event_id']}): position: ")
    assert problems[1].startswith(f"bad.jsonl row 10 (event {rows[9]['event_id']}): ")
    assert len(problems) == 2


def test_the_features_help_says_the_log_is_not_read_with_snapshots(files: dict[str, Any]) -> None:
    """With --features and no --feature-log, train reads no feature log: every event's entity
    rows come from the snapshots (the controls test above: all point_in_time). The help said
    the snapshots were for "the events the feature log lacks"."""
    code, out = run(files["env"], "train", "--help")
    assert code == 0
    text = " ".join(out.split())
    assert (
        "joined as of each event's time for every event: the feature log is then not read, "
        "unless --feature-log is given, and then they serve the events the log lacks"
    ) in text, text


def _main(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    *args: str,
) -> tuple[int, str, str]:
    """The console script in-process: its exit code (errors mapped as docs/cli.md says)."""
    from streams.cli import main

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = 0
    try:
        main(list(args))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, " ".join(out.err.split())


def test_features_matrix_chooses_rows_as_train_does(
    files: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without snapshot files, `features matrix` took Redis as it is now, silently: it now
    chooses rows as train does (the feature log, then snapshots, then Redis now only with
    --features-now) and says where they came from. A domain that declares no feature log
    and no snapshots: refused (exit 2), naming both ways out."""
    import shutil

    from services.core.settings import domain_folder

    folder = files["tmp"] / "feed-nolog"
    shutil.copytree(domain_folder("feed"), folder)
    declared = json.loads((folder / "domain.json").read_text())
    declared.get("topics", {}).pop("feature_log", None)
    (folder / "domain.json").write_text(json.dumps(declared))
    env = files["env"] | {"STREAMSCORE_DOMAIN": str(folder)}
    out = files["tmp"] / "X.parquet"
    matrix = ("features", "matrix", "--events", str(files["events"]), "--out", str(out))
    code, _, err = _main(monkeypatch, capsys, env, *matrix)
    assert code == 2, err
    assert (
        f"none of the {len(EVENTS):,} events has a row in no feature log (none declared): give "
        "--features SNAPSHOTS"
    ) in err, err
    assert "--features-now" in err and not out.exists()

    feature_args = [a for p, _ in files["snapshots"].values() for a in ("--features", str(p))]
    code, text, err = _main(monkeypatch, capsys, env, "--json", *matrix, *feature_args)
    assert code == 0, err
    data = json.loads(text)
    assert (data["features_from"], data["feature_rows"]) == (
        "point_in_time",
        {"point_in_time": len(EVENTS)},
    )
    code, _, err = _main(monkeypatch, capsys, env, *matrix, *feature_args, "--feature-log")
    assert code == 2 and "declares no feature-log topic" in err, err
    as_of = ("--as-of", "0", "--feature-log")
    code, _, err = _main(monkeypatch, capsys, env, *matrix, *feature_args, *as_of)
    assert code == 2 and "--as-of takes every row from the snapshots" in err, err
