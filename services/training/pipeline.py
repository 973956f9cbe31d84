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

from services.core.errors import StreamMLError
from services.features.spec import FeatureSpec
from services.features.store import FeatureStore
from services.scoring.model import LoadedModel, artifact_digest, write_artifacts
from services.scoring.registry import MlflowRegistry
from services.training.dataset import ValidationReport, build_training_set, validate
from services.training.train import (
    Flavor,
    evaluate,
    fit,
    fit_fallback,
    predict,
    split,
    split_by_time,
)

logger = logging.getLogger(__name__)


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
        }


def train_and_register(
    registry: MlflowRegistry,
    spec: FeatureSpec,
    store: FeatureStore,
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
) -> TrainResult:
    """Raises ``TrainingRefused`` when the data fails validation (the report says why).

    ``holdout_newest``: hold out the newest events by ``event_time`` instead of a random share
    (retraining after a drift: the holdout is the new concept).

    ``refit_on_all``: once the holdout has been scored, the registered model is fitted again,
    with the same parameters, on every row including the holdout (after a drift, labelled rows
    of the new concept are scarce and the learning curve is still steep there). The holdout
    figures then estimate the refit, and the shadow period measures it on live events before
    any promotion.
    """
    ts = build_training_set(spec, store, events, labels)
    report = validate(ts, spec)
    if not report.ok:
        raise TrainingRefused(report)
    if holdout_newest:
        time_of = {str(e["event_id"]): int(e["event_time"]) for e in events}
        times = np.array([time_of[i] for i in ts.event_ids], dtype=np.int64)
        train_idx, hold_idx = split_by_time(times, holdout_share)
    else:
        train_idx, hold_idx = split(len(ts.y), holdout_share, seed)
    trained = fit(ts.X[train_idx], ts.y[train_idx], ts.names, flavor, seed)
    metrics = {
        f"holdout_{k}": v
        for k, v in evaluate(ts.y[hold_idx], predict(trained, ts.X[hold_idx])).items()
    }
    metrics["train_rows"] = float(len(train_idx))
    if compare_to is not None:
        # The champion on the very same holdout rows: the comparison a promotion needs.
        champion = evaluate(ts.y[hold_idx], compare_to.predict(ts.X[hold_idx]))
        metrics |= {f"champion_holdout_{k}": v for k, v in champion.items()}
    fingerprint = ts.fingerprint()
    with tempfile.TemporaryDirectory(prefix="streamscore-train-") as tmp:
        fallback = fit_fallback(ts.X[train_idx], ts.y[train_idx], seed)
        metrics["holdout_fallback_auc"] = evaluate(
            ts.y[hold_idx], fallback.predict(ts.X[hold_idx])
        )["auc"]
        if refit_on_all:
            train_idx = np.arange(len(ts.y))
            trained = fit(ts.X, ts.y, ts.names, flavor, seed)
            fallback = fit_fallback(ts.X, ts.y, seed)
            metrics["train_rows"] = float(len(ts.y))
        base_rate = float(ts.y[train_idx].mean())
        write_artifacts(
            Path(tmp), flavor, trained.model, ts.names, spec.version, base_rate, fallback
        )
        digest = artifact_digest(Path(tmp))
        params = {
            **{k: v for k, v in trained.params.items()},
            "flavor": flavor,
            "seed": seed,
            "holdout_share": holdout_share,
            "holdout": "newest" if holdout_newest else "random",
            "refit_on_all": refit_on_all,
            "rows": len(ts.y),
            **dict(extra_params or {}),
        }
        tags = {
            "data_fingerprint": fingerprint,
            "feature_spec_version": spec.version,
            "python": platform.python_version(),
            "lightgbm": lightgbm.__version__,
            "scikit-learn": sklearn.__version__,
            "numpy": np.__version__,
            "artifact_sha256": digest,
        }
        run_id, source = registry.log_run(params, metrics, tags, Path(tmp), f"train-{flavor}")
    version = registry.register(
        run_id,
        source,
        digest,
        {"flavor": flavor, "feature_spec_version": spec.version, "data_fingerprint": fingerprint},
    )
    alias_set = False
    if make_champion_if_none and registry.alias_version("champion") is None:
        registry.set_alias("champion", version)
        alias_set = True
    logger.info(
        "trained %s v%s (run %s), holdout AUC %.4f",
        registry.name,
        version,
        run_id,
        metrics.get("holdout_auc", float("nan")),
    )
    return TrainResult(version, run_id, alias_set, metrics, report, fingerprint, digest)
