"""Train a model (LightGBM, or scikit-learn's HistGradientBoosting) and evaluate it on a holdout."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.metrics import log_loss, roc_auc_score

from services.core.errors import ConfigError
from services.core.task import BINARY, Task
from services.scoring.model import LogisticFallback

Flavor = Literal["lightgbm", "sklearn"]
HoldoutBy = Literal["random", "time"]
# What each task needs of a LightGBM objective: a probability of the positive class; a value;
# class probabilities that sum to 1 (softmax: one-vs-all's do not).
OBJECTIVES: dict[str, tuple[str, ...]] = {
    "binary": ("binary", "cross_entropy", "xentropy"),
    "regression": (
        "regression",
        "regression_l2",
        "l2",
        "mse",
        "mean_squared_error",
        "regression_l1",
        "l1",
        "mae",
        "huber",
        "fair",
        "quantile",
        "mape",
        "poisson",
        "gamma",
        "tweedie",
    ),
    "multiclass": ("multiclass", "softmax"),
}
BINARY_OBJECTIVES = OBJECTIVES["binary"]

LIGHTGBM_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 40,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.9,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "verbosity": -1,
    "num_threads": 1,
    "deterministic": True,
}
NUM_BOOST_ROUND = 200


@dataclass(frozen=True, slots=True)
class Trained:
    """A fitted model with what produced it."""

    flavor: Flavor
    model: Any  # lgb.Booster or HistGradientBoostingClassifier
    params: dict[str, Any]


def split(
    n: int, holdout_share: float, seed: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Random train/holdout row indexes (deterministic by seed)."""
    order = np.random.default_rng(seed).permutation(n)
    cut = int(n * (1 - holdout_share))
    return np.sort(order[:cut]), np.sort(order[cut:])


