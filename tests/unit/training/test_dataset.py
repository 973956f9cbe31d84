"""Training-set validation refuses bad data with a reason, and passes good data."""

from __future__ import annotations

import numpy as np
import pytest

from services.features.assemble import feature_names
from services.features.spec import FeatureSpec
from services.training.dataset import TrainingSet, validate
from services.training.train import evaluate

SPEC = FeatureSpec.load()
NAMES = feature_names(SPEC)


def good(n: int = 1000) -> TrainingSet:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, len(NAMES)))
    ctx = slice(32, None)
    X[:, ctx] = np.abs(np.round(X[:, ctx]))  # non-negative, small integers: inside every range
    for flag in ("is_following_author", "is_video", "is_sponsored"):
        X[:, NAMES.index(flag)] = rng.random(n) < 0.5
    X[:, NAMES.index("surface")] = 1
    X[:, NAMES.index("device")] = 2
    X[:, NAMES.index("hour_of_day")] = 7
    y = (rng.random(n) < 0.3).astype(np.int64)
    return TrainingSet(X, y, NAMES, tuple(f"e{i}" for i in range(n)), {"user": 0.01, "item": 0.0})


def test_good_set_passes() -> None:
    report = validate(good(), SPEC)
    assert report.problems == ()
    assert report.rows == 1000


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (lambda ts: ts.X.__setitem__((5, 0), np.nan), "user_f00: 1 missing values"),
        (
            lambda ts: ts.X.__setitem__((5, NAMES.index("position")), -4),
            "position: 1 values outside",
        ),
        (lambda ts: ts.X.__setitem__((5, 3), np.inf), "infinite"),
        (lambda ts: ts.y.__setitem__(slice(None), 0), "too few examples of a class"),
    ],
)
def test_bad_sets_are_refused_with_a_reason(breakage: object, expected: str) -> None:
    ts = good()
    breakage(ts)  # type: ignore[operator]  # the lambdas above
    assert any(expected in p for p in validate(ts, SPEC).problems)


def test_duplicates_and_missing_features_are_refused() -> None:
    ts = good()
    dup = TrainingSet(ts.X, ts.y, ts.names, ("same",) * len(ts.y), {"user": 0.5, "item": 0.0})
    problems = validate(dup, SPEC).problems
    assert any("duplicate event ids" in p for p in problems)
    assert any("user features missing for 50%" in p for p in problems)


def test_nan_allowed_where_the_event_may_omit_it() -> None:
    ts = good()
    ts.X[:10, NAMES.index("network_rtt_ms")] = np.nan
    assert validate(ts, SPEC).problems == ()


def test_calibration_error_of_a_calibrated_model_is_small() -> None:
    rng = np.random.default_rng(1)
    p = rng.random(50_000)
    y = (rng.random(50_000) < p).astype(np.int64)
    m = evaluate(y, p)
    assert m["ece"] < 0.01 and abs(m["auc"] - 5 / 6) < 0.01  # uniform p: AUC is 5/6 in theory
    assert abs(m["mean_prediction"] - m["base_rate"]) < 0.01
    assert evaluate(y, p**2)["ece"] > 0.1  # a miscalibrated score is caught
