"""A small real LightGBM model on the real feature layout, saved and loaded like production."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.features.assemble import feature_names
from services.features.spec import FeatureSpec
from services.scoring.model import LoadedModel, artifact_digest, load_artifacts, write_artifacts
from services.training.train import fit, fit_fallback

SPEC = FeatureSpec.load()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    names = feature_names(SPEC)
    X = rng.normal(size=(2000, len(names)))
    y = (X[:, 0] + X[:, 20] + rng.normal(size=2000) > 0).astype(np.int64)
    trained = fit(X, y, names, "lightgbm", seed=1)
    directory = tmp_path_factory.mktemp("model")
    fallback = fit_fallback(X, y, seed=1)
    write_artifacts(
        directory, "lightgbm", trained.model, names, SPEC.version, float(y.mean()), fallback
    )
    return directory


@pytest.fixture
def model(model_dir: Path) -> LoadedModel:
    return load_artifacts(model_dir, "engagement", "7", artifact_digest(model_dir))
