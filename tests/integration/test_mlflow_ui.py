"""`streamscore models ui` (what the README tells people to run) serves MLflow's UI on the
embedded sqlite registry, and it shows our runs, versions, aliases and rollout history."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from services.core.settings import Settings, to_env
from services.scoring.registry import MlflowRegistry
from services.scoring.rollout import RolloutState, plan_rollout
from tests.integration.conftest import free_port

pytestmark = [pytest.mark.integration]


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback URL)
        return bytes(response.read())


def test_models_ui_shows_runs_versions_and_aliases(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    registry = MlflowRegistry(settings)
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    (artifact / "model.txt").write_text("not served in this test")
    versions = []
    for n in range(2):
        run_id, source = registry.log_run(
            {"n": n}, {"holdout_auc": 0.7 + n / 100}, {}, artifact, f"r{n}"
        )
        versions.append(registry.register(run_id, source, "0" * 64, {}))
    registry.set_alias("champion", versions[0])
    state, change = plan_rollout(
        RolloutState(versions[0]), versions[1], "shadow", 0, "ui test", "t", 1
    )
    registry.apply(state, change)

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCORE_")} | to_env(
        settings
    )
    ui = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "models", "ui", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                body = _get(
                    f"{base}/api/2.0/mlflow/registered-models/get?name={settings.model.name}"
                )
                break
            except OSError:
                assert ui.poll() is None, "models ui exited"
                assert time.monotonic() < deadline, "MLflow UI did not answer within 90 s"
                time.sleep(0.5)
        model = json.loads(body)["registered_model"]
        aliases = {a["alias"]: a["version"] for a in model["aliases"]}
        assert aliases == {"champion": versions[0], "challenger": versions[1]}
        tags = {t["key"]: t["value"] for t in model["tags"]}
        assert tags["streamscore.rollout.mode"] == "shadow"
        assert any(k.startswith("streamscore.history.") for k in tags)
        search = urllib.request.Request(  # noqa: S310 (loopback URL)
            f"{base}/api/2.0/mlflow/runs/search",
            data=json.dumps({"experiment_ids": [registry.experiment_id()]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(search, timeout=5) as response:  # noqa: S310 (loopback URL)
            runs = json.loads(response.read())["runs"]
        assert len(runs) == 2
        assert b"<html" in _get(f"{base}/").lower()  # and the UI page itself is served
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.communicate(timeout=30)