def split_by_time(
    times: npt.NDArray[np.int64], holdout_share: float
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Train on the older rows, hold out the newest ``holdout_share`` by time: after a drift
    the holdout is the newest concept, and the model is judged on what comes next, as it
    will be when it serves (ties keep their order).

    >>> tr, ho = split_by_time(np.array([50, 10, 40, 20, 30]), 0.4)
    >>> tr.tolist(), ho.tolist()
    ([1, 3, 4], [0, 2])
    """
    order = np.argsort(times, kind="stable")
    cut = int(len(times) * (1 - holdout_share))
    return np.sort(order[:cut]), np.sort(order[cut:])


def lightgbm_params(
    overrides: Mapping[str, Any] | None, seed: int, task: Task = BINARY
) -> tuple[dict[str, Any], int]:
    """LightGBM parameters: the defaults for ``task`` (its objective; a multiclass task's
    ``num_class``), then ``overrides`` (``train --params``), with ``num_boost_round`` taken out;
    the objective must suit the task.

    >>> params, rounds = lightgbm_params({"num_leaves": 7, "num_boost_round": 50}, 1)
    >>> params["num_leaves"], params["seed"], rounds
    (7, 1, 50)
    >>> lightgbm_params(None, 1, Task("multiclass", ("a", "b", "c")))[0]["num_class"]
    3
    >>> lightgbm_params({"objective": "regression"}, 1)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    services.core.errors.ConfigError: LightGBM objective 'regression': the task is binary: ...
    """
    defaults = LIGHTGBM_PARAMS | {"objective": OBJECTIVES[task.kind][0], "seed": seed}
    if task.kind == "multiclass":
        defaults["num_class"] = task.width
    params = defaults | dict(overrides or {})
    rounds = params.pop("num_boost_round", NUM_BOOST_ROUND)
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
        raise ConfigError(f"num_boost_round {rounds!r}: a whole number of at least 1")
    allowed = OBJECTIVES[task.kind]
    if str(params.get("objective")) not in allowed:
        raise ConfigError(
            f"LightGBM objective {params.get('objective')!r}: the task is {task.kind}: "
            f"one of {', '.join(allowed)}"
        )
    if task.kind == "multiclass" and params.get("num_class") != task.width:
        raise ConfigError(f"num_class {params.get('num_class')!r}: the task has {task.width}")
    return params, rounds


def fit(
    X: npt.NDArray[np.float64],
    y: npt.NDArray[Any],
    names: tuple[str, ...],
    flavor: Flavor,
    seed: int,
    params: Mapping[str, Any] | None = None,
    task: Task = BINARY,
) -> Trained:
    """Fit ``flavor`` for ``task``; ``params`` override the LightGBM defaults (``train
    --params``)."""
    if flavor == "lightgbm":
        chosen, rounds = lightgbm_params(params, seed, task)
        data = lgb.Dataset(X, label=y, feature_name=list(names), free_raw_data=False)
        try:
            booster = lgb.train(chosen, data, num_boost_round=rounds)
        except lgb.basic.LightGBMError as exc:
            raise ConfigError(f"LightGBM refused the parameters: {exc}") from exc
        return Trained("lightgbm", booster, chosen | {"num_boost_round": rounds})
    if params:
        raise ConfigError("--params applies to LightGBM (flavor lightgbm) only")
    sk_params: dict[str, Any] = {"max_iter": 200, "learning_rate": 0.05, "random_state": seed}
    if task.kind == "regression":
        return Trained("sklearn", HistGradientBoostingRegressor(**sk_params).fit(X, y), sk_params)
    clf = HistGradientBoostingClassifier(**sk_params).fit(X, y)
    return Trained("sklearn", clf, sk_params)


def fit_fallback(
    X: npt.NDArray[np.float64], y: npt.NDArray[np.int64], seed: int
) -> LogisticFallback:
    """The version's fallback scorer: a standardised logistic regression (pure numpy to serve)."""
    from sklearn.linear_model import LogisticRegression

    present = np.isfinite(X)
    mean = np.where(present, X, 0.0).sum(axis=0) / np.maximum(present.sum(axis=0), 1)
    scale = np.sqrt(
        np.where(present, (X - mean) ** 2, 0.0).sum(axis=0) / np.maximum(present.sum(axis=0), 1)
    )
    scale[~(scale > 0)] = 1.0
    # Missing values become the mean (0 once standardised), exactly as LogisticFallback serves.
    standard = np.where(present, (X - mean) / scale, 0.0)
    clf = LogisticRegression(max_iter=500, random_state=seed).fit(standard, y)
    return LogisticFallback(
        tuple(mean.tolist()),
        tuple(scale.tolist()),
        tuple(clf.coef_[0].tolist()),
        float(clf.intercept_[0]),
    )


def predict(
    trained: Trained, X: npt.NDArray[np.float64], task: Task = BINARY
) -> npt.NDArray[np.float64]:
    """The fitted model's outputs, shaped as ``LoadedModel.predict`` serves them."""
    if trained.flavor == "lightgbm":
        return np.asarray(trained.model.predict(X), dtype=np.float64)
    if task.kind == "regression":
        return np.asarray(trained.model.predict(X), dtype=np.float64)
    proba = np.asarray(trained.model.predict_proba(X), dtype=np.float64)
    return proba if task.kind == "multiclass" else proba[:, 1]


def evaluate_task(
    task: Task, y: npt.NDArray[Any], outputs: npt.NDArray[np.float64]
) -> dict[str, float]:
    """The task's metrics: binary log loss, AUC and calibration; regression MAE and RMSE;
    multiclass log loss and accuracy.

    >>> evaluate_task(Task("regression"), np.array([1.0, 2.0]), np.array([1.5, 2.0]))["mae"]
    0.25
    """
    return evaluate(y, outputs) if task.kind == "binary" else task.evaluate(y, outputs)


def evaluate(
    y: npt.NDArray[np.int64], p: npt.NDArray[np.float64], bins: int = 10
) -> dict[str, float]:
    """AUC, log loss, expected calibration error and calibration-in-the-large.

    >>> m = evaluate(np.array([0, 1, 0, 1]), np.array([0.1, 0.9, 0.2, 0.8]))
    >>> m["auc"], round(m["base_rate"], 2)
    (1.0, 0.5)
    """
    p = np.clip(p, 1e-7, 1 - 1e-7)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges) - 1, 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(float(p[mask].mean()) - float(y[mask].mean()))
    return {
        "auc": float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan"),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "ece": float(ece),
        "mean_prediction": float(p.mean()),
        "base_rate": float(y.mean()),
        "rows": float(len(y)),
    }


def metrics_line(m: dict[str, float], prefix: str = "holdout_") -> str:
    """One line of a version's metrics, whichever task they are of.

    >>> metrics_line({"holdout_mae": 0.51, "holdout_rmse": 0.64})
    'MAE 0.5100, RMSE 0.6400'
    >>> metrics_line({"holdout_auc": 0.8, "holdout_log_loss": 0.4, "holdout_ece": 0.01,
    ...               "holdout_base_rate": 0.2})
    'AUC 0.8000, log loss 0.4000, ECE 0.0100, base rate 0.200'
    """
    if f"{prefix}mae" in m:
        return f"MAE {m[prefix + 'mae']:.4f}, RMSE {m[prefix + 'rmse']:.4f}"
    if f"{prefix}accuracy" in m:
        return f"log loss {m[prefix + 'log_loss']:.4f}, accuracy {m[prefix + 'accuracy']:.4f}"
    return (
        f"AUC {m[prefix + 'auc']:.4f}, log loss {m[prefix + 'log_loss']:.4f}, "
        f"ECE {m[prefix + 'ece']:.4f}, base rate {m[prefix + 'base_rate']:.3f}"
    )
