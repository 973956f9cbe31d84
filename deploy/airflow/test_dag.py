"""`make airflow-test`: Airflow 3 in a throwaway virtualenv (build/airflow-venv, never in
streamscore's own environment) runs `airflow dags test streamscore_retrain` against the embedded
stack (Apache Kafka, Redis, the MLflow registry of the integration tests), and the registry
must then hold the challenger the run trained, in shadow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from services.domain.config import domain_of
from services.scoring.registry import MlflowRegistry
from services.synthetic.world import strip_private
from tests.integration.conftest import Stack
from tests.integration.pipeline_env import make_pipeline

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = "apache-airflow==3.3.2"  # the newest release when written; resolves without constraints
# AIRFLOW_VENV: an existing virtualenv with that release, instead of making one.
VENV = Path(os.environ.get("AIRFLOW_VENV", ROOT / "build" / "airflow-venv"))


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


def test_the_dag_trains_registers_and_shadows_a_challenger(stack: Stack, tmp_path: Path) -> None:
    started = time.monotonic()
    p = next(make_pipeline(stack, tmp_path))
    domain = domain_of(p.settings)
    target = domain.label.target
    raw = p.world.events(4000, start_index=200_000)
    labels = {x[domain.label.join_key]: x[target] for x in p.world.labels(raw)}
    events = [strip_private(e) for e in raw]
    history, holdout = events[:3000], events[3000:]
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
    conf = {
        "events": str(tmp_path / "events.csv"),
        "labels": str(tmp_path / "labels.csv"),
        "holdout": str(tmp_path / "holdout.csv"),
        "target": target,
        "workdir": str(tmp_path / "work"),
        # 3,000 rows against the champion's 6,000: the test is about the wiring, so the
        # offline gate lets a challenger up to twice the champion's log loss through.
        "margin": 1.0,
    }
    ran = subprocess.run(
        [str(bin_dir / "airflow"), "dags", "test", "streamscore_retrain", "-c", json.dumps(conf)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    log = ran.stdout + ran.stderr
    (ROOT / "build").mkdir(exist_ok=True)
    (ROOT / "build" / "airflow-test.log").write_text(log, encoding="utf-8")
    assert ran.returncode == 0, log[-4000:]
    assert "state=success" in log, log[-4000:]

    [run_dir] = list((tmp_path / "work").iterdir())
    trained = json.loads((run_dir / "train.json").read_text())
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
        f"\nairflow-test: install {installed - started:.0f} s, "
        f"dags test {time.monotonic() - installed:.0f} s, "
        f"v{trained['version']} in shadow beside champion v{champion}"
    )
