"""Calibration in training: a calibration split too small to fit a map on is refused, a refit
gets a map fitted to its own scores, and the ECE gate catches a miscalibrated version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.core.errors import ConfigError
from services.core.settings import Settings
from services.features.spec import FeatureSpec
from services.features.store import InMemoryFeatureStore
from services.scoring.calibration import Calibration
from services.scoring.registry import MlflowRegistry
from services.synthetic.world import World
from services.training import pipeline
from services.training.pipeline import CalibrationGateRefused, train_and_register

SPEC = FeatureSpec.load()
WORLD = World(SPEC, n_users=600, n_items=200, seed=11)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Any]:
    store = InMemoryFeatureStore(SPEC)
    for group in ("user", "item"):
        store.put_many(group, *WORLD.features(group))
    return {"store": store, "registry": MlflowRegistry(Settings(home=tmp_path))}


def _history(n: int, start: int = 0) -> tuple[list[dict[str, Any]], dict[str, bool]]:
    events = WORLD.events(n, start_index=start)
    return events, {x["event_id"]: x["engaged"] for x in WORLD.labels(events)}


def test_a_calibration_split_under_200_rows_is_refused(env: dict[str, Any]) -> None:
    events, labels = _history(1000)  # 800 training rows: 160 to calibrate on
    with pytest.raises(ConfigError) as refused:
        train_and_register(
            env["registry"], SPEC, env["store"], events, labels, calibrate="isotonic"
        )
    assert str(refused.value) == (
        "--calibrate needs at least 200 rows to fit its map on; this set gives 160 (20% of 800 "
        "training rows): train without --calibrate, or on more history"
    )
    assert env["registry"].versions() == []


def test_after_a_refit_the_map_is_fitted_on_the_refitted_models_scores(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    fitted: list[tuple[np.ndarray, Calibration]] = []
    written: list[Calibration | None] = []
    real_fit, real_write = pipeline.fit_calibration, pipeline.write_artifacts

    def fit_spy(method: Any, p: np.ndarray, y: np.ndarray) -> Calibration:
        fitted.append((p.copy(), real_fit(method, p, y)))
        return fitted[-1][1]

    def write_spy(*args: Any) -> Any:
        written.append(
            args[7]
        )  # write_artifacts(dir, flavor, model, names, spec, base, fb, cal,..)
        return real_write(*args)

    monkeypatch.setattr(pipeline, "fit_calibration", fit_spy)
    monkeypatch.setattr(pipeline, "write_artifacts", write_spy)
    events, labels = _history(5000)
    result = train_and_register(
        env["registry"], SPEC, env["store"], events, labels, calibrate="isotonic", refit_on_all=True
    )
    assert len(fitted) == 2  # the first model's map, then the refit's
    assert written == [fitted[1][1]]
    assert not np.array_equal(fitted[0][0], fitted[1][0])  # other scores: another model
    # The version serves the refit's raw scores through the refit's map.
    served = env["registry"].load(version=result.version)
    assert served.metadata.calibration == fitted[1][1]


def test_the_ece_gate_catches_a_deliberately_miscalibrated_version(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    registry, store = env["registry"], env["store"]
    events, labels = _history(6000)
    champion = train_and_register(registry, SPEC, store, events, labels, calibrate="isotonic")
    loaded = registry.load(version=champion.version)
    later, later_labels = _history(6000, start=100_000)
    # A well calibrated challenger passes the gate.
    fair = train_and_register(
        registry, SPEC, store, later, later_labels, calibrate="isotonic", seed=3,
        compare_to=loaded, ece_margin=0.05,
    )  # fmt: skip
    assert fair.metrics["holdout_ece"] < fair.metrics["champion_holdout_ece"] + 0.05
    # Its "calibration" pushes every score up by 2.5 in log-odds: far too sure of engagement.
    monkeypatch.setattr(
        pipeline, "fit_calibration", lambda *_a: Calibration("sigmoid", a=1.0, b=2.5)
    )
    versions = len(registry.versions())
    with pytest.raises(CalibrationGateRefused) as refused:
        train_and_register(
            registry, SPEC, store, later, later_labels, calibrate="sigmoid", seed=3,
            compare_to=loaded, ece_margin=0.05,
        )  # fmt: skip
    said = str(refused.value)
    assert said.startswith("not registered: holdout ECE ") and "(ECE margin 0.05)" in said
    ece, theirs = (float(w) for w in said.split("ECE ")[1].split(" on ")[0].split(" vs champion "))
    assert ece > theirs + 0.2, said  # grossly off, not merely within [0, 1]
    assert len(registry.versions()) == versions  # nothing registered
