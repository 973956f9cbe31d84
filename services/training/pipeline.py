"""Train end to end: build the set through the feature store, validate, fit, evaluate, record
the run in MLflow, register the version, and make it champion when there is none."""

from __future__ import annotations

import logging
import platform
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import sklearn

from services.core.errors import ConfigError, StreamMLError
from services.core.task import BINARY, Task
from services.drift.reference import write_reference
from services.features.history import FeatureSource
from services.features.log import FeatureLogIndex
from services.features.spec import FeatureSpec
from services.features.store import FeatureStore
from services.retrain.policy import ece_gate
from services.scoring.calibration import Method, fit_calibration
from services.scoring.model import LoadedModel, artifact_digest, write_artifacts
from services.scoring.registry import MlflowRegistry
from services.training.dataset import (
    TrainingSet,
    ValidationReport,
    build_training_set,
    validate,
)
from services.training.train import (
    Flavor,
    HoldoutBy,
    evaluate,
    evaluate_task,
    fit,
    fit_fallback,
    predict,
    split,
    split_by_time,
)

CALIBRATION_SHARE = 0.2  # of the training rows, kept out of the fit to fit the calibration
# Fewer rows than this fit an isotonic map of a few steps, or a sigmoid on noise: a map that
# moves served scores without evidence. Refused rather than fitted.
MIN_CALIBRATION_ROWS = 200

logger = logging.getLogger(__name__)


class CalibrationGateRefused(StreamMLError):
    """``--calibrate`` made a version whose holdout ECE is worse than the champion's on the
    same rows by more than the ECE margin; nothing was registered."""


class TrainingRefused(StreamMLError):
    """The training set failed validation; nothing was trained."""

    def __init__(self, report: ValidationReport) -> None:
        super().__init__("training set failed validation: " + "; ".join(report.problems))
        self.report = report


@dataclass(frozen=True, slots=True)
class TrainResult:
    version: str
    run_id: str
    alias_set: bool
    metrics: dict[str, float]
    report: ValidationReport
    data_fingerprint: str
    sha256: str
    sources: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "run_id": self.run_id,
            "champion": self.alias_set,
            "metrics": self.metrics,
            "validation": {
                "rows": self.report.rows,
                "positives": self.report.positives,
                "problems": list(self.report.problems),
            },
            "data_fingerprint": self.data_fingerprint,
            "artifact_sha256": self.sha256,
            "feature_rows": self.sources,
        }


