"""`make airflow-test`: Airflow 3 in a throwaway virtualenv (build/airflow-venv, never in
streamscore's own environment) runs `airflow dags test streamscore_retrain` against the embedded
stack (Apache Kafka, Redis, the MLflow registry of the integration tests), and the registry
must then hold the challenger the run trained, in shadow. Two runs: the feed (a binary task) on
history its worker served, trained on the feature log (the DAG's default), and the delivery
domain (a regression task) on history never served, a backfill with features=now."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from services.domain.config import domain_of
from services.scoring.registry import MlflowRegistry
from services.synthetic.world import strip_private
from streams.runtime import scoring_worker
from tests.integration.conftest import Stack
from tests.integration.pipeline_env import make_pipeline

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = "apache-airflow==3.3.2"  # the newest release when written; resolves without constraints
# AIRFLOW_VENV: an existing virtualenv with that release, instead of making one.
VENV = Path(os.environ.get("AIRFLOW_VENV", ROOT / "build" / "airflow-venv"))
# domain, whether its worker serves the history first (then train reads the feature log, the
# DAG's default), the features param, the holdout loss the offline gate compares.
CASES = {
    "feed-served": ("feed", True, None, "log loss"),
    "delivery-backfill": ("delivery", False, "now", "MAE"),
}


def airflow_venv() -> Path:
    """The virtualenv with Airflow, made once (about 3.5 minutes here) and reused."""
    stamp = VENV / f".{AIRFLOW}"
    if not stamp.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True)
        subprocess.run([*pip, AIRFLOW], check=True, timeout=1800)
        stamp.touch()
    return VENV / "bin"


@pytest.mark.parametrize("case", list(CASES))
def test_the_dag_trains_registers_and_shadows_a_challenger(
    stack: Stack, tmp_path: Path, case: str
) -> None:
    name, serve, features, loss = CASES[case]
    started = time.monotonic()
    p = next(make_pipeline(stack, tmp_path, name))
    domain = domain_of(p.settings)
    target = domain.label.target
    raw = p.world.events(4000, start_index=200_000)
    labels = {x[domain.label.join_key]: x[target] for x in p.world.labels(raw)}
    events = [strip_private(e) for e in raw]
    history, holdout = events[:3000], events[3000:]
    if serve:
        # The history as it happened: streamed and scored, so the feature log holds the rows
        # served for each event (a bounded worker run: seconds).
        codec = p.codec(domain.event_record)
        key = domain.key_field
        p.produce(
            [
                (str(e[key]).encode(), v, [])
                for e, v in zip(history, codec.encode_many(history), strict=True)
            ]
        )
        summary = scoring_worker(p.settings).run(max_events=len(history), idle_timeout=60)
        assert summary.predictions == len(history)
    pd.DataFrame(history).to_csv(tmp_path / "events.csv", index=False)
    pd.DataFrame(
        [{domain.label.join_key: e["event_id"], target: labels[e["event_id"]]} for e in history]
    ).to_csv(tmp_path / "labels.csv", index=False)
    pd.DataFrame([e | {target: labels[e["event_id"]]} for e in holdout]).to_csv(
        tmp_path / "holdout.csv", index=False
    )
    champion = MlflowRegistry(p.settings).alias_version("champion")

    bin_dir = airflow_venv()
    installed = time.monotonic()
    home = tmp_path / "airflow"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCORE_")} | p.env()
    env |= {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "deploy" / "airflow" / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "DAG_STREAMSCORE_BIN": str(Path(sys.executable).parent / "streamscore"),
        "PATH": f"{bin_dir}:{env.get('PATH', '')}",
    }
    subprocess.run([str(bin_dir / "airflow"), "db", "migrate"], env=env, check=True, timeout=600)
    # No target: the holdout's label column is the domain's label target.
    conf = {
        "events": str(tmp_path / "events.csv"),
        "labels": str(tmp_path / "labels.csv"),
        "holdout": str(tmp_path / "holdout.csv"),
        "workdir": str(tmp_path / "work"),
        # 3,000 rows against the champion's 6,000: the test is about the wiring, so the
        # offline gate lets a challenger up to twice the champion's holdout loss through.
        "margin": 1.0,
    } | ({"features": features} if features else {})
    ran = subprocess.run(
        [str(bin_dir / "airflow"), "dags", "test", "streamscore_retrain", "-c", json.dumps(conf)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    log = ran.stdout + ran.stderr
    (ROOT / "build").mkdir(exist_ok=True)
    (ROOT / "build" / f"airflow-test-{case}.log").write_text(log, encoding="utf-8")
    assert ran.returncode == 0, log[-4000:]
    assert "state=success" in log, log[-4000:]

    [run_dir] = list((tmp_path / "work").iterdir())
    trained = json.loads((run_dir / "train.json").read_text())
    # Where the training rows came from: the rows served, or Redis now for the backfill.
    if serve:
        assert trained["feature_rows"] == {"feature_log": len(history)}
        assert trained["feature_log"]["not_logged"] == 0
    else:
        assert trained["feature_rows"] == {"online_store_now": len(history)}
    assert f"holdout {loss} " in log and "): challenger" in log  # the holdout gate passed
    registry = MlflowRegistry(p.settings)
    state = registry.rollout_state()
    assert trained["version"] != champion
    assert (state.champion, state.challenger, state.mode) == (
        champion,
        trained["version"],
        "shadow",
    )
    started_shadow = [h for h in registry.history() if h.event_type == "shadow_started"]
    assert started_shadow and started_shadow[-1].to_version == trained["version"]
    assert "airflow streamscore_retrain" in started_shadow[-1].reason
    print(
        f"\nairflow-test {case}: setup {installed - started:.0f} s (pipeline, history, venv), "
        f"dags test {time.monotonic() - installed:.0f} s, "
        f"v{trained['version']} in shadow beside champion v{champion}"
    )
