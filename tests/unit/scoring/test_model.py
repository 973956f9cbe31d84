"""Artifacts: verified by sha256 on every load, safe formats only."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from services.core.errors import ModelIntegrityError, ModelLoadError
from services.features.assemble import feature_names
from services.features.spec import FeatureSpec
from services.scoring.model import LoadedModel, ModelMetadata, load_artifacts, write_artifacts
from services.training.train import fit


def test_tampered_artifact_is_refused(model_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "m"
    shutil.copytree(model_dir, copy)
    meta = ModelMetadata.from_json((copy / "metadata.json").read_text())
    text = (copy / "model.txt").read_text()
    (copy / "model.txt").write_text(text.replace("leaf_value=", "leaf_value=9", 1))
    with pytest.raises(ModelIntegrityError, match="sha256"):
        load_artifacts(copy, "engagement", "7", meta.sha256)


def test_registry_hash_must_match_too(model_dir: Path) -> None:
    with pytest.raises(ModelIntegrityError):
        load_artifacts(model_dir, "engagement", "7", "0" * 64)


def test_missing_file_is_a_load_error(model_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "m"
    shutil.copytree(model_dir, copy)
    (copy / "model.txt").unlink()
    with pytest.raises(ModelLoadError, match="no model.txt"):
        load_artifacts(copy, "engagement", "7", "x")


def test_loaded_model_predicts_probabilities(model: LoadedModel) -> None:
    X = np.random.default_rng(3).normal(size=(50, len(model.metadata.feature_names)))
    p = model.predict(X)
    assert p.shape == (50,) and ((p > 0) & (p < 1)).all()
    assert np.array_equal(p, model.predict(X))  # deterministic


def test_sklearn_round_trips_through_skops(tmp_path: Path) -> None:
    spec = FeatureSpec.load()
    names = feature_names(spec)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, len(names)))
    y = (X[:, 1] > 0).astype(np.int64)
    trained = fit(X, y, names, "sklearn", seed=1)
    meta = write_artifacts(tmp_path, "sklearn", trained.model, names, spec.version, 0.5)
    loaded = load_artifacts(tmp_path, "m", "1", meta.sha256)
    assert np.allclose(loaded.predict(X), trained.model.predict_proba(X)[:, 1])
    assert not list(tmp_path.glob("*.pkl"))