def train_and_register(
    registry: MlflowRegistry,
    spec: FeatureSpec,
    store: FeatureStore | None,
    events: Sequence[Mapping[str, Any]],
    labels: Mapping[str, bool],
    *,
    flavor: Flavor = "lightgbm",
    seed: int = 42,
    holdout_share: float = 0.2,
    extra_params: Mapping[str, Any] | None = None,
    compare_to: LoadedModel | None = None,
    make_champion_if_none: bool = True,
    holdout_newest: bool = False,
    refit_on_all: bool = False,
    params: Mapping[str, Any] | None = None,
    run_name: str | None = None,
    calibrate: Method | None = None,
    logged: FeatureLogIndex | None = None,
    source: FeatureSource | None = None,
    task: Task = BINARY,
    ece_margin: float | None = None,
) -> TrainResult:
    """Raises ``TrainingRefused`` when the data fails validation (the report says why), and
    ``ConfigError`` when LightGBM refuses ``params``.

    Rows: the feature log's (``logged``) where it has the event, else ``source`` (point in
    time), else ``store`` as it is now; ``TrainResult.sources`` and the run say how many of each.

    ``holdout_newest``: hold out the newest events by ``event_time`` instead of a random share
    (retraining after a drift: the holdout is the new concept).

    ``refit_on_all``: once the holdout has been scored, the registered model is fitted again,
    with the same parameters, on every row including the holdout (after a drift, labelled rows
    of the new concept are scarce and the learning curve is still steep there). The holdout
    figures then estimate the refit, and the shadow period measures it on live events before
    any promotion.

    ``calibrate``: a share of the training rows is kept out of the fit, and an isotonic or
    sigmoid map fitted on the model's scores there is stored with the version and applied to
    every score it serves. The holdout's ECE before (``holdout_ece_uncalibrated``) and after
    (``holdout_ece``) are recorded. A calibration split under ``MIN_CALIBRATION_ROWS`` rows is
    refused (``ConfigError``). With ``refit_on_all`` the map is fitted again on the refitted
    model's scores (a map fitted to the first model's scores does not fit the second's).

    ``ece_margin`` (with ``calibrate`` and ``compare_to``): the ECE gate the retrainer applies
    (``services.retrain.policy.ece_gate``); a version that fails it is not registered
    (``CalibrationGateRefused``).
    """
    if calibrate is not None and task != BINARY:
        raise ConfigError(f"--calibrate is for a binary task; this one is {task.kind}")
    ts = build_training_set(spec, store, events, labels, logged=logged, source=source, task=task)
    report = validate(ts, spec, task=task)
    if not report.ok:
        raise TrainingRefused(report)
    holdout_by: HoldoutBy = "time" if holdout_newest else "random"
    if holdout_newest:
        time_of = {str(e["event_id"]): int(e["event_time"]) for e in events}
        times = np.array([time_of[i] for i in ts.event_ids], dtype=np.int64)
        train_idx, hold_idx = split_by_time(times, holdout_share)
    else:
        train_idx, hold_idx = split(len(ts.y), holdout_share, seed)
    fit_idx, cal_idx = train_idx, train_idx[:0]
    if calibrate is not None:
        order = np.random.default_rng(seed + 1).permutation(train_idx)
        cut = int(len(order) * (1 - CALIBRATION_SHARE))
        fit_idx, cal_idx = np.sort(order[:cut]), np.sort(order[cut:])
        if len(cal_idx) < MIN_CALIBRATION_ROWS:
            raise ConfigError(
                f"--calibrate needs at least {MIN_CALIBRATION_ROWS} rows to fit its map on; "
                f"this set gives {len(cal_idx)} ({CALIBRATION_SHARE:.0%} of {len(train_idx)} "
                "training rows): train without --calibrate, or on more history"
            )
    trained = fit(ts.X[fit_idx], ts.y[fit_idx], ts.names, flavor, seed, params, task)
    calibration = None
    raw_hold = predict(trained, ts.X[hold_idx], task)
    served_hold = raw_hold
    metrics: dict[str, float] = {}
    if calibrate is not None:
        calibration = fit_calibration(calibrate, predict(trained, ts.X[cal_idx]), ts.y[cal_idx])
        served_hold = calibration.apply(raw_hold)
        metrics["holdout_ece_uncalibrated"] = evaluate(ts.y[hold_idx], raw_hold)["ece"]
        metrics["calibration_rows"] = float(len(cal_idx))
    held = evaluate_task(task, ts.y[hold_idx], served_hold)
    metrics |= {f"holdout_{k}": v for k, v in held.items()}
    metrics["train_rows"] = float(len(fit_idx))
    metrics |= {f"feature_rows_{k}": float(v) for k, v in ts.sources.items()}
    if compare_to is not None:
        # The champion on the very same holdout rows: the comparison a promotion needs.
        champion = evaluate_task(task, ts.y[hold_idx], compare_to.predict(ts.X[hold_idx]))
        metrics |= {f"champion_holdout_{k}": v for k, v in champion.items()}
    if calibrate is not None and ece_margin is not None:
        gate = ece_gate(metrics, ece_margin)
        if gate is not None and not gate[0]:
            raise CalibrationGateRefused(f"not registered: {gate[1]}")
    fingerprint = ts.fingerprint()
    with tempfile.TemporaryDirectory(prefix="streamscore-train-") as tmp:
        fallback = None
        if task == BINARY:  # the logistic rung is binary's; other tasks fall to their constant
            fallback = fit_fallback(ts.X[fit_idx], ts.y[fit_idx], seed)
            metrics["holdout_fallback_auc"] = evaluate(
                ts.y[hold_idx], fallback.predict(ts.X[hold_idx])
            )["auc"]
        if refit_on_all:
            # Every row but the calibration's: the map must score rows the model never saw.
            fit_idx = np.setdiff1d(np.arange(len(ts.y)), cal_idx)
            trained = fit(ts.X[fit_idx], ts.y[fit_idx], ts.names, flavor, seed, params, task)
            if calibrate is not None:  # the map must fit this model's scores, not the first's
                calibration = fit_calibration(
                    calibrate, predict(trained, ts.X[cal_idx]), ts.y[cal_idx]
                )
            if fallback is not None:
                fallback = fit_fallback(ts.X[fit_idx], ts.y[fit_idx], seed)
            metrics["train_rows"] = float(len(fit_idx))
        # The last rung: the base rate, the training mean, or the class prior.
        constant = task.constant(ts.y[fit_idx])
        write_artifacts(
            Path(tmp),
            flavor,
            trained.model,
            ts.names,
            spec.version,
            constant[0] if task.width == 1 else 0.0,
            fallback,
            calibration,
            task,
            constant if task.width > 1 else (),
        )
        # The holdout as the registered version scores it: what `report drift` compares
        # windows of served events with.
        reference_scores = predict(trained, ts.X[hold_idx], task)
        if calibration is not None:
            reference_scores = calibration.apply(reference_scores)
        reference_scores = task.score(reference_scores)
        write_reference(Path(tmp), ts.names, ts.X[hold_idx], reference_scores, seed)
        digest = artifact_digest(Path(tmp))
        logged_params = {
            **{k: v for k, v in trained.params.items()},
            "flavor": flavor,
            "seed": seed,
            "holdout_share": holdout_share,
            "holdout": "newest" if holdout_by == "time" else "random",
            "refit_on_all": refit_on_all,
            "calibration": calibrate or "none",
            "task": task.kind,
            "rows": len(ts.y),
            **dict(extra_params or {}),
        }
        tags = _tags(ts, spec, fingerprint, digest)
        run_id, source_uri = registry.log_run(
            logged_params, metrics, tags, Path(tmp), run_name or f"train-{flavor}"
        )
    version = registry.register(
        run_id,
        source_uri,
        digest,
        {"flavor": flavor, "feature_spec_version": spec.version, "data_fingerprint": fingerprint},
    )
    alias_set = False
    if make_champion_if_none and registry.alias_version("champion") is None:
        registry.set_alias("champion", version)
        alias_set = True
    primary = task.primary[0]
    logger.info(
        "trained %s v%s (run %s), holdout %s %.4f; feature rows %s",
        registry.name,
        version,
        run_id,
        primary,
        metrics.get(f"holdout_{primary}", float("nan")),
        ts.sources,
    )
    return TrainResult(
        version, run_id, alias_set, metrics, report, fingerprint, digest, dict(ts.sources)
    )


def _tags(ts: TrainingSet, spec: FeatureSpec, fingerprint: str, digest: str) -> dict[str, str]:
    return {
        "data_fingerprint": fingerprint,
        "feature_spec_version": spec.version,
        "feature_rows": ", ".join(f"{k}={v}" for k, v in sorted(ts.sources.items())),
        "python": platform.python_version(),
        "lightgbm": lightgbm.__version__,
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "artifact_sha256": digest,
    }
