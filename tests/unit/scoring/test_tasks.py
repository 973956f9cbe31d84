"""Every task through the same scoring core: a regression and a 3-class LightGBM model trained,
saved and loaded as production does, scored with the fallback ladder, and their predictions'
records; a version of another task is refused at load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.core.errors import ModelLoadError
from services.core.records import Inbound
from services.core.task import Task
from services.scoring.loader import smoke_check
from services.scoring.model import LoadedModel, artifact_digest, load_artifacts, write_artifacts
from services.scoring.results import PredictionBlock
from services.scoring.rollout import agreement
from services.scoring.serving import Serving, score_rows, score_with_ladder
from services.training.train import evaluate_task, fit, predict

NAMES = ("a", "b", "c")
RNG = np.random.default_rng(5)
X = RNG.normal(size=(1500, 3))
VALUE = 10 + 3 * X[:, 0] - 2 * X[:, 1] + RNG.normal(0, 0.5, size=1500)
THREE = Task("multiclass", ("low", "mid", "high"))
CLASS = np.digitize(X[:, 0] + 0.3 * RNG.normal(size=1500), [-0.5, 0.5])


def _saved(tmp_path: Path, task: Task, y: np.ndarray) -> LoadedModel:
    trained = fit(X[:1200], y[:1200], NAMES, "lightgbm", 1, {"num_boost_round": 60}, task)
    constant = task.constant(y[:1200])
    write_artifacts(
        tmp_path,
        "lightgbm",
        trained.model,
        NAMES,
        "t1",
        constant[0] if task.width == 1 else 0.0,
        None,
        None,
        task,
        constant if task.width > 1 else (),
    )
    return load_artifacts(tmp_path, "m", "3", artifact_digest(tmp_path))


def test_a_regression_model_serves_values_and_falls_back_to_the_training_mean(
    tmp_path: Path,
) -> None:
    task = Task("regression")
    model = _saved(tmp_path, task, VALUE)
    smoke_check(model, task)
    got = model.predict(X[1200:])
    metrics = evaluate_task(task, VALUE[1200:], got)
    # Close to the noise (sd 0.5: MAE about 0.40) and far below predicting the mean.
    assert metrics["mae"] < 0.8 and metrics["rmse"] < 1.0
    assert evaluate_task(task, VALUE[1200:], np.full(300, VALUE[:1200].mean()))["mae"] > 2.5
    broken = X[1200:1204].copy()
    scores, rungs = score_with_ladder(model, broken)
    assert scores.shape == (4,) and rungs == [None] * 4
    fallback, rung = model.predict_fallback(broken)
    assert rung == "training_mean"
    np.testing.assert_allclose(fallback, VALUE[:1200].mean())
    with pytest.raises(ModelLoadError, match="a regression model, but this domain's task is bin"):
        smoke_check(model, Task())


def test_a_multiclass_model_serves_class_probabilities_the_top_class_and_its_prior(
    tmp_path: Path,
) -> None:
    model = _saved(tmp_path, THREE, CLASS)
    smoke_check(model, THREE)
    p = model.predict(X[1200:])
    assert p.shape == (300, 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    metrics = evaluate_task(THREE, CLASS[1200:], p)
    assert metrics["accuracy"] > 0.7 and metrics["log_loss"] < 0.7
    fallback, rung = model.predict_fallback(X[:2])
    prior = np.bincount(CLASS[:1200], minlength=3) / 1200
    assert rung == "class_prior" and fallback.shape == (2, 3)
    np.testing.assert_allclose(fallback[0], prior)
    keys = [f"k{i}" for i in range(300)]
    scored = score_rows(Serving(model, model, "shadow"), X[1200:], keys, 0.5)
    assert scored.scores.shape == (300, 3) and scored.agreement is not None
    assert scored.agreement.decision_flips == 0 and scored.agreement.mean_abs_diff == 0.0

    events = [{"event_id": f"e{i}", "event_time": 1, "k": keys[i]} for i in range(3)]
    block = PredictionBlock(
        [Inbound("t", 0, i, None, b"") for i in range(3)],
        events,
        "m",
        ["3"] * 3,
        ["champion"] * 3,
        THREE.score(p[:3]),
        [False] * 3,
        ((), (), ()),
        7,
        probabilities=p[:3],
        classes=THREE.classes,
    )
    records = block.records()
    for r, row in zip(records, p[:3], strict=True):
        assert r["predicted_class"] == THREE.classes[int(row.argmax())]
        assert r["score"] == pytest.approx(row.max())
        assert list(r["probabilities"]) == list(THREE.classes)
        assert sum(r["probabilities"].values()) == pytest.approx(1.0)


def test_a_class_change_is_a_flip_and_a_regression_has_none() -> None:
    a = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    b = np.array([[0.2, 0.7, 0.1], [0.1, 0.8, 0.1]])
    assert agreement(a, b, None).decision_flips == 1
    assert agreement(np.array([1.0, 30.0]), np.array([29.0, 31.0]), None).decision_flips == 0


def test_training_predictions_have_the_served_shape() -> None:
    trained = fit(X[:600], CLASS[:600], NAMES, "sklearn", 1, None, THREE)
    assert predict(trained, X[:5], THREE).shape == (5, 3)
    trained = fit(X[:600], VALUE[:600], NAMES, "sklearn", 1, None, Task("regression"))
    assert predict(trained, X[:5], Task("regression")).shape == (5,)
