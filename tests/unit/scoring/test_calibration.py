"""A calibrated version serves calibrated scores, compiled or not, and its metadata keeps the
map under the artifact digest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.core.errors import ModelIntegrityError
from services.features.assemble import feature_names
from services.features.spec import FeatureSpec
from services.scoring.calibration import Calibration, fit_calibration
from services.scoring.model import (
    METADATA_FILE,
    artifact_digest,
    load_artifacts,
    write_artifacts,
)
from services.training.train import evaluate, fit

SPEC = FeatureSpec.load()
NAMES = feature_names(SPEC)


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(NAMES)))
    # Outcomes far rarer than a model fitted on a balanced sample will say: miscalibrated.
    p = 1 / (1 + np.exp(-(X[:, 0] - 2.5)))
    return X, (rng.random(n) < p).astype(np.int64)


@pytest.mark.parametrize("method", ["isotonic", "sigmoid"])
def test_a_calibrated_version_serves_calibrated_scores(tmp_path: Path, method: str) -> None:
    X, y = _data(6000, 1)
    balanced = np.concatenate([np.nonzero(y)[0], np.nonzero(y == 0)[0][: int(y.sum())]])
    trained = fit(X[balanced], y[balanced], NAMES, "lightgbm", 1, {"num_boost_round": 30})
    X_cal, y_cal = _data(4000, 2)
    cal = fit_calibration(method, trained.model.predict(X_cal), y_cal)
    write_artifacts(tmp_path, "lightgbm", trained.model, NAMES, SPEC.version, 0.1, None, cal)
    digest = artifact_digest(tmp_path)
    for cache in (None, tmp_path / "compiled"):
        loaded = load_artifacts(tmp_path, "m", "1", digest, cache)
        X_new, y_new = _data(4000, 3)
        raw = loaded.predict_raw(X_new)
        served = loaded.predict(X_new)
        assert np.allclose(served, cal.apply(raw))
        assert evaluate(y_new, served)["ece"] < evaluate(y_new, raw)["ece"] / 2

    # The map is covered by the digest: changing it is refused at load.
    meta = tmp_path / METADATA_FILE
    meta.write_text(meta.read_text().replace('"method"', '"method" ', 1))
    with pytest.raises(ModelIntegrityError):
        load_artifacts(tmp_path, "m", "1", digest)


def test_an_uncalibrated_version_keeps_its_metadata_bytes(tmp_path: Path) -> None:
    X, y = _data(500, 4)
    trained = fit(X, y, NAMES, "lightgbm", 1, {"num_boost_round": 5})
    write_artifacts(tmp_path, "lightgbm", trained.model, NAMES, SPEC.version, 0.1)
    assert "calibration" not in (tmp_path / METADATA_FILE).read_text()
    assert Calibration.from_dict(Calibration("sigmoid", a=2.0, b=-1.0).to_dict()).a == 2.0
